"""Benchmark the motion stage against bare decoding of the same frames, in one process.

Run from anywhere with the project's virtual environment:

    .venv/bin/python bench/motion.py              # synthetic 1280x720 inputs, 3 interleaved repetitions
    .venv/bin/python bench/motion.py --real       # also the real footage in .realdata/ when present
    .venv/bin/python bench/motion.py --repeat 5 --wait-idle 120   # on a shared machine

What it measures
----------------
1. Inputs. Three synthetic edits (`curate.synthetic.edited_video(seed)`: pans, fast pans, moving
   objects, stills, dissolves and fades) rendered at 1280x720, 24 fps, H.264 (libx264 veryfast,
   B-frames), written once under bench/out/motion/ (git-ignored) and reused. With --real, every
   video in .realdata/ as well. Each video is split by `SplitStage` (default config) once; its
   clips, cached next to the inputs, are what both sides read.

2. Throughput, one video at a time in this process (one core's view, as in one pool worker):
     (a) bare decode: `open_video` (thread_type AUTO), then `iter_spans` over the clips' spans
         with the same seeks, touching nothing but the frame objects: the floor of any stage
         that must decode the clips' frames with PyAV.
     (b) motion: `MotionStage(MotionConfig()).score(clips)`: the same spans with motion-vector
         export, luma jump grids, the vector maths (or the flow fallback) and the results.
   The two are interleaved, (a) then (b) for every video, and the whole round is repeated
   (3 times by default) so that background load hits both alike; the table reports the median
   round. The ratio is motion frames/s over bare-decode frames/s (target >= 0.75).

3. Context: date, git commit, CPU, load average before and after, versions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import cpu_model, wait_for_idle  # noqa: E402  (bench/common.py)
from curate.config import MotionConfig, SplitConfig  # noqa: E402
from curate.inputs import collect_inputs  # noqa: E402
from curate.manifest import ClipRef  # noqa: E402
from curate.stages.base import Unit  # noqa: E402
from curate.stages.motion.stage import MotionStage  # noqa: E402
from curate.stages.split.stage import SplitStage  # noqa: E402
from curate.synthetic import edited_video, make_video  # noqa: E402
from curate.videoio import iter_spans, open_video  # noqa: E402

OUT = REPO / "bench" / "out" / "motion"
REAL = REPO / ".realdata"
SEEDS = (1, 2, 4)
SIZE, FPS = (1280, 720), 24


def synthetic_inputs() -> list[Path]:
    """The synthetic edits, rendered on first use."""
    paths = []
    for seed in SEEDS:
        path = OUT / f"edit_seed{seed:03d}_{SIZE[0]}x{SIZE[1]}.mp4"
        if not path.exists():
            print(f"rendering {path.name} ...", flush=True)
            shots, joins = edited_video(seed, num_shots=6, fps=FPS)
            make_video(path, shots, joins, *SIZE, fps=FPS)
        paths.append(path)
    return paths


def real_inputs() -> list[Path]:
    if not REAL.is_dir():
        print(f"--real: {REAL} not found, synthetic inputs only")
        return []
    return sorted(p for p in REAL.iterdir() if p.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov", ".webm"))


def clips_of(path: Path) -> list[ClipRef]:
    """The split stage's clips of one video, cached by file size and modification time."""
    stat = path.stat()
    cache = OUT / "clips" / f"{path.name}.{stat.st_size}.{stat.st_mtime_ns}.json"
    if cache.exists():
        return [ClipRef(**row) for row in json.loads(cache.read_text())]
    video = collect_inputs([str(path)])[0]
    outputs, _ = SplitStage(SplitConfig()).process(Unit(video.video_id, video))
    fields = ClipRef.__dataclass_fields__
    clips = [ClipRef(**{k: row[k] for k in fields}) for row in outputs["clips"].to_pylist()]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([asdict(c) for c in clips]))
    return clips


def bare_decode(clips: list[ClipRef]) -> int:
    """Decode exactly the clips' frames the way the stage reads them, doing nothing with them."""
    container, stream, info = open_video(clips[0].path)
    try:
        return sum(1 for _ in iter_spans(container, stream, [c.span for c in clips], clips[0].fps or info.fps))
    finally:
        container.close()


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def machine() -> dict[str, str]:
    import av
    import cv2
    import numpy

    cpu = cpu_model()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "curate"], cwd=REPO, capture_output=True, text=True).stdout
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "code": f"vidcurate at {commit or 'unknown'}" + (" + uncommitted changes in curate/" if dirty.strip() else ""),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "python": f"{platform.python_version()} ({platform.system()} {platform.release()})",
        "libs": f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), numpy {numpy.__version__}, opencv {cv2.__version__}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true", help="also benchmark the videos in .realdata/")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (the median is reported)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S", help="wait up to S s for a quiet machine before each round")
    args = parser.parse_args(argv)

    paths = synthetic_inputs() + (real_inputs() if args.real else [])
    videos = [(p, clips_of(p)) for p in paths]
    videos = [(p, c) for p, c in videos if c]
    stage = MotionStage(MotionConfig())
    info = machine()
    load_before = os.getloadavg()

    rounds = []  # per round: {video name: (bare seconds, motion seconds, frames, methods)}
    for round_index in range(args.repeat):
        if args.wait_idle:
            wait_for_idle(args.wait_idle)
        times = {}
        for path, clips in videos:
            bare_s, frames = timed(bare_decode, clips)
            motion_s, rows = timed(stage.score, clips)
            methods = sorted({r.get("motion_method") or "error" for r in rows})
            times[path.name] = (bare_s, motion_s, frames, methods)
        rounds.append(times)
        total_bare = sum(t[0] for t in times.values())
        total_motion = sum(t[1] for t in times.values())
        print(
            f"round {round_index + 1}: bare {total_bare:.2f} s, motion {total_motion:.2f} s, ratio {total_bare / total_motion:.3f}",
            flush=True,
        )

    print()
    for key, value in info.items():
        print(f"{key:7s} {value}")
    print(
        f"load    {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(1-minute average; the figures are only as good as the machine is idle)"
    )
    print()
    print("| video | clips | frames | method | bare decode frames/s | motion frames/s | motion clips/s | ratio |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    ratios = []
    for path, clips in videos:
        bare = statistics.median(r[path.name][0] for r in rounds)
        motion = statistics.median(r[path.name][1] for r in rounds)
        frames, methods = rounds[0][path.name][2], "/".join(rounds[0][path.name][3])
        ratios.append(bare / motion)
        print(
            f"| {path.name} | {len(clips)} | {frames} | {methods} | {frames / bare:.0f} | {frames / motion:.0f} "
            f"| {len(clips) / motion:.1f} | {bare / motion:.3f} |"
        )
    frames = sum(rounds[0][p.name][2] for p, _ in videos)
    clips = sum(len(c) for _, c in videos)
    bare = statistics.median(sum(t[0] for t in r.values()) for r in rounds)
    motion = statistics.median(sum(t[1] for t in r.values()) for r in rounds)
    print(
        f"| **all** | {clips} | {frames} | | {frames / bare:.0f} | {frames / motion:.0f} | {clips / motion:.1f} | **{bare / motion:.3f}** |"
    )
    print()
    print(f"ratio motion/bare-decode (median of {args.repeat} rounds, all videos): {bare / motion:.3f} (target >= 0.75)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
