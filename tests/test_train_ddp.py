"""`torchrun --nproc_per_node 2 -m train` on the CPU (gloo): each rank trains on its own share of
the shards, DDP keeps the replicas equal, rank 0 writes the run folder, and a rerun resumes every
rank at its own data position."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from train import checkpoint

pytestmark = pytest.mark.timeout(600)


def torchrun(shards: Path, run: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "train", "--shards", str(shards / "index.json"), "--out", str(run), "--quiet",
        "--set", "num_workers=0", "batch_size=1", "sample_steps=2", "checkpoint_every=1000", "log_every=4", *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=500)


def test_two_ranks_split_the_data_and_stay_in_sync(train_shards, tmp_path):
    total = sum(shard["nsamples"] for shard in json.loads((train_shards / "index.json").read_text())["shardlist"])
    run = tmp_path / "run"
    result = torchrun(train_shards, run, "--steps", str(total))
    assert result.returncode == 0, result.stderr[-3000:]
    # Each rank ends without the interpreter's teardown (train.__main__), its summary flushed first.
    assert result.stdout.count(f"train: step {total} of {total}") == 2, result.stdout
    state = checkpoint.latest(run)  # saving checks that both ranks hold the same weights
    ranks = state["data"]["ranks"]
    assert state["step"] == total and len(ranks) == 2
    # After `total` samples each, a rank that read its own share has finished its first epoch and
    # is `total - share` into the next; the two shares add up to the whole data set exactly once.
    assert [r["epoch"] for r in ranks] == [1, 1]
    assert [r["start"][0][0] for r in ranks] == [1, 1]  # worker 0 (the only one): (epoch, samples handed out)
    assert sum(r["start"][0][1] for r in ranks) == total
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [s for s in range(4, total + 1, 4)] + ([total] if total % 4 else [])
    assert len(list((run / "samples").glob("*.mp4"))) == 2  # rank 0 sampled while rank 1 waited

    # Resumed, every rank goes on from its own position: the same as a run never stopped.
    result = torchrun(train_shards, run, "--steps", str(total + 2))
    assert result.returncode == 0, result.stderr[-3000:]
    whole = tmp_path / "whole"
    assert torchrun(train_shards, whole, "--steps", str(total + 2)).returncode == 0
    resumed, expected = checkpoint.latest(run), checkpoint.latest(whole)
    assert resumed["step"] == expected["step"] == total + 2
    assert resumed["data"] == expected["data"]
    for name, tensor in expected["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
