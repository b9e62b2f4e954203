"""Benchmark the Ray executor against the local process pool on `curate split`.

Run with the project's virtual environment (Ray installed: `pip install -e '.[dev]'`):

    .venv/bin/python bench/scale.py                   # 12 videos at 640x360, 1 and 2 workers, 3 repeats
    .venv/bin/python bench/scale.py --videos 24 --repeats 5 --width 1280 --height 720

What it measures, in one run, on the same inputs, for W = 1 and 2 workers:
  (a) local:      python -m curate split FILES --out FRESH --workers W --quiet
  (b) ray:        the same with --executor ray: the command starts a local Ray instance with W CPUs
                  and stops it at the end (what one machine pays for Ray).
  (c) ray joined: the same with --executor ray --ray-address ADDR --workers W, joining a Ray
                  instance this script started beforehand (what a cluster pays per command once
                  Ray is up: Ray's start-up is not counted).
Two times per command: "command s" is the whole process's wall time (interpreter start, Ray
start/stop, manifests) measured around subprocess.run; "stage s" is the time the command itself
reports for the split stage (units run + manifests merged, no start-up). Videos/s and frames/s
use the stage time; each cell is the median of the repeats (interleaved, so background load hits
every variant alike), with the best in brackets. Ratios are Ray over local throughput (>1: Ray is
faster). The manifests of every command are checked to be identical to the first local run's.

Inputs: synthetic edits (`curate.synthetic.edited_video`, six shots, H.264 with B-frames, 24 fps)
rendered once under bench/out/scale/ by bench/common.py's make_videos.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "scale"
sys.path.insert(0, str(REPO))  # curate, when run without installing; bench/common.py is beside this file

import pandas as pd  # noqa: E402

from common import cpu_model, load_averages, make_videos, wait_for_idle  # noqa: E402  (bench/common.py)

PYTHON = sys.executable
STAGE_LINE = re.compile(r"split: (\d+) videos processed, \d+ already done, ([\d.]+) s")


def split_command(files: list[Path], out: Path, workers: int, variant: str, address: str | None) -> list[str]:
    command = [PYTHON, "-m", "curate", "split", *map(str, files), "--out", str(out), "--workers", str(workers), "--quiet"]
    if variant != "local":
        command += ["--executor", "ray"]
    if variant == "ray joined":
        command += ["--ray-address", address]
    return command


def run_once(files: list[Path], workers: int, variant: str, address: str | None) -> tuple[float, float, pd.DataFrame, pd.DataFrame]:
    """One command on a fresh output folder: (command s, stage s, videos manifest, clips manifest)."""
    out = Path(tempfile.mkdtemp(prefix="scale-", dir=OUT))
    try:
        started = time.perf_counter()
        result = subprocess.run(split_command(files, out, workers, variant, address), check=False, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        match = STAGE_LINE.search(result.stdout)
        if result.returncode != 0 or match is None or int(match.group(1)) != len(files):
            raise SystemExit(f"{variant} --workers {workers} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
        videos = pd.read_parquet(out / "manifests" / "videos.parquet")
        clips = pd.read_parquet(out / "manifests" / "clips.parquet")
        return seconds, float(match.group(2)), videos, clips
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=12, help="synthetic videos in the batch (default 12)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--wait-idle", type=float, default=0, metavar="S", help="wait up to S s for the machine to be idle before each repeat"
    )
    args = parser.parse_args()

    import ray

    from curate.ray_executor import connect

    OUT.mkdir(parents=True, exist_ok=True)
    files = make_videos(OUT, args.videos, args.width, args.height)
    cores = os.cpu_count() or 1
    print(f"# curate split: local executor vs Ray ({datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})")
    print(f"machine  {cpu_model()}, {cores} cores; Ray {ray.__version__}; load {load_averages()} (1/5/15 min) before")

    connect(num_cpus=cores)  # the instance that "ray joined" commands join
    address = ray.get_runtime_context().gcs_address
    worker_counts = [w for w in (1, 2) if w <= cores] or [1]
    variants = ["local", "ray", "ray joined"]
    times: dict[tuple[str, int], list[tuple[float, float]]] = {(v, w): [] for v in variants for w in worker_counts}
    reference = None
    try:
        run_once(files[:1], 1, "local", address)  # warm the page cache and Python's bytecode cache
        for repeat in range(args.repeats):
            wait_for_idle(args.wait_idle)
            for workers in worker_counts:
                for variant in variants:
                    command_s, stage_s, videos, clips = run_once(files, workers, variant, address)
                    if reference is None:
                        reference = (videos, clips)
                    pd.testing.assert_frame_equal(videos, reference[0])
                    pd.testing.assert_frame_equal(clips, reference[1])
                    times[variant, workers].append((command_s, stage_s))
            print(
                f"repeat {repeat + 1}/{args.repeats}: "
                + "; ".join(f"{v} W={w} {t[-1][0]:.2f}/{t[-1][1]:.2f} s" for (v, w), t in times.items())
                + f"  (load {load_averages()})",
                flush=True,
            )
    finally:
        ray.shutdown()

    assert reference is not None
    frames = int(reference[0].num_frames.sum())
    print(f"\ninputs   {len(files)} videos, {args.width}x{args.height} 24 fps H.264, {frames} frames, in {OUT}")
    print("identical manifests from every command: yes (checked)")
    print(f"\nmedian of {args.repeats} repeats [best]; videos/s and frames/s from the stage time\n")
    print("| executor | workers | command s | stage s | videos/s | frames/s |")
    print("|---|---:|---:|---:|---:|---:|")
    median = {}
    for (variant, workers), runs in times.items():
        command = [c for c, _ in runs]
        stage = [s for _, s in runs]
        median[variant, workers] = (statistics.median(command), statistics.median(stage))
        print(f"| {variant} | {workers} | {median[variant, workers][0]:.2f} [{min(command):.2f}] | "
              f"{median[variant, workers][1]:.2f} [{min(stage):.2f}] | {len(files) / median[variant, workers][1]:.2f} | "
              f"{frames / median[variant, workers][1]:.0f} |")  # fmt: skip
    print("\nRay / local throughput (medians; >1 = Ray faster):")
    for workers in worker_counts:
        local_command, local_stage = median["local", workers]
        for variant in variants[1:]:
            command, stage = median[variant, workers]
            print(f"  W={workers} {variant:10}  stage {local_stage / stage:.2f}   whole command {local_command / command:.2f}")
    if len(worker_counts) == 2:
        print("2 workers / 1 worker throughput (stage medians):")
        for variant in variants:
            print(f"  {variant:10}  {median[variant, 1][1] / median[variant, 2][1]:.2f}")
    print(f"\nload {load_averages()} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
