"""The trainer's settings: the data settings (`DataConfig`, what the loader needs) and the rest of a
run (`TrainConfig`, a DataConfig with more), presets that set many at once, YAML files and --set.

Resolution order: the dataclass defaults, then the preset's values, then `--config FILE`, then
each `--set key=value`, then `--steps`. The resolved settings are written to RUN_DIR/config.json,
flat: the data settings are keys like any other.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.errors import ConfigError
from curate.settings import build, parse_assignment, read_yaml
from train.buckets import DEFAULT_ASPECTS, parse_aspect

DEFAULT_PROMPTS = [
    "A red car drives down a winding mountain road between tall green trees.",
    "Waves roll onto a sandy beach at sunset while a person walks along the shore.",
]


@dataclass
class DataConfig:
    """What the loader reads and how clips become training tensors."""

    shards: str = ""  # set by --shards
    num_frames: int = 9  # frames per training clip
    height: int = 32
    width: int = 32
    frame_stride: int = 1  # take every n-th frame of the packed clip (ignored when fps is set)
    fps: float = 0.0  # sample at this frame rate instead of a stride (0 = use frame_stride)
    batch_size: int = 2
    num_workers: int = 2
    shuffle_buffer: int = 64  # samples shuffled per worker (0 = read in shard order)
    resampled: bool = False  # draw shards with replacement: every rank and worker has data, however few shards
    seed: int = 0  # the data order and frame offsets; the trainer seeds weights and steps with it too
    # buckets (train/buckets.py): each clip trains at the shape nearest its own, height * width at most the configured
    buckets: bool = True  # false: every clip resized to cover height x width and centre-cropped (one shape)
    bucket_aspects: list = field(default_factory=lambda: list(DEFAULT_ASPECTS))  # "W:H", quoted in YAML
    bucket_max_crop: float = 0.1  # share of a side a clip may lose to fit its bucket; more: skipped (crop_too_large)
    bucket_min_frames: int = 1  # frames of the shortest bucket; a clip too short for it is skipped (too_short)
    # validation data: other shards, or a share of these held out by key hash (never trained on)
    val_shards: str = ""  # set by --val-shards
    val_fraction: float = 0.0

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1 and self.num_frames >= 1, "batch_size and num_frames must be >= 1")
        _require(self.num_workers >= 0, "num_workers must be >= 0")
        _require(0 <= self.bucket_max_crop < 1, "bucket_max_crop must be in [0, 1)")
        _require(1 <= self.bucket_min_frames <= self.num_frames, "bucket_min_frames must be in [1, num_frames]")
        _require(bool(self.bucket_aspects), "bucket_aspects must list at least one aspect")
        for aspect in self.bucket_aspects:
            parse_aspect(aspect)
        _require(0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)")
        _require(not (self.val_shards and self.val_fraction), "set val_shards or val_fraction, not both")

    @property
    def workers(self) -> int:
        """Worker streams: DataLoader processes, or the main process alone."""
        return max(1, self.num_workers)


@dataclass
class TrainConfig(DataConfig):
    """Every setting of a training run: the data settings, then the model, optimisation and outputs."""

    preset: str = "tiny"  # model family preset (train.models.presets())
    model_source: str = ""  # a local diffusers folder (or another hub id) instead of the preset's weights
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
    # LoRA (train/lora.py): low-rank adapters train instead of the transformer's weights
    lora_rank: int = 0  # 0 = full fine-tune: every transformer weight trains
    lora_alpha: float = 0.0  # the adapters are scaled by lora_alpha / lora_rank; 0 = the rank (scale 1)
    lora_dropout: float = 0.0
    # Layer-name endings that get adapters; [] = the model family's (Wan: to_q, to_k, to_v, to_out.0 of both
    # attentions, ffn.net.0.proj, ffn.net.2)
    lora_targets: list = field(default_factory=list)
    # Memory (train/offload.py). The frozen transformer weights of a LoRA run: auto = bfloat16 on CUDA with
    # bf16 autocast (the adapters still train in float32), else float32; or float32, bfloat16 (bf16 compute)
    base_dtype: str = "auto"
    # blocks: the frozen weights of the transformer's blocks stay in pinned CPU memory and visit the GPU one
    # block at a time (LoRA with gradient_checkpointing only); none: all on the device
    offload: str = "none"
    # outputs
    log_every: int = 10
    tensorboard: bool = True  # also log to RUN_DIR/tensorboard when TensorBoard is installed
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    sample_every: int = 0  # 0 = samples only at the end
    sample_prompts: list = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    sample_steps: int = 20
    sample_guidance: float = 5.0
    val_every: int = 100  # steps between validation losses (0 = none); only with val_shards or val_fraction
    val_batches: int = 4  # batches of the validation data the loss is computed on (the same ones every time)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.steps >= 0, "steps must be >= 0")
        _require(self.lr > 0 and self.warmup_steps >= 0 and self.grad_clip >= 0, "lr must be > 0, warmup_steps and grad_clip >= 0")
        _require(0 <= self.ema_decay < 1 and 0 <= self.caption_dropout <= 1, "ema_decay must be in [0, 1), caption_dropout in [0, 1]")
        _require(self.timestep_std > 0 and self.shift >= 0, "timestep_std must be > 0 and shift >= 0")
        _require(self.mixed_precision in ("auto", "no"), "mixed_precision must be auto or no")
        _require(self.lora_rank >= 0 and self.lora_alpha >= 0, "lora_rank and lora_alpha must be >= 0")
        _require(0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)")
        _require(self.base_dtype in ("auto", "float32", "bfloat16"), "base_dtype must be auto, float32 or bfloat16")
        _require(
            self.base_dtype != "bfloat16" or (self.lora_rank > 0 and self.mixed_precision == "auto"),
            "base_dtype=bfloat16 needs lora_rank > 0 (a full fine-tune trains those weights, in float32) and "
            "mixed_precision=auto (bf16 compute)",
        )
        _require(self.offload in ("none", "blocks"), "offload must be none or blocks")
        _require(
            self.offload == "none" or (self.lora_rank > 0 and self.gradient_checkpointing),
            "offload=blocks needs lora_rank > 0 (only frozen weights are offloaded) and gradient_checkpointing=true "
            "(without it backward keeps every block's weights on the device)",
        )
        _require(
            self.log_every >= 1 and self.checkpoint_every >= 1 and self.keep_checkpoints >= 1,
            "log_every, checkpoint_every, keep_checkpoints must be >= 1",
        )
        _require(self.val_every >= 0 and self.val_batches >= 1, "val_every must be >= 0 and val_batches >= 1")

    def base_weights_dtype(self, device_type: str) -> str:
        """The dtype the transformer's weights load in on a `device_type` device: base_dtype, where
        auto is bfloat16 for a frozen LoRA base under bf16 autocast (CUDA) and float32 otherwise."""
        if self.base_dtype != "auto":
            return self.base_dtype
        bf16_compute = device_type == "cuda" and self.mixed_precision == "auto"
        return "bfloat16" if self.lora_rank > 0 and bf16_compute else "float32"


# Wan 2.1 at 480p, the size both Wan presets train at.
_WAN_480P = {
    "num_frames": 33, "height": 480, "width": 832, "batch_size": 1, "weight_decay": 0.01,
    "warmup_steps": 100, "ema_decay": 0.999, "steps": 10_000, "checkpoint_every": 500, "log_every": 10,
    "sample_every": 1000, "sample_steps": 40, "gradient_checkpointing": True, "num_workers": 4,
}  # fmt: skip
# The Wan presets train LoRA adapters of rank 32 at lr 1e-4. A full fine-tune of the 1.3B model:
# --set lora_rank=0 lr=1e-5 (the 14B model's weights, optimiser state and EMA do not fit one GPU).
_WAN_LORA = {"lora_rank": 32, "lora_alpha": 32.0, "lr": 1e-4}

# Preset defaults: what a model family needs to train sensibly (sizes, learning rate, LoRA).
PRESETS: dict[str, dict[str, Any]] = {
    # 32x32 at the model's 16-pixel steps leaves room for one shape: tiny trains at that fixed size,
    # a full fine-tune (lora_rank=0).
    "tiny": {"buckets": False},
    "wan2.1-t2v-1.3b": {**_WAN_480P, **_WAN_LORA},
    "wan2.1-t2v-14b": {**_WAN_480P, **_WAN_LORA},
}


def resolve(
    preset: str | None, path: str | None, overrides: list[str], steps: int | None, shards: str | None, val_shards: str | None = None
) -> TrainConfig:
    """The run's settings (see the module docstring)."""
    values = read_yaml(Path(path)) if path else {}
    name = preset or values.get("preset") or "tiny"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    merged = {**PRESETS[name], **values, "preset": name}
    merged.update(parse_assignment(item) for item in overrides)
    if steps is not None:
        merged["steps"] = steps
    if shards:
        merged["shards"] = shards
    if val_shards:
        merged["val_shards"] = val_shards
    return build(TrainConfig, merged, what="training setting")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def to_json(config: TrainConfig) -> str:
    """The settings as RUN_DIR/config.json holds them: one flat object, keys sorted."""
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n"
