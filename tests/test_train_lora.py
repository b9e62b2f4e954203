"""LoRA training (`lora_rank > 0`) with the tiny preset: only the adapters train, and the loss falls
as in a full fine-tune; checkpoints hold the adapters alone and resume exactly; the export in
RUN_DIR/lora loads into a fresh diffusers WanPipeline and gives the trainer's own EMA outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from safetensors.torch import load_file

from train import checkpoint
from train.__main__ import main
from train.config import TrainConfig, resolve
from train.lora import WEIGHTS_NAME
from train.models import VideoFamily, load_family, presets
from train.trainer import Trainer

STEPS = 30
# lora_alpha twice the rank: the export must carry the scale 2, or a loader assumes 1. A LoRA
# learns at a higher learning rate than a full fine-tune (its updates start at zero).
LORA = {"lora_rank": 4, "lora_alpha": 8.0, "lr": 1e-2}
WAN_LAYERS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
              "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"]  # fmt: skip


class Run(NamedTuple):
    trainer: Trainer
    loss_before: float  # on fixed (t, noise) pairs of the training batch
    loss_after: float


def latent_batch(family: VideoFamily) -> dict:
    """Two random clips and their captions as a latent shard's batch (the step skips the encoders)."""
    frames = torch.randint(0, 256, (2, 9, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    captions = ["a red car on a road", "waves at sunset"]
    # The shape the frames were made at: a batch of latents names its bucket, as the loader's do.
    return {"latents": family.encode_video(frames), "text": family.encode_text(captions), "captions": captions, "bucket": "32x32x9"}


def fixed_loss(family: VideoFamily, batch: dict, pairs: int = 16) -> float:
    """The flow-matching loss on the batch at fixed times and noise: what training lowers, without
    the noise of each step's random draws."""
    x0, text = batch["latents"].repeat(pairs // 2, 1, 1, 1, 1), batch["text"].repeat(pairs // 2, 1, 1)
    t = torch.linspace(0.05, 0.95, pairs)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
    with torch.no_grad():
        return (family.predict(x_t, t, text) - (noise - x0)).pow(2).mean().item()


@pytest.fixture(scope="module")
def runs(offline, tmp_path_factory) -> dict[str, Run]:
    """A full fine-tune and a LoRA run of the tiny preset, STEPS steps each on one batch, then
    checkpointed (which exports the LoRA)."""
    found = {}
    for name, settings in {"full": {}, "lora": LORA}.items():
        config = TrainConfig(warmup_steps=0, caption_dropout=0, ema_decay=0.9, **settings)
        trainer = Trainer(config, tmp_path_factory.mktemp(name))
        batch = latent_batch(trainer.family)
        before = fixed_loss(trainer.family, batch)
        for _ in range(STEPS):
            trainer.train_step(batch)
        found[name] = Run(trainer, before, fixed_loss(trainer.family, batch))
        trainer.save()
    return found


def trainable(trainer: Trainer) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in trainer.family.transformer.named_parameters() if p.requires_grad}


def test_only_the_adapters_train(runs):
    trainer = runs["lora"].trainer
    adapters = trainable(trainer)
    assert {name.split(".lora_")[0] for name in adapters} == {f"blocks.{i}.{layer}" for i in range(2) for layer in WAN_LAYERS}
    assert all(".lora_A." in name or ".lora_B." in name for name in adapters)
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert [id(p) for p in optimised] == [id(p) for p in adapters.values()]
    assert [average.shape for average in trainer.ema] == [p.shape for p in adapters.values()]
    # lora_rank=0: the full fine-tune, every transformer weight in the optimiser.
    full = runs["full"].trainer
    assert len(trainable(full)) == len(list(full.family.transformer.parameters()))


def test_the_loss_falls_with_lora_as_with_a_full_fine_tune(runs):
    """Both runs lower the loss on their batch by a margin (seeds 0-3, by hand: LoRA to 0.78-0.86
    of its start in STEPS steps, the full fine-tune to 0.69-0.80)."""
    for name, run in runs.items():
        assert run.loss_after < 0.9 * run.loss_before, (name, run.loss_before, run.loss_after)


def test_a_lora_checkpoint_holds_the_adapters_alone(runs):
    files = {name: checkpoint.complete(run.trainer.run_dir)[-1] / "state.pt" for name, run in runs.items()}
    state = torch.load(files["lora"], weights_only=True)
    adapters = trainable(runs["lora"].trainer)
    assert state["model"].keys() == adapters.keys()
    assert [t.shape for t in state["ema"]] == [p.shape for p in adapters.values()]
    assert files["lora"].stat().st_size < files["full"].stat().st_size / 2
    # lora_rank=0 checkpoints the whole transformer, as before, and exports nothing.
    full = runs["full"].trainer
    assert torch.load(files["full"], weights_only=True)["model"].keys() == full.family.transformer.state_dict().keys()
    assert not (full.run_dir / "lora").exists()


def test_the_exported_lora_loads_into_a_fresh_wan_pipeline(runs):
    """diffusers' WanPipeline.load_lora_weights on RUN_DIR/lora, over the same base weights (the tiny
    preset of the same seed), gives the trainer's LoRA model with its EMA weights, scale included."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    trainer = runs["lora"].trainer
    exported = load_file(trainer.run_dir / "lora" / WEIGHTS_NAME)
    assert len(exported) == len(trainable(trainer))
    assert all(key.startswith("transformer.blocks.") and key.endswith((".lora_A.weight", ".lora_B.weight")) for key in exported)

    fresh = load_family("tiny", seed=trainer.config.seed)
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn((1, *trainer.family.latent_shape(9, 32, 32)), generator=generator)
    # The same text encoder's (the trainer released its own at its first batch of latents).
    text = fresh.encode_text(["A red car drives down a winding mountain road"])

    def velocity(transformer) -> torch.Tensor:
        with torch.no_grad():
            return transformer(hidden_states=latents, timestep=torch.tensor([400.0]), encoder_hidden_states=text, return_dict=False)[0]

    with trainer._ema_weights():
        expected = velocity(trainer.family.transformer)
    assert not torch.allclose(velocity(trainer.family.transformer), expected)  # the EMA is not the latest weights

    pipe = WanPipeline(
        tokenizer=fresh.tokenizer, text_encoder=fresh.text_encoder, vae=fresh.vae, transformer=fresh.transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )  # fmt: skip
    base = velocity(pipe.transformer)
    pipe.load_lora_weights(trainer.run_dir / "lora")
    loaded = velocity(pipe.transformer)
    assert not torch.allclose(loaded, base)
    assert torch.allclose(loaded, expected, rtol=1e-5, atol=1e-6), (loaded - expected).abs().max()


def train(shards, run: Path, *args: str) -> int:
    settings = ["num_workers=0", "sample_prompts=[]", "tensorboard=false", "checkpoint_every=2", "log_every=1"]
    return main(["--shards", str(shards), "--out", str(run), "--quiet", "--set", *settings, *args])


def losses(run: Path) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_a_stopped_lora_run_resumes_exactly(train_shards, tmp_path, capsys):
    """Stopped after step 2 and run again to step 4: the losses, adapters, EMA, optimiser state and
    export of a run never stopped. LoRA dropout is on: its masks come from each step's seed."""
    args = ["--set", "lora_rank=4", "lora_dropout=0.2"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert train(train_shards, whole, "--steps", "4", *args) == 0
    assert train(train_shards, run, "--steps", "2", *args) == 0
    assert (run / "lora" / WEIGHTS_NAME).exists()
    assert train(train_shards, run, "--steps", "4", *args) == 0
    assert losses(run) == losses(whole)
    resumed, expected = checkpoint.latest(run), checkpoint.latest(whole)
    assert resumed["step"] == expected["step"] == 4
    for name, tensor in expected["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert all(torch.equal(a, b) for a, b in zip(resumed["ema"], expected["ema"], strict=True))
    for param, moments in expected["optimizer"]["state"].items():
        assert all(torch.equal(resumed["optimizer"]["state"][param][key], value) for key, value in moments.items()), param
    exported, expected_export = load_file(run / "lora" / WEIGHTS_NAME), load_file(whole / "lora" / WEIGHTS_NAME)
    assert exported.keys() == expected_export.keys() and all(torch.equal(exported[k], v) for k, v in expected_export.items())
    # Its checkpoints hold adapters only: a full fine-tune in the same folder is refused, in one line.
    capsys.readouterr()
    assert train(train_shards, run, "--steps", "6", "--set", "lora_rank=0") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the checkpoints in ") and "lora_rank=4" in err and err.count("\n") == 1


def test_lora_targets_that_name_no_layer_are_one_error_line(offline, train_shards, tmp_path, capsys):
    assert main(["--shards", str(train_shards), "--out", str(tmp_path / "run"), "--set", "lora_rank=4", "lora_targets=[to_nothing]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: lora_targets ['to_nothing']") and err.count("\n") == 1


def test_the_wan_presets_train_lora_and_a_full_fine_tune_is_one_setting():
    for preset in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b"):
        assert preset in presets()
        config = resolve(preset, None, [], None, "x.tar")
        assert config.lora_rank > 0 and config.lora_alpha == config.lora_rank
    full = resolve("wan2.1-t2v-1.3b", None, ["lora_rank=0", "lr=1e-5"], None, "x.tar")
    assert (full.lora_rank, full.lr) == (0, 1e-5)
    assert resolve("tiny", None, [], None, "x.tar").lora_rank == 0
