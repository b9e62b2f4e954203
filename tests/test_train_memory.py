"""The trainer's memory settings with the tiny preset on the CPU: a bf16 frozen base under fp32 LoRA
adapters (`base_dtype`), and block-wise offload of the frozen weights (`offload: blocks`), which
must change nothing but where the weights wait, and keep one block's weights out at a time."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from safetensors.torch import load_file

from curate.errors import ConfigError
from train import checkpoint
from train.__main__ import main
from train.config import TrainConfig
from train.lora import WEIGHTS_NAME
from train.models import cast_weights, load_family
from train.offload import blocks_of
from train.trainer import Trainer

LORA = {"lora_rank": 4, "lr": 1e-2, "warmup_steps": 0, "caption_dropout": 0.0, "ema_decay": 0.9, "tensorboard": False}
# What WanTransformer3DModel keeps in float32 whatever the dtype it loads in (_keep_in_fp32_modules).
FP32_MODULES = {"rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"}


def frozen(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if not p.requires_grad]


def latent_batch(trainer: Trainer) -> dict:
    """Two random clips' latents and captions' embeddings, as a latent shard's batch."""
    latents = torch.randn((2, *trainer.family.latent_shape(9, 32, 32)), generator=torch.Generator().manual_seed(0))
    captions = ["a red car on a road", "waves at sunset"]
    # A batch of latents names the shape its clips were encoded at, as the loader's batches do.
    return {"latents": latents, "text": trainer.family.encode_text(captions), "captions": captions, "bucket": "32x32x9"}


def test_base_dtype_auto_is_bf16_for_a_lora_base_under_cuda_autocast():
    def resolved(device_type: str, **settings) -> str:
        return TrainConfig(**settings).base_weights_dtype(device_type)

    assert resolved("cuda", lora_rank=4) == "bfloat16"
    assert resolved("cpu", lora_rank=4) == "float32"
    assert resolved("cuda") == "float32"  # a full fine-tune trains the weights: float32
    assert resolved("cuda", lora_rank=4, mixed_precision="no") == "float32"
    assert resolved("cpu", lora_rank=4, base_dtype="bfloat16") == "bfloat16"
    assert resolved("cuda", lora_rank=4, base_dtype="float32") == "float32"
    with pytest.raises(ConfigError, match="base_dtype=bfloat16 needs .* mixed_precision=auto"):
        TrainConfig(lora_rank=4, base_dtype="bfloat16", mixed_precision="no")  # bf16 weights need bf16 compute


@pytest.mark.parametrize(
    ("settings", "start"),
    [
        (["offload=blocks", "gradient_checkpointing=true"], "error: offload=blocks needs lora_rank > 0"),
        (["offload=blocks", "lora_rank=4"], "error: offload=blocks needs lora_rank > 0"),  # no checkpointing
        (["base_dtype=bfloat16"], "error: base_dtype=bfloat16 needs lora_rank > 0"),
        (["offload=disk"], "error: offload must be none or blocks"),
    ],
)
def test_memory_settings_that_cannot_work_are_one_error_line(tmp_path, capsys, settings, start):
    assert main(["--shards", "unused.tar", "--out", str(tmp_path / "run"), "--set", *settings]) == 2
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1, err


def test_cast_weights_keeps_in_float32_what_from_pretrained_keeps(tmp_path):
    """A transformer built from config and cast gets the dtypes from_pretrained(dtype=bf16) gives."""
    from diffusers import WanTransformer3DModel

    built = load_family("tiny", seed=0).transformer
    built.save_pretrained(tmp_path)
    loaded = WanTransformer3DModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    cast = cast_weights(built, torch.bfloat16)
    dtypes = {name: p.dtype for name, p in cast.named_parameters()}
    assert dtypes == {name: p.dtype for name, p in loaded.named_parameters()}
    kept = {name for name, dtype in dtypes.items() if dtype == torch.float32}
    assert kept and all(FP32_MODULES & set(name.split(".")) for name in kept)
    assert torch.bfloat16 in dtypes.values()


def test_a_bf16_base_trains_float32_adapters_and_resumes_exactly(offline, tmp_path):
    """base_dtype=bfloat16 on the CPU (bf16 autocast there too), with the blocks offloaded as on a
    small GPU: the frozen weights are bf16 but for the modules diffusers keeps in float32; the
    adapters, their EMA and optimiser state and the export are float32; a run stopped after a step
    and resumed repeats the uninterrupted one."""
    config = TrainConfig(base_dtype="bfloat16", offload="blocks", gradient_checkpointing=True, **LORA)
    whole = Trainer(config, tmp_path / "whole")
    batch = latent_batch(whole)
    losses = [whole.train_step(batch)[0] for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses)
    for name, param in whole.family.transformer.named_parameters():
        expected = torch.float32 if param.requires_grad or FP32_MODULES & set(name.split(".")) else torch.bfloat16
        assert param.dtype == expected, name
    moments = [t for state in whole.optimizer.state.values() for t in state.values() if t.ndim]
    assert moments and {t.dtype for t in [*moments, *whole.ema]} == {torch.float32}

    stopped = Trainer(config, tmp_path / "run")
    assert stopped.train_step(batch)[0] == losses[0]
    stopped.save()
    exported = load_file(tmp_path / "run" / "lora" / WEIGHTS_NAME)
    assert exported and {t.dtype for t in exported.values()} == {torch.float32}
    resumed = Trainer(config, tmp_path / "run")
    resumed.load_state_dict(checkpoint.latest(tmp_path / "run"))
    assert resumed.train_step(batch)[0] == losses[1]
    assert all(torch.equal(a, b) for a, b in zip(resumed.params, whole.params, strict=True))


def test_block_offload_changes_no_loss_and_lends_one_block_at_a_time(offline, tmp_path):
    """With offload=blocks every block's frozen weights are swapped for copies for its forward
    and for its recomputation in backward (0, 1, then 1, 0), the copies of one block are gone
    before another's are made, and the losses and adapters are bit-identical to no offload."""
    settings = {**LORA, "gradient_checkpointing": True}
    plain = Trainer(TrainConfig(**settings), tmp_path / "plain")
    offloaded = Trainer(TrainConfig(offload="blocks", **settings), tmp_path / "offloaded")
    blocks = blocks_of(offloaded.family.transformer)
    at_rest = [[id(p) for p in frozen(block)] for block in blocks]
    lent: list[tuple[int, list[weakref.ref]]] = []  # (block, its weights while it runs)
    still_lent: list[int] = []  # copies of other blocks alive when a block's are made

    def watch(index: int):
        def hook(block, args):  # runs after the offload's own pre-hook: the block holds its copies
            still_lent.append(sum(ref() is not None for _, refs in lent for ref in refs))
            weights = frozen(block)
            assert not {id(p) for p in weights} & set(at_rest[index])
            lent.append((index, [weakref.ref(p) for p in weights]))

        return hook

    watching = [block.register_forward_pre_hook(watch(index)) for index, block in enumerate(blocks)]
    batch = latent_batch(plain)
    for _ in range(2):
        lent.clear()
        assert offloaded.train_step(batch) == plain.train_step(batch)
        assert [index for index, _ in lent] == [0, 1, 1, 0] and still_lent[-4:] == [0, 0, 0, 0]
        assert not any(ref() for _, refs in lent for ref in refs)  # all released after the step
        assert [[id(p) for p in frozen(block)] for block in blocks] == at_rest
    assert all(torch.equal(a, b) for a, b in zip(offloaded.params, plain.params, strict=True))
    for handle in watching:
        handle.remove()
    offloaded.block_offload.remove()
    assert not any(block._forward_pre_hooks or block._forward_hooks for block in blocks)
