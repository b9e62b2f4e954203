"""Benchmark the aesthetic stage against the bare model forward on the same number of frames.

Run with the project's virtual environment:

    .venv/bin/python bench/aesthetic.py                          # tiny model, a quick check
    .venv/bin/python bench/aesthetic.py --model ViT-B-32          # real architecture, random weights
    .venv/bin/python bench/aesthetic.py --model ViT-L-14 --clips 16
    .venv/bin/python bench/aesthetic.py --model ViT-B-32 --wait-idle 120   # on a shared machine

What it measures, in one process and one run:
  (a) bare forward: the model wrapper's `forward` (image encoder + L2 normalisation + head) on
      random tensors already shaped and normalised as model input, `batch_size` frames per call,
      as many frames as (b) scores. No decoding, no preprocessing: the floor of any stage.
  (b) stage: `AestheticStage.process` on units of up to 64 real clips (the stage's own unit size):
      decode the clips' frames with PyAV in the stage's thread pool, resize/crop/normalise, run the
      same model, reduce per clip, build both output tables.
  (c) decode only (for context): (b)'s decode + preprocessing with no model.
Models load with `pretrained=""` and `head=""` (random weights, nothing downloaded): speed does
not depend on the weights' values. Everything runs on `--device` (default auto).

Inputs: synthetic edits (`curate.synthetic.edited_video`, H.264) at --width x --height, written once
under bench/out/aesthetic/ and reused, split in-process with SplitStage into clips; the first
--clips clips (by video, then time) are scored.

Each repetition times (a), (b) and (c) back to back, so background load hits them alike; the
table shows medians over repetitions (after one untimed warm-up of each). Two ratios of medians
(throughputs): (b)/(a), the stage's efficiency against the bare model (target >= 0.9), and
max((a),(c))/(b), how well decoding and the model overlap (when decoding alone takes longer than
the model, (a) is out of reach and 1.0 means the model is completely hidden behind decoding).
Load averages are printed before and after: on a busy machine the figures are only as good as the
machine is idle (--wait-idle S waits up to S seconds for the 1-minute load average to drop below
0.5 before each repetition).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "aesthetic"
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from common import load_averages, make_clips, sync, time_stage, wait_for_idle  # noqa: E402  (bench/common.py)
from curate.config import AestheticConfig  # noqa: E402
from curate.framepool import decode_frames, frame_indices  # noqa: E402
from curate.pipeline import stage_spec  # noqa: E402
from curate.stages.aesthetic import AestheticStage, frame_to_input  # noqa: E402
from curate.stages.base import Unit  # noqa: E402


def time_bare(stage: AestheticStage, num_frames: int) -> float:
    """(a): the model forward alone on `num_frames` preprocessed random frames."""
    model, batch_size = stage.model, stage.config.batch_size
    prep = model.preprocess
    batch = torch.randn(batch_size, 3, prep.height, prep.width, device=model.device)
    sync(model.device)
    started = time.perf_counter()
    for first in range(0, num_frames, batch_size):
        embeddings, scores = model.forward(batch[: min(batch_size, num_frames - first)])
        scores.cpu()  # the stage reads every result back, so this does too
    sync(model.device)
    return time.perf_counter() - started


def time_decode(stage: AestheticStage, units: list[Unit]) -> float:
    """(c): decoding and preprocessing alone, through the stage's own thread pool."""
    started = time.perf_counter()
    for unit in units:
        clips = unit.payload
        wanted = [frame_indices(c, stage.config.frame_positions) for c in clips]
        prep, config = stage.model.preprocess, stage.config
        # prep bound as a default: the closure is the one this iteration's decode uses
        convert = lambda frame, upright, prep=prep: frame_to_input(frame, prep, upright)  # noqa: E731
        for _ in decode_frames(clips, wanted, convert, config.decode_threads, 2 * config.batch_size):
            pass
    return time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (default), or an open_clip architecture such as ViT-B-32 or ViT-L-14")
    parser.add_argument("--clips", type=int, help="clips per repetition (default: 128 tiny, 64 ViT-B-32, else 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (default 3)")
    parser.add_argument("--batch-size", type=int, default=AestheticConfig().batch_size)
    parser.add_argument("--decode-threads", type=int, default=AestheticConfig().decode_threads)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S", help="wait up to S s for an idle machine")
    return parser.parse_args()


def report(timings: dict[str, list[float]], clips: int, frames: int) -> None:
    median = {k: statistics.median(v) for k, v in timings.items()}
    labels = {
        "bare": "(a) bare forward (encoder + head)",
        "stage": "(b) AestheticStage.process",
        "decode": "(c) decode + preprocess only",
    }
    print("\n| measurement | median s | clips/s | frames/s |\n|---|---|---|---|")
    for key, label in labels.items():
        print(f"| {label} | {median[key]:.2f} | {clips / median[key]:.1f} | {frames / median[key]:.1f} |")
    print(f"\nratio (b)/(a) = {median['bare'] / median['stage']:.3f}  (target >= 0.9)")
    # When decoding alone takes longer than the model, (a) is out of reach: perfect overlap is max((a), (c)).
    print(f"overlap max((a),(c))/(b) = {max(median['bare'], median['decode']) / median['stage']:.3f}  (1.0 = perfect)")


def main() -> int:
    args = parse_args()
    count = args.clips or {"tiny": 128, "ViT-B-32": 64}.get(args.model, 16)
    config = AestheticConfig(
        model=args.model,
        pretrained="",
        head="",
        batch_size=args.batch_size,
        decode_threads=args.decode_threads,
        device=args.device,
    )  # random weights and head: speed does not depend on their values, and nothing is downloaded
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"load before: {load_averages()}   {cpu}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    clips = make_clips(OUT, count, args.width, args.height)
    per_unit = stage_spec("aesthetic").units.max_clips
    units = [Unit(f"u{i}", clips[i : i + per_unit]) for i in range(0, len(clips), per_unit)]
    stage = AestheticStage(config)
    stage.setup()
    frames = len(clips) * len(config.frame_positions)
    model = stage.model
    print(
        f"model {args.model} on {model.device} ({model.preprocess.height}px input, {model.dim}-d), {len(clips)} clips "
        f"of {args.width}x{args.height} in {len(units)} units, {frames} frames, batch {config.batch_size}, "
        f"{config.decode_threads} decode threads"
    )

    time_bare(stage, frames), time_stage(stage, units), time_decode(stage, units)  # warm-up
    timings: dict[str, list[float]] = {"bare": [], "stage": [], "decode": []}
    for repeat in range(args.repeats):
        if args.wait_idle:
            wait_for_idle(args.wait_idle)
        timings["bare"].append(time_bare(stage, frames))
        timings["stage"].append(time_stage(stage, units))
        timings["decode"].append(time_decode(stage, units))
        done = ", ".join(f"{k} {v[-1]:.2f} s" for k, v in timings.items())
        print(f"  repeat {repeat + 1}: {done}   (load {load_averages()})")
    report(timings, len(clips), frames)
    print(f"load after: {load_averages()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
