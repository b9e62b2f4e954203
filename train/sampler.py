"""Validation sampling: a flow-matching Euler sampler with classifier-free guidance, and the mp4
files a run keeps (`RUN_DIR/samples/step-N-<i>.mp4`).

Flow matching as the families are trained: x_t = (1 - t) x0 + t noise, and the model predicts the
velocity v = dx_t/dt = noise - x0. Sampling integrates dx/dt = v backwards, from pure noise at
t = 1 to data at t = 0, with Euler steps x_next = x + (t_next - t) v(x, t):

    frames = sample(family, ["a red car on a mountain road"], num_frames=9, height=32, width=32)
    paths = sample_to_files(family, prompts, run_dir / "samples", step=1000)
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from curate.storage import write_text_atomic
from train.flow import shift_timesteps
from train.models import VideoFamily

DEFAULT_FPS = 16  # Wan's native frame rate


def timesteps(num_steps: int, shift: float) -> torch.Tensor:
    """The `num_steps + 1` flow times of the sampler, float32, decreasing from exactly 1 to 0.

    Evenly spaced times t are shifted by t' = shift * t / (1 + (shift - 1) * t), the
    resolution-dependent shift of SD3 and Wan. The map keeps 0 and 1 fixed; shift > 1 moves
    the times in between towards 1 (noise), spending more steps where the coarse layout forms.
    Larger videos need a larger shift because the same noise level hides less of their many,
    correlated tokens (diffusers' Wan examples use 3.0 at 480p, 5.0 at 720p); shift = 1 is
    the plain linear schedule. Training should sample its times with the same shift.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift_timesteps(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), shift).float()


def sample(
    family: VideoFamily,
    prompts: list[str],
    num_frames: int,
    height: int,
    width: int,
    num_steps: int = 20,
    guidance_scale: float = 5.0,
    shift: float = 3.0,
    seed: int = 0,
    negative_prompt: str = "",
    autocast: torch.dtype | Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """Generate one video per prompt: uint8 frames (len(prompts), num_frames, height, width, 3).

    Euler integration of the family's velocity over `timesteps(num_steps, shift)`, starting from
    Gaussian noise drawn on the CPU from `seed` (so a seed gives the same start on any device).
    With guidance_scale != 1, each step runs the conditional and unconditional (`negative_prompt`)
    inputs in one batched `predict` and uses v = v_uncond + g * (v_cond - v_uncond).
    `autocast` wraps the transformer calls: a dtype (torch.autocast on the family's device, e.g.
    torch.bfloat16 on CUDA) or a factory of context managers. The transformer runs in eval mode
    and gets its previous train/eval modes back afterwards; the global RNG is not touched.
    """
    if not prompts:
        raise ValueError("sample needs at least one prompt")
    batch = len(prompts)
    shape = (batch, *family.latent_shape(num_frames, height, width))  # validates the video shape
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(family.device)
    guided = guidance_scale != 1.0
    times = timesteps(num_steps, shift).tolist()

    with torch.no_grad(), eval_mode(family.transformer):
        text = family.embed_text(list(prompts) + [negative_prompt] * batch if guided else list(prompts))
        for t, t_next in itertools.pairwise(times):
            model_input = torch.cat([latents, latents]) if guided else latents
            t_batch = torch.full((len(model_input),), t, device=family.device)
            with _autocast_context(autocast, family.device):
                velocity = family.predict(model_input, t_batch, text).float()
            if guided:
                v_cond, v_uncond = velocity.chunk(2)
                velocity = v_uncond + guidance_scale * (v_cond - v_uncond)
            latents = latents + (t_next - t) * velocity
        return family.decode_latents(latents)


def write_mp4(frames: torch.Tensor | np.ndarray, path: str | Path, fps: int = DEFAULT_FPS) -> Path:
    """Encode uint8 RGB frames (T, H, W, 3) as H.264 yuv420p at `path`, atomically: written to
    a temporary file in the same folder, then renamed, so a reader never sees half a video.
    yuv420p halves the chroma resolution, so height and width must be even."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or len(array) == 0:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {array.dtype} {array.shape}")
    height, width = array.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs an even height and width, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "medium"})
            stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
            for frame in array:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())  # flush the encoder's delayed frames
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left behind when encoding failed
    return path


def sample_to_files(
    family: VideoFamily,
    prompts: list[str],
    out_dir: str | Path,
    step: int,
    fps: int = DEFAULT_FPS,
    autocast=None,
    name: str = "",
    **settings,
) -> list[Path]:
    """Sample the prompts with `sample` (`settings` are its keyword arguments: num_frames, height,
    width, num_steps, ...) and write `out_dir/step-{step}-{i}.mp4`, one per prompt, plus
    `out_dir/step-{step}.json` with the prompts and settings; return the mp4 paths. A `name`
    goes after the step (`step-{step}-{name}-{i}.mp4`): samples of another shape at that step."""
    defaults = {n: p.default for n, p in inspect.signature(sample).parameters.items() if p.default is not inspect.Parameter.empty}
    settings = {**defaults, **settings}
    settings.pop("autocast", None)  # how to compute, not what: not recorded
    videos = sample(family, prompts, autocast=autocast, **settings)
    out_dir, base = Path(out_dir), f"step-{step}-{name}" if name else f"step-{step}"
    paths = [write_mp4(video, out_dir / f"{base}-{i}.mp4", fps=fps) for i, video in enumerate(videos)]
    record = {"step": step, "preset": family.preset, "prompts": list(prompts), "files": [p.name for p in paths], "fps": fps, **settings}
    write_text_atomic(json.dumps(record, indent=2) + "\n", out_dir / f"{base}.json")
    return paths


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Eval mode inside (no dropout); afterwards every submodule gets its own previous mode back,
    since a trainer may keep some parts in eval while the rest trains."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training  # set directly: Module.train() would recurse and overwrite children


def _autocast_context(autocast, device: torch.device) -> contextlib.AbstractContextManager:
    if autocast is None:
        return contextlib.nullcontext()
    if isinstance(autocast, torch.dtype):
        return torch.autocast(torch.device(device).type, dtype=autocast)
    return autocast()
