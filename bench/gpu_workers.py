"""Check that the model stages' local workers each run on a GPU of their own, in bf16, and measure
the stages' clips/s there, through the executor path `curate aesthetic` and `curate caption` take.

Run with the project's virtual environment, on a machine with GPUs:

    .venv/bin/python bench/gpu_workers.py                       # aesthetic ViT-L-14, caption SmolVLM2-256M
    .venv/bin/python bench/gpu_workers.py --tiny --device cpu --clips 8 --tokens 4   # the same path, CPU smoke run

Each stage runs on `curate.runner.make_executor("local", None, stage)`: one worker per GPU the
stage's `gpu_ids()` lists, forked from the fork server, each pinned to its GPU through
CUDA_VISIBLE_DEVICES before it loads its model. The stage is a subclass that adds to each unit's
stats what its worker saw: pid, CUDA_VISIBLE_DEVICES, torch's device count and current device,
the model's parameter dtype and the dtype it computes in (the aesthetic image encoder runs under
bf16 autocast with fp32 weights; the captioner's weights are bf16). Unless --device cpu, the run
fails if a worker saw anything but one GPU of the parent's own, if two workers shared one, or if
the model did not compute in bf16.

Models have random weights of the real architectures, nothing downloaded: open_clip's ViT-L-14
(pretrained="", random head) for aesthetic; SmolVLM2-256M's architecture (bench/caption.py's),
saved to a folder under bench/out/gpu_workers/ and loaded by the stage's own loader, for caption.
Every answer is exactly --tokens tokens (min_new_tokens in the saved generation config), retries
off. --tiny uses the tiny test models instead.

Inputs: clips of a few synthetic edits (bench/common.py's make_clips, 640x360 H.264), repeated
under new clip ids up to --clips: decoding costs the same, and the videos are rendered once.

Figures per stage: the pool's wall time (workers' start-up, model load and every unit), and
clips/s once the first unit has finished (model loaded, workers warm) up to the last unit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "gpu_workers"
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from common import load_averages, make_clips  # noqa: E402  (bench/common.py)
from curate.config import AestheticConfig, CaptionConfig  # noqa: E402
from curate.manifest import ClipRef  # noqa: E402
from curate.pipeline import stage_spec  # noqa: E402
from curate.runner import make_executor  # noqa: E402
from curate.stages.aesthetic import AestheticStage  # noqa: E402
from curate.stages.base import Unit  # noqa: E402
from curate.stages.caption.stage import CaptionStage  # noqa: E402

BF16 = str(torch.bfloat16)
COLUMNS = ["stage", "model", "local workers (GPU ids)", "compute dtype", "clips", "pool wall s", "clips/s (pool)",
           "clips/s after 1st unit", "tokens/s"]  # fmt: skip


def worker_view(device: torch.device, param_dtype, compute_dtype) -> dict:
    """What this worker process sees: called inside the worker, after a unit."""
    view = {
        "pid": os.getpid(),
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        "device": device.type,
        "param_dtype": str(param_dtype),
        "compute_dtype": str(compute_dtype),
    }
    if device.type == "cuda":
        index = torch.cuda.current_device()
        view |= {"device_count": torch.cuda.device_count(), "current": index, "gpu": torch.cuda.get_device_name(index)}
    return view


class ProbedAesthetic(AestheticStage):
    """The aesthetic stage, reporting its worker's view in each unit's stats."""

    def setup(self) -> None:
        super().setup()
        self.compute_dtype = None
        self.model.visual.register_forward_hook(self._record_dtype)

    def _record_dtype(self, module, inputs, output) -> None:
        self.compute_dtype = output.dtype  # the encoder's output: bf16 under CUDA autocast

    def process(self, unit: Unit) -> tuple[dict, dict]:
        tables, stats = super().process(unit)
        param_dtype = next(self.model.visual.parameters()).dtype
        return tables, {**stats, "view": worker_view(self.model.device, param_dtype, self.compute_dtype)}


class ProbedCaption(CaptionStage):
    """The caption stage, reporting its worker's view in each unit's stats."""

    def process(self, unit: Unit) -> tuple[dict, dict]:
        tables, stats = super().process(unit)
        captioner = self.captioner
        return tables, {**stats, "view": worker_view(captioner.device, captioner.dtype, captioner.dtype)}


def repeated(clips: list[ClipRef], count: int) -> list[ClipRef]:
    """`count` clips: `clips` over and over, each copy under its own clip id."""
    return [dataclasses.replace(clips[i % len(clips)], clip_id=f"{clips[i % len(clips)].clip_id}-r{i // len(clips)}") for i in range(count)]


def save_captioner(folder: Path, tiny: bool, tokens: int) -> Path:
    """A random captioning model saved as a model folder the stage loads like a downloaded one."""
    if tiny:
        from curate.models.tiny_vlm import build_tiny_smolvlm

        model, processor = build_tiny_smolvlm()
    else:
        from caption import smolvlm2_256m  # bench/caption.py: the architecture from its published dimensions

        captioner = smolvlm2_256m(torch.device("cpu"))
        model, processor = captioner.model, captioner.processor
    generation = model.generation_config
    generation.min_new_tokens = generation.max_new_tokens = tokens  # every answer exactly `tokens` long
    generation.exponential_decay_length_penalty = None
    shutil.rmtree(folder, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(folder)  # the loader picks the dtype (bf16 on CUDA)
    processor.save_pretrained(folder)
    return folder


def run_stage(stage, clips: list[ClipRef], work_dir: Path) -> dict:
    """Run `stage` on `clips` through the local executor `curate` would use; its figures."""
    size = stage_spec(stage.name).units.max_clips
    units = [Unit(f"u{i:05d}", clips[i : i + size]) for i in range(0, len(clips), size)]
    stage.prepare()
    executor = make_executor("local", None, stage)
    shutil.rmtree(work_dir, ignore_errors=True)
    finished: list[tuple[float, dict]] = []
    started = time.perf_counter()
    errors = executor.run(stage, units, work_dir, lambda unit_id, stats: finished.append((time.perf_counter(), stats)))
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{stage.name}: {len(errors)} units failed, e.g. {next(iter(errors.values()))}")
    return {"workers": executor.workers, "gpu_ids": executor.gpu_ids, "wall": wall, "finished": finished, "clips": len(clips)}


def problems(result: dict) -> list[str]:
    """Why the workers did not each run on a GPU of their own in bf16 (empty: they did)."""
    views = {stats["view"]["pid"]: stats["view"] for _, stats in result["finished"]}
    found = [] if result["gpu_ids"] else ["no GPU ids handed out (CUDA not visible to the parent?)"]
    for view in views.values():
        if view["device"] != "cuda" or view.get("device_count") != 1 or view["visible"] not in result["gpu_ids"]:
            found.append(f"worker {view['pid']} is not on one GPU of {result['gpu_ids']}: {view}")
        if view["compute_dtype"] != BF16:
            found.append(f"worker {view['pid']} computes in {view['compute_dtype']}, not bf16")
    if len({view["visible"] for view in views.values()}) < min(len(views), len(result["gpu_ids"])):
        found.append(f"workers share a GPU: {sorted(view['visible'] for view in views.values())}")
    return found


def report(name: str, model: str, result: dict) -> str:
    """Print each worker's view and return the stage's table row."""
    views = {stats["view"]["pid"]: stats["view"] for _, stats in result["finished"]}
    for view in views.values():
        print(f"  {name} worker {view}")
    times = [t for t, _ in result["finished"]]
    clips = [stats.get("clips", 0) for _, stats in result["finished"]]
    warm = f"{sum(clips[1:]) / (times[-1] - times[0]):.1f}" if len(times) > 1 and times[-1] > times[0] else "-"
    tokens = sum(stats.get("tokens", 0) for _, stats in result["finished"])
    rate = f"{tokens / result['wall']:.0f}" if tokens else "-"
    dtype = sorted({view["compute_dtype"] for view in views.values()})
    return (
        f"| {name} | {model} | {result['workers']} ({','.join(result['gpu_ids']) or 'no GPU'}) | {','.join(dtype)} | "
        f"{result['clips']} | {result['wall']:.1f} | {result['clips'] / result['wall']:.1f} | {warm} | {rate} |"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=256, help="clips per stage (default 256)")
    parser.add_argument("--caption-clips", type=int, help="clips for caption (default: --clips / 2)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per caption (default 32)")
    parser.add_argument("--caption-batch", type=int, default=16, help="caption.batch_size (default 16)")
    parser.add_argument("--device", default="auto", help="the stages' device (default auto; cpu for a smoke run)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test models instead of the real architectures")
    parser.add_argument("--stages", nargs="+", default=["aesthetic", "caption"], choices=["aesthetic", "caption"])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    print(f"load before: {load_averages()}   torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}")
    clips = make_clips(OUT, min(args.clips, 24), args.width, args.height)
    rows = []
    found: list[str] = []
    if "aesthetic" in args.stages:
        model = "tiny" if args.tiny else "ViT-L-14"
        stage = ProbedAesthetic(AestheticConfig(model=model, pretrained="", head="", device=args.device))
        result = run_stage(stage, repeated(clips, args.clips), OUT / "work" / "aesthetic")
        rows.append(report("aesthetic", f"{model} (random)", result))
        found += problems(result)
    if "caption" in args.stages:
        folder = save_captioner(OUT / "captioner", args.tiny, args.tokens)
        config = CaptionConfig(model=str(folder), max_new_tokens=args.tokens, retries=0, batch_size=args.caption_batch, device=args.device)
        result = run_stage(ProbedCaption(config), repeated(clips, args.caption_clips or args.clips // 2), OUT / "work" / "caption")
        rows.append(report("caption", "tiny SmolVLM2 (random)" if args.tiny else "SmolVLM2-256M arch (random)", result))
        found += problems(result)
    print(f"\n| {' | '.join(COLUMNS)} |\n" + "|---" * len(COLUMNS) + "|\n" + "\n".join(rows))
    print(f"load after: {load_averages()}")
    if args.device != "cpu" and found:
        print("\nFAILED: the workers did not each run on their own GPU in bf16:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
