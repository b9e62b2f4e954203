"""Benchmark `curate pack` against a bare PyAV decode + encode of the same frames.

Run with the project's virtual environment:

    .venv/bin/python bench/pack.py                       # 640x360 sources packed at a 256-pixel short side
    .venv/bin/python bench/pack.py --width 1280 --height 720 --videos 3 --repeats 3

What it measures, in one process and one run, on the same clips:
  (a) bare: for each source video, for each kept clip in time order, seek to the keyframe before
      the clip, decode to its first frame, then decode its frames and encode them (scaled by
      FFmpeg to the same size, libx264 with the same crf/preset/threads) into an in-memory mp4.
      One process, no manifests, no tar: the floor of any packer.
  (b) pack: `run_clip_stage("pack", ...)` as `python -m curate pack --workers 1` runs it: one
      worker process per video unit (spawned, so its start-up counts), encoded samples stored as
      unit parts, then the shard planner writes the tar shards and the wids index and
      clips.parquet gets its shard column.
  (c) pack with the default workers (one per core), for context.
Both (a) and (b) encode every kept clip once. The ratio (a)/(b) of medians is pack's clips/s over
bare's (target >= 0.8); MB/s counts the mp4 bytes produced.

Inputs: synthetic edits (`curate.synthetic.edited_video`, H.264 with B-frames) at --width x
--height, 24 fps, rendered once under bench/out/pack/ and split with the real split stage.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "pack"
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from common import cpu_model, load_averages, make_videos, wait_for_idle  # noqa: E402  (bench/common.py)
from curate.config import load_config  # noqa: E402
from curate.inputs import collect_inputs  # noqa: E402
from curate.manifest import OutputLayout  # noqa: E402
from curate.runner import run_clip_stage, run_split  # noqa: E402
from curate.stages.pack.encoding import output_size  # noqa: E402


def bare(clips: list[dict], config) -> tuple[float, int]:
    """(a): (seconds, mp4 bytes)."""
    started = time.perf_counter()
    total = 0
    by_path: dict[str, list[dict]] = {}
    for clip in clips:
        by_path.setdefault(clip["path"], []).append(clip)
    for path, group in by_path.items():
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for clip in sorted(group, key=lambda c: c["start_frame"]):
                total += len(_bare_clip(container, stream, clip, config))
    return time.perf_counter() - started, total


def _bare_clip(container, stream, clip: dict, config) -> bytes:
    half = 0.5 / clip["fps"]
    container.seek(int((clip["start_s"] - half) / stream.time_base), stream=stream, backward=True)
    width, height = output_size(clip["width"], clip["height"], config.short_side, None)[2:]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        rate = Fraction(clip["fps"]).limit_denominator(1001)
        encoder = out.add_stream("libx264", rate=rate)
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.codec_context.options = {"crf": str(config.crf), "preset": config.preset}
        encoder.codec_context.thread_count = config.encode_threads
        count = 0
        for frame in container.decode(stream):
            if frame.time < clip["start_s"] - half:
                continue
            if count == clip["num_frames"]:
                break
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
            scaled.pts, scaled.time_base = count, 1 / rate
            out.mux(encoder.encode(scaled))
            count += 1
        out.mux(encoder.encode(None))
    return buffer.getvalue()


def pack(layout: OutputLayout, config, workers: int) -> tuple[float, int]:
    """(b)/(c): (seconds, mp4 bytes), from a folder with no pack work done."""
    for work in layout.work.glob("pack-*"):
        shutil.rmtree(work)
    shutil.rmtree(layout.shards, ignore_errors=True)
    started = time.perf_counter()
    stats = run_clip_stage("pack", layout, config, workers, progress=False)
    seconds = time.perf_counter() - started
    assert not stats.failed, stats.failed
    clips = pq.read_table(layout.clips, columns=["pack_mp4_bytes", "shard"]).to_pandas()
    return seconds, int(clips[clips.shard.notna()].pack_mp4_bytes.sum())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="overrides", nargs="+", default=["pack.short_side=256"], metavar="KEY=VALUE")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    print(f"load before: {load_averages()}   {cpu_model()}, {os.cpu_count()} cores")
    config = load_config(overrides=args.overrides)
    paths = make_videos(OUT, args.videos, args.width, args.height)
    layout = OutputLayout(OUT / f"run_{args.width}x{args.height}_{args.videos}")
    run_split(collect_inputs([str(p) for p in paths]), layout, config, None, progress=False)
    clips = pq.read_table(layout.clips).to_pylist()
    frames = sum(c["num_frames"] for c in clips)
    print(f"{len(clips)} clips, {frames} frames of {args.width}x{args.height} -> short side {config.pack.short_side}, "
          f"crf {config.pack.crf}, preset {config.pack.preset}, {config.pack.encode_threads} x264 thread(s)")  # fmt: skip
    bare(clips[:2], config.pack), pack(layout, config, 1)  # warm-up
    timings: dict[str, list[float]] = {"bare": [], "pack": [], "pack_all": []}
    sizes: dict[str, int] = {}
    for repeat in range(args.repeats):
        if args.wait_idle:
            wait_for_idle(args.wait_idle)
        for name, run in (("bare", lambda: bare(clips, config.pack)), ("pack", lambda: pack(layout, config, 1)),
                          ("pack_all", lambda: pack(layout, config, None))):  # fmt: skip
            seconds, sizes[name] = run()
            timings[name].append(seconds)
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in timings.items()) + f"   (load {load_averages()})")
    median = {k: statistics.median(v) for k, v in timings.items()}
    labels = {
        "bare": "(a) bare PyAV decode + encode",
        "pack": "(b) curate pack --workers 1",
        "pack_all": "(c) curate pack (one worker per core)",
    }
    print("\n| measurement | median s | clips/s | MB/s of mp4 |\n|---|---|---|---|")
    for key, label in labels.items():
        print(f"| {label} | {median[key]:.2f} | {len(clips) / median[key]:.2f} | {sizes[key] / 1e6 / median[key]:.2f} |")
    print(f"\nratio (a)/(b) = {median['bare'] / median['pack']:.3f}  (pack clips/s over bare clips/s, one process each; target >= 0.8)")
    print(f"load after: {load_averages()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
