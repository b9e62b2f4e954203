"""`python -m train`: train a text-to-video diffusion model directly from `curate pack` shards."""

from __future__ import annotations

import argparse
import sys

from curate.config import ConfigError
from curate.models.errors import ModelUnavailable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description=(
            "Train a text-to-video diffusion model (flow matching on VAE latents) on the WebDataset shards "
            "`python -m curate pack` writes, streamed with no conversion. RUN_DIR gets config.json, "
            "metrics.jsonl and checkpoints/step-N/; running the same command again resumes from the newest "
            "checkpoint, and SIGTERM saves one before stopping."
        ),
    )
    parser.add_argument("--shards", required=True, help="shards: a brace pattern, a folder, an index.json, or pipe: URLs")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; resumed when it has checkpoints)")
    parser.add_argument("--config", metavar="FILE", help="YAML file of training settings (train/config.py lists them)")
    parser.add_argument("--preset", help="model and settings preset: tiny (offline, CPU) or wan2.1-t2v-1.3b")
    parser.add_argument("--steps", type=int, help="train until this many optimiser steps in all")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override settings, e.g. --set lr=1e-4 batch_size=4")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from train.config import resolve
    from train.trainer import Trainer

    try:
        config = resolve(args.preset, args.config, args.overrides, args.steps, args.shards)
        trainer = Trainer(config, args.out)
        logged = trainer.run(progress=not args.quiet)
    except (ConfigError, ModelUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    last = f", loss {logged[-1]['loss']:.4f}" if logged else ""
    print(f"train: step {trainer.step} of {config.steps}{last}; run folder {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
