"""The training loop: flow matching on latents of clips streamed from shards.

`Trainer.run` trains until `config.steps`, resuming from the newest checkpoint in RUN_DIR. Each step
draws its randomness (timesteps, noise, caption dropout) from a generator seeded by the run seed
and the step number, so a resumed run repeats exactly what the uninterrupted one would have done;
the data position (epoch, each worker's place in its stream, for every rank) is saved with every
checkpoint. A SIGTERM finishes the current step, saves a checkpoint and stops.

With `lora_rank > 0` only LoRA adapters train (`train.lora`): the optimiser, the EMA and the
checkpoints hold them alone, and each checkpoint also exports them for diffusers to
RUN_DIR/lora/pytorch_lora_weights.safetensors. The frozen weights they adapt can be bf16
(`base_dtype`, the default on CUDA) and can wait in CPU memory between uses (`offload: blocks`,
`train.offload`).

Under torchrun each rank trains on its own share of the shards with the transformer wrapped in
DDP; rank 0 writes the run folder (see `train.distributed`). Batches of latent shards (`python -m
train precompute`) carry VAE latents and text embeddings: the step skips both encoders, and the
text encoder is released at the first such batch (`_release_text_encoder`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from curate.models.hub import resolve_device
from curate.storage import write_text_atomic
from train import checkpoint, distributed, lora, offload
from train.buckets import Bucket, Buckets
from train.config import TrainConfig, to_json
from train.data import make_loader, shard_urls
from train.flow import noised, resolution_shift, sample_timesteps
from train.models import load_family
from train.validation import has_validation, validation_batches, validation_loss


class Trainer:
    """One training run in one RUN_DIR (see the module docstring)."""

    def __init__(self, config: TrainConfig, run_dir: Path):
        # Shards that are not there are an error now, not after the model has loaded (minutes for
        # a large one) and the loader first asks for them; `precompute` checks first too.
        for spec in filter(None, (config.shards, config.val_shards)):
            shard_urls(spec)
        self.config, self.run_dir = config, Path(run_dir)
        self.world = distributed.from_environment()
        self.device = distributed.start(self.world, resolve_device(config.device, "device"))
        torch.manual_seed(config.seed)
        self.base_dtype = getattr(torch, config.base_weights_dtype(self.device.type))
        self.family = load_family(
            config.preset, self.device, self._text_dtype(), seed=config.seed, source=config.model_source or None,
            transformer_dtype=self.base_dtype,
        )  # fmt: skip
        self.family.check_video_shape(config.num_frames, config.height, config.width)
        self.buckets = Buckets.for_run(config, *self.family.shape_steps())
        model = self.family.transformer.train()
        if config.lora_rank:  # freezes the transformer's own weights
            targets = config.lora_targets or self.family.lora_targets
            lora.add_adapter(model, config.lora_rank, config.lora_alpha, config.lora_dropout, targets)
        if config.gradient_checkpointing and hasattr(model, "enable_gradient_checkpointing"):
            model.enable_gradient_checkpointing()
        self.params = [p for p in model.parameters() if p.requires_grad]
        if self.world.distributed:  # averages gradients across ranks during backward
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # broadcast_buffers=False: the buffers are constants (RoPE tables), and rank 0 runs
            # the model alone while sampling, so a forward must never wait on the other ranks.
            self.family.denoiser = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
        # After DDP, which broadcasts every weight from the device when it wraps the model.
        self.block_offload = offload.BlockOffload(model, self.device) if config.offload == "blocks" else None
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
        warmup = max(1, config.warmup_steps)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.ema = [p.detach().clone() for p in self.params] if config.ema_decay else None
        _, frames, height, width = self.family.latent_shape(config.num_frames, config.height, config.width)
        self.shift = config.shift or resolution_shift(frames * (height // 2) * (width // 2))  # 2x2 patches
        self.step, self.epoch, self.next_worker = 0, 0, 0  # epoch: of the latest batch (metrics)
        self.first_epoch = 0  # where loader workers with no position yet begin
        self.start: dict[int, tuple[int, int]] = {}  # loader worker -> (epoch, batches handed on)
        self.counts = _new_counts()  # this rank's samples trained per bucket and skipped per reason, all run long
        self.val_examples: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # encoded once, on the CPU
        self.stop_requested = False
        self.null_text: torch.Tensor | None = None  # the "" embedding, for latent batches
        self.tensorboard = None

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": lora.adapter_state_dict(self.family.transformer) if self.config.lora_rank else self.family.state_dict(),
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "data": {"ranks": distributed.gather(self.world, self._data_position())},
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        saved_rank = state["config"].get("lora_rank", 0)
        if saved_rank != self.config.lora_rank:  # the checkpoint holds other weights than this run trains
            raise ValueError(
                f"the checkpoints in {self.run_dir / 'checkpoints'} were trained with lora_rank={saved_rank}, this run has "
                f"lora_rank={self.config.lora_rank}: resume with the same setting or use another run folder"
            )
        if self.config.lora_rank:
            lora.load_adapter_state_dict(self.family.transformer, state["model"])
        else:
            self.family.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema = [t.to(self.device) for t in state["ema"]]
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        ranks = state["data"]["ranks"]
        mine = ranks[self.world.rank] if len(ranks) == self.world.world_size else None
        # Positions count batches (a checkpoint without "counts" counted samples: start afresh too).
        if mine is not None and int(mine["workers"]) == self.config.workers and "counts" in mine:
            self.epoch, self.first_epoch, self.next_worker = int(mine["epoch"]), int(mine["first_epoch"]), int(mine["next_worker"])
            self.start = {int(w): (int(e), int(n)) for w, (e, n) in mine["start"].items()}
            self.counts = mine["counts"]
        else:  # other ranks or loader workers split the shards otherwise: start the next epoch afresh
            self.epoch = self.first_epoch = max(int(r["epoch"]) for r in ranks) + 1
            self.start, self.next_worker = {}, 0
            if self.world.is_main:  # every rank's counts so far, summed, so the logged totals go on
                self.counts = _summed([r["counts"] for r in ranks if "counts" in r])

    def _data_position(self) -> dict:
        return {
            "epoch": self.epoch,
            "first_epoch": self.first_epoch,
            "workers": self.config.workers,
            "start": {worker: [epoch, number] for worker, (epoch, number) in self.start.items()},
            "next_worker": self.next_worker,
            "counts": self.counts,
        }

    # -- one step -------------------------------------------------------------------------------

    def train_step(self, batch: dict) -> tuple[float, float]:
        """One optimiser step on `batch`; returns (loss, gradient norm before clipping)."""
        config = self.config
        # Each rank draws its own timesteps and noise (its own examples), repeatably.
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + self.step + self.world.rank * 2**40)
        dropped = [torch.rand(1, generator=generator).item() < config.caption_dropout for _ in batch["captions"]]
        x0, text = self._encode(batch, dropped)
        t = sample_timesteps(len(dropped), generator, config.timestep_mean, config.timestep_std, self.shift)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        x_t, target = noised(x0, noise, t.to(self.device))
        forward_seed = int(torch.randint(2**62, (1,), generator=generator))
        with self._autocast(), self._seeded_forward(forward_seed):
            velocity = self.family.predict(x_t, t.to(self.device), text)
        loss = torch.nn.functional.mse_loss(velocity.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip if config.grad_clip else math.inf)
        self.optimizer.step()
        self.schedule.step()
        if self.ema is not None:
            with torch.no_grad():
                for average, param in zip(self.ema, self.params, strict=True):
                    average.lerp_(param.detach(), 1 - config.ema_decay)
        self.step += 1
        return loss.item(), float(norm)

    @contextlib.contextmanager
    def _seeded_forward(self, seed: int):
        """The forward's own random draws (LoRA dropout) from `seed`, so a resumed run repeats
        them; the global generators get their state back afterwards."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield

    def _encode(self, batch: dict, dropped: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents, text embeddings) of a batch, with the dropped captions replaced by "":
        encoded here from frames and captions, or read from a latent shard's batch."""
        if "latents" in batch:
            if self.family.text_encoder is not None:
                self._release_text_encoder()
            return self._stored_latents(batch["latents"], Bucket.from_name(batch["bucket"])), self._stored_text(batch["text"], dropped)
        captions = ["" if drop else caption for caption, drop in zip(batch["captions"], dropped, strict=True)]
        return self.family.encode_video(batch["frames"].to(self.device)), self.family.embed_text(captions)

    def _release_text_encoder(self) -> None:
        """A run on latent shards embeds no caption: it keeps what it still embeds (the "" of
        dropped captions, the sample prompts and their negative, "") and frees the text encoder's
        memory for the steps. The validation clips were encoded when the run began."""
        self.family.keep_texts(["", *self.config.sample_prompts])
        self.family.release_text_encoder()

    def _stored_latents(self, latents: torch.Tensor, bucket: Bucket) -> torch.Tensor:
        """Latents made from clips of `bucket`'s shape, which must be one of this run's."""
        shape = tuple(latents.shape[1:])
        if bucket not in self.buckets.shapes or shape != self.family.latent_shape(bucket.num_frames, bucket.height, bucket.width):
            raise ValueError(
                f"latent shards hold latents of shape {shape} (of {bucket.name} clips), which this run's model and shapes do not "
                "take: precompute them with the same preset, num_frames, height, width and bucket settings"
            )
        return latents.to(self.device, torch.float32)

    def _stored_text(self, text: torch.Tensor, dropped: list[bool]) -> torch.Tensor:
        """Stored embeddings padded back to the model's length (they are kept without their
        trailing zeros); dropped captions get the embedding of ""."""
        length = self.family.text_max_length
        if text.shape[1] > length:
            raise ValueError(f"latent shards hold text embeddings of {text.shape[1]} tokens; this model takes {length}")
        text = torch.nn.functional.pad(text.to(self.device, torch.float32), (0, 0, 0, length - text.shape[1]))
        if any(dropped):
            if self.null_text is None:
                self.null_text = self.family.embed_text([""])[0]
            text[torch.tensor(dropped, device=self.device)] = self.null_text
        return text

    # -- the loop -------------------------------------------------------------------------------

    def run(self, progress: bool = True) -> list[dict]:
        """Train to `config.steps` (resuming); returns the logged metrics of this invocation."""
        main = self.world.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(to_json(self.config), self.run_dir / "config.json")
        state = checkpoint.latest(self.run_dir, self._skipped_checkpoints if main else lambda problems, used: None)
        if state is not None:
            self.load_state_dict(state)
        if main:
            self._forget_metrics_after(self.step)  # logged by a run killed after its last checkpoint
            self.tensorboard = _tensorboard_writer(self.run_dir, self.step) if self.config.tensorboard else None
            if self.config.val_every and self.step < self.config.steps:
                self._load_validation()  # now, so that a validation set without a usable clip fails before training
        logged: list[dict] = []
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        try:
            show = progress and main
            with tqdm(total=self.config.steps, initial=self.step, desc="train", unit="step", disable=not show, file=sys.stderr) as bar:
                self._loop(bar, logged)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self.tensorboard is not None:
                self.tensorboard.close()
        distributed.finish(self.world)
        return logged

    def _loop(self, bar: tqdm, logged: list[dict]) -> None:
        config, world = self.config, self.world
        window, window_start = _new_window(), time.perf_counter()
        # One loader for the whole run: its workers go on from epoch to epoch by themselves.
        loader = make_loader(
            config, rank=world.rank, world_size=world.world_size, epoch=self.first_epoch, start=self.start,
            first_worker=self.next_worker, epochs=None, buckets=self.buckets,
        )  # fmt: skip
        batches = iter(loader)
        while self.step < config.steps and not self.stop_requested:
            waited = time.perf_counter()
            batch = next(batches, None)
            window["wait"] += time.perf_counter() - waited
            if batch is None:  # every worker stopped: none has a usable sample
                raise ValueError(_no_samples_message(config.shards, world))
            loss, _ = self.train_step(batch)
            self.start[batch["worker"]] = (batch["epoch"], batch["position"])
            self.epoch = batch["epoch"]
            self.next_worker = (batch["worker"] + 1) % config.workers
            window["loss"] += loss
            window["steps"] += 1
            window["samples"] += len(batch["keys"])
            window["skipped"] += sum(batch["skipped"].values())
            _count(self.counts, batch)
            bar.update(1)
            self.stop_requested = distributed.any_rank(self.world, self.stop_requested, self.device)
            validating = self._validation_due()
            val_started = time.perf_counter()
            val_loss = self.validate() if validating and world.is_main else None
            window_start += time.perf_counter() - val_started  # samples/s measures training alone
            if self.step % config.log_every == 0 or self.step == config.steps or validating:
                logged.append(self._log(window, time.perf_counter() - window_start, val_loss))
                bar.set_postfix(loss=f"{logged[-1]['loss']:.4f}", samples_per_s=f"{logged[-1]['samples_per_s']:.1f}")
                window, window_start = _new_window(), time.perf_counter()
            if self.step % config.checkpoint_every == 0:
                self.save()
            if config.sample_every and self.step % config.sample_every == 0 and self.step < config.steps:
                self.samples()
        del batches, loader  # stop the worker processes before sampling
        if self.stop_requested or self.step == config.steps:
            self.save()
        if self.step == config.steps and not self.stop_requested:
            self.samples()

    def _log(self, window: dict, seconds: float, val_loss: float | None = None) -> dict:
        """One metrics line (rank 0 writes it): the window's means over its steps and the ranks;
        samples/s counts every rank's samples; the counts are every rank's since the run began."""
        steps, seconds = max(window["steps"], 1), max(seconds, 1e-9)
        loss, wait, samples, skipped = distributed.mean(
            self.world, [window["loss"] / steps, window["wait"] / seconds, window["samples"], window["skipped"]], self.device
        )
        entry = {
            "step": self.step,
            "loss": loss,
            "lr": self.schedule.get_last_lr()[0],
            "samples_per_s": samples * self.world.world_size / seconds,
            "data_wait_frac": wait,
            "epoch": self.epoch,
            "skipped_samples": round(skipped * self.world.world_size),
            **_summed(distributed.gather(self.world, self.counts)),
        }
        if val_loss is not None:
            entry["val_loss"] = val_loss
        if self.world.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as file:
                file.write(json.dumps(entry) + "\n")
            if self.tensorboard is not None:
                _log_scalars(self.tensorboard, entry)
        return entry

    # -- validation -----------------------------------------------------------------------------

    def _validation_due(self) -> bool:
        every = self.config.val_every
        return bool(every) and has_validation(self.config) and (self.step % every == 0 or self.step == self.config.steps)

    def _load_validation(self) -> None:
        """Encode the validation clips once (train.validation), kept on the CPU."""
        if self.val_examples is None:
            batches = validation_batches(self.config, self.buckets)
            self.val_examples = [tuple(t.cpu() for t in self._encode(b, [False] * len(b["keys"]))) for b in batches]

    def validate(self) -> float | None:
        """The validation loss of the current weights (deterministic: see train.validation), or
        None without validation data. Rank 0 alone computes it, on the bare transformer."""
        self._load_validation()
        if not self.val_examples:
            return None
        with self._bare_denoiser():
            return validation_loss(self.family, self.val_examples, self._autocast)

    def samples(self) -> list[Path]:
        """Videos for the validation prompts (EMA weights when kept), RUN_DIR/samples/step-N-<i>.mp4
        at the configured size and, with buckets, step-N-HxW-<i>.mp4 at the portrait bucket."""
        from train.sampler import sample_to_files

        config = self.config
        if not config.sample_prompts or not self.world.is_main:
            return []
        # The configured size and, with buckets, the portrait size nearest its transpose.
        sizes = dict.fromkeys([(config.height, config.width), self.buckets.portrait_of(config.height, config.width)])
        paths = []
        with self._ema_weights(), self._bare_denoiser():
            for index, (height, width) in enumerate(sizes):
                paths += sample_to_files(
                    self.family, list(config.sample_prompts), self.run_dir / "samples", self.step,
                    name=f"{height}x{width}" if index else "", num_frames=config.num_frames, height=height, width=width,
                    num_steps=config.sample_steps, guidance_scale=config.sample_guidance,
                    shift=self.shift, seed=config.seed, autocast=torch.bfloat16 if self._mixed() else None,
                )  # fmt: skip
        return paths

    @contextlib.contextmanager
    def _ema_weights(self):
        """Swap the EMA weights into the model for the duration (sampling), then put them back."""
        if self.ema is None:
            yield
            return
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for param, average in zip(self.params, self.ema, strict=True):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(self.params, saved, strict=True):
                    param.copy_(value)

    @contextlib.contextmanager
    def _bare_denoiser(self):
        """Sample with the bare transformer: rank 0 samples alone, and DDP's forward expects
        every rank to join it."""
        wrapped, self.family.denoiser = self.family.denoiser, self.family.transformer
        try:
            yield
        finally:
            self.family.denoiser = wrapped

    def _skipped_checkpoints(self, problems: list[str], used: Path) -> None:
        """One warning line for the unreadable checkpoints the run passed over."""
        print(
            f"warning: skipped unreadable checkpoints in {used.parent}: {'; '.join(problems)}; resuming from {used.name}",
            file=sys.stderr,
        )

    def _forget_metrics_after(self, step: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            write_text_atomic("".join(f"{line}\n" for line in kept), path)

    def save(self) -> Path | None:
        """Checkpoint the run (every rank takes part; rank 0 writes); the folder, on rank 0.
        With LoRA, rank 0 also exports the adapters (`export_lora`)."""
        distributed.check_in_sync(self.world, self.params)
        state = self.state_dict()  # gathers every rank's data position
        if not self.world.is_main:
            return None
        folder = checkpoint.save(self.run_dir, self.step, state, self.config.keep_checkpoints)
        if self.config.lora_rank:
            self.export_lora()
        return folder

    def export_lora(self) -> Path:
        """RUN_DIR/lora/pytorch_lora_weights.safetensors for diffusers' `load_lora_weights`: the
        EMA adapter weights when EMA is on (those the samples are drawn with), else the current ones."""
        with self._ema_weights():
            return lora.export(self.family.transformer, self.run_dir / "lora")

    # -- helpers --------------------------------------------------------------------------------

    def _mixed(self) -> bool:
        """bf16 compute: on CUDA unless switched off, and wherever the frozen weights are bf16 (their
        matmuls take bf16 inputs); the CPU otherwise trains in fp32."""
        bf16_weights = self.base_dtype == torch.bfloat16
        return self.config.mixed_precision == "auto" and (self.device.type == "cuda" or bf16_weights)

    def _text_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self._mixed() and self.device.type == "cuda" else torch.float32

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self._mixed() else contextlib.nullcontext()

    def _on_sigterm(self, signum, frame) -> None:
        self.stop_requested = True  # the loop finishes its step, saves and returns


def _new_window() -> dict:
    """Sums over the steps since the last log line."""
    return {"loss": 0.0, "steps": 0, "samples": 0, "wait": 0.0, "skipped": 0}


def _new_counts() -> dict[str, dict[str, int]]:
    """metrics.jsonl's counts: samples trained per bucket ("HxWxF") and skipped per reason."""
    return {"bucket_counts": {}, "skipped": {}}


def _count(counts: dict[str, dict[str, int]], batch: dict) -> None:
    """Add a batch's samples to its bucket's count and its skips to theirs."""
    buckets = counts["bucket_counts"]
    buckets[batch["bucket"]] = buckets.get(batch["bucket"], 0) + len(batch["keys"])
    for reason, number in batch["skipped"].items():
        counts["skipped"][reason] = counts["skipped"].get(reason, 0) + number


def _summed(every: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Counts of several ranks added up, keys sorted."""
    total = _new_counts()
    for counts in every:
        for kind, values in counts.items():
            for key, number in values.items():
                total[kind][key] = total[kind].get(key, 0) + number
    return {kind: dict(sorted(values.items())) for kind, values in total.items()}


def _log_scalars(writer, entry: dict) -> None:
    """A metrics line in TensorBoard: train/<name> per number, train/<name>/<key> per count,
    val/loss for the validation loss."""
    for name, value in entry.items():
        if name == "step":
            continue
        if isinstance(value, dict):
            for key, number in value.items():
                writer.add_scalar(f"train/{name}/{key}", number, entry["step"])
        else:
            writer.add_scalar("val/loss" if name == "val_loss" else f"train/{name}", value, entry["step"])


def _tensorboard_writer(run_dir: Path, step: int):
    """A TensorBoard writer for RUN_DIR/tensorboard when TensorBoard is installed, else None.
    `purge_step` drops the events a killed run logged after the checkpoint it resumes from."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=step + 1 if step else None)


def _no_samples_message(shards: str, world: distributed.World) -> str:
    where = f"rank {world.rank} of {world.world_size}" if world.distributed else "this run"
    return (
        f"{where} got no usable training sample from {shards!r}: every sample was skipped (undecodable, "
        "too short for bucket_min_frames or num_frames, cropped more than bucket_max_crop allows, or held out by val_fraction)"
    )


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
