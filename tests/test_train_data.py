"""The trainer's loader on shards written by `curate pack`: every sample once per epoch across
workers and ranks, seeded order, corrupt samples skipped and counted by reason, workers sharing
fewer shards than there are workers, frames decoded at the training size."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import read_manifests, split_and_pack

from curate.picture import Upright
from curate.shards import Sample, write_shard
from train.config import DataConfig
from train.data import _resize_crop, frame_positions, make_dataset, make_loader, shard_urls

SIZE = 32


@pytest.fixture(scope="module")
def packed(tmp_path_factory, edited, motion, long_take) -> Path:
    """An output folder after split and pack: several shards of two samples."""
    return split_and_pack(tmp_path_factory.mktemp("loader"), [edited, motion, long_take], "pack.short_side=48", "pack.max_shard_samples=2")


def config(out: Path, **overrides) -> DataConfig:
    values = dict(shards=str(out / "shards" / "index.json"), num_frames=5, frame_stride=2, height=SIZE, width=SIZE,
                  batch_size=2, num_workers=0, shuffle_buffer=4)  # fmt: skip
    return DataConfig(**{**values, **overrides})


def keys_of(batches) -> list[str]:
    return [key for batch in batches for key in batch["keys"]]


def test_shard_specs_expand(packed):
    shards = packed / "shards"
    names = sorted(p.name for p in shards.glob("*.tar"))
    assert len(names) >= 3
    from_index = shard_urls(str(shards / "index.json"))
    assert [Path(u).name for u in from_index] == names
    assert shard_urls(str(shards)) == from_index
    assert shard_urls(str(shards / "clips-{000000..000001}.tar")) == from_index[:2]
    assert shard_urls(f"{from_index[0]},{from_index[1]}") == from_index[:2]
    assert shard_urls("pipe:cat a.tar") == ["pipe:cat a.tar"]
    assert shard_urls(str(shards / "*.tar")) == from_index  # a quoted glob: what the shell would expand
    assert shard_urls(str(shards / "clips-00000[01].tar")) == from_index[:2]
    with pytest.raises(ValueError, match="no shards"):
        shard_urls(" , ")
    with pytest.raises(ValueError, match="no shard matches .*nothing-"):
        shard_urls(str(shards / "nothing-*.tar"))
    with pytest.raises(ValueError, match="no shard file or folder at .*missing.tar"):
        shard_urls(str(shards / "missing.tar"))


def test_frame_positions():
    assert frame_positions(9, 5, 2.0, 0) == [0, 2, 4, 6, 8]  # exactly long enough: no offset
    assert frame_positions(10, 5, 2.0, 0) in ([0, 2, 4, 6, 8], [1, 3, 5, 7, 9])
    assert frame_positions(8, 5, 2.0, 0) is None  # too short
    starts = {frame_positions(100, 5, 2.0, seed)[0] for seed in range(50)}
    assert len(starts) > 10 and max(starts) <= 91  # random offsets, always inside the clip
    assert frame_positions(100, 5, 2.0, 7) == frame_positions(100, 5, 2.0, 7)  # seeded
    assert frame_positions(9, 4, 2.5, 0) == [0, 2, 5, 8]  # a fractional step (from a target fps)
    assert frame_positions(8, 4, 2.5, 0) is None


def test_batches_hold_every_kept_clip_once_at_the_training_size(packed):
    batches = list(make_loader(config(packed)))
    clips = read_manifests(packed)[1]
    assert sorted(keys_of(batches)) == sorted(clips[clips.shard.notna()].key)
    for batch in batches:
        assert batch["frames"].dtype.is_floating_point is False
        assert tuple(batch["frames"].shape[1:]) == (5, SIZE, SIZE, 3)
        assert len(batch["captions"]) == len(batch["keys"]) <= 2 and batch["skipped"] == {}


def test_decoded_frames_are_the_clips_frames(packed):
    """The loaded frames are the packed clip's frames at the seeded positions, two apart."""
    import webdataset as wds

    cfg = config(packed, shuffle_buffer=0, batch_size=1)
    batch = next(iter(make_dataset(cfg)))
    key = batch["keys"][0]
    shard = packed / "shards" / read_manifests(packed)[1].set_index("key").shard[key]
    mp4 = next(s["mp4"] for s in wds.WebDataset(str(shard), shardshuffle=False) if s["__key__"] == key)
    with av.open(io.BytesIO(mp4)) as container:
        upright = Upright(container.streams.video[0])
        source = [_resize_crop(f, upright, SIZE, SIZE) for f in container.decode(video=0)]
    positions = frame_positions(len(source), 5, 2.0, zlib.crc32(key.encode()) ^ cfg.seed)
    assert np.diff(positions).tolist() == [2, 2, 2, 2]
    assert np.array_equal(batch["frames"][0].numpy(), np.stack([source[i] for i in positions]))


def test_workers_and_ranks_split_the_shards_without_overlap(packed):
    everything = sorted(keys_of(make_loader(config(packed))))
    two_workers = keys_of(make_loader(config(packed, num_workers=2)))
    assert sorted(two_workers) == everything
    ranks = [keys_of(make_loader(config(packed), rank=r, world_size=2)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == everything
    assert ranks[0] and ranks[1]


def test_workers_are_forks_of_the_fork_server(packed):
    """Loader workers come from the process's fork server (`curate.forkserver`), which imports
    `train.data` once, not from spawned interpreters that each import torch anew."""
    import multiprocessing

    loader = make_loader(config(packed, num_workers=2))
    expected = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    assert loader.multiprocessing_context.get_start_method() == expected
    assert make_loader(config(packed)).multiprocessing_context is None  # no workers: nothing to start


def test_order_follows_seed_and_epoch(packed):
    first = keys_of(make_loader(config(packed, seed=1)))
    assert keys_of(make_loader(config(packed, seed=1))) == first
    others = [keys_of(make_loader(config(packed, seed=1), epoch=e)) for e in (1, 2, 3)]
    assert any(order != first for order in others)
    assert all(sorted(order) == sorted(first) for order in others)


def test_fewer_shards_than_workers_share_them(packed, tmp_path):
    single = min((packed / "shards").glob("*.tar"))  # the first shard: full, two samples
    batches = list(make_loader(config(packed, shards=str(single), num_workers=2, batch_size=1)))
    assert sorted(keys_of(batches)) == sorted(keys_of(make_loader(config(packed, shards=str(single)))))  # each once
    assert {batch["worker"] for batch in batches} == {0, 1}  # both workers read the shard, each keeps its half


def test_bad_samples_are_skipped_and_counted(packed, tmp_path):
    import webdataset as wds

    good = list(wds.WebDataset(shard_urls(str(packed / "shards")), shardshuffle=False))[:3]
    samples = [Sample(s["__key__"], {"mp4": s["mp4"], "txt": s["txt"], "json": s["json"]}) for s in good]
    samples += [
        Sample("corrupt", {"mp4": b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8, "txt": b"x"}),
        Sample("no_video", {"txt": b"only a caption"}),
        Sample("short", {"mp4": _tiny_mp4(frames=3), "txt": b"too short for 5 frames at stride 2"}),
    ]
    write_shard(tmp_path / "mixed-000000.tar", samples)
    batches = list(make_loader(config(packed, shards=str(tmp_path / "mixed-000000.tar"))))
    assert sorted(keys_of(batches)) == sorted(s["__key__"] for s in good)
    skipped: dict[str, int] = {}
    for batch in batches:
        for reason, count in batch["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    assert skipped == {"undecodable": 2, "too_short": 1}


def _tiny_mp4(frames: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def test_resampled_epochs_draw_shards_with_replacement(packed):
    shards = shard_urls(str(packed / "shards"))
    everything = set(keys_of(make_loader(config(packed))))
    for workers in (0, 2):
        epochs = [keys_of(make_loader(config(packed, resampled=True, num_workers=workers, seed=4), epoch=e)) for e in range(4)]
        assert all(set(keys) <= everything for keys in epochs)
        assert len({tuple(keys) for keys in epochs}) > 1  # each epoch draws anew
    assert len(shards) >= 3
    # Every rank and worker draws at least one shard, however few there are: with one shard,
    # each of a rank's two workers reads it once.
    single = str(min((packed / "shards").glob("*.tar")))
    once = keys_of(make_loader(config(packed, shards=single)))
    for rank in (0, 1):
        got = keys_of(make_loader(config(packed, shards=single, resampled=True, num_workers=2), rank=rank, world_size=2))
        assert sorted(got) == sorted(once * 2)


@pytest.mark.parametrize(("workers", "resampled"), [(0, False), (2, False), (2, True)])
def test_an_epoch_resumes_at_the_saved_positions(packed, workers, resampled):
    """Consume a few batches, note each worker's position, rebuild the loader from there: the
    rest of the epoch is exactly what the uninterrupted loader would have given."""
    cfg = config(packed, num_workers=workers, seed=3, resampled=resampled)
    full = list(make_loader(cfg, epoch=1))
    consumed = 3
    start = {}
    for batch in full[:consumed]:
        start[batch["worker"]] = (batch["epoch"], batch["position"])
    next_worker = (full[consumed - 1]["worker"] + 1) % cfg.workers
    rest = list(make_loader(cfg, epoch=1, start=start, first_worker=next_worker))
    assert keys_of(rest) == keys_of(full[consumed:])


@pytest.mark.parametrize("workers", [0, 2])
def test_workers_go_on_from_epoch_to_epoch(packed, workers):
    """An endless stream is epoch 0, then epoch 1, ... in every worker: each worker's batches are
    its batches of the single-epoch loaders, in order, and say which epoch they come from."""
    cfg = config(packed, num_workers=workers, seed=2, batch_size=1)
    expected: dict[int, list] = {}
    for epoch in (0, 1):
        for batch in make_loader(cfg, epoch=epoch):
            expected.setdefault(batch["worker"], []).append((epoch, batch["keys"]))
    stream = iter(make_loader(cfg, epochs=None))
    got: dict[int, list] = {}
    for _ in range(sum(map(len, expected.values()))):
        batch = next(stream)
        got.setdefault(batch["worker"], []).append((batch["epoch"], batch["keys"]))
    assert got.keys() == expected.keys()
    for worker, batches in got.items():
        first_two = [batch for batch in batches if batch[0] < 2]  # a worker with a short share runs ahead
        assert first_two == expected[worker][: len(first_two)]
        if len(first_two) < len(batches):
            assert first_two == expected[worker]  # it began epoch 2 only after all of epochs 0 and 1
    assert {0, 1} <= {epoch for batches in got.values() for epoch, _ in batches}
