"""The training loop: flow matching on latents of clips streamed from shards.

`Trainer.run` trains until `config.steps`, resuming from the newest checkpoint in RUN_DIR. Each step
draws its randomness (timesteps, noise, caption dropout) from a generator seeded by the run seed
and the step number, so a resumed run repeats exactly what the uninterrupted one would have done;
the data position (epoch, each worker's place in its stream) is saved with every checkpoint. A
SIGTERM finishes the current step, saves a checkpoint and stops.
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

from curate.manifest import write_text_atomic
from curate.models.hub import resolve_device
from train import checkpoint
from train.config import TrainConfig, to_json
from train.data import DataConfig, make_loader
from train.flow import noised, resolution_shift, sample_timesteps
from train.models import load_family


class Trainer:
    """One training run in one RUN_DIR (see the module docstring)."""

    def __init__(self, config: TrainConfig, run_dir: Path):
        self.config, self.run_dir = config, Path(run_dir)
        self.device = resolve_device(config.device, "device")
        torch.manual_seed(config.seed)
        self.family = load_family(config.preset, self.device, self._text_dtype(), seed=config.seed, source=config.model_source or None)
        self.family.check_video_shape(config.num_frames, config.height, config.width)
        model = self.family.transformer.train()
        if config.gradient_checkpointing and hasattr(model, "enable_gradient_checkpointing"):
            model.enable_gradient_checkpointing()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
        warmup = max(1, config.warmup_steps)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.ema = [p.detach().clone() for p in self.params] if config.ema_decay else None
        channels, frames, height, width = self.family.latent_shape(config.num_frames, config.height, config.width)
        self.shift = config.shift or resolution_shift(frames * (height // 2) * (width // 2))  # 2x2 patches
        self.step, self.epoch, self.start, self.next_worker = 0, 0, {}, 0
        self.stop_requested = False

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.family.state_dict(),
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "data": {"epoch": self.epoch, "start": dict(self.start), "next_worker": self.next_worker},
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.family.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema = [t.to(self.device) for t in state["ema"]]
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        data = state["data"]
        self.epoch, self.start, self.next_worker = int(data["epoch"]), {int(k): int(v) for k, v in data["start"].items()}, int(data["next_worker"])

    # -- one step -------------------------------------------------------------------------------

    def train_step(self, batch: dict) -> tuple[float, float]:
        """One optimiser step on `batch`; returns (loss, gradient norm before clipping)."""
        config = self.config
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + self.step)
        captions = [c if torch.rand(1, generator=generator).item() >= config.caption_dropout else "" for c in batch["captions"]]
        x0 = self.family.encode_video(batch["frames"].to(self.device))
        text = self.family.encode_text(captions)
        t = sample_timesteps(len(captions), generator, config.timestep_mean, config.timestep_std, self.shift)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        x_t, target = noised(x0, noise, t.to(self.device))
        with self._autocast():
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

    # -- the loop -------------------------------------------------------------------------------

    def run(self, progress: bool = True) -> list[dict]:
        """Train to `config.steps` (resuming); returns the logged metrics of this invocation."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(to_json(self.config), self.run_dir / "config.json")
        state = checkpoint.latest(self.run_dir)
        if state is not None:
            self.load_state_dict(state)
        self._forget_metrics_after(self.step)  # logged by a run killed after its last checkpoint
        logged: list[dict] = []
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        try:
            with tqdm(total=self.config.steps, initial=self.step, desc="train", unit="step", disable=not progress, file=sys.stderr) as bar:
                self._loop(bar, logged)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return logged

    def _loop(self, bar: tqdm, logged: list[dict]) -> None:
        config, data = self.config, self._data_config()
        window, window_start = _new_window(), time.perf_counter()
        while self.step < config.steps and not self.stop_requested:
            batches = iter(make_loader(data, epoch=self.epoch, start=self.start, first_worker=self.next_worker))
            while self.step < config.steps and not self.stop_requested:
                waited = time.perf_counter()
                batch = next(batches, None)
                window["wait"] += time.perf_counter() - waited
                if batch is None:  # the epoch is over: the next one starts from the beginning
                    self.epoch, self.start, self.next_worker = self.epoch + 1, {}, 0
                    break
                loss, _ = self.train_step(batch)
                self.start[batch["worker"]] = batch["position"]
                self.next_worker = (batch["worker"] + 1) % data.workers
                window["loss"] += loss
                window["steps"] += 1
                window["samples"] += len(batch["keys"])
                window["skipped"] += batch["skipped"]
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    logged.append(self._log(window, time.perf_counter() - window_start))
                    bar.set_postfix(loss=f"{logged[-1]['loss']:.4f}", samples_per_s=f"{logged[-1]['samples_per_s']:.1f}")
                    window, window_start = _new_window(), time.perf_counter()
                if self.step % config.checkpoint_every == 0:
                    self.save()
                if config.sample_every and self.step % config.sample_every == 0 and self.step < config.steps:
                    self.samples()
        if self.stop_requested or self.step == config.steps:
            self.save()
        if self.step == config.steps and not self.stop_requested:
            self.samples()

    def _log(self, window: dict, seconds: float) -> dict:
        entry = {
            "step": self.step,
            "loss": window["loss"] / max(window["steps"], 1),
            "lr": self.schedule.get_last_lr()[0],
            "samples_per_s": window["samples"] / max(seconds, 1e-9),
            "data_wait_frac": window["wait"] / max(seconds, 1e-9),
            "epoch": self.epoch,
            "skipped_samples": window["skipped"],
        }
        with open(self.run_dir / "metrics.jsonl", "a") as file:
            file.write(json.dumps(entry) + "\n")
        return entry

    def samples(self) -> list[Path]:
        """Videos for the validation prompts (EMA weights when kept), RUN_DIR/samples/step-N-<i>.mp4."""
        from train.sampler import sample_to_files

        config = self.config
        if not config.sample_prompts:
            return []
        with self._ema_weights():
            return sample_to_files(
                self.family, list(config.sample_prompts), self.run_dir / "samples", self.step,
                num_frames=config.num_frames, height=config.height, width=config.width,
                num_steps=config.sample_steps, guidance_scale=config.sample_guidance,
                shift=self.shift, seed=config.seed, autocast=torch.bfloat16 if self._mixed() else None,
            )  # fmt: skip

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

    def _forget_metrics_after(self, step: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            write_text_atomic("".join(f"{line}\n" for line in kept), path)

    def save(self) -> Path:
        return checkpoint.save(self.run_dir, self.step, self.state_dict(), self.config.keep_checkpoints)

    # -- helpers --------------------------------------------------------------------------------

    def _data_config(self) -> DataConfig:
        c = self.config
        return DataConfig(shards=c.shards, num_frames=c.num_frames, frame_stride=c.frame_stride, fps=c.fps, height=c.height,
                          width=c.width, batch_size=c.batch_size, num_workers=c.num_workers, shuffle_buffer=c.shuffle_buffer,
                          seed=c.seed, resampled=c.resampled)  # fmt: skip

    def _mixed(self) -> bool:
        """bf16 compute: on CUDA unless switched off; the CPU trains in fp32."""
        return self.device.type == "cuda" and self.config.mixed_precision == "auto"

    def _text_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self._mixed() else torch.float32

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self._mixed() else contextlib.nullcontext()

    def _on_sigterm(self, signum, frame) -> None:
        self.stop_requested = True  # the loop finishes its step, saves and returns


def _new_window() -> dict:
    """Sums over the steps since the last log line."""
    return {"loss": 0.0, "steps": 0, "samples": 0, "wait": 0.0, "skipped": 0}


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
