"""The caption stage with the tiny SmolVLM2 (real transformers classes, random weights, offline):
frames sampled over each clip and given as one video, batching that changes nothing, retries,
failures kept for review, source captions in the prompt, and models loaded from a folder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import clip_refs

from curate.config import CaptionConfig
from curate.errors import ModelUnavailable
from curate.manifest import ClipRef
from curate.models import hub
from curate.models.tiny_vlm import TINY_IMAGE_SEQ_LEN, TINY_IMAGE_SIZE, build_tiny_smolvlm
from curate.models.vlm import fetch_model
from curate.stages.base import Unit
from curate.stages.caption.stage import CaptionStage
from curate.stages.caption.text import caption_problem
from curate.synthetic import Join, Shot, make_video

FPS = 24


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[ClipRef]:
    folder = tmp_path_factory.mktemp("caption")
    edit, pan = folder / "edit.mp4", folder / "pan.mp4"
    make_video(edit, [Shot(72, 41, pan=(1.0, 0.0)), Shot(72, 42, object_speed=2.0), Shot(60, 43)], [Join("cut"), Join("cut")], 160, 90, FPS)
    make_video(pan, [Shot(120, 44, pan=(3.0, 0.5))], [], 128, 96, FPS)
    refs = clip_refs(edit) + clip_refs(pan)
    assert len(refs) >= 4 and len({r.video_id for r in refs}) == 2
    return refs


def tiny(**overrides) -> CaptionStage:
    return CaptionStage(CaptionConfig(model="tiny", device="cpu", **overrides))


def run(stage: CaptionStage, clips: list[ClipRef]) -> pd.DataFrame:
    tables, _ = stage.process(Unit("u", clips))
    return tables["scores"].to_pandas()


@pytest.fixture(scope="module")
def baseline(clips) -> pd.DataFrame:
    return run(tiny(), clips)


def test_every_clip_gets_a_clean_caption(baseline, clips):
    assert baseline.clip_id.tolist() == [c.clip_id for c in clips]
    assert baseline.caption_error.isna().all() and baseline.caption_raw.isna().all()
    for caption in baseline.caption:
        assert caption == " ".join(caption.split()) and caption[0].isupper()
        assert caption_problem(caption, finished=True) is None
    assert (baseline.caption_model == "tiny").all()
    assert baseline.caption_prompt_id.nunique() == 1 and len(baseline.caption_prompt_id[0]) == 10
    assert set(baseline.caption_attempts) <= {1, 2}


def test_batching_gives_the_same_captions_as_one_by_one(baseline, clips):
    one_by_one = run(tiny(batch_size=1), clips)
    pd.testing.assert_frame_equal(one_by_one, baseline)
    uneven = run(tiny(batch_size=3, decode_threads=1), clips)  # a last batch that is not full
    pd.testing.assert_frame_equal(uneven, baseline)


def test_same_settings_same_captions(baseline, clips):
    pd.testing.assert_frame_equal(run(tiny(), clips), baseline)


def test_frames_are_spread_over_the_clip_at_the_model_size(clips):
    stage = tiny(num_frames=6)
    stage.setup()
    got = {item[1]: item[2] for item in stage._clip_frames(clips) if item[0] == "clip"}
    assert sorted(got) == list(range(len(clips)))
    for clip_no, frames in got.items():
        clip = clips[clip_no]
        last = clip.num_frames - 1
        assert frames.frame_offsets == [int((i + 0.5) / 6 * last + 0.5) for i in range(6)]
        assert frames.frames.shape[0] == 6 and frames.frames.dtype.name == "uint8"
        height, width = frames.frames.shape[1:3]
        assert max(width, height) == TINY_IMAGE_SIZE  # decoded at the size the model takes
        assert abs(width / height - clip.width / clip.height) < 0.1  # aspect ratio kept
        assert frames.fps == clip.fps and frames.num_frames == clip.num_frames
    pan = next(n for n, c in enumerate(clips) if c.width == 128)
    assert (got[pan].frames[0] != got[pan].frames[-1]).any()  # a moving shot: different frames


def test_the_model_sees_the_clip_as_one_video(clips):
    stage = tiny(num_frames=5)
    stage.setup()
    clip_frames = next(item[2] for item in stage._clip_frames(clips[:1]) if item[0] == "clip")
    inputs = stage.captioner.inputs([clip_frames], [stage.prompt(clips[0])])
    ids = inputs["input_ids"][0]
    assert int((ids == stage.captioner.model.config.image_token_id).sum()) == 5 * TINY_IMAGE_SEQ_LEN
    assert tuple(inputs["pixel_values"].shape) == (1, 5, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    text = stage.captioner.processor.tokenizer.decode(ids)
    assert text.count("Frame from") == 5 and stage.config.prompt in text


def test_broken_captions_are_retried_then_kept_for_review(clips):
    # Two tokens cannot finish a caption: the first attempt is truncated, so is the retry (4 tokens).
    # (min_words=1, or the two-token answers would be diagnosed as empty first.)
    failed = run(tiny(max_new_tokens=2, min_words=1), clips[:2])
    assert failed.caption.isna().all()
    assert failed.caption_error.str.startswith("truncated").all()
    assert failed.caption_error.str.endswith("after 2 attempts").all()
    assert (failed.caption_attempts == 2).all()
    no_retry = run(tiny(max_new_tokens=2, min_words=1, retries=0), clips[:2])
    assert (no_retry.caption_attempts == 1).all() and no_retry.caption_error.str.startswith("truncated").all()
    # The raw answer is kept; the retry had twice the token budget, so its answer is longer.
    assert (failed.caption_raw.str.len() > no_retry.caption_raw.str.len()).all()


def test_unreadable_clip_fails_alone(clips, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    broken = dataclasses.replace(clips[0], clip_id="broken", video_id="junk", path=str(junk))
    scores = run(tiny(), [broken, *clips[1:3]])
    assert scores.caption.isna().tolist() == [True, False, False]
    assert "not a readable video" in scores.caption_error[0]


def test_source_caption_goes_into_the_prompt_when_asked(clips):
    clip = dataclasses.replace(clips[0], source_caption="a sheep on a hill")
    plain, context = tiny(), tiny(use_source_caption=True)
    assert plain.prompt(clip) == plain.config.prompt
    assert context.prompt(clip).startswith(context.config.prompt) and '"a sheep on a hill"' in context.prompt(clip)
    assert context.prompt(clips[0]) == context.config.prompt  # a clip without one: the plain prompt
    assert plain.prompt_id != context.prompt_id
    assert tiny(prompt="Say what moves.").prompt_id != plain.prompt_id


def test_a_model_folder_loads_through_the_auto_classes(baseline, clips, tmp_path):
    """A folder written by save_pretrained loads like a downloaded hub model and captions alike."""
    model, processor = build_tiny_smolvlm()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    stage = CaptionStage(CaptionConfig(model=str(tmp_path / "model"), device="cpu"))
    stage.prepare()
    scores = run(stage, clips)
    assert (scores.caption_model == str(tmp_path / "model")).all()
    pd.testing.assert_frame_equal(scores.drop(columns="caption_model"), baseline.drop(columns="caption_model"))


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache; the socket layer refuses connections."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.timeout(60)
def test_missing_model_is_one_clear_line(empty_hub, monkeypatch):
    from huggingface_hub import constants

    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as offline:
        CaptionStage(CaptionConfig()).prepare()
    message = str(offline.value)
    assert "\n" not in message and "SmolVLM2-256M-Video-Instruct" in message and "HF_HUB_OFFLINE" in message
    assert "caption.model=" in message and "hf download" in message
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=0: False)
    with pytest.raises(ModelUnavailable, match="unreachable"):
        fetch_model("HuggingFaceTB/SmolVLM2-256M-Video-Instruct")
    with pytest.raises(ModelUnavailable, match="folder not found"):
        fetch_model(str(Path("/nonexistent/model")))
    assert time.monotonic() - started < 30  # no retries against a missing network


def test_a_long_source_caption_is_cut_short_at_a_word(clips):
    """A 10,000-character source caption (a pasted transcript) reaches the model cut to
    caption.max_source_caption_chars (300 by default), at a word boundary, with an ellipsis."""
    text = " ".join(f"word{i}" for i in range(2000))[:10_000]
    stage = tiny(use_source_caption=True)
    prompt = stage.prompt(dataclasses.replace(clips[0], source_caption=text))
    quoted = prompt.split('"')[1]
    assert len(quoted) <= 300 and quoted.endswith("…")
    kept = quoted[:-1]
    assert text.startswith(kept) and text[len(kept)] == " " and len(kept) > 250  # whole words, nearly all the room
    # What the model is given: a few hundred tokens more than the plain prompt, not thousands.
    stage.setup()
    frames = next(item[2] for item in stage._clip_frames(clips[:1]) if item[0] == "clip")
    tokens = [stage.captioner.inputs([frames], [p])["input_ids"].shape[1] for p in (stage.config.prompt, prompt)]
    assert 0 < tokens[1] - tokens[0] < 400
    assert tiny(use_source_caption=True, max_source_caption_chars=100).prompt_id != stage.prompt_id
