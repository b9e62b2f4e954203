"""Checkpoints: `RUN_DIR/checkpoints/step-N/state.pt`, complete or absent.

A checkpoint is written into a hidden temporary folder and renamed to `step-N` only once its file
is on disk, so a folder named `step-N` is always complete; killed mid-write, the run resumes from
the previous one. The newest `keep` are kept. Loading uses `torch.load(weights_only=True)`: a
checkpoint holds tensors and plain values only, never code.

A `step-N` that cannot be loaded all the same (damaged on disk or in a copy, or holding objects a
weights-only load refuses) is skipped for the one before it. torch's own message for a refused
file tells how to load it with `weights_only=False`, which would run whatever code the file
holds; it is never shown, only what is wrong in our words.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

_NAME = re.compile(r"step-(\d+)")


class UnreadableCheckpoints(Exception):
    """Checkpoints exist but none of them can be loaded; reported as one `error:` line."""


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


def latest(run_dir: Path, skipped: Callable[[list[str], Path], None] = lambda problems, used: None) -> dict | None:
    """The newest readable checkpoint's state, or None for a new run. Unreadable newer ones are
    passed over: `skipped(problems, used)` then gets one "step-N why" per checkpoint passed over
    and the folder loaded instead. Raises UnreadableCheckpoints when none can be loaded."""
    found = complete(run_dir)
    problems = []
    for folder in reversed(found):
        try:
            state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
            problems.append(f"{folder.name} {_why_unreadable(exc)}")
            continue
        if problems:
            skipped(problems, folder)
        return state
    if problems:
        raise UnreadableCheckpoints(
            f"no checkpoint in {run_dir / 'checkpoints'} can be read: {'; '.join(problems)}. Move them out of that "
            "folder to start the run afresh"
        )
    return None


def _why_unreadable(exc: Exception) -> str:
    """What is wrong with a checkpoint file, in a few words of ours (never torch's message)."""
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
        return "holds objects other than tensors and plain values (never loaded: they could run code)"
    if isinstance(exc, OSError):  # the file system's fault, not the file's
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return "is damaged or incomplete"  # torch's messages name zip archive internals, or nothing
