"""The clip stages through the real CLI: motion, aesthetic and caption add columns to clips.parquet,
`filter` re-tunes thresholds from stored scores alone, `status` counts, and a SIGKILLed stage
resumes to exactly the uninterrupted result."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import curate, kill_when, read_manifests, run_module

MOTION_COLUMNS = ["motion_score", "motion_min_region", "motion_static_frac", "motion_max_jump", "motion_method", "motion_error"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory, edited, motion, static, long_take) -> Path:
    folder = tmp_path_factory.mktemp("clip_stage_videos")
    for sample in (edited, motion, static, long_take):
        shutil.copy(sample.path, folder / sample.path.name)
    return folder


@pytest.fixture(scope="module")
def scored(tmp_path_factory, videos) -> Path:
    """An output folder after split and motion, never modified by the tests (they copy it)."""
    out = tmp_path_factory.mktemp("scored")
    curate("split", videos, "--out", out, "--workers", "2")
    curate("motion", "--out", out, "--workers", "2")
    return out


def copy_out(scored: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(scored, out)
    return out


def by_file(clips: pd.DataFrame) -> pd.Series:
    return clips.path.str.rsplit("/", n=1).str[-1]


def test_motion_adds_its_columns_and_drops_the_static_shot(scored):
    _, clips = read_manifests(scored)
    assert all(column in clips for column in MOTION_COLUMNS)
    files = by_file(clips)
    static = clips[files == "static.mp4"]
    assert len(static) == 1 and static.drop_reason.tolist() == ["static"]
    moving = clips[files.isin(["edited.mp4", "long_take.mp4"])]
    assert moving.motion_score.notna().all() and moving.drop_reason.isna().all()
    assert clips.motion_error.isna().all()


def test_filter_retunes_from_stored_scores_without_any_video(scored, tmp_path):
    out = copy_out(scored, tmp_path)
    _, before = read_manifests(out)
    parts = {p: p.stat().st_mtime_ns for p in (out / "manifests" / ".work").rglob("*")}
    for path in before.path.unique():  # the videos are gone: filter must not need them
        os.rename(path, path + ".away")
    try:
        stdout = curate("filter", "--out", out, "--set", "motion.max=1000", "motion.min=999")
        _, strict = read_manifests(out)
        stdout_loose = curate(
            "filter", "--out", out, "--set", "motion.min=0", "motion.max=1e9", "motion.max_jump=1", "motion.max_static_frac=1"
        )
        _, loose = read_manifests(out)
    finally:
        for path in before.path.unique():
            os.rename(path + ".away", path)
    assert (strict.drop_reason == "static").all()
    assert f"dropped (static): {len(strict)}" in stdout
    assert loose.drop_reason.isna().all() and f"0 clips kept before, {len(loose)} now" in stdout_loose
    pd.testing.assert_series_equal(loose.motion_score, before.motion_score)  # the scores were kept
    assert {p: p.stat().st_mtime_ns for p in (out / "manifests" / ".work").rglob("*")} == parts


def test_thresholds_are_remembered_by_later_commands(scored, tmp_path):
    out = copy_out(scored, tmp_path)
    curate("filter", "--out", out, "--set", "motion.max=1000", "motion.min=999")
    stdout = curate("motion", "--out", out)  # nothing to score; must not put the default back
    assert "motion: 0 clips scored" in stdout
    _, clips = read_manifests(out)
    assert (clips.drop_reason == "static").all()


def test_filter_rejects_settings_that_are_not_thresholds(scored, tmp_path):
    result = run_module("filter", "--out", copy_out(scored, tmp_path), "--set", "motion.method=flow")
    assert result.returncode == 2
    assert result.stderr.startswith("error: filter re-applies thresholds only; motion.method")


def test_status_counts_clips_per_drop_reason(scored):
    stdout = curate("status", "--out", scored)
    _, clips = read_manifests(scored)
    for reason, count in clips.drop_reason.value_counts().items():
        assert f"dropped ({reason}): {count}" in stdout
    videos = clips.video_id.nunique()  # motion works one video per unit
    assert f"motion: {videos}/{videos} units done, {clips.motion_score.notna().sum()} clips scored" in stdout


def test_new_videos_keep_old_scores_and_only_new_clips_are_scored(scored, videos, tmp_path, pan_flash):
    out = copy_out(scored, tmp_path)
    _, before = read_manifests(out)
    more = tmp_path / "more"
    shutil.copytree(videos, more)
    shutil.copy(pan_flash.path, more / "pan_flash.mp4")
    curate("split", more, "--out", out)
    _, resplit = read_manifests(out)
    new = ~resplit.clip_id.isin(before.clip_id)
    assert new.sum() >= 1 and resplit[new].motion_score.isna().all()
    kept_scores = resplit[~new].set_index("clip_id").motion_score
    pd.testing.assert_series_equal(kept_scores, before.set_index("clip_id").motion_score.loc[kept_scores.index])
    assert "kept clips waiting (run `python -m curate motion`)" in curate("status", "--out", out)
    stdout = curate("motion", "--out", out)
    assert f"motion: {new.sum()} clips scored" in stdout
    _, after = read_manifests(out)
    assert after.motion_score.notna().all()


def test_a_clip_stage_before_split_is_a_clear_error(tmp_path):
    result = run_module("motion", "--out", tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "python -m curate split" in result.stderr


def test_motion_resumes_after_sigkill(scored, tmp_path):
    """Kill `motion` as soon as its first video is recorded done, then finish: same manifest."""
    out = copy_out(scored, tmp_path)
    shutil.rmtree(next((out / "manifests" / ".work").glob("motion-*")))
    markers = lambda: list((out / "manifests" / ".work").glob("motion-*/*.done"))  # noqa: E731
    killed = kill_when(["motion", "--out", out, "--workers", "1", "--quiet"], tmp_path / "logs", lambda: len(markers()) >= 1)
    done_before = len(markers())
    stdout = curate("motion", "--out", out, "--workers", "2")
    found = re.search(r"motion: (\d+) clips scored in (\d+) units", stdout)
    assert found and (int(found.group(2)) < 4 or not killed)
    assert done_before >= 1
    pd.testing.assert_frame_equal(read_manifests(out)[1], read_manifests(scored)[1])


# -- aesthetic -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aesthetic(tmp_path_factory, scored) -> Path:
    """`scored` plus the aesthetic stage with the tiny offline models."""
    out = tmp_path_factory.mktemp("aesthetic") / "out"
    shutil.copytree(scored, out)
    curate("aesthetic", "--out", out, "--models", "tiny")
    return out


def test_aesthetic_scores_exactly_the_clips_motion_kept(aesthetic):
    _, clips = read_manifests(aesthetic)
    kept_by_motion = clips.motion_error.isna() & ~clips.drop_reason.isin(["static", "extreme_motion"])
    assert kept_by_motion.sum() >= 3
    assert clips[kept_by_motion].aesthetic_score.notna().all()
    assert clips[~kept_by_motion].aesthetic_score.isna().all()  # dropped clips are not scored
    assert clips.aesthetic_error.isna().all()


def test_embeddings_are_readable_with_pandas_and_keyed_by_clip(aesthetic):
    _, clips = read_manifests(aesthetic)
    embeddings = pd.read_parquet(aesthetic / "manifests" / "embeddings")
    assert sorted(embeddings.clip_id) == sorted(clips[clips.aesthetic_score.notna()].clip_id)
    vectors = np.stack(embeddings.embedding.to_numpy()).astype(np.float32)
    assert vectors.ndim == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-2)


def test_aesthetic_threshold_is_retuned_by_filter(aesthetic, tmp_path):
    out = copy_out(aesthetic, tmp_path)
    _, clips = read_manifests(out)
    scores = clips.aesthetic_score.dropna().sort_values()
    middle = float(scores.iloc[len(scores) // 2])
    curate("filter", "--out", out, "--set", f"aesthetic.min={middle}")
    _, after = read_manifests(out)
    low = after.aesthetic_score < middle
    assert (after[low].drop_reason == "low_aesthetic").all() and low.sum() == len(scores) // 2
    assert after[after.aesthetic_score >= middle].drop_reason.isna().all()


def test_running_aesthetic_again_is_a_no_op(aesthetic, tmp_path):
    out = copy_out(aesthetic, tmp_path)
    stdout = curate("aesthetic", "--out", out, "--models", "tiny")
    assert "aesthetic: 0 clips scored" in stdout
    pd.testing.assert_frame_equal(read_manifests(out)[1], read_manifests(aesthetic)[1])


@pytest.mark.parametrize(
    ("stage", "names"), [("aesthetic", ("ViT-L-14", "aesthetic.pretrained")), ("caption", ("SmolVLM2", "caption.model"))]
)
def test_unavailable_real_model_is_one_clear_line(scored, tmp_path, stage, names):
    out = copy_out(scored, tmp_path)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    started = time.monotonic()
    result = run_module(stage, "--out", out, "--quiet", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(name in lines[0] for name in names)
    assert time.monotonic() - started < 60  # no retries against a missing network
    assert not list((out / "manifests" / ".work").glob(f"{stage}-*/*.done"))


def test_aesthetic_resumes_after_sigkill(scored, aesthetic, tmp_path):
    """Killed while loading or scoring, then run again: the same scores and embeddings."""
    out = copy_out(scored, tmp_path)
    started = time.monotonic()
    kill_when(["aesthetic", "--out", out, "--models", "tiny", "--quiet"], tmp_path / "logs", lambda: time.monotonic() - started > 4)
    curate("aesthetic", "--out", out, "--models", "tiny")
    pd.testing.assert_frame_equal(read_manifests(out)[1], read_manifests(aesthetic)[1])
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "manifests" / "embeddings").sort_values("clip_id", ignore_index=True),
        pd.read_parquet(aesthetic / "manifests" / "embeddings").sort_values("clip_id", ignore_index=True),
    )


# -- caption --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captioned(tmp_path_factory, scored) -> Path:
    out = tmp_path_factory.mktemp("captioned") / "out"
    shutil.copytree(scored, out)
    curate("caption", "--out", out, "--models", "tiny")
    return out


def kept_by_motion(clips: pd.DataFrame) -> pd.Series:
    return clips.motion_error.isna() & ~clips.drop_reason.isin(["static", "extreme_motion"])


def test_caption_answers_exactly_the_clips_earlier_stages_kept(captioned):
    clips = read_manifests(captioned)[1]
    answered = clips.caption.notna() | clips.caption_error.notna()
    assert answered.tolist() == kept_by_motion(clips).tolist() and answered.any()
    assert (clips.drop_reason == "caption_failed").tolist() == clips.caption_error.notna().tolist()
    assert (clips[answered].caption_model == "tiny").all()
    assert f"caption: 1/1 units done, {int(answered.sum())} clips captioned" in curate("status", "--out", captioned)


def test_failed_captions_are_dropped_with_their_raw_text(scored, tmp_path):
    out = copy_out(scored, tmp_path)
    # Two tokens never make a caption: every clip fails, twice (the retry has four).
    stdout = curate("caption", "--out", out, "--models", "tiny", "--set", "caption.max_new_tokens=2")
    clips = read_manifests(out)[1]
    tried = kept_by_motion(clips)
    assert (clips[tried].drop_reason == "caption_failed").all() and clips[tried].caption.isna().all()
    assert clips[tried].caption_raw.notna().all() and (clips[tried].caption_attempts == 2).all()
    assert "dropped (caption_failed)" in stdout
    # Other settings are other work: run again with the defaults and the clips come back.
    curate("caption", "--out", out, "--models", "tiny")
    assert read_manifests(out)[1][tried].drop_reason.isna().all()


def test_running_caption_again_is_a_no_op(captioned, tmp_path):
    out = copy_out(captioned, tmp_path)
    stdout = curate("caption", "--out", out, "--models", "tiny")
    assert "caption: 0 clips captioned" in stdout
    pd.testing.assert_frame_equal(read_manifests(out)[1], read_manifests(captioned)[1])


def test_caption_resumes_after_sigkill(scored, captioned, tmp_path):
    """Killed while loading the model, then while captioning, then run again: the same captions."""
    out = copy_out(scored, tmp_path)
    args = ["caption", "--out", out, "--models", "tiny", "--quiet"]
    work = out / "manifests" / ".work"
    assert kill_when(args, tmp_path / "logs", lambda: bool(list(work.glob("caption-*"))))
    started = time.monotonic()
    kill_when(args, tmp_path / "logs", lambda: time.monotonic() - started > 5)
    curate("caption", "--out", out, "--models", "tiny")
    pd.testing.assert_frame_equal(read_manifests(out)[1], read_manifests(captioned)[1])


def test_source_captions_from_an_input_list_can_join_the_prompt(videos, tmp_path):
    files = sorted(videos.glob("*.mp4"))[:2]
    listing = tmp_path / "list.csv"
    pd.DataFrame({"path": [str(f) for f in files], "caption": ["a red square on grey", None]}).to_csv(listing, index=False)
    out = tmp_path / "out"
    curate("split", listing, "--out", out)
    curate("caption", "--out", out, "--models", "tiny", "--set", "caption.use_source_caption=true")
    clips = read_manifests(out)[1]
    with_source = clips.source_caption.notna()
    assert with_source.any() and not with_source.all()  # clips with and without one were captioned
    assert (clips[with_source].source_caption == "a red square on grey").all()  # kept as it was
    assert (clips.caption.notna() | clips.caption_error.notna()).all()
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    curate("caption", "--out", plain, "--models", "tiny")
    assert read_manifests(plain)[1].caption_prompt_id.iloc[0] != clips.caption_prompt_id.iloc[0]
