"""Small helpers the benchmark scripts share: what machine this is, waiting for it to be idle, and
synthetic clips to measure on."""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from curate.config import SplitConfig
from curate.inputs import collect_inputs
from curate.manifest import ClipRef
from curate.stages.base import Unit
from curate.stages.split.stage import SplitStage
from curate.synthetic import edited_video, make_video

FPS = 24


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (or "unknown")."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def load_averages() -> str:
    """The 1, 5 and 15-minute load averages, for printing next to timings."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_rss_mb() -> float:
    """This process's peak resident set, MiB. On Linux from /proc (VmHWM): getrusage's ru_maxrss
    keeps what the process held before exec, so a child the benchmark starts would report at
    least its parent's size at the fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def time_stage(stage, units: list[Unit]) -> float:
    """Seconds of a clip stage's whole `process` on every unit; every clip must be scored (none
    may come back with the stage's error column set)."""
    started = time.perf_counter()
    for unit in units:
        tables, _ = stage.process(unit)
        scores = tables["scores"]
        assert scores.column(stage.error_column).null_count == scores.num_rows, stage.error_column
    return time.perf_counter() - started


def sync(device) -> None:
    """Wait for queued CUDA work on `device` (timings must include it); nothing on the CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def wait_for_idle(max_wait: float) -> None:
    """Wait (at most max_wait s) until the 1-minute load average drops under half a core."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline and os.getloadavg()[0] > 0.5:
        time.sleep(5)


def make_videos(folder: Path, count: int, width: int, height: int, processes: int = 1) -> list[Path]:
    """`count` synthetic edits (six shots each, H.264 with B-frames, `FPS`) in `folder`, rendered
    once and reused by later runs; the missing ones are rendered by `processes` processes at once."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"edit_seed{seed:03d}_{width}x{height}.mp4" for seed in range(count)]
    jobs = [(path, seed, width, height) for seed, path in enumerate(paths) if not path.exists()]
    if processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(processes, len(jobs))) as pool:
            list(pool.map(_render, jobs))
    else:
        for job in jobs:
            _render(job)
    return paths


def _render(job: tuple[Path, int, int, int]) -> None:
    path, seed, width, height = job
    shots, joins = edited_video(seed, num_shots=6, fps=FPS)
    make_video(path, shots, joins, width, height, FPS)


def make_shards(folder: Path, videos: int, width: int, height: int, short_side: int) -> Path:
    """Shards (8 samples each) of `videos` synthetic edits, split and packed at `short_side` by the
    real stages into `folder`, made once and reused; returns their index.json."""
    from curate.config import load_config
    from curate.manifest import OutputLayout
    from curate.runner import run_clip_stage, run_split

    layout = OutputLayout(folder / f"run_{width}x{height}_{videos}_{short_side}")
    if not (layout.shards / "index.json").exists():
        config = load_config(overrides=[f"pack.short_side={short_side}", "pack.max_shard_samples=8"])
        paths = make_videos(folder / "videos", videos, width, height)
        run_split(collect_inputs([str(p) for p in paths]), layout, config, None, progress=False)
        run_clip_stage("pack", layout, config, None, progress=False)
    return layout.shards / "index.json"


def make_clips(folder: Path, count: int, width: int, height: int) -> list[ClipRef]:
    """At least `count` clips of synthetic edits (H.264, `FPS`), rendering more videos into
    `folder` until there are enough (videos are reused by later runs), split by SplitStage."""
    names = [f.name for f in dataclasses.fields(ClipRef)]
    clips: list[ClipRef] = []
    seed = 0
    while len(clips) < count:
        path = make_videos(folder, seed + 1, width, height)[seed]
        video = collect_inputs([str(path)])[0]
        outputs, _ = SplitStage(SplitConfig()).process(Unit(video.video_id, video))
        rows = sorted(outputs["clips"].to_pylist(), key=lambda r: r["start_frame"])
        clips.extend(ClipRef(**{n: row[n] for n in names}) for row in rows)
        seed += 1
    return clips[:count]
