"""Benchmark the cost of split's frame-quality measures (crop box, exposure, sharpness).

Run from anywhere with the project's virtual environment:

    .venv/bin/python bench/frame_quality.py            # synthetic 1280x720 edits, 3 interleaved repetitions
    .venv/bin/python bench/frame_quality.py --real     # the real footage in .realdata/ as well
    .venv/bin/python bench/frame_quality.py --real-only --repeat 2

What it measures
----------------
1. Inputs: three synthetic edits (`curate.synthetic.edited_video`, 1280x720, 24 fps, H.264 with
   B-frames, under bench/out/motion/, shared with bench/motion.py), and with --real every video in
   .realdata/.
2. For each video, in this process (one core's view, as one pool worker): split (`SplitStage.process`)
   then motion (`MotionStage.score` on split's kept clips), once with `split.quality_samples_per_s=0`
   (the baseline: no measures, no crop) and once with the default (1 sample a second, and motion
   measuring inside each clip's crop box). The two settings alternate video by video and the whole
   round is repeated; the table reports the median round's CPU seconds (time.process_time: a shared
   machine's load changes wall time, not the CPU the work takes) and wall seconds.
3. The figure: (split + motion with measures) / (split + motion without) - 1, target <= 10%.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from motion import real_inputs, synthetic_inputs  # noqa: E402  (bench/motion.py: the same inputs, rendered once)

from common import cpu_model, load_averages  # noqa: E402  (bench/common.py)
from curate.config import Config, MotionConfig, SplitConfig  # noqa: E402
from curate.filters import drop_reasons  # noqa: E402
from curate.inputs import collect_inputs  # noqa: E402
from curate.manifest import clip_refs  # noqa: E402
from curate.stages.base import Unit  # noqa: E402
from curate.stages.motion.stage import MotionStage  # noqa: E402
from curate.stages.split.stage import SplitStage  # noqa: E402


def split_and_motion(path: Path, samples_per_s: float) -> tuple[float, float, float, float, int]:
    """(split CPU s, motion CPU s, split wall s, motion wall s, frames) of one video."""
    video = collect_inputs([str(path)])[0]
    split = SplitStage(SplitConfig(quality_samples_per_s=samples_per_s))
    cpu, wall = time.process_time(), time.perf_counter()
    tables, stats = split.process(Unit(video.video_id, video))
    split_cpu, split_wall = time.process_time() - cpu, time.perf_counter() - wall
    clips = tables["clips"].to_pandas()
    kept = clips[drop_reasons(clips, Config(), before="motion").isna()] if len(clips) else clips
    refs = clip_refs(kept) if len(kept) else []
    cpu, wall = time.process_time(), time.perf_counter()
    if refs:
        MotionStage(MotionConfig()).score(refs)
    return split_cpu, time.process_time() - cpu, split_wall, time.perf_counter() - wall, stats["frames"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", action="store_true", help="also the videos in .realdata/")
    parser.add_argument("--real-only", action="store_true", help="only the videos in .realdata/")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    videos = ([] if args.real_only else synthetic_inputs()) + (real_inputs() if args.real or args.real_only else [])
    rate = SplitConfig().quality_samples_per_s
    print(f"{datetime.date.today()}  {cpu_model()}  load {load_averages()}  {len(videos)} videos, {args.repeat} rounds")
    rounds: list[dict[float, list[float]]] = []
    for _ in range(args.repeat):
        totals = {0.0: [0.0] * 5, rate: [0.0] * 5}
        for path in videos:
            for setting in (0.0, rate):  # alternating, so background load hits both alike
                for i, value in enumerate(split_and_motion(path, setting)):
                    totals[setting][i] += value
        rounds.append(totals)
    ratios = [(r[rate][0] + r[rate][1]) / (r[0.0][0] + r[0.0][1]) for r in rounds]
    middle = rounds[ratios.index(statistics.median_low(ratios))]  # the median round
    print(f"load after {load_averages()}")
    print("\n| setting | frames | split CPU s | motion CPU s | split+motion CPU s | wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for setting, label in ((0.0, "quality_samples_per_s=0 (baseline)"), (rate, f"quality_samples_per_s={rate:g} (default)")):
        split_cpu, motion_cpu, split_wall, motion_wall, frames = middle[setting]
        both_cpu, both_wall = split_cpu + motion_cpu, split_wall + motion_wall
        print(f"| {label} | {int(frames)} | {split_cpu:.2f} | {motion_cpu:.2f} | {both_cpu:.2f} | {both_wall:.2f} |")
    base, measured = (middle[s][0] + middle[s][1] for s in (0.0, rate))
    print(f"\noverhead of the measures: {100 * (measured / base - 1):+.1f}% of split + motion CPU time (target <= 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
