"""`curate status` (and the summary after `filter`) on shards that no longer match the manifests:
a threshold moved after `pack` leaves them stale until `pack` runs again, and the summary says so.
Also the kept time, which is the clips' time span, not a frame count over a frame rate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import curate, read_manifests

from curate.manifest import OutputLayout
from curate.status import summarize

PACK = ("--set", "pack.short_side=48")
STALE = "shards are out of date"


@pytest.fixture(scope="module")
def packed(tmp_path_factory, edited, motion) -> Path:
    """Split, motion and pack of two test videos, never modified by the tests (they copy it)."""
    videos = tmp_path_factory.mktemp("status_videos")
    for sample in (edited, motion):
        shutil.copy(sample.path, videos / sample.path.name)
    out = tmp_path_factory.mktemp("status_packed") / "out"
    curate("split", videos, "--out", out)
    curate("motion", "--out", out)
    curate("pack", "--out", out, *PACK)
    return out


def test_filter_that_drops_packed_clips_leaves_shards_stale_until_pack(packed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(packed, out)
    assert STALE not in curate("status", "--out", out)
    _, clips = read_manifests(out)
    scores = clips[clips.shard.notna()].motion_score.sort_values()
    threshold = (scores.iloc[0] + scores.iloc[1]) / 2  # drops the packed clip with the least motion

    after_filter = curate("filter", "--out", out, "--set", f"motion.min={threshold}")
    for summary in (after_filter, curate("status", "--out", out)):
        assert f"{STALE}: 1 packed clip now dropped" in summary
        assert f"python -m curate pack --out {out}" in summary

    curate("pack", "--out", out, *PACK)
    assert STALE not in curate("status", "--out", out)
    _, clips = read_manifests(out)
    assert clips.shard.notna().sum() == len(scores) - 1

    # Lowered again: the clip is kept, encoded, and in no shard until pack puts it back.
    assert f"{STALE}: 1 kept clip not packed" in curate("filter", "--out", out, "--set", "motion.min=0")
    curate("pack", "--out", out, *PACK)
    assert STALE not in curate("status", "--out", out)


def test_kept_hours_are_the_clips_time_spans(packed, tmp_path):
    """A clip of variable-frame-rate video: few frames at its nominal rate, yet an hour long."""
    out = tmp_path / "out"
    shutil.copytree(packed, out)
    layout = OutputLayout(str(out))
    clips = pd.read_parquet(layout.clips)
    kept = clips.drop_reason.isna()
    first = kept.idxmax()
    clips.loc[first, "end_s"] = clips.loc[first, "start_s"] + 3600.0  # 1 h, for num_frames / fps of seconds
    clips.to_parquet(layout.clips)
    hours = ((clips.end_s - clips.start_s)[kept]).sum() / 3600
    assert hours > 1
    assert f"{kept.sum()} kept, {hours:.2f} h kept" in summarize(layout)
