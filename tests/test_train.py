"""`python -m train` with the tiny preset on shards made by the project's own pipeline (CPU,
offline): the loss falls, a single clip is overfitted, the same seed gives the same losses, a
SIGKILLed run resumes from its last checkpoint at the right step and data position, SIGTERM
saves a checkpoint, and the sample videos decode to the configured shape."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import torch
from conftest import REPO

from curate.shards import Sample, write_shard
from train import checkpoint
from train.__main__ import main

FAST = ["--quiet", "--set", "num_workers=0", "log_every=10", "sample_steps=2"]


@pytest.fixture(scope="module")
def shards(train_shards) -> Path:
    return train_shards


def losses(run: Path) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def assert_tensorboard_has(run: Path, logged: dict[int, float]) -> None:
    """RUN_DIR/tensorboard holds the logged losses, each step once, as TensorBoard's own reader
    sees it (it drops what a resumed run purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [event.step for event in scalars] == sorted(logged)
    assert [event.value for event in scalars] == pytest.approx([logged[step] for step in sorted(logged)], rel=1e-6)  # float32


def train(shard_spec, run: Path, *args: str) -> int:
    return main(["--shards", str(shard_spec), "--out", str(run), *FAST, *args])


def test_loss_falls_and_the_run_folder_is_complete(shards, tmp_path):
    run = tmp_path / "run"
    assert train(shards, run, "--steps", "100") == 0
    logged = losses(run)
    assert sorted(logged) == list(range(10, 101, 10))
    assert logged[100] < 0.8 * logged[10]
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 100 and config["preset"] == "tiny"
    entry = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"step", "loss", "lr", "samples_per_s", "data_wait_frac"} <= entry.keys() and 0 <= entry["data_wait_frac"] <= 1
    assert [p.name for p in checkpoint.complete(run)] == ["step-100"]
    assert_tensorboard_has(run, logged)
    for index in range(2):  # the two default validation prompts
        with av.open(str(run / "samples" / f"step-100-{index}.mp4")) as container:
            frames = list(container.decode(video=0))
        assert len(frames) == config["num_frames"] and (frames[0].width, frames[0].height) == (config["width"], config["height"])


def test_a_single_clip_is_overfitted(shards, tmp_path):
    import webdataset as wds

    one = next(iter(wds.WebDataset(str(next(shards.glob("*.tar"))), shardshuffle=False)))
    single = tmp_path / "one-000000.tar"
    write_shard(single, [Sample(one["__key__"], {"mp4": one["mp4"], "txt": one["txt"], "json": one["json"]})])
    run = tmp_path / "run"
    # One clip, its caption always given, no EMA: the loss of that one example must collapse.
    args = ["--steps", "150", "--set", "batch_size=1", "caption_dropout=0", "ema_decay=0", "sample_prompts=[]", "lr=0.003"]
    assert train(single, run, *args) == 0
    logged = losses(run)
    assert logged[150] < 0.5 * logged[10]


def test_the_same_seed_gives_the_same_losses(shards, tmp_path):
    args = ["--steps", "20", "--set", "sample_prompts=[]", "seed=5"]
    train(shards, tmp_path / "a", *args)
    train(shards, tmp_path / "b", *args)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    train(shards, tmp_path / "c", "--steps", "20", "--set", "sample_prompts=[]", "seed=6")
    assert losses(tmp_path / "c") != losses(tmp_path / "a")


def _command(shard_spec, run: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "train", "--shards", str(shard_spec), "--out", str(run), *FAST, *args]


def test_sigkill_resumes_from_the_last_checkpoint(shards, tmp_path):
    """Killed after its step-20 checkpoint, rerun: it ends at step 40 with the losses and the data
    position of a run that was never interrupted."""
    args = ["--steps", "40", "--set", "checkpoint_every=10", "sample_prompts=[]", "num_workers=2", "keep_checkpoints=2"]
    whole = tmp_path / "whole"
    assert train(shards, whole, *args) == 0  # in this process: the same code, without a start-up's imports
    run = tmp_path / "run"
    process = subprocess.Popen(_command(shards, run, *args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and not (run / "checkpoints" / "step-20").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert subprocess.run(_command(shards, run, *args), cwd=REPO, capture_output=True).returncode == 0
    assert losses(run) == losses(whole)
    assert_tensorboard_has(run, losses(whole))
    final, expected = checkpoint.latest(run), checkpoint.latest(whole)
    assert final["step"] == expected["step"] == 40
    assert final["data"] == expected["data"]
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    assert [p.name for p in checkpoint.complete(run)] == ["step-30", "step-40"]  # keep_checkpoints=2


def test_sigterm_saves_a_checkpoint_and_stops(shards, tmp_path):
    run = tmp_path / "run"
    args = ["--steps", "100000", "--set", "checkpoint_every=100000", "sample_prompts=[]"]
    process = subprocess.Popen(_command(shards, run, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while process.poll() is None and not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    saved = checkpoint.complete(run)
    assert len(saved) == 1 and int(saved[0].name.split("-")[1]) >= 10
    assert f"step {saved[0].name.split('-')[1]} of 100000" in stdout


def test_bad_settings_are_one_clear_line(shards, tmp_path, capsys):
    assert main(["--shards", str(shards), "--out", str(tmp_path / "r"), "--set", "num_frames=10"]) == 2
    assert "num_frames=10 must be 1 + 4k" in capsys.readouterr().err
    assert main(["--shards", str(shards), "--out", str(tmp_path / "r"), "--set", "nonsense=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown training setting nonsense (known: ") and "num_frames" in err and "lr" in err


def test_data_settings_are_flat_training_settings(tmp_path):
    """The loader's settings are part of TrainConfig: set like any other key (file, then --set),
    written flat to config.json, with the trainer's defaults."""
    from train.config import DataConfig, TrainConfig, resolve, to_json

    assert (DataConfig().num_frames, DataConfig().height) == (TrainConfig().num_frames, TrainConfig().height) == (9, 32)
    settings = tmp_path / "settings.yaml"
    settings.write_text("num_frames: 5\nshuffle_buffer: 8\nlr: 1e-4\n")
    config = resolve(None, str(settings), ["num_frames=13", "fps=8"], 7, "x.tar")
    assert isinstance(config, DataConfig)
    assert (config.num_frames, config.shuffle_buffer, config.fps, config.lr, config.steps, config.shards) == (13, 8, 8.0, 1e-4, 7, "x.tar")
    written = json.loads(to_json(config))
    assert written.keys() == TrainConfig.__dataclass_fields__.keys() and written["num_frames"] == 13


def test_checkpoints_load_with_weights_only(shards, tmp_path):
    run = tmp_path / "run"
    train(shards, run, "--steps", "10", "--set", "sample_prompts=[]")
    state = torch.load(checkpoint.complete(run)[-1] / "state.pt", weights_only=True)
    assert state["step"] == 10 and state["config"]["steps"] == 10


@pytest.mark.parametrize("lora_rank", [0, 4], ids=["full", "lora"])
def test_gradient_checkpointing_changes_memory_not_results(tmp_path, lora_rank):
    """The same step with activations recomputed in backward: the same loss and trained weights
    (with LoRA, the adapters inside the recomputed blocks still get their gradients)."""
    from train.config import TrainConfig
    from train.trainer import Trainer

    frames = torch.randint(0, 256, (2, 9, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = {"frames": frames, "captions": ["a red car on a road", "waves at sunset"]}
    results = []
    for enabled in (False, True):
        trainer = Trainer(TrainConfig(gradient_checkpointing=enabled, ema_decay=0, lora_rank=lora_rank), tmp_path / str(enabled))
        assert trainer.family.transformer.gradient_checkpointing is enabled
        losses_seen = [trainer.train_step(batch)[0] for _ in range(3)]
        results.append((losses_seen, trainer.state_dict()["model"]))
    (plain, plain_state), (checkpointed, checkpointed_state) = results
    assert checkpointed == pytest.approx(plain, rel=1e-5)
    for name, tensor in plain_state.items():
        assert torch.allclose(checkpointed_state[name], tensor, rtol=1e-4, atol=1e-6), name


class NotATensor:
    """An object a weights-only load refuses (unpickling it could run code)."""


def _spoil_truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _spoil_with_an_object(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["extra"] = NotATensor()
    torch.save(state, path)


CHECKPOINTED = ["--set", "checkpoint_every=5", "sample_prompts=[]", "log_every=5"]


@pytest.fixture(scope="module")
def ten_steps(shards, tmp_path_factory) -> Path:
    """A finished 10-step run with checkpoints at steps 5 and 10 (trained once, in this process;
    each test resumes a copy of it)."""
    run = tmp_path_factory.mktemp("ten_steps") / "run"
    assert train(shards, run, "--steps", "10", *CHECKPOINTED) == 0
    return run


@pytest.mark.parametrize("spoil", [_spoil_truncated, _spoil_with_an_object], ids=["truncated", "refused-pickle"])
def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(shards, ten_steps, tmp_path, spoil):
    run = shutil.copytree(ten_steps, tmp_path / "run")
    spoil(run / "checkpoints" / "step-10" / "state.pt")
    result = subprocess.run(_command(shards, run, "--steps", "15", *CHECKPOINTED), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "weights_only=False" not in output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "step-10" in warnings[0] and "step-5" in warnings[0], result.stderr
    # Resumed from step 5: steps 6-10 were trained again (logged again at step 10), then 11-15.
    assert sorted(losses(run)) == [5, 10, 15]
    assert checkpoint.latest(run)["step"] == 15


def test_no_readable_checkpoint_is_one_clear_error(shards, ten_steps, tmp_path):
    run = shutil.copytree(ten_steps, tmp_path / "run")
    _spoil_truncated(run / "checkpoints" / "step-5" / "state.pt")
    _spoil_with_an_object(run / "checkpoints" / "step-10" / "state.pt")
    result = subprocess.run(_command(shards, run, "--steps", "15", *CHECKPOINTED), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert str(run / "checkpoints") in lines[0] and "afresh" in lines[0]


def test_a_closed_stdout_ends_training_quietly(shards, tmp_path):
    """`python -m train ... | head -0`: the run is trained and saved; its last line goes nowhere."""
    run = tmp_path / "run"
    process = subprocess.Popen(
        _command(shards, run, "--steps", "5", "--set", "sample_prompts=[]"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # the reader is gone before anything is written
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141, stderr
    assert stderr == ""
    assert checkpoint.latest(run)["step"] == 5


def test_a_shard_glob_that_matches_nothing_is_one_error_line(shards, tmp_path):
    """A quoted glob is expanded as the shell would; one matching nothing names itself, before
    the model loads: here the real preset, whose weights are not on this machine, so an error
    about them would mean the shards were asked for only after the model."""
    pattern = str(Path(shards) / "nothing-*.tar")
    command = [*_command(pattern, tmp_path / "run", "--steps", "1"), "--preset", "wan2.1-t2v-1.3b"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "no shard matches" in lines[0] and "nothing-*.tar" in lines[0]
