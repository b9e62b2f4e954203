"""Benchmark the caption stage against the bare batched `generate` of the same model on the same inputs.

Run with the project's virtual environment:

    .venv/bin/python bench/caption.py                          # tiny model: a quick check of the pipeline
    .venv/bin/python bench/caption.py --model smolvlm2-256m    # SmolVLM2-256M's architecture, random weights
    .venv/bin/python bench/caption.py --model smolvlm2-256m --device cuda --clips 64 --batch-size 16

What it measures, in one process and one run, on the same clips:
  (a) bare generate: the model inputs of every clip are built beforehand (frames decoded, the
      processor run; untimed), then only `model.generate` runs, batch after batch, with the
      stage's own generation settings. The floor of any captioning stage.
  (b) stage: `CaptionStage.process` on the same clips as one unit: decode the clips' frames in
      its thread pool, build model inputs in its background thread, generate, decode the text,
      clean and check the captions, build the output table.
  (c) decode + preprocess only (for context): (b)'s input pipeline with no model.
The model has random weights (nothing is downloaded; speed does not depend on the weights'
values). So that (a) and (b) do the same work whatever those weights write, every answer is
exactly --tokens tokens long (min_new_tokens = max_new_tokens in the model's generation config)
and retries are off.

`--model smolvlm2-256m` builds SmolVLM2-256M-Video-Instruct's architecture from its published
dimensions (SigLIP-B/16 at 512 px, pixel shuffle 4 → 64 tokens per frame; SmolLM2-135M text model
with a 49,280-token vocabulary) behind a processor with the locally trained tokenizer.

Each repetition times (a), (b) and (c) back to back; the table shows medians over repetitions
(after one untimed warm-up). The ratio (a)/(b) of medians is the stage's clips/s over the bare
generate's (target >= 0.9); tokens/s are the generated tokens over each time.
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
OUT = BENCH / "out" / "caption"
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from common import cpu_model, load_averages, make_clips, sync, wait_for_idle  # noqa: E402  (bench/common.py)
from curate.config import CaptionConfig  # noqa: E402
from curate.manifest import ClipRef  # noqa: E402
from curate.models.tiny_vlm import build_tiny_processor  # noqa: E402
from curate.models.vlm import Captioner  # noqa: E402
from curate.stages.base import Unit  # noqa: E402
from curate.stages.caption.stage import CaptionStage  # noqa: E402


def smolvlm2_256m(device: torch.device) -> Captioner:
    """SmolVLM2-256M-Video-Instruct's architecture with random weights, in the stage's dtype."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    processor = build_tiny_processor(image_size=512, image_seq_len=64)
    tokenizer = processor.tokenizer
    text = {
        "model_type": "llama", "vocab_size": 49280, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "max_position_embeddings": 8192, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
    }  # fmt: skip
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 512, "patch_size": 16}  # fmt: skip
    config = SmolVLMConfig(
        vision_config=vision, text_config=text, scale_factor=4,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    dtype = torch.float32
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(config).to(device, dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return Captioner(model, processor, device, "smolvlm2-256m (random)")


def make_stage(args: argparse.Namespace) -> CaptionStage:
    config = CaptionConfig(
        model="tiny", num_frames=args.num_frames, max_new_tokens=args.tokens, retries=0,
        batch_size=args.batch_size, decode_threads=args.decode_threads, device=args.device,
    )  # fmt: skip
    stage = CaptionStage(config)
    stage.setup()  # the tiny model; replaced below for the real architecture
    if args.model == "smolvlm2-256m":
        stage.captioner = smolvlm2_256m(stage.captioner.device)
    generation = stage.captioner.model.generation_config
    generation.min_new_tokens = args.tokens  # every answer exactly --tokens long
    generation.exponential_decay_length_penalty = None  # the tiny model's push towards ending early
    return stage


def prepared_batches(stage: CaptionStage, clips: list[ClipRef]) -> list:
    """(a)'s inputs: every batch of model inputs the stage would build, built now."""
    return [item[2] for item in stage._batches(clips) if item[0] == "batch"]


def time_bare(stage: CaptionStage, batches: list) -> tuple[float, int]:
    """(a): `generate` alone on prepared batches; (seconds, tokens generated)."""
    captioner, settings = stage.captioner, stage.settings()
    sync(captioner.device)
    started = time.perf_counter()
    tokens = 0
    for inputs in batches:
        tokens += sum(answer.num_tokens for answer in captioner.generate(inputs, settings))
    sync(captioner.device)
    return time.perf_counter() - started, tokens


def time_stage(stage: CaptionStage, clips: list[ClipRef]) -> tuple[float, int]:
    """(b): the stage's whole `process`; (seconds, tokens generated)."""
    started = time.perf_counter()
    _, stats = stage.process(Unit("bench", clips))
    sync(stage.captioner.device)
    return time.perf_counter() - started, stats["tokens"]


def time_inputs(stage: CaptionStage, clips: list[ClipRef]) -> float:
    """(c): decoding and preprocessing alone, through the stage's own pipeline."""
    started = time.perf_counter()
    for _ in stage._batches(clips):
        pass
    return time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "smolvlm2-256m"], default="tiny")
    parser.add_argument("--clips", type=int, help="clips per repetition (default: 64 tiny, 8 smolvlm2-256m)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (default 3)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per clip (default 32)")
    parser.add_argument("--num-frames", type=int, default=CaptionConfig().num_frames)
    parser.add_argument("--batch-size", type=int, default=CaptionConfig().batch_size)
    parser.add_argument("--decode-threads", type=int, default=CaptionConfig().decode_threads)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S", help="wait up to S s for an idle machine")
    return parser.parse_args()


def report(timings: dict[str, list[float]], tokens: dict[str, int], clips: int) -> None:
    median = {k: statistics.median(v) for k, v in timings.items()}
    labels = {
        "bare": "(a) bare batched generate",
        "stage": "(b) CaptionStage.process",
        "inputs": "(c) decode + preprocess only",
    }
    print("\n| measurement | median s | clips/s | tokens/s |\n|---|---|---|---|")
    for key, label in labels.items():
        rate = f"{tokens[key] / median[key]:.0f}" if key in tokens else "-"
        print(f"| {label} | {median[key]:.2f} | {clips / median[key]:.2f} | {rate} |")
    print(f"\nratio (a)/(b) = {median['bare'] / median['stage']:.3f}  (stage clips/s over bare generate clips/s; target >= 0.9)")


def main() -> int:
    args = parse_args()
    count = args.clips or {"tiny": 64}.get(args.model, 8)
    cpu = f"{cpu_model()}, {os.cpu_count()} cores" if platform.system() == "Linux" else platform.processor()
    print(f"load before: {load_averages()}   {cpu}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    clips = make_clips(OUT, count, args.width, args.height)
    stage = make_stage(args)
    captioner = stage.captioner
    gpu = f" ({torch.cuda.get_device_name(captioner.device)})" if captioner.device.type == "cuda" else ""
    print(
        f"model {captioner.name} on {captioner.device}{gpu}, {captioner.dtype}; {len(clips)} clips of "
        f"{args.width}x{args.height}, {args.num_frames} frames each at {captioner.frame_size(args.width, args.height)}, "
        f"batch {args.batch_size}, {args.tokens} tokens per clip, {args.decode_threads} decode threads"
    )
    batches = prepared_batches(stage, clips)
    time_bare(stage, batches[:1]), time_stage(stage, clips[: args.batch_size])  # warm-up
    timings: dict[str, list[float]] = {"bare": [], "stage": [], "inputs": []}
    tokens: dict[str, int] = {}
    for repeat in range(args.repeats):
        if args.wait_idle:
            wait_for_idle(args.wait_idle)
        seconds, tokens["bare"] = time_bare(stage, batches)
        timings["bare"].append(seconds)
        seconds, tokens["stage"] = time_stage(stage, clips)
        timings["stage"].append(seconds)
        timings["inputs"].append(time_inputs(stage, clips))
        done = ", ".join(f"{k} {v[-1]:.2f} s" for k, v in timings.items())
        print(f"  repeat {repeat + 1}: {done}   (load {load_averages()})")
    assert tokens["bare"] == tokens["stage"] == len(clips) * args.tokens, tokens  # the same work on both sides
    report(timings, tokens, len(clips))
    print(f"load after: {load_averages()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
