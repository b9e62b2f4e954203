"""Peak memory of packing one long video, against its length: it must stay flat.

Run with the project's virtual environment:

    .venv/bin/python bench/pack_memory.py                    # 1, 10 and 30 minutes of 160x90
    .venv/bin/python bench/pack_memory.py --minutes 1 60 --width 320 --height 180

For each length, a one-shot video (a moving object, `curate.synthetic`, H.264, 25 fps) is rendered
once under bench/out/pack_memory/ and split by the real split stage into clips of at most 10 s. A
fresh process then does what a pack worker does with every unit of that video
(`PackStage.process` on the units `curate pack` makes, the clips encoded at the source's size) and
reports its peak resident memory (VmHWM) and the clips it encoded. Peak memory must not grow with the number of clips.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "pack_memory"
sys.path.insert(0, str(REPO))

from common import cpu_model, load_averages  # noqa: E402  (bench/common.py)
from curate.synthetic import Shot, write_video  # noqa: E402
from curate.synthetic import render as samples_render  # noqa: E402

FPS = 25

_WORKER = """
import sys, time
import pandas as pd
from curate.config import PackConfig
from curate.pipeline import stage_spec
from curate.stages.clipstage import clip_units
from curate.stages.pack.stage import PackStage
clips = pd.read_parquet(sys.argv[1])
stage, encoded, started = PackStage(PackConfig(short_side=0)), 0, time.perf_counter()
for unit in clip_units(clips, stage_spec("pack").units):
    tables, _ = stage.process(unit)
    encoded += tables["samples"].num_rows
peak_mb = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(encoded, len(clips), f"{peak_mb:.0f}", f"{time.perf_counter() - started:.1f}")
"""


def render(path: Path, minutes: float, width: int, height: int) -> None:
    """One long shot of an object moving over a textured world (ultrafast x264), rendered once."""
    if not path.exists():
        shot = Shot(int(minutes * 60 * FPS), 7)  # a still camera and a bouncing object: the world stays small
        write_video(path, samples_render([shot], [], width, height), fps=FPS, options={"preset": "ultrafast", "crf": "23"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30])
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=90)
    args = parser.parse_args()
    print(f"load before: {load_averages()}   {cpu_model()}")
    print("\n| input | clips | clips encoded | peak RSS (MB) | seconds |\n|---|---|---|---|---|")
    for minutes in args.minutes:
        name = f"pan_{minutes:g}min_{args.width}x{args.height}"
        video, out = OUT / f"{name}.mp4", OUT / name
        OUT.mkdir(parents=True, exist_ok=True)
        render(video, minutes, args.width, args.height)
        if not (out / "manifests" / "clips.parquet").exists():
            subprocess.run([sys.executable, "-m", "curate", "split", str(video), "--out", str(out), "--quiet"], cwd=REPO,
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        result = subprocess.run([sys.executable, "-c", _WORKER, str(out / "manifests" / "clips.parquet")], cwd=REPO,
                                check=True, capture_output=True, text=True)  # fmt: skip
        encoded, clips, peak_mb, seconds = result.stdout.split()
        print(f"| {minutes:g} min of {args.width}x{args.height} | {clips} | {encoded} | {peak_mb} | {seconds} |")
    print(f"\nload after: {load_averages()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
