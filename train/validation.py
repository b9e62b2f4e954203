"""A validation loss: the flow-matching loss on clips the run never trains on, the same clips,
noise and timesteps every time, so it moves only when the weights do.

The clips: the shards of `val_shards`, or the samples of the training shards whose key hash falls
in `val_fraction` (`train.data.held_out`; the training stream skips them, counted as held_out).
The first `val_batches` batches of them, read in shard order through the run's buckets, are
encoded once (VAE latents and text embeddings, kept on the CPU) and reused at every validation.

The loss is deterministic: clip j of the N validation clips is noised at t = (j + 0.5) / N, evenly
spaced over (0, 1) and not shifted (every noise level weighs the same), with noise drawn from a
generator seeded by a constant and the batch index; captions are always given (no dropout); the
transformer runs in eval mode without gradients. It uses the weights being trained, not the EMA
ones, so val_loss compares with the training loss of the same step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from train.buckets import Buckets
from train.config import DataConfig
from train.data import SkipCounter, bucket_groups, collate, decode_group, held_out, read_shards, shard_urls
from train.flow import noised
from train.models import VideoFamily
from train.sampler import eval_mode

NOISE_SEED = 1_000_003  # a constant: the same noise in every run, whatever its seed


def has_validation(config: DataConfig) -> bool:
    """Whether the run has validation data."""
    return bool(config.val_shards or config.val_fraction)


def validation_batches(config: DataConfig, buckets: Buckets) -> list[dict]:
    """The first `val_batches` batches of the validation clips (see the module docstring), as
    the loader's batches; ValueError when there is validation data but no usable clip in it."""
    if not has_validation(config):
        return []
    skips = SkipCounter()
    samples = read_shards(shard_urls(config.val_shards or config.shards), skips)
    if config.val_fraction:
        samples = (sample for sample in samples if held_out(sample["__key__"], config.val_fraction))
    batches = []
    for bucket, group in bucket_groups(samples, buckets, config, skips):
        decoded = decode_group(group, bucket, config, skips)
        if decoded:
            batches.append(collate(decoded, bucket))
        if len(batches) == config.val_batches:
            break
    if not batches:
        where = config.val_shards or f"the {config.val_fraction:g} of {config.shards} held out by val_fraction"
        raise ValueError(f"no usable validation clip in {where} ({skips.total} skipped)")
    return batches


def validation_loss(
    family: VideoFamily, examples: list[tuple[torch.Tensor, torch.Tensor]], autocast: Callable[[], contextlib.AbstractContextManager]
) -> float:
    """The mean loss per clip of `examples`, (latents, text embeddings) batches, deterministic
    (see the module docstring); `autocast` wraps the transformer's forward."""
    count = sum(len(latents) for latents, _ in examples)
    total, first = 0.0, 0
    with torch.no_grad(), eval_mode(family.transformer):
        for index, (latents, text) in enumerate(examples):
            x0, text = latents.to(family.device), text.to(family.device)
            t = ((torch.arange(first, first + len(x0), dtype=torch.float32) + 0.5) / count).to(family.device)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(NOISE_SEED + index)).to(family.device)
            x_t, target = noised(x0, noise, t)
            with autocast():
                velocity = family.predict(x_t, t, text)
            total += (velocity.float() - target).pow(2).flatten(1).mean(1).sum().item()
            first += len(x0)
    return total / count
