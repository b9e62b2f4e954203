"""The interface the training loop calls (`VideoFamily`), the preset registry family modules add
their builders to (`register`), and the helpers they share. Imports no family module: each one
imports this (see the package docstring).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from curate.errors import ConfigError
from curate.models import hub

FAMILIES: dict[str, Callable[..., VideoFamily]] = {}


def register(name: str):
    """Decorator: `@register("preset")` makes `load_family("preset", ...)` call the builder."""

    def add(builder: Callable[..., VideoFamily]) -> Callable[..., VideoFamily]:
        known = FAMILIES.get(name)
        if known is not None and _qualname(known) != _qualname(builder):
            raise ValueError(f"model preset {name!r} is registered twice: {_qualname(known)} and {_qualname(builder)}")
        FAMILIES[name] = builder
        return builder

    return add


class VideoFamily(ABC):
    """A text-to-video model as the training loop uses it; see the `train.models` docstring.

    Subclasses implement the abstract methods; this base freezes the encoders and limits
    `state_dict` to the transformer. Tensors come back on `device`, embeddings and latents
    in float32 whatever the encoders' dtype.
    """

    # The transformer layers LoRA adapts when the lora_targets setting is empty: endings of
    # module names, as peft's target_modules matches them.
    lora_targets: tuple[str, ...] = ()

    def __init__(self, *, transformer, vae, text_encoder, tokenizer, text_max_length: int, device, preset: str, source: str):
        # The trainable nn.Module; None in a family of encoders alone (`load_family(with_transformer=False)`).
        self.transformer = transformer.to(device) if transformer is not None else None
        # What `predict` calls: the transformer itself, or the trainer's DDP wrapper around it
        # (weights and state dicts always come from the bare transformer).
        self.denoiser = self.transformer
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.text_max_length = text_max_length  # every text embedding is padded to this length
        self.device = torch.device(device)
        self.preset = preset
        self.source = source  # "random" for built presets, else the folder the weights came from
        self._kept_texts: dict[str, torch.Tensor] = {}  # prompt -> its embedding, on the CPU (`keep_texts`)

    @abstractmethod
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B, text_max_length, D) float32 embeddings; "" is a valid prompt (the unconditional
        input of classifier-free guidance)."""

    @abstractmethod
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, T, H, W, 3) -> normalised float32 latents (B, C, T', H', W'), no grad."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, T', H', W') -> uint8 frames (B, T, H, W, 3), no grad."""

    @abstractmethod
    def predict(self, latents_noisy: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """The velocity (noise - x0) for x_t = (1 - t) x0 + t noise, shape of `latents_noisy`.

        `timesteps`: (B,) flow-matching time t in [0, 1] (1 is pure noise); a family converts it
        to its transformer's own convention (Wan: t * 1000).
        """

    @abstractmethod
    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the latents of a video of that shape (checked first)."""

    @abstractmethod
    def check_video_shape(self, num_frames: int, height: int, width: int) -> None:
        """Raise ConfigError (a ValueError) naming the valid values when the shape does not fit."""

    @abstractmethod
    def shape_steps(self) -> tuple[int, int]:
        """(frame_step, side_multiple): the model takes clips of 1 + k * frame_step frames whose
        height and width are multiples of side_multiple (what `check_video_shape` checks)."""

    def keep_texts(self, prompts: list[str]) -> None:
        """Embed `prompts` now and keep their embeddings (on the CPU), so that `embed_text` still
        gives them once the text encoder is released."""
        new = [prompt for prompt in dict.fromkeys(prompts) if prompt not in self._kept_texts]
        if new:
            for prompt, embedding in zip(new, self.encode_text(new), strict=True):
                self._kept_texts[prompt] = embedding.cpu()

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """What `encode_text` gives, from the kept embeddings when they hold every prompt (the
        same tensors each time), else from the text encoder."""
        if all(prompt in self._kept_texts for prompt in prompts):
            return torch.stack([self._kept_texts[prompt] for prompt in prompts]).to(self.device)
        if self.text_encoder is None:
            raise ValueError(
                "the text encoder was released (a run on latent shards embeds no caption) and a prompt it did not keep "
                "came after: train from latent shards or from video shards, not both"
            )
        return self.encode_text(prompts)

    def release_text_encoder(self) -> None:
        """Drop the text encoder (Wan's UMT5-XXL holds some 11 GB in bf16): from now on only the
        prompts kept by `keep_texts` embed (`embed_text`; `encode_text` needs the encoder)."""
        self.text_encoder = None

    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise ConfigError unless `frames` is a uint8 (B, T, H, W, 3) tensor of a valid shape."""
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
            described = f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ConfigError(f"frames must be a uint8 tensor (B, T, H, W, 3), got {described}")
        self.check_video_shape(*frames.shape[1:4])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The transformer's weights: the only part training changes."""
        return self.transformer.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True):
        """Load transformer weights written by `state_dict`."""
        return self.transformer.load_state_dict(state, strict=strict)


def frames_to_pixels(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> (B, 3, T, H, W) in [-1, 1], the layout video VAEs take."""
    return (frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0).to(dtype)


def pixels_to_frames(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3), rounded to the nearest level."""
    levels = ((pixels.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return levels.to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()


def cast_weights(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model` (a diffusers model) with its floating-point weights in `dtype`, except those of the
    modules it keeps in float32 (`_keep_in_fp32_modules`; Wan: norms, time embedding, modulation
    tables), as `from_pretrained(..., dtype=dtype)` loads them: for models built from config."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and keep.isdisjoint(name.split(".")):
            tensor.data = tensor.data.to(dtype)
    return model


def fetch_snapshot(model: str, allow_patterns: list[str]) -> str:
    """The local folder of a pretrained preset's `model` (see `curate.models.hub.fetch_snapshot`)."""
    return hub.fetch_snapshot(model, allow_patterns, "video model", "give a local folder in diffusers format as the model source")


def _qualname(builder) -> str:
    return f"{builder.__module__}.{builder.__qualname__}"
