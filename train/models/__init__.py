"""Video model families for the trainer: a registry of presets and the one interface the loop calls.

A family bundles what text-to-video diffusion training needs from a model: a text encoder and its
tokenizer (frozen), a VAE that maps frames to latents and back (frozen), and the transformer that
predicts the flow-matching velocity (the only trained part). The training loop sees nothing else:

    family = load_family("tiny", device, dtype)
    text = family.encode_text(captions)                  # (B, L, D)
    x0 = family.encode_video(frames)                     # uint8 (B, T, H, W, 3) -> (B, C, T', H', W')
    v = family.predict(x_t, t, text)                     # t in [0, 1], same shape as x0
    frames = family.decode_latents(x0)                   # back to uint8 (B, T, H, W, 3)

`embed_text` is `encode_text` for callers that may outlive the text encoder: a run on latent
shards keeps the few prompts it still embeds (`keep_texts`), then drops the encoder
(`release_text_encoder`).

Presets register themselves: every module of this package is imported on the first lookup, and
each family module (`wan`) decorates its builders with `@register("preset-name")`. The interface
and the registry live in `family`, which family modules import instead of this package, so no
import goes in a circle. Adding a family (LTX-Video, CogVideoX) is a new file here, never a change
to the trainer. Builders take `(device, dtype, seed, source, transformer_dtype, with_transformer)`;
see `load_family`.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from curate.errors import ConfigError
from train.models.family import FAMILIES, VideoFamily, cast_weights, fetch_snapshot, frames_to_pixels, pixels_to_frames, register

__all__ = [
    "FAMILIES", "VideoFamily", "cast_weights", "fetch_snapshot", "frames_to_pixels", "load_family", "pixels_to_frames",
    "presets", "register",
]  # fmt: skip


def presets() -> list[str]:
    """Every registered preset name, sorted."""
    _discover()
    return sorted(FAMILIES)


def load_family(
    preset: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    seed: int = 0,
    source: str | None = None,
    transformer_dtype: torch.dtype = torch.float32,
    with_transformer: bool = True,
) -> VideoFamily:
    """The model family of `preset` on `device`.

    `dtype` is the dtype of the frozen text encoder (bf16 halves its memory on a GPU), and each
    family picks its VAE dtype. The transformer's weights are `transformer_dtype`: float32 when
    they train (autocast gives bf16 compute), bfloat16 for a frozen LoRA base (half the memory;
    the modules diffusers keeps in float32 stay float32). `seed` sets the weights of randomly
    initialised presets (`tiny`); `source` replaces a pretrained preset's hub id with a local
    folder in diffusers format or another hub id of the same architecture. `with_transformer=False`
    gives the encoders alone (`train.precompute` needs no more): the family still knows the
    transformer's shape rules, read from its config, but neither reads nor builds its weights (a
    14B one is some 57 GB in float32), so `predict` and `state_dict` are unavailable.
    """
    _discover()
    builder = FAMILIES.get(preset)
    if builder is None:
        raise ConfigError(f"unknown model preset {preset!r}; known presets: {', '.join(sorted(FAMILIES))}")
    return builder(
        device=torch.device(device), dtype=dtype, seed=seed, source=source, transformer_dtype=transformer_dtype,
        with_transformer=with_transformer,
    )  # fmt: skip


def _discover() -> None:
    # Importing a family module runs its @register decorators; import_module caches, so this is
    # cheap after the first call.
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
