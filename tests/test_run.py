"""`python -m curate run`: every stage in one command with the tiny models, offline; a second run
does nothing; a run killed at any moment and run again ends exactly as an uninterrupted one."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds
from conftest import RUN_SETTINGS as RUN
from conftest import curate, kill_when, read_manifests


@pytest.fixture(scope="module")
def videos(run_videos) -> Path:
    return run_videos


@pytest.fixture(scope="module")
def finished(finished_run) -> tuple[Path, str]:
    return finished_run


def state(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    videos, clips = read_manifests(out)
    shards = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted((out / "shards").iterdir())}
    return videos, clips, shards


def test_run_goes_from_videos_to_shards(finished):
    out, stdout = finished
    _, clips = read_manifests(out)
    for stage in ("split", "motion", "text", "aesthetic", "caption", "pack"):
        assert f"\n{stage}: " in f"\n{stdout}"
    assert (clips.drop_reason == "static").any()  # the static shot was filtered out
    assert (clips.text_area == 0).sum() == clips.text_area.notna().sum() > 0  # the real detector, under --models tiny too
    kept = clips[clips.drop_reason.isna()]
    assert kept.caption.notna().all() and kept.aesthetic_score.notna().all() and kept.shard.notna().all()
    index = json.loads((out / "shards" / "index.json").read_text())
    urls = [str(out / "shards" / s["url"]) for s in index["shardlist"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(kept.key)
    captions = dict(zip(kept.key, kept.caption, strict=True))
    assert all(s["txt"].decode() == captions[s["__key__"]] for s in samples)
    assert "shards:" in stdout and "run: " in stdout


def test_running_again_is_a_no_op(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)
    videos_dir = Path(read_manifests(out)[0].path[0]).parent
    stdout = curate("run", videos_dir, "--out", out, *RUN, "--quiet")
    assert "split: 0 videos processed" in stdout and "(0 written now)" in stdout
    for stage in ("motion", "text", "aesthetic"):
        assert f"{stage}: 0 clips scored in 0 units" in stdout
    assert "caption: 0 clips captioned" in stdout and "pack: 0 clips encoded" in stdout
    before, after = state(finished[0]), state(out)
    pd.testing.assert_frame_equal(before[1], after[1])
    assert before[2] == after[2]


def test_run_resumes_after_sigkill(finished, videos, tmp_path):
    out = tmp_path / "out"
    args = ["run", videos, "--out", out, *RUN, "--quiet"]
    work = out / "manifests" / ".work"
    # Killed during motion, while a model stage loads or runs, then while packing.
    assert kill_when(args, tmp_path / "logs", lambda: bool(list(work.glob("motion-*/*.done"))))
    started = time.monotonic()
    kill_when(args, tmp_path / "logs", lambda: time.monotonic() - started > 6)
    kill_when(args, tmp_path / "logs", lambda: bool(list(work.glob("pack-*/*.done"))))
    curate("run", videos, "--out", out, *RUN, "--quiet")
    expected, got = state(finished[0]), state(out)
    pd.testing.assert_frame_equal(got[0].drop(columns="path"), expected[0].drop(columns="path"))
    pd.testing.assert_frame_equal(got[1].drop(columns="path"), expected[1].drop(columns="path"))
    assert got[2].keys() == expected[2].keys()
    assert {k: v for k, v in got[2].items() if k.endswith(".tar")} == {k: v for k, v in expected[2].items() if k.endswith(".tar")}
