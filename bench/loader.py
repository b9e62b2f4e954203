"""Benchmark the trainer's shard loader against a bare in-memory PyAV decode of the same samples.

Run with the project's virtual environment:

    .venv/bin/python bench/loader.py                              # 640x360 sources packed at 256p
    .venv/bin/python bench/loader.py --frames 33 --stride 2 --size 256 --repeats 5

What it measures, in one process and one run, over the same shards (one epoch):
  (a) bare: read each tar with the standard library, and for each sample decode its mp4 from
      memory with PyAV up to the last frame the loader would take, converting those frames with
      the same resize-and-crop. One process, no shuffling, no batching.
  (b) loader, 0 workers: `train.data.make_loader` iterated in this process (shard order,
      shuffle buffer, decode, batching).
  (c) loader, 2 workers (the default): the same through DataLoader workers, for context
      (start-up included).
The ratio (a)/(b) of medians is the loader's clips/s over bare decoding's (target >= 0.9).

Shards: synthetic edits at --width x --height (H.264 with B-frames, 24 fps) split and packed with
the real stages into bench/out/loader/ (reused by later runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import statistics
import sys
import tarfile
import time
import zlib
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "loader"
sys.path.insert(0, str(REPO))

import av  # noqa: E402

from common import cpu_model, load_averages, make_shards, wait_for_idle  # noqa: E402  (bench/common.py)
from curate.picture import Upright  # noqa: E402
from train.config import DataConfig  # noqa: E402
from train.data import _resize_crop, frame_positions, make_loader, shard_urls  # noqa: E402


def bare(config: DataConfig) -> int:
    """(a): decode every sample's needed frames; returns the samples decoded."""
    count = 0
    for url in shard_urls(config.shards):
        with tarfile.open(url) as tar:
            for member in tar:
                if not member.name.endswith(".mp4"):
                    continue
                key = member.name.rsplit(".", 1)[0]
                with av.open(io.BytesIO(tar.extractfile(member).read())) as container:
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    positions = frame_positions(
                        stream.frames, config.num_frames, float(config.frame_stride), zlib.crc32(key.encode()) ^ config.seed
                    )
                    if positions is None:
                        continue
                    wanted, upright = set(positions), Upright(stream)
                    for index, frame in enumerate(container.decode(stream)):
                        if index in wanted:
                            _resize_crop(frame, upright, config.width, config.height)
                        if index >= positions[-1]:
                            break
                count += 1
    return count


def loader(config: DataConfig) -> int:
    return sum(len(batch["keys"]) for batch in make_loader(config))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--short-side", type=int, default=256, help="pack.short_side of the shards")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="training height and width")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    print(f"load before: {load_averages()}   {cpu_model()}, {os.cpu_count()} cores")
    index = make_shards(OUT, args.videos, args.width, args.height, args.short_side)
    config = DataConfig(shards=str(index), num_frames=args.frames, frame_stride=args.stride, height=args.size,
                        width=args.size, batch_size=args.batch_size, num_workers=0, shuffle_buffer=16)  # fmt: skip
    workers = dataclasses.replace(config, num_workers=2)
    print(
        f"{len(shard_urls(str(index)))} shards; {args.frames} frames at stride {args.stride}, "
        f"{args.size}x{args.size}, batch {args.batch_size}"
    )
    bare(config), loader(config)  # warm-up
    timings: dict[str, list[float]] = {"bare": [], "loader": [], "workers": []}
    counts: dict[str, int] = {}
    for repeat in range(args.repeats):
        if args.wait_idle:
            wait_for_idle(args.wait_idle)
        for name, run in (("bare", lambda: bare(config)), ("loader", lambda: loader(config)), ("workers", lambda: loader(workers))):
            started = time.perf_counter()
            counts[name] = run()
            timings[name].append(time.perf_counter() - started)
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in timings.items()) + f"   (load {load_averages()})")
    assert counts["bare"] == counts["loader"] == counts["workers"], counts  # the same samples on every side
    median = {k: statistics.median(v) for k, v in timings.items()}
    labels = {"bare": "(a) bare in-memory PyAV decode", "loader": "(b) train.data loader, 0 workers", "workers": "(c) loader, 2 workers"}
    print("\n| measurement | median s | clips/s |\n|---|---|---|")
    for key, label in labels.items():
        print(f"| {label} | {median[key]:.2f} | {counts[key] / median[key]:.1f} |")
    print(f"\nratio (a)/(b) = {median['bare'] / median['loader']:.3f}  (loader clips/s over bare decode clips/s; target >= 0.9)")
    print(f"load after: {load_averages()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
