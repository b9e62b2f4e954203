"""LoRA: low-rank adapters trained on the video transformer instead of its own weights (`lora_rank > 0`).

The adapters are peft's, added through diffusers' `add_adapter` to the layers whose names end
with one of the targets (the `lora_targets` setting, or the family's own list when it is empty).
Only adapter weights require grad, so the optimiser, the EMA, DDP's gradient averaging and the
checkpoints hold them alone; on resume the frozen weights come from the preset again.

`export` writes the adapters as diffusers' pipelines load them:

    pipe = WanPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    pipe.load_lora_weights("RUN_DIR/lora")     # reads RUN_DIR/lora/pytorch_lora_weights.safetensors

Keys are `transformer.blocks.0.attn1.to_q.lora_A.weight` and so on, and the file's metadata holds
the adapter's LoraConfig (rank, alpha, targets), so the loader scales the adapters by the trainer's
lora_alpha / lora_rank instead of assuming 1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from curate.errors import ConfigError

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # the file name diffusers' load_lora_weights looks for
ADAPTER = "default"  # peft's name for the one adapter a run trains


def add_adapter(transformer: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> None:
    """Give `transformer` (a diffusers model) LoRA adapters of `rank` on the layers named by
    `targets` and freeze everything else. `alpha` 0 means the rank (the adapters' scale is
    alpha / rank). lora_B starts at zero, so the model first predicts what it did without them.
    The adapters are float32 whatever the frozen weights' dtype (a bf16 base included)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import cast_adapter_dtype

    config = LoraConfig(r=rank, lora_alpha=alpha or rank, lora_dropout=dropout, target_modules=list(targets))
    try:
        transformer.add_adapter(config, adapter_name=ADAPTER)
    except ValueError:  # peft's messages print whole modules; this says what to change
        raise ConfigError(
            f"lora_targets {list(targets)} must each end the name of Linear layers of the transformer (e.g. attn1.to_q, ffn.net.2)"
        ) from None
    # peft gives new adapters the dtype of the layer they adapt, and diffusers' add_adapter does not
    # ask it to upcast them as peft's own get_peft_model does: bf16 weights would lose small updates.
    cast_adapter_dtype(transformer, ADAPTER)


def adapter_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights (every trainable tensor), keyed as in the transformer's state_dict
    (`blocks.0.attn1.to_q.lora_A.default.weight`): what a LoRA checkpoint's "model" holds."""
    return {name: param.detach() for name, param in transformer.named_parameters() if param.requires_grad}


def load_adapter_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights written by `adapter_state_dict` into a transformer with the same adapters."""
    expected = adapter_state_dict(transformer)
    if state.keys() != expected.keys() or any(state[name].shape != tensor.shape for name, tensor in expected.items()):
        raise ValueError(
            "the checkpoint's LoRA adapters differ from this run's (lora_rank, lora_targets or the preset changed): "
            "resume with the settings it was trained with, or use another run folder"
        )
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(state[name])


def export(transformer: torch.nn.Module, folder: Path) -> Path:
    """Write the transformer's current adapter weights to `folder/pytorch_lora_weights.safetensors`
    in diffusers' LoRA format (see the module docstring), atomically: diffusers writes the file
    into a hidden folder beside it, then it is renamed into place. Returns the file's path."""
    from diffusers.loaders import WanLoraLoaderMixin
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    tmp = folder / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while exporting
    # Every transformer-only diffusers pipeline (Wan, CogVideoX, LTX-Video) saves its LoRA this way.
    WanLoraLoaderMixin.save_lora_weights(
        tmp,
        transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=ADAPTER),
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER].to_dict(),
    )
    with open(tmp / WEIGHTS_NAME, "rb+") as file:
        os.fsync(file.fileno())
    final = folder / WEIGHTS_NAME
    os.replace(tmp / WEIGHTS_NAME, final)
    tmp.rmdir()
    return final
