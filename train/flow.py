"""Flow matching (rectified flow): how a training example is noised and what the model must predict.

x_t = (1 - t) x0 + t noise, for t in (0, 1); the model predicts the velocity noise - x0. Timesteps
are drawn logit-normal (most weight on the middle of the path, where learning is hardest) and
then shifted towards noise by a factor that grows with the number of latent tokens: bigger videos
keep more structure at a given t, so they need more noise to train the same (SD3, Wan).
"""

from __future__ import annotations

import math

import torch

# Shift by latent tokens: log(shift) goes linearly from 0.5 at 256 tokens to 1.15 at 4096 (SD3's
# rule), and is extrapolated outside that range.
_BASE_TOKENS, _MAX_TOKENS, _BASE_MU, _MAX_MU = 256, 4096, 0.5, 1.15


def resolution_shift(latent_tokens: int) -> float:
    """The timestep shift for a video of `latent_tokens` transformer tokens."""
    slope = (_MAX_MU - _BASE_MU) / (_MAX_TOKENS - _BASE_TOKENS)
    return math.exp(_BASE_MU + slope * (latent_tokens - _BASE_TOKENS))


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = shift t / (1 + (shift - 1) t): the same endpoints, more time near t = 1 for shift > 1."""
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(count: int, generator: torch.Generator, mean: float, std: float, shift: float) -> torch.Tensor:
    """`count` training timesteps in (0, 1): logit-normal, then shifted."""
    logits = mean + std * torch.randn(count, generator=generator)
    return shift_timesteps(torch.sigmoid(logits), shift)


def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity) for clean latents x0 and per-example times t."""
    t = t.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise, noise - x0
