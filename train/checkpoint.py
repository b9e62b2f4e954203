"""Checkpoints: `RUN_DIR/checkpoints/step-N/state.pt`, complete or absent.

A checkpoint is written into a hidden temporary folder and renamed to `step-N` only once its file
is on disk, so a folder named `step-N` is always complete; killed mid-write, the run resumes from
the previous one. The newest `keep` are kept. Loading uses `torch.load(weights_only=True)`: a
checkpoint holds tensors and plain values only, never code.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

_NAME = re.compile(r"step-(\d+)")


def save(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write `state` as checkpoint `step`, then remove all but the newest `keep`."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    tmp = folder / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    shutil.rmtree(final, ignore_errors=True)  # a re-save of the same step (rare: SIGTERM right after one)
    os.replace(tmp, final)
    for old in complete(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def complete(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first."""
    folder = run_dir / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step-*") if (m := _NAME.fullmatch(p.name)) and (p / "state.pt").exists()]
    return [p for _, p in sorted(found)]


def latest(run_dir: Path) -> dict | None:
    """The newest checkpoint's state, or None for a new run."""
    found = complete(run_dir)
    if not found:
        return None
    return torch.load(found[-1] / "state.pt", map_location="cpu", weights_only=True)
