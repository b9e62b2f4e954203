"""Buckets, validation and shared shards: landscape and portrait clips train in batches of their own
shape, a resumed bucketed stream gives the same batches, the workers share a single shard, the
validation loss is deterministic and its clips are never trained on, and precompute keeps each
clip's bucket. Clips are small mp4s written here (tiny preset, CPU)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from curate.shards import Sample, write_shard
from train import checkpoint
from train.buckets import Bucket, Buckets, SkippedSample
from train.config import TrainConfig
from train.data import held_out, make_dataset, make_loader
from train.trainer import Trainer
from train.validation import validation_batches

LANDSCAPE, PORTRAIT = (96, 54), (54, 96)  # width, height of the packed clips: 16:9 and 9:16


def clip(width: int, height: int, frames: int, seed: int) -> bytes:
    """An H.264 mp4 of a pattern moving by a pixel a frame."""
    rng = np.random.default_rng(seed)
    picture = rng.integers(0, 256, (height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8).repeat(6, 0).repeat(6, 1)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(picture, i, axis=1)[:height, :width]), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def sample(key: str, size: tuple[int, int], frames: int, seed: int, json_member: bool = True, mp4: bytes | None = None) -> Sample:
    """A sample as pack writes it: its json describes the mp4 (pack_width, ...)."""
    files = {"mp4": mp4 or clip(*size, frames, seed), "txt": f"pattern {seed}".encode()}
    if json_member:
        meta = {"pack_width": size[0], "pack_height": size[1], "pack_num_frames": frames, "pack_fps": 24.0}
        files["json"] = json.dumps(meta).encode()
    return Sample(key, files)


def usable_samples() -> list[Sample]:
    """Landscape and portrait clips, a short one (a 5-frame bucket), one without json (its shape
    read from the mp4)."""
    samples = [sample(f"land{i}", LANDSCAPE, 12, i) for i in range(4)]
    samples += [sample(f"port{i}", PORTRAIT, 12, 10 + i) for i in range(3)]
    return [*samples, sample("short", LANDSCAPE, 6, 20), sample("nojson", PORTRAIT, 12, 21, json_member=False)]


USABLE = {"land0", "land1", "land2", "land3", "port0", "port1", "port2", "short", "nojson"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """One shard: the usable samples, then one too wide for any bucket and one whose mp4 is broken."""
    bad = [sample("wide", (120, 40), 12, 22), sample("broken", LANDSCAPE, 12, 23, mp4=b"\x00\x00\x00\x18ftypisom" + bytes(200))]
    path = tmp_path_factory.mktemp("mixed") / "mixed-000000.tar"
    write_shard(path, [*usable_samples(), *bad])
    return path


@pytest.fixture(scope="module")
def validation_shard(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("validation") / "val-000000.tar"
    write_shard(path, [sample("val_land", LANDSCAPE, 12, 30), sample("val_port", PORTRAIT, 12, 31)])
    return path


def settings(shards: Path, **overrides) -> TrainConfig:
    values = dict(shards=str(shards), height=48, width=80, num_frames=9, batch_size=2, num_workers=0, shuffle_buffer=4,
                  steps=6, log_every=2, checkpoint_every=100, sample_prompts=[], tensorboard=False, warmup_steps=0)  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def run_buckets(config: TrainConfig) -> Buckets:
    return Buckets.for_run(config, frame_step=4, side_multiple=16)  # the tiny Wan's


def test_buckets_fit_the_budget_and_the_model():
    config = TrainConfig(height=480, width=832, num_frames=33)
    buckets = run_buckets(config)
    for bucket in buckets.shapes:
        assert bucket.height % 16 == bucket.width % 16 == 0 and bucket.height * bucket.width <= 480 * 832
        assert (bucket.num_frames - 1) % 4 == 0 and 1 <= bucket.num_frames <= 33
    aspects = [width / height for height, width in buckets.sizes]
    assert (480, 832) in buckets.sizes and (832, 480) in buckets.sizes
    assert min(aspects) < 9 / 16 * 1.1 and max(aspects) > 21 / 9 * 0.9
    assert {b.num_frames for b in buckets.shapes} == set(range(1, 34, 4))
    assert {b.num_frames for b in run_buckets(replace(config, bucket_min_frames=10)).shapes} == set(range(13, 34, 4))
    assert run_buckets(replace(config, buckets=False)).shapes == (Bucket(33, 480, 832),)


def test_a_clip_goes_to_the_nearest_bucket_it_fills():
    buckets = run_buckets(settings(Path("x.tar")))
    assert buckets.choose(96, 54, 20, 1.0) == Bucket(9, 48, 80)
    assert buckets.choose(54, 96, 20, 1.0) == Bucket(9, 80, 48)
    assert buckets.choose(96, 54, 6, 1.0) == Bucket(5, 48, 80)  # too short for 9 frames: the longest it fills
    assert buckets.choose(96, 54, 6, 2.0) == Bucket(1, 48, 80)  # 6 frames at a stride of 2 give 3: one frame
    with pytest.raises(SkippedSample, match="lose 44%") as wide:
        buckets.choose(120, 40, 20, 1.0)
    assert wide.value.reason == "crop_too_large"
    with pytest.raises(SkippedSample) as short:
        run_buckets(settings(Path("x.tar"), bucket_min_frames=5)).choose(96, 54, 3, 1.0)
    assert short.value.reason == "too_short"
    fixed = run_buckets(settings(Path("x.tar"), buckets=False))
    assert fixed.choose(120, 40, 20, 1.0) == Bucket(9, 48, 80)  # without buckets any crop goes


def test_mixed_landscape_and_portrait_shards_train_with_batch_2(mixed, tmp_path):
    """One shard, two loader workers, batch 2: every batch has its bucket's shape, both
    orientations train, the counts add up, and samples come at both orientations."""

    class Recording(Trainer):
        def train_step(self, batch):
            seen.append((batch["bucket"], tuple(batch["frames"].shape), batch["keys"]))
            return super().train_step(batch)

    seen: list = []
    config = settings(mixed, num_workers=2, sample_prompts=["a pattern"], sample_steps=1)
    Recording(config, tmp_path / "run").run(progress=False)
    assert len(seen) == config.steps
    for name, shape, keys in seen:
        bucket = Bucket.from_name(name)
        assert shape == (len(keys), bucket.num_frames, bucket.height, bucket.width, 3)
        assert all(key.startswith("land") or key == "short" for key in keys) == (bucket.width > bucket.height)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    counts = lines[-1]["bucket_counts"]
    assert {"48x80x9", "80x48x9"} <= counts.keys() and sum(counts.values()) == sum(len(keys) for _, _, keys in seen)
    assert set(lines[-1]["skipped"]) == {"crop_too_large", "undecodable"}  # wide, broken
    samples = tmp_path / "run" / "samples"
    for path, size in ((samples / "step-6-0.mp4", (80, 48)), (samples / "step-6-80x48-0.mp4", (48, 80))):
        with av.open(str(path)) as video:
            assert (video.streams.video[0].width, video.streams.video[0].height) == size


def _keys(batches) -> list[str]:
    return [key for batch in batches for key in batch["keys"]]


def test_every_cut_of_a_bucketed_epoch_resumes_exactly(mixed):
    """Resumed after any batch, a worker gives the rest of the uninterrupted epoch: the samples
    waiting in buckets at the cut come neither twice nor never."""
    config = settings(mixed)
    buckets = run_buckets(config)
    full = list(make_dataset(config, epoch=1, buckets=buckets))
    assert sorted(_keys(full)) == sorted(USABLE)
    assert len({batch["bucket"] for batch in full}) == 3  # landscape, portrait, the short clip's
    for cut in range(1, len(full)):
        start = {0: (full[cut - 1]["epoch"], full[cut - 1]["position"])}
        rest = list(make_dataset(config, epoch=1, start=start, buckets=buckets))
        assert [(b["bucket"], b["keys"], b["skipped"]) for b in rest] == [(b["bucket"], b["keys"], b["skipped"]) for b in full[cut:]]


def test_two_workers_share_one_shard(mixed):
    """One shard, two workers: each reads it and keeps every other sample, so every sample comes
    once an epoch, and from both workers."""
    config = settings(mixed, num_workers=2)
    batches = list(make_loader(config, epoch=1, buckets=run_buckets(config)))
    assert sorted(_keys(batches)) == sorted(USABLE)
    assert {batch["worker"] for batch in batches} == {0, 1}


def test_held_out_samples_never_train(mixed):
    config = settings(mixed, val_fraction=0.5, val_batches=10)
    buckets = run_buckets(config)
    held = {key for key in [*USABLE, "wide", "broken"] if held_out(key, 0.5)}
    assert held & USABLE and USABLE - held  # the fixture's keys fall on both sides
    for epoch in range(3):
        trained = list(make_dataset(config, epoch=epoch, buckets=buckets))
        assert set(_keys(trained)) == USABLE - held
        # Counted exactly: the short clip, alone in its bucket, comes last, after every skip.
        assert sum(batch["skipped"].get("held_out", 0) for batch in trained) == len(held)
    assert set(_keys(validation_batches(config, buckets))) == held & USABLE


def test_a_bucketed_run_resumes_with_its_counts_and_validation(mixed, validation_shard, tmp_path):
    """Stopped at a checkpoint and resumed: the same metrics lines (losses, bucket counts, skips,
    validation losses) and data position as a run never stopped. The validation loss is the same
    for the same weights, computed again or by another Trainer, and moves with training."""
    config = settings(mixed, val_shards=str(validation_shard), val_every=3, checkpoint_every=3, steps=4)
    whole = Trainer(config, tmp_path / "whole")
    whole.run(progress=False)
    last = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[-1])
    assert whole.validate() == whole.validate() == last["val_loss"]
    Trainer(replace(config, steps=3), tmp_path / "run").run(progress=False)
    Trainer(config, tmp_path / "run").run(progress=False)

    def lines(run: str) -> list[dict]:
        entries = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in e.items() if k not in ("samples_per_s", "data_wait_frac")} for e in entries]

    assert lines("run") == lines("whole")
    validated = [entry for entry in lines("whole") if "val_loss" in entry]
    assert [entry["step"] for entry in validated] == [3, 4] and validated[0]["val_loss"] != validated[1]["val_loss"]
    resumed, whole = checkpoint.latest(tmp_path / "run"), checkpoint.latest(tmp_path / "whole")
    assert resumed["data"] == whole["data"]
    for name, tensor in whole["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def test_precompute_keeps_each_clips_bucket(tmp_path):
    """Latent shards made with buckets hold each clip at its bucket's shape, in the video shard's
    order; training from them gives the losses training from the videos gives."""
    import webdataset as wds

    from train.__main__ import main
    from train.latents import load_npy

    videos, samples = tmp_path / "videos-000000.tar", usable_samples()
    write_shard(videos, samples)
    common = ["--quiet", "--preset", "tiny", "--set", "buckets=true", "height=48", "width=80", "num_workers=0", "shuffle_buffer=4"]
    assert main(["precompute", "--shards", str(videos), "--out", str(tmp_path / "latents"), "--dtype", "float32", *common]) == 0
    latents = list(wds.WebDataset(str(tmp_path / "latents" / videos.name), shardshuffle=False))
    assert [s["__key__"] for s in latents] == [s.key for s in samples]
    shapes = {s["__key__"]: load_npy(s["latent.npy"]).shape for s in latents}
    assert shapes["land0"] == (16, 3, 6, 10) and shapes["port0"] == (16, 3, 10, 6) and shapes["short"] == (16, 2, 6, 10)
    train = ["--steps", "3", "--set", "sample_prompts=[]", "log_every=1"]
    assert main(["--shards", str(videos), "--out", str(tmp_path / "from_videos"), *common, *train]) == 0
    assert main(["--shards", str(tmp_path / "latents" / videos.name), "--out", str(tmp_path / "from_latents"), *common, *train]) == 0

    def losses(run: str) -> list[float]:
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert losses("from_latents") == pytest.approx(losses("from_videos"), rel=1e-4)
