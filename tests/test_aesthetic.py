"""The aesthetic stage with the tiny CLIP model on synthetic clips, the head loader, and how a real
model that cannot be had fails (offline, nothing downloaded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import clip_refs

from curate.config import AestheticConfig
from curate.errors import ModelUnavailable
from curate.framepool import decode_frames, frame_indices
from curate.manifest import ClipRef
from curate.models import hub
from curate.models.clip import AestheticHead, read_head
from curate.picture import Upright
from curate.stages.aesthetic import AestheticStage, frame_to_input
from curate.stages.base import Unit
from curate.synthetic import Join, Shot, make_video

FPS = 24
LAION_KEYS = [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("aesthetic")
    paths = {"edit": folder / "edit.mp4", "pan": folder / "pan.mp4"}
    make_video(paths["edit"], [Shot(72, 31, pan=(1.0, 0.0)), Shot(72, 32)], [Join("cut")], 160, 90, FPS)
    make_video(paths["pan"], [Shot(120, 33, pan=(3.0, 0.5))], [], 160, 90, FPS, faststart=True)
    return paths


@pytest.fixture(scope="module")
def clips(videos) -> list[ClipRef]:
    refs = clip_refs(videos["edit"]) + clip_refs(videos["pan"])
    assert len(refs) >= 3 and len({r.video_id for r in refs}) == 2
    return refs


def tiny(**overrides) -> AestheticStage:
    stage = AestheticStage(AestheticConfig(model="tiny", device="cpu", **overrides))
    stage.setup()
    return stage


def run(stage: AestheticStage, units: list[list[ClipRef]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores and embeddings of every unit, as the runner would store them, concatenated."""
    outputs = [stage.process(Unit(f"u{i}", unit))[0] for i, unit in enumerate(units)]
    scores = pa.concat_tables([o["scores"] for o in outputs]).to_pandas()
    embeddings = pa.concat_tables([o["embeddings"] for o in outputs]).to_pandas()
    return scores, embeddings


@pytest.fixture(scope="module")
def stage() -> AestheticStage:
    return tiny()


@pytest.fixture(scope="module")
def baseline(stage, clips):
    return run(stage, [clips])


# -- scores and embeddings -----------------------------------------------------------------


def test_one_finite_score_per_clip(baseline, clips):
    scores, _ = baseline
    assert scores.clip_id.tolist() == [c.clip_id for c in clips]
    assert scores.aesthetic_error.isna().all()
    assert np.isfinite(scores.aesthetic_score).all()
    assert scores.aesthetic_score.dtype == np.float32


def test_deterministic_across_runs_batch_sizes_and_units(baseline, clips):
    scores, embeddings = baseline
    again, again_embeddings = run(tiny(), [clips])  # a fresh model: weights are seeded
    np.testing.assert_array_equal(again.aesthetic_score, scores.aesthetic_score)
    np.testing.assert_array_equal(np.stack(again_embeddings.embedding), np.stack(embeddings.embedding))
    for batch_size, units in ((1, [clips]), (4, [[c] for c in clips]), (64, [clips[::-1][:2], clips[::-1][2:]])):
        other, _ = run(tiny(batch_size=batch_size), units)
        merged = scores.merge(other, on="clip_id", suffixes=("", "_other"))
        assert len(merged) == len(clips)
        np.testing.assert_allclose(merged.aesthetic_score_other, merged.aesthetic_score, rtol=0, atol=1e-4)


def test_embeddings_table(baseline, clips, stage, tmp_path):
    scores, embeddings = baseline
    table = stage.process(Unit("u", clips))[0]["embeddings"]
    assert table.schema == pa.schema([("clip_id", pa.string()), ("embedding", pa.list_(pa.float16(), 32))])
    assert embeddings.clip_id.tolist() == scores.clip_id.tolist()
    vectors = np.stack(embeddings.embedding).astype(np.float32)
    assert vectors.shape == (len(clips), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    folder = tmp_path / "embeddings"  # how the runner publishes them: one file per unit
    folder.mkdir()
    pq.write_table(table.slice(0, 2), folder / "a.parquet")
    pq.write_table(table.slice(2), folder / "b.parquet")
    assert np.stack(pd.read_parquet(folder).embedding).shape == (len(clips), 32)


def test_reduce_min_is_at_most_mean(baseline, clips):
    scores, _ = baseline
    low, _ = run(tiny(reduce="min"), [clips])
    assert (low.aesthetic_score.to_numpy() <= scores.aesthetic_score.to_numpy() + 1e-6).all()
    assert (low.aesthetic_score.to_numpy() < scores.aesthetic_score.to_numpy()).any()


def test_frame_positions_choose_the_frames(clips, stage, videos):
    clip = next(c for c in clips if c.path == str(videos["pan"]))
    middle = clip.start_frame + clip.num_frames // 2  # (num_frames - 1) / 2, halves rounded up
    assert frame_indices(clip, [0.0, 0.5, 1.0]) == [clip.start_frame, middle, clip.end_frame - 1]
    wanted = frame_indices(clip, [0.0, 0.37, 1.0])
    prep = stage.model.preprocess
    events = decode_frames([clip], [wanted], lambda frame, upright: frame_to_input(frame, prep, upright), 1, 8)
    got = {index: pixels for kind, _, index, pixels in events if kind == "frame"}
    assert sorted(got) == wanted
    with av.open(clip.path) as container:  # the same frames, decoded front to back
        near = set(wanted) | {wanted[1] + 1}
        upright = Upright(container.streams.video[0])
        decoded = {i: frame_to_input(f, prep, upright) for i, f in enumerate(container.decode(video=0)) if i in near}
    for index in wanted:
        np.testing.assert_array_equal(got[index], decoded[index])
    assert not np.array_equal(got[wanted[1]], decoded[wanted[1] + 1])  # a panning shot: neighbours differ
    first, _ = run(tiny(frame_positions=[0.0]), [[clip]])
    last, _ = run(tiny(frame_positions=[1.0]), [[clip]])
    assert first.aesthetic_score[0] != last.aesthetic_score[0]


def test_unreadable_and_truncated_files_give_errors(clips, stage, videos, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 1000)
    truncated = tmp_path / "truncated.mp4"
    data = videos["pan"].read_bytes()
    truncated.write_bytes(data[: len(data) // 3])  # faststart: the first part still decodes
    pan = [c for c in clips if c.path == str(videos["pan"])]
    bad = [
        dataclasses.replace(clips[0], clip_id="garbage", path=str(garbage)),
        dataclasses.replace(clips[0], clip_id="missing", path=str(tmp_path / "missing.mp4")),
        dataclasses.replace(pan[-1], clip_id="cut_short", path=str(truncated)),
        dataclasses.replace(clips[1], clip_id="no_rate", fps=0.0),
    ]
    scores, embeddings = run(stage, [clips[:1] + bad])
    by_id = scores.set_index("clip_id")
    assert np.isfinite(by_id.aesthetic_score[clips[0].clip_id])
    assert "not a readable video" in by_id.aesthetic_error["garbage"]
    assert "cannot read file" in by_id.aesthetic_error["missing"]
    assert "could not be decoded" in by_id.aesthetic_error["cut_short"]
    assert "unknown frame rate" in by_id.aesthetic_error["no_rate"]
    assert by_id.loc[["garbage", "missing", "cut_short", "no_rate"]].aesthetic_score.isna().all()
    assert embeddings.clip_id.tolist() == [clips[0].clip_id]


def test_failed_unit_records_every_clip(clips, stage):
    tables, _ = stage.failed(Unit("u", clips), "worker crashed")
    assert tables["scores"].column("aesthetic_error").to_pylist() == ["worker crashed"] * len(clips)
    assert tables["embeddings"].num_rows == 0 and tables["embeddings"].schema == stage.embedding_schema(32)


# -- the aesthetic head --------------------------------------------------------------------


def test_head_from_a_local_file_in_the_laion_layout(tmp_path, clips):
    rng = np.random.default_rng(7)
    shapes = {0: (1024, 32), 2: (128, 1024), 4: (64, 128), 6: (16, 64), 7: (1, 16)}
    state = {}
    for i, (out, inp) in shapes.items():
        state[f"layers.{i}.weight"] = torch.tensor(rng.normal(0, inp**-0.5, (out, inp)), dtype=torch.float32)
        state[f"layers.{i}.bias"] = torch.tensor(rng.normal(0, 0.1, out), dtype=torch.float32)
    path = tmp_path / "head.pth"
    torch.save(state, path)
    assert sorted(AestheticHead(32).state_dict()) == sorted(LAION_KEYS)

    x = rng.normal(size=(5, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    expected = x.astype(np.float64)
    for i in (0, 2, 4, 6, 7):  # a purely linear chain; dropout is off at inference
        expected = expected @ state[f"layers.{i}.weight"].double().numpy().T + state[f"layers.{i}.bias"].double().numpy()
    head = read_head(str(path), 32).eval()
    with torch.no_grad():
        np.testing.assert_allclose(head(torch.from_numpy(x)).numpy(), expected[:, 0], rtol=1e-4, atol=1e-4)

    stage = tiny(head=str(path))  # the stage uses a local head file, even with the tiny model
    assert torch.equal(stage.model.head.layers[7].weight, state["layers.7.weight"])
    scores, _ = run(stage, [clips[:1]])
    assert np.isfinite(scores.aesthetic_score[0])

    with pytest.raises(ModelUnavailable, match="takes 32-d embeddings but ViT-L-14 gives 768-d"):
        read_head(str(path), 768, "ViT-L-14")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ModelUnavailable, match="aesthetic.head"):
        read_head(str(tmp_path / "junk.pth"), 32)


# -- real models that cannot be had --------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Hugging Face and torch hub cache, and HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path


@pytest.mark.timeout(60)
def test_default_model_offline_fails_fast_with_one_line(offline):
    stage = AestheticStage(AestheticConfig())
    for step in (stage.prepare, stage.setup):
        with pytest.raises(ModelUnavailable) as info:
            step()
        message = str(info.value)
        assert "\n" not in message
        for words in ("ViT-L-14", "aesthetic.pretrained=", "HF_HUB_OFFLINE", "HF_HOME"):
            assert words in message


@pytest.mark.timeout(60)
def test_unreachable_hub_and_head_url(offline, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=0: False)
    with pytest.raises(ModelUnavailable, match="huggingface.co is unreachable"):
        AestheticStage(AestheticConfig(model="ViT-B-32")).prepare()
    head_only = AestheticConfig(model="ViT-B-32", pretrained="", head="https://example.invalid/heads/b32.pth")
    with pytest.raises(ModelUnavailable, match=r"example.invalid is unreachable.*aesthetic.head=/path/b32.pth"):
        AestheticStage(head_only).prepare()
    cached = offline / "torch" / "hub" / "checkpoints" / "b32.pth"
    cached.parent.mkdir(parents=True)
    torch.save(AestheticHead(512).state_dict(), cached)
    AestheticStage(head_only).prepare()  # found in torch hub's cache: no network needed


def test_bad_model_settings(tmp_path):
    cases = {
        "unknown open_clip model 'ViT-Nope'": AestheticConfig(model="ViT-Nope"),
        "neither a file nor an open_clip tag": AestheticConfig(model="ViT-B-32", pretrained="no-such-tag"),
        "checkpoint for ViT-B-32 not found": AestheticConfig(model="ViT-B-32", pretrained=str(tmp_path / "w.safetensors")),
        "aesthetic head file not found": AestheticConfig(model="tiny", head=str(tmp_path / "head.pth")),
    }
    for words, config in cases.items():
        with pytest.raises(ModelUnavailable, match=words):
            AestheticStage(config).prepare()


def test_real_architecture_with_random_weights(clips):
    """ViT-B-32 as open_clip builds it (nothing downloaded): the real preprocessing and width."""
    stage = AestheticStage(AestheticConfig(model="ViT-B-32", pretrained="", head="", device="cpu", batch_size=8))
    stage.setup()
    assert (stage.model.preprocess.height, stage.model.dim) == (224, 512)
    scores, embeddings = run(stage, [clips[:2]])
    assert np.isfinite(scores.aesthetic_score).all() and np.stack(embeddings.embedding).shape == (2, 512)
