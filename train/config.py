"""The trainer's settings: one dataclass, presets that set many at once, YAML files and --set.

Resolution order: the dataclass defaults, then the preset's values, then `--config FILE`, then
each `--set key=value`, then `--steps`. The resolved settings are written to RUN_DIR/config.json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.errors import ConfigError

DEFAULT_PROMPTS = [
    "A red car drives down a winding mountain road between tall green trees.",
    "Waves roll onto a sandy beach at sunset while a person walks along the shore.",
]


@dataclass
class TrainConfig:
    """Every setting of a training run."""

    preset: str = "tiny"  # model family preset (train.models.presets())
    model_source: str = ""  # a local diffusers folder (or another hub id) instead of the preset's weights
    shards: str = ""  # set by --shards
    # data
    num_frames: int = 9
    height: int = 32
    width: int = 32
    frame_stride: int = 1
    fps: float = 0.0
    batch_size: int = 2
    num_workers: int = 2
    shuffle_buffer: int = 64
    resampled: bool = False  # draw shards with replacement: every rank and worker has data, however few shards
    # optimisation
    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.99  # 0 = no EMA weights
    caption_dropout: float = 0.1  # captions replaced by "" (classifier-free guidance)
    timestep_mean: float = 0.0  # logit-normal timestep sampling: t = sigmoid(N(mean, std))
    timestep_std: float = 1.0
    shift: float = 0.0  # timestep shift; 0 = from the latent resolution (more noise for bigger videos)
    mixed_precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on the CPU; or "no"
    gradient_checkpointing: bool = False
    device: str = "auto"
    seed: int = 0
    # outputs
    log_every: int = 10
    tensorboard: bool = True  # also log to RUN_DIR/tensorboard when TensorBoard is installed
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    sample_every: int = 0  # 0 = samples only at the end
    sample_prompts: list = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    sample_steps: int = 20
    sample_guidance: float = 5.0

    def __post_init__(self) -> None:
        _require(self.steps >= 0, "steps must be >= 0")
        _require(self.batch_size >= 1 and self.num_frames >= 1, "batch_size and num_frames must be >= 1")
        _require(self.num_workers >= 0, "num_workers must be >= 0")
        _require(self.lr > 0 and self.warmup_steps >= 0 and self.grad_clip >= 0, "lr must be > 0, warmup_steps and grad_clip >= 0")
        _require(0 <= self.ema_decay < 1 and 0 <= self.caption_dropout <= 1, "ema_decay must be in [0, 1), caption_dropout in [0, 1]")
        _require(self.timestep_std > 0 and self.shift >= 0, "timestep_std must be > 0 and shift >= 0")
        _require(self.mixed_precision in ("auto", "no"), "mixed_precision must be auto or no")
        _require(self.log_every >= 1 and self.checkpoint_every >= 1 and self.keep_checkpoints >= 1, "log_every, checkpoint_every, keep_checkpoints must be >= 1")


# Preset defaults: what a model family needs to train sensibly (sizes, learning rate).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "wan2.1-t2v-1.3b": {
        "num_frames": 33, "height": 480, "width": 832, "batch_size": 1, "lr": 1e-5, "weight_decay": 0.01,
        "warmup_steps": 100, "ema_decay": 0.999, "steps": 10_000, "checkpoint_every": 500, "log_every": 10,
        "sample_every": 1000, "sample_steps": 40, "gradient_checkpointing": True, "num_workers": 4,
    },  # fmt: skip
}


def resolve(preset: str | None, path: str | None, overrides: list[str], steps: int | None, shards: str | None) -> TrainConfig:
    """The run's settings (see the module docstring)."""
    values: dict[str, Any] = {}
    if path:
        values.update(_read_yaml(Path(path)))
    name = preset or values.get("preset") or "tiny"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    merged = {**PRESETS[name], **values, "preset": name}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        merged[key.strip()] = yaml.safe_load(raw) if raw.strip() else raw
    if steps is not None:
        merged["steps"] = steps
    if shards:
        merged["shards"] = shards
    return _build(merged)


def _build(values: dict[str, Any]) -> TrainConfig:
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown training setting {key!r} (known: {', '.join(known)})")
    typed = {}
    for key, value in values.items():
        default = getattr(TrainConfig(), key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{key} expects true or false, got {value!r}")
        if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, type(default)):
            raise ConfigError(f"{key} expects a {type(default).__name__}, got {value!r}")
        typed[key] = value
    return TrainConfig(**typed)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    return data


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def to_json(config: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n"
