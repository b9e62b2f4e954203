"""`python -m train`: train a text-to-video diffusion model directly from `curate pack` shards.

`python -m train precompute` turns those shards into latent shards (VAE latents and text
embeddings), which train the same model without running the encoders at every step.
"""

from __future__ import annotations

import argparse
import os
import sys

from curate.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description=(
            "Train a text-to-video diffusion model (flow matching on VAE latents) on the WebDataset shards "
            "`python -m curate pack` writes, streamed with no conversion. RUN_DIR gets config.json, "
            "metrics.jsonl and checkpoints/step-N/, and with lora_rank > 0 (the Wan presets' default; "
            "--set lora_rank=0 lr=1e-5 for a full fine-tune) lora/pytorch_lora_weights.safetensors for diffusers' "
            "load_lora_weights; running the same command again resumes from the newest "
            "checkpoint, and SIGTERM saves one before stopping. Under `torchrun --nproc_per_node N -m train ...` "
            "each rank trains on its own share of the shards (DDP). `python -m train precompute --help`: latent "
            "shards that skip the encoders."
        ),
    )
    parser.add_argument(
        "--shards",
        required=True,
        help="shards: a brace pattern, a quoted glob, a folder, an index.json "
        "(local or s3://..., gs://... through fsspec), or pipe: commands",
    )
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; resumed when it has checkpoints)")
    parser.add_argument("--val-shards", metavar="PATTERN", help="validation shards (any form --shards takes): val_loss every "
                        "val_every steps in metrics.jsonl; or hold out a share of --shards with --set val_fraction=0.01")  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="YAML file of training settings (train/config.py lists them)")
    parser.add_argument("--preset", help="model and settings preset: tiny (offline, CPU), wan2.1-t2v-1.3b or wan2.1-t2v-14b")
    parser.add_argument("--steps", type=int, help="train until this many optimiser steps in all")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override settings, e.g. --set lr=1e-4 batch_size=4")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def build_precompute_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train precompute",
        description=(
            "Encode the clips of video shards once: write, under OUT, a shard of the same name per input shard "
            "whose samples hold the VAE latents of the training frames and the caption's text embedding. "
            "Train on OUT's shards with the same preset, num_frames, height and width; each step then skips the "
            "VAE and the text encoder. Re-running resumes (finished shards are skipped)."
        ),
    )
    parser.add_argument(
        "--shards",
        required=True,
        help="video shards: a brace pattern, a quoted glob, a folder, an index.json (local or in an object store), or pipe: commands",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="local folder for the latent shards and their index.json")
    parser.add_argument("--config", metavar="FILE", help="YAML file of training settings (the model and video size are used)")
    parser.add_argument("--preset", help="model preset: tiny, wan2.1-t2v-1.3b or wan2.1-t2v-14b")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override settings, e.g. --set num_frames=33 batch_size=4 (clips per encoder batch)")  # fmt: skip
    parser.add_argument(
        "--dtype", choices=["float16", "float32"], default="float16", help="stored precision (default float16: half the size)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["precompute"]:
        return precompute_main(argv[1:])
    args = build_parser().parse_args(argv)
    from train.checkpoint import UnreadableCheckpoints
    from train.config import resolve
    from train.trainer import Trainer

    try:
        config = resolve(args.preset, args.config, args.overrides, args.steps, args.shards, args.val_shards)
        trainer = Trainer(config, args.out)
        logged = trainer.run(progress=not args.quiet)
    except (UserError, ValueError, UnreadableCheckpoints) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    last = f", loss {logged[-1]['loss']:.4f}" if logged else ""
    print(f"train: step {trainer.step} of {config.steps}{last}; run folder {args.out}")
    return 0


def precompute_main(argv: list[str]) -> int:
    args = build_precompute_parser().parse_args(argv)
    from pathlib import Path

    from train.config import resolve
    from train.precompute import precompute

    try:
        config = resolve(args.preset, args.config, args.overrides, None, args.shards)
        stats = precompute(config, Path(args.out), args.dtype, progress=not args.quiet)
    except (UserError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"precompute: {stats.samples} samples in {stats.shards_written} new shards ({stats.shards_skipped} already done, "
        f"{stats.bad_samples} samples left out); train with --shards {Path(args.out) / 'index.json'}"
    )
    return 0


def _command() -> int:
    """`main` for the command line: a closed stdout (`| head -1`) ends it quietly, like `curate`.
    Its output is flushed here, where the error can still be caught, not at interpreter exit."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        from curate.console import drop_closed_stdout

        return drop_closed_stdout()


def _exit_after_torchrun(code: int) -> None:
    """Under torchrun, end the process without the interpreter's teardown. Gloo's worker threads
    free each collective's work (and the tensors it holds) a moment after the collective returns;
    if that falls after Python has begun to shut down, freeing a tensor waits for the GIL, the
    finalizing interpreter ends the thread, and the process aborts ("terminate called without an
    active exception": about one in 40 of the two-rank test's torchrun calls here; see
    pytorch/pytorch#179291). By now the run has written and renamed everything, released its
    loader and left the process group; the fork server and its workers die with the process."""
    from train import distributed

    if distributed.from_environment().distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    code = _command()
    _exit_after_torchrun(code)
    raise SystemExit(code)
