"""Kill-and-resume of a real `python -m curate split` process tree.

The run is SIGKILLed (its whole process group: the CLI and its pool workers) at several
instants, then the same command runs to completion. Whatever instant each kill lands on, the
final manifests must equal those of an uninterrupted run: same rows, same clip ids, one row per
input, no duplicates. Sleeping only chooses the kill instants; nothing asserts on timing.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import kill_when, read_manifests, run_module

WORKERS = "2"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, good_videos, bad_inputs) -> Path:
    """Eight inputs in one folder: four good videos, a truncated and a damaged one, and two
    files that are no video at all."""
    folder = tmp_path_factory.mktemp("resume_inputs")
    for sample in good_videos:
        shutil.copy(sample.path, folder / sample.path.name)
    for kind in ["truncated", "damaged", "text", "empty"]:
        shutil.copy(bad_inputs[kind], folder / bad_inputs[kind].name)
    assert len(list(folder.iterdir())) == 8
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, inputs) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("resume_reference")
    result = run_module("split", inputs, "--out", out, "--workers", WORKERS, "--quiet")
    assert result.returncode == 0, result.stderr
    videos, clips = read_manifests(out)
    assert len(videos) == 8 and len(clips) > 0
    return videos, clips


def markers(out: Path) -> list[Path]:
    return sorted((out / "manifests" / ".work").glob("split-*/*.done"))


def run_and_kill(inputs: Path, out: Path, logs: Path, when, timeout: float = 120) -> bool:
    args = ["split", inputs, "--out", out, "--workers", WORKERS, "--quiet"]
    return kill_when(args, logs, when, timeout)


def finish(inputs: Path, out: Path) -> tuple[int, int]:
    """Run the same command to completion: (videos processed, videos already done)."""
    result = run_module("split", inputs, "--out", out, "--workers", WORKERS, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    found = re.search(r"split: (\d+) videos processed, (\d+) already done", result.stdout)
    assert found, result.stdout
    return int(found.group(1)), int(found.group(2))


def assert_same_manifests(out: Path, reference) -> None:
    videos, clips = read_manifests(out)
    ref_videos, ref_clips = reference
    assert videos.video_id.is_unique and clips.clip_id.is_unique
    assert len(videos) == 8
    pd.testing.assert_frame_equal(videos, ref_videos)
    pd.testing.assert_frame_equal(clips, ref_clips)
    assert clips.clip_id.tolist() == ref_clips.clip_id.tolist()


def test_kill_at_several_instants_then_resume(inputs, reference, tmp_path):
    out = tmp_path / "out"
    logs = tmp_path / "logs"
    started = time.monotonic()
    kill_instants = [
        lambda: time.monotonic() - started > 0.5,  # during start-up or the first videos
        lambda: len(markers(out)) >= 1,  # right after the first unit is recorded done
        lambda: len(markers(out)) >= 5,  # in the middle of the batch
        lambda: len(markers(out)) >= 8,  # while the manifests are being merged
    ]
    for when in kill_instants:
        started = time.monotonic()
        run_and_kill(inputs, out, logs, when)
        assert "Traceback" not in (logs / "stderr").read_text(errors="replace")

    done_before = len(markers(out))
    processed, skipped = finish(inputs, out)
    assert skipped == done_before  # every unit recorded done is reused, none is lost
    assert processed + skipped == 8
    assert_same_manifests(out, reference)

    # The finished command is now a no-op.
    assert finish(inputs, out) == (0, 8)
    assert_same_manifests(out, reference)


@pytest.mark.parametrize("delay", [0.2, 1.0, 2.0])
def test_single_kill_then_resume(inputs, reference, tmp_path, delay):
    """One kill after a fixed delay, wherever in the run it lands."""
    out = tmp_path / "out"
    started = time.monotonic()
    run_and_kill(inputs, out, tmp_path / "logs", lambda: time.monotonic() - started > delay)
    done_before = len(markers(out))
    processed, skipped = finish(inputs, out)
    assert (processed, skipped) == (8 - done_before, done_before)
    assert_same_manifests(out, reference)
