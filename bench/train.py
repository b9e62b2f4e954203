"""Benchmark the trainer: samples/s, data_wait_frac and peak memory per configuration, from the same
shards in one run: fixed size against buckets, full fine-tuning against LoRA, loader workers, and
latent shards.

Run with the project's virtual environment:

    .venv/bin/python bench/train.py                               # tiny preset on the CPU
    .venv/bin/python bench/train.py --preset wan2.1-t2v-1.3b --frames 33 --size 480x832 --steps 60

Every configuration (`configurations()`: a label and its settings) trains the same preset from the
same shards in a fresh child process (`train.trainer.Trainer`, no samples, no checkpoints until the
end), so each reports its own peak memory: the training process's peak resident set (its DataLoader
workers not included) and, on CUDA, torch's peak allocated GPU memory. The first configuration is
the baseline every ratio divides by. A configuration whose setting this trainer does not have
(`lora_rank` before LoRA lands) is skipped with a note.
Figures are means over the log windows after the first (which holds start-up and warm-up).
data_wait_frac is the share of wall time the step loop waited for its next batch.

Shards: synthetic edits, half landscape at --source-size and half portrait (its transpose), split
and packed at --short-side by the real stages into bench/out/train/ (reused by later runs). With
a fixed size the portrait clips are centre-cropped to the landscape training size; with buckets
they train at the portrait bucket of the same pixel count, so the step costs the same and the
difference is the loader's.
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
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "train"
sys.path.insert(0, str(REPO))

from common import cpu_model, load_averages, make_shards, peak_rss_mb  # noqa: E402  (bench/common.py)
from curate.errors import ConfigError  # noqa: E402
from train.config import resolve  # noqa: E402
from train.precompute import precompute  # noqa: E402


def configurations(workers: int, lora_rank: int, latent_shards: str) -> list[tuple[str, list[str]]]:
    """The runs, as (label, --set settings over the common ones); the first is the baseline.
    LoRA is `lora_rank=N` (train/lora.py); full fine-tuning is the default (no lora_rank)."""
    return [
        ("full, fixed size, 0 workers", ["num_workers=0"]),
        (f"full, fixed size, {workers} workers", [f"num_workers={workers}"]),
        ("full, buckets, 0 workers", ["num_workers=0", "buckets=true"]),
        (f"full, buckets, {workers} workers", [f"num_workers={workers}", "buckets=true"]),
        (f"LoRA rank {lora_rank}, fixed size, 0 workers", ["num_workers=0", f"lora_rank={lora_rank}"]),
        (f"LoRA rank {lora_rank}, buckets, 0 workers", ["num_workers=0", "buckets=true", f"lora_rank={lora_rank}"]),
        ("full, latent shards, 0 workers", ["num_workers=0", f"shards={latent_shards}"]),
    ]


def train(preset: str, settings: list[str], steps: int, run: Path) -> dict:
    """Train in a fresh run folder (in a child process: see `main`); the mean metrics of the
    windows after the first, and this process's peak memory."""
    import torch

    from train.trainer import Trainer

    config = resolve(preset, None, settings, steps, None)
    shutil.rmtree(run, ignore_errors=True)
    trainer = Trainer(config, run)
    trainer.run(progress=False)
    windows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]
    result = {key: statistics.mean(w[key] for w in windows) for key in ("samples_per_s", "data_wait_frac", "loss")}
    result["buckets"] = windows[-1]["bucket_counts"]
    result["peak_rss_mb"] = peak_rss_mb()
    if trainer.device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(trainer.device) / 2**20
    return result


def in_child(preset: str, settings: list[str], steps: int, run: Path) -> dict:
    """`train` in a new process of its own, so its peak memory is its configuration's alone."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(train, preset, settings, steps, run).result()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--frames", type=int, default=9, help="num_frames of the training clips")
    parser.add_argument("--size", default="48x80", metavar="HxW", help="training height x width (the bucket pixel budget)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the runs with workers")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--videos", type=int, default=4, help="synthetic edits of each orientation")
    parser.add_argument("--source-size", default="640x360", metavar="WxH", help="landscape source size (portrait: transposed)")
    parser.add_argument("--short-side", type=int, default=64, help="pack.short_side of the shards")
    parser.add_argument("--device", default="auto")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    print(f"load before: {load_averages()}   {cpu_model()}, {os.cpu_count()} cores")
    source_w, source_h = map(int, args.source_size.split("x"))
    indexes = [make_shards(OUT, args.videos, w, h, args.short_side) for w, h in ((source_w, source_h), (source_h, source_w))]
    shards = ",".join(map(str, indexes))
    height, width = map(int, args.size.split("x"))
    common = [f"num_frames={args.frames}", f"height={height}", f"width={width}", f"batch_size={args.batch_size}",
              f"log_every={args.log_every}", f"checkpoint_every={args.steps}", "sample_prompts=[]", "tensorboard=false",
              "resampled=true", f"device={args.device}", f"shards={shards}"]  # fmt: skip
    print(f"{args.preset}: {args.frames} frames at {height}x{width}, batch {args.batch_size}, {args.steps} steps; shards {shards}")

    # One latent folder per orientation: their shards have the same names.
    latents = [OUT / f"latents_{i.parent.parent.name}_{args.preset}_{args.frames}_{height}x{width}" for i in indexes]
    started = time.perf_counter()
    for index, folder in zip(indexes, latents, strict=True):
        config = resolve(args.preset, None, common, None, str(index))
        stats = precompute(dataclasses.replace(config, num_workers=0), folder, progress=False)
        print(f"precompute: {stats.samples} samples ({stats.shards_skipped} shards reused), {time.perf_counter() - started:.1f} s so far")
    latent_shards = ",".join(str(folder / "index.json") for folder in latents)

    results = {}
    for label, settings in configurations(args.workers, args.lora_rank, latent_shards):
        try:
            resolve(args.preset, None, common + settings, args.steps, None)
        except ConfigError as exc:  # a setting this trainer does not have yet (lora_rank)
            print(f"  {label}: skipped: {str(exc).split(' (known:')[0]}")
            continue
        results[label] = in_child(args.preset, common + settings, args.steps, OUT / "run")
        result = results[label]
        gpu = f", GPU peak {result['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in result else ""
        print(f"  {label}: {result['samples_per_s']:.1f} samples/s, data_wait_frac {result['data_wait_frac']:.3f}, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB{gpu}; buckets {result['buckets']}   (load {load_averages()})")  # fmt: skip
    print_table(results)
    print(f"\nload after: {load_averages()}")
    return 0


def print_table(results: dict[str, dict]) -> None:
    """The results as a markdown table, samples/s also as a ratio to the first (the baseline)."""
    baseline = next(iter(results.values()))["samples_per_s"]
    gpu = any("peak_gpu_mb" in r for r in results.values())
    print("\n| run | samples/s | ratio | data_wait_frac | peak RSS MB |" + (" GPU peak MB |" if gpu else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|" if gpu else ""))
    for label, r in results.items():
        speed = f"{r['samples_per_s']:.1f} | {r['samples_per_s'] / baseline:.2f}"
        row = f"| {label} | {speed} | {r['data_wait_frac']:.3f} | {r['peak_rss_mb']:.0f} |"
        print(row + (f" {r.get('peak_gpu_mb', 0):.0f} |" if gpu else ""))


if __name__ == "__main__":
    raise SystemExit(main())
