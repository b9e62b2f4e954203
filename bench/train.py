"""Benchmark the trainer: samples/s and data_wait_frac from video shards and from latent shards.

Run with the project's virtual environment:

    .venv/bin/python bench/train.py                               # tiny preset on the CPU
    .venv/bin/python bench/train.py --preset wan2.1-t2v-1.3b --frames 33 --size 480x832 --steps 60

Every run trains the same preset from the same shards in this process (`train.trainer.Trainer`),
with no samples and no checkpoints until the end, and reads its metrics.jsonl:
  (a) video shards, 0 loader workers: decoding happens in the training process;
  (b) video shards, --workers DataLoader workers (the default setup);
  (c) latent shards from `python -m train precompute` (timed too), 0 workers: no decoding and
      no encoders in the step.
Figures are means over the log windows after the first (which holds start-up and warm-up).
data_wait_frac is the share of wall time the step loop waited for its next batch; the ratio
(c)/(a) is the speed-up precomputed latents give.

Shards: synthetic edits at --source-size, split and packed at --short-side by the real stages into
bench/out/train/ (reused by later runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "train"
sys.path.insert(0, str(REPO))

from common import cpu_model, load_averages, make_shards  # noqa: E402  (bench/common.py)
from train.config import resolve  # noqa: E402
from train.precompute import precompute  # noqa: E402
from train.trainer import Trainer  # noqa: E402


def train(config, run: Path) -> dict:
    """Train `config` in a fresh run folder; the mean metrics of the windows after the first."""
    shutil.rmtree(run, ignore_errors=True)
    Trainer(config, run).run(progress=False)
    windows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]
    return {key: statistics.mean(w[key] for w in windows) for key in ("samples_per_s", "data_wait_frac", "loss")}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--frames", type=int, default=9, help="num_frames of the training clips")
    parser.add_argument("--size", default="32x32", metavar="HxW", help="training height x width")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of run (b)")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--source-size", default="640x360", metavar="WxH")
    parser.add_argument("--short-side", type=int, default=64, help="pack.short_side of the shards")
    parser.add_argument("--device", default="auto")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    print(f"load before: {load_averages()}   {cpu_model()}, {os.cpu_count()} cores")
    source_w, source_h = map(int, args.source_size.split("x"))
    index = make_shards(OUT, args.videos, source_w, source_h, args.short_side)
    height, width = map(int, args.size.split("x"))
    settings = [f"num_frames={args.frames}", f"height={height}", f"width={width}", f"batch_size={args.batch_size}",
                f"log_every={args.log_every}", f"checkpoint_every={args.steps}", "sample_prompts=[]", "tensorboard=false",
                "resampled=true", f"device={args.device}"]  # fmt: skip
    base = resolve(args.preset, None, settings, args.steps, str(index))
    print(f"{args.preset}: {args.frames} frames at {height}x{width}, batch {args.batch_size}, {args.steps} steps; shards {index}")

    latents = OUT / f"latents_{index.parent.parent.name}_{args.preset}_{args.frames}_{height}x{width}"
    started = time.perf_counter()
    stats = precompute(dataclasses.replace(base, num_workers=0), latents, progress=False)
    precompute_s = time.perf_counter() - started
    print(f"precompute: {stats.samples} samples in {precompute_s:.1f} s ({stats.shards_skipped} shards reused)")

    runs = {
        "(a) video shards, 0 workers": dataclasses.replace(base, num_workers=0),
        f"(b) video shards, {args.workers} workers": dataclasses.replace(base, num_workers=args.workers),
        "(c) latent shards, 0 workers": dataclasses.replace(base, num_workers=0, shards=str(latents / "index.json")),
    }
    results = {}
    for label, config in runs.items():
        results[label] = train(config, OUT / "run")
        print(
            f"  {label}: {results[label]['samples_per_s']:.1f} samples/s, "
            f"data_wait_frac {results[label]['data_wait_frac']:.3f}   (load {load_averages()})"
        )
    print("\n| run | samples/s | data_wait_frac |\n|---|---|---|")
    for label, result in results.items():
        print(f"| {label} | {result['samples_per_s']:.1f} | {result['data_wait_frac']:.3f} |")
    a, c = results["(a) video shards, 0 workers"], results["(c) latent shards, 0 workers"]
    print(f"\nratio (c)/(a) = {c['samples_per_s'] / a['samples_per_s']:.2f}  (samples/s from latent shards over video shards)")
    print(f"load after: {load_averages()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
