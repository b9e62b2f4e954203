"""Benchmark the text stage against the bare batched PP-OCRv4 detector forward on the same frames.

Run with the project's virtual environment:

    .venv/bin/python bench/text.py                       # 64 clips of 640x360, one onnxruntime thread
    .venv/bin/python bench/text.py --threads 2 --clips 32
    .venv/bin/python bench/text.py --wait-idle 120       # on a shared machine

What it measures, in one process and one run:
  (a) bare forward: `TextDetector.__call__` (normalisation + one session.run per batch) on the very
      frames (b) looks at, decoded beforehand at the detector's input size, `batch_size` frames per
      call. No decoding, no box reading, no overlay logic: the floor of any stage.
  (b) stage: `TextStage.process` on units of up to 32 real clips (the stage's unit size): decode the
      sampled frames with PyAV in the stage's thread, scale them to the input size, run the same
      detector, read boxes from the maps, tell overlay from scene text, build the score table.
  (c) decode only (for context): (b)'s decoding and scaling with no detector.
One local worker runs one such process on one core (`text.threads`, default 1); `--threads`
changes the detector's threads here. Everything runs on the CPU unless onnxruntime has CUDA and
--device says otherwise.

Inputs: synthetic edits (`curate.synthetic.edited_video`, H.264) at --width x --height, written once
under bench/out/text/ and reused, split in-process into clips; the first --clips clips are used.

Each repetition times (a), (b) and (c) back to back, so background load hits them alike; the table
shows medians over repetitions (after one untimed warm-up of each). The ratio of medians (b)/(a)
is the stage's efficiency against the bare detector (target >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "text"
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from common import cpu_model, load_averages, make_clips, time_stage, wait_for_idle  # noqa: E402  (bench/common.py)
from curate.config import TextConfig  # noqa: E402
from curate.framepool import decode_frames, frame_indices  # noqa: E402
from curate.pipeline import stage_spec  # noqa: E402
from curate.stages.base import Unit  # noqa: E402
from curate.stages.text.stage import TextStage  # noqa: E402


def decoded_frames(stage: TextStage, units: list[Unit]) -> list[np.ndarray]:
    """(c), and (a)'s inputs: every frame the stage looks at, at the detector's input size."""
    frames = []
    for unit in units:
        clips = unit.payload
        wanted = [frame_indices(clip, stage.positions(clip)) for clip in clips]
        for event in decode_frames(clips, wanted, stage.to_input, stage.config.decode_threads, 2 * stage.config.batch_size):
            assert event[0] == "frame", event
            frames.append(event[3])
    return frames


def time_bare(stage: TextStage, frames: list[np.ndarray]) -> float:
    """(a): the detector alone, in batches of `batch_size` frames of one size (as the stage batches)."""
    batch_size = stage.config.batch_size
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for frame in frames:
        by_shape.setdefault(frame.shape, []).append(frame)
    batches = [np.stack(group[i : i + batch_size]) for group in by_shape.values() for i in range(0, len(group), batch_size)]
    started = time.perf_counter()
    for batch in batches:
        stage.detector(batch)
    return time.perf_counter() - started


def time_decode(stage: TextStage, units: list[Unit]) -> float:
    started = time.perf_counter()
    decoded_frames(stage, units)
    return time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64, help="clips per repetition (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (default 3)")
    parser.add_argument("--threads", type=int, default=TextConfig().threads, help="onnxruntime intra-op threads")
    parser.add_argument("--batch-size", type=int, default=TextConfig().batch_size)
    parser.add_argument("--device", default="cpu", help="cpu (default), auto or cuda (onnxruntime-gpu)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S", help="wait up to S s for an idle machine")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    config = TextConfig(threads=args.threads, batch_size=args.batch_size, device=args.device)
    print(f"load before: {load_averages()}   {cpu_model()}, {os.cpu_count()} cores")
    clips = make_clips(OUT, args.clips, args.width, args.height)
    per_unit = stage_spec("text").units.max_clips
    units = [Unit(f"u{i}", clips[i : i + per_unit]) for i in range(0, len(clips), per_unit)]
    stage = TextStage(config)
    stage.setup()
    frames = decoded_frames(stage, units)
    print(
        f"PP-OCRv4 det on {stage.detector.provider} ({args.threads} threads), {len(clips)} clips of {args.width}x{args.height} "
        f"in {len(units)} units, {len(frames)} frames at {frames[0].shape[1]}x{frames[0].shape[0]}, batch {config.batch_size}"
    )
    time_bare(stage, frames), time_stage(stage, units), time_decode(stage, units)  # warm-up
    timings: dict[str, list[float]] = {"bare": [], "stage": [], "decode": []}
    for repeat in range(args.repeats):
        if args.wait_idle:
            wait_for_idle(args.wait_idle)
        timings["bare"].append(time_bare(stage, frames))
        timings["stage"].append(time_stage(stage, units))
        timings["decode"].append(time_decode(stage, units))
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in timings.items()) + f"   (load {load_averages()})")
    median = {k: statistics.median(v) for k, v in timings.items()}
    labels = {"bare": "(a) bare batched detector forward", "stage": "(b) TextStage.process", "decode": "(c) decode + scale only"}
    print("\n| measurement | median s | clips/s | frames/s |\n|---|---|---|---|")
    for key, label in labels.items():
        print(f"| {label} | {median[key]:.2f} | {len(clips) / median[key]:.2f} | {len(frames) / median[key]:.1f} |")
    print(f"\nratio (b)/(a) = {median['bare'] / median['stage']:.3f}  (target >= 0.9)")
    print(f"load after: {load_averages()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
