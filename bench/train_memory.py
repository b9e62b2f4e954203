"""Peak GPU memory and speed of a LoRA training step of Wan 2.1 T2V 1.3B at 480x832, per configuration.

Run with the project's virtual environment:

    .venv/bin/python bench/train_memory.py            # on a GPU: the 1.3B architecture, 33 and 81 frames
    .venv/bin/python bench/train_memory.py --smoke    # anywhere: the tiny architecture on the CPU (checks the script)

The transformer is the 1.3B's architecture (`train.models.wan.WAN21_T2V_1_3B_TRANSFORMER`) with
random weights: memory and speed do not depend on their values, and nothing is downloaded. It
trains as the trainer trains it with the 1.3B preset on CUDA: a bf16 frozen base (`base_dtype`
auto) under float32 LoRA adapters of rank 32 on Wan's default targets (`train.lora`); a step is a
bf16-autocast forward on noised latents, the flow-matching loss, backward, gradient clipping,
AdamW on the adapters and their EMA, at batch 1. Inputs are random, of the shapes a 480x832 clip
gives: Wan's VAE compresses 8x in space and 4x in time after the first frame (33 frames -> 9
latent frames, 81 -> 21) into 16 channels of 60x104, and the text embeddings are (1, 512, 4096).

Configurations, per frame count: no gradient checkpointing; checkpointing; and at the largest
frame count checkpointing with `offload: blocks` (`train.offload`). Each runs one warm-up step
(kernels chosen, optimiser state made) and --steps timed ones; peak memory is
torch.cuda.max_memory_allocated over all of them (and max_memory_reserved, what the allocator
took from the GPU), in GiB. A configuration that runs out of memory says so. Only the
transformer is measured: the VAE and the UMT5 text encoder that the trainer also loads are
separate costs. Prints one JSON line per configuration, then a table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

import torch  # noqa: E402

from common import sync  # noqa: E402  (bench/common.py)
from train import lora  # noqa: E402
from train.flow import noised  # noqa: E402
from train.models.wan import (  # noqa: E402
    TIME_SCALE,
    WAN21_T2V_1_3B_TRANSFORMER,
    WanFamily,
    random_transformer,
    tiny_transformer_config,
)
from train.offload import BlockOffload  # noqa: E402

GIB = 2**30
FITS_GIB = 24  # the memory of the GPUs people train on at home (RTX 3090/4090)
VAE_TIME, VAE_SPACE = 4, 8  # Wan 2.1 VAE compression
EMA_DECAY = 0.999  # the Wan presets'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[33, 81], help="clip lengths in frames (1 + 4k)")
    parser.add_argument("--size", default="480x832", metavar="HxW", help="clip height x width")
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank")
    parser.add_argument("--text-tokens", type=int, default=512, help="text embedding length (WanPipeline's)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration (after one warm-up step)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny architecture, 5 and 9 frames at 32x32, on the CPU")
    args = parser.parse_args()
    if args.smoke:
        args.frames, args.size, args.rank, args.text_tokens, args.device = [5, 9], "32x32", 4, 16, "cpu"
    return args


def build(smoke: bool, rank: int, device: torch.device) -> tuple[torch.nn.Module, int]:
    """The transformer with LoRA adapters, in training mode, and its text embedding width."""
    config = tiny_transformer_config(text_dim=32) if smoke else WAN21_T2V_1_3B_TRANSFORMER
    transformer = random_transformer(config, torch.bfloat16, device)
    lora.add_adapter(transformer, rank, float(rank), 0.0, list(WanFamily.lora_targets))
    return transformer.train(), config["text_dim"]


def inputs(frames: int, height: int, width: int, text_shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random latents of one clip of that shape and random text embeddings, float32 as the trainer has them."""
    latent_frames = (frames - 1) // VAE_TIME + 1
    latents = torch.randn(1, 16, latent_frames, height // VAE_SPACE, width // VAE_SPACE, device=device)
    return latents, torch.randn(1, *text_shape, device=device)


def train_step(transformer, optimizer, ema, latents, text) -> None:
    """The trainer's step (train.trainer.Trainer.train_step) on one clip, at a random time."""
    params = optimizer.param_groups[0]["params"]
    t = torch.rand(1, device=latents.device)
    x_t, target = noised(latents, torch.randn_like(latents), t)
    with torch.autocast(latents.device.type, dtype=torch.bfloat16):
        velocity = transformer(hidden_states=x_t, timestep=t * TIME_SCALE, encoder_hidden_states=text, return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(velocity.float(), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    with torch.no_grad():
        for average, param in zip(ema, params, strict=True):
            average.lerp_(param, 1 - EMA_DECAY)


def measure(transformer, latents, text, steps: int) -> dict:
    """Peak memory and speed of `steps` training steps after a warm-up one; fresh optimiser and EMA."""
    device = latents.device
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.99))
    ema = [p.detach().clone() for p in params]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"oom": False}
    try:
        train_step(transformer, optimizer, ema, latents, text)
        sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            train_step(transformer, optimizer, ema, latents, text)
        sync(device)
        seconds = (time.perf_counter() - started) / steps
        result.update(step_s=round(seconds, 3), samples_per_s=round(latents.shape[0] / seconds, 3))
    except torch.cuda.OutOfMemoryError:
        result["oom"] = True  # the traceback (and the activations it holds) is gone after this block
    if device.type == "cuda":
        result.update(
            peak_allocated_gib=round(torch.cuda.max_memory_allocated(device) / GIB, 2),
            peak_reserved_gib=round(torch.cuda.max_memory_reserved(device) / GIB, 2),
        )
        result["fits_24gib"] = not result["oom"] and result["peak_reserved_gib"] <= FITS_GIB
    optimizer.zero_grad(set_to_none=True)
    del optimizer, ema, params
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the next configuration starts from the model alone
    return result


@contextlib.contextmanager
def configured(transformer, device: torch.device, checkpointing: bool, offload: bool):
    """The transformer with gradient checkpointing and block offload on or off, for the duration."""
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    offloaded = BlockOffload(transformer, device) if offload else None
    try:
        yield
    finally:
        if offloaded is not None:
            offloaded.remove()
        transformer.disable_gradient_checkpointing()


def describe(frames: int, latents: torch.Tensor, checkpointing: bool, offload: bool) -> dict:
    """What a configuration is: the clip, its latents and transformer tokens (2x2 patches), the settings."""
    _, _, latent_frames, height, width = latents.shape
    return {
        "frames": frames,
        "height": height * VAE_SPACE,
        "width": width * VAE_SPACE,
        "latents": list(latents.shape[1:]),
        "tokens": latent_frames * (height // 2) * (width // 2),
        "gradient_checkpointing": checkpointing,
        "offload": "blocks" if offload else "none",
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| frames | latents (C, T, H, W) | tokens | gradient checkpointing | offload | peak allocated GiB | peak reserved GiB "
        f"| fits {FITS_GIB} GiB | s/step | samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["frames"], tuple(row["latents"]), row["tokens"], row["gradient_checkpointing"], row["offload"]]
        cells += [row.get(key, "n/a (CPU)") for key in ("peak_allocated_gib", "peak_reserved_gib", "fits_24gib")]
        cells += ["out of memory"] * 2 if row["oom"] else [row["step_s"], row["samples_per_s"]]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("FATAL: CUDA is not available (--smoke runs on the CPU)", file=sys.stderr)
        return 1
    height, width = map(int, args.size.split("x"))
    started = time.perf_counter()
    transformer, text_dim = build(args.smoke, args.rank, device)
    adapters = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in transformer.parameters() if not p.requires_grad)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"model {'tiny' if args.smoke else 'Wan 2.1 T2V 1.3B'} transformer with random weights: {frozen:,} frozen (bf16), "
        f"{adapters:,} LoRA rank {args.rank} (float32); on {where}, built in {time.perf_counter() - started:.1f} s; "
        "the VAE and the UMT5 text encoder are separate costs, not measured here"
    )
    rows = []
    for frames in args.frames:
        latents, text = inputs(frames, height, width, (args.text_tokens, text_dim), device)
        modes = [(False, False), (True, False)] + ([(True, True)] if frames == max(args.frames) else [])
        for checkpointing, offload in modes:
            with configured(transformer, device, checkpointing, offload):
                result = measure(transformer, latents, text, args.steps)
            rows.append({**describe(frames, latents, checkpointing, offload), "lora_rank": args.rank, **result})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
