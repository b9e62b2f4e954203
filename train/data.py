"""Streaming training clips from the shards `curate pack` writes, with no conversion step.

The pipeline keeps shuffling honest across nodes and workers (open_clip's order): the shard list
is shuffled with seed + epoch, split by node (rank), then by DataLoader worker; each worker reads
its tars, shuffles samples in a buffer, decodes each mp4 in memory with PyAV (only up to the last
frame it needs), resizes and centre-crops to the model's size, and batches, so the main process
receives whole batches. Each worker goes on from one epoch to the next by itself, so the trainer
keeps one DataLoader for the whole run (worker processes never restart at epoch boundaries). A
sample that cannot be used (corrupt mp4, too few frames, missing member) is skipped and counted;
warnings are rate-limited and nothing ever sleeps. Latent shards
(`python -m train precompute`, format in `train.latents`) give batches of latents and text
embeddings instead of frames. The settings are a `train.config.DataConfig` (the trainer passes its
TrainConfig, which is one).

In resampled mode each worker draws its shards with replacement from the whole list (so every
worker has data however few shards there are). Its epoch is as many draws as the shards it would
get without replacement; epochs keep the data position small, so a resumed run only passes over
the samples of the current epoch.

Shards can be a brace pattern (`shards/clips-{000000..000009}.tar`), a folder, a wids
`index.json`, a comma-separated list, object-store URLs of any of these (`s3://bucket/work/shards`,
read through fsspec like `curate`'s outputs), or `pipe:` commands (`pipe:aws s3 cp s3://... -`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import time
import zlib
from collections.abc import Iterator

import av
import numpy as np
import torch
from braceexpand import braceexpand
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from curate import storage
from curate.picture import Upright
from train.config import DataConfig
from train.latents import decode_sample, is_latent_sample

log = logging.getLogger(__name__)
_WARN_EVERY_S = 10.0


def shard_urls(spec: str) -> list[str]:
    """Expand a shard spec into URLs: brace patterns, quoted globs (`'out/shards/*.tar'`, as the
    shell would have expanded them), comma lists, a folder of .tar files, or a wids index.json
    (its urls are relative to the index's folder), local or in an object store. `pipe:` commands
    pass through. A local path or glob that names no file is a ValueError naming it."""
    urls: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        location = None if part.startswith("pipe:") or "{" in part else storage.as_path(part)
        if location is not None and any(ch in part for ch in "*?["):
            files, _ = storage.glob(part)
            if not files:
                raise ValueError(f"no shard matches {part!r}")
            urls.extend(files)
        elif part.endswith(".json") and location is not None and location.is_file():
            index = json.loads(location.read_text())
            urls.extend(s["url"] if "://" in s["url"] else str(location.parent / s["url"]) for s in index["shardlist"])
        elif location is not None and location.is_dir():
            urls.extend(sorted(str(p) for p in location.glob("*.tar")))
        elif location is not None and not storage.is_url(part) and not location.exists():
            raise ValueError(f"no shard file or folder at {part!r}")
        else:
            urls.extend(braceexpand(part))
    if not urls:
        raise ValueError(f"no shards in {spec!r}")
    return urls


def frame_positions(total: int, num_frames: int, step: float, offset_seed: int) -> list[int] | None:
    """Indices of `num_frames` frames `step` apart (a float step comes from a target fps) inside a
    clip of `total` frames, starting at an offset drawn from `offset_seed`; None when the clip is
    too short."""
    span = (num_frames - 1) * step
    if span > total - 1:
        return None
    slack = int(total - 1 - span)
    start = np.random.default_rng(offset_seed).integers(0, slack + 1) if slack else 0
    return [int(round(start + i * step)) for i in range(num_frames)]


def decode_clip(mp4: bytes, config: DataConfig, key: str) -> np.ndarray:
    """The training frames of one sample, uint8 (num_frames, height, width, 3). Raises ValueError
    for a clip that cannot give them (the handler skips it)."""
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total = stream.frames
        source_fps = float(stream.average_rate or 0)
        if not total:  # no frame count in the header: count by decoding (rare: we write mp4s that have it)
            total = sum(1 for _ in container.decode(stream))
            container.seek(0)
        step = source_fps / config.fps if config.fps and source_fps else float(config.frame_stride)
        # The offset depends on the seed and the sample only, so runs repeat whatever the worker.
        positions = frame_positions(total, config.num_frames, step, zlib.crc32(key.encode()) ^ config.seed)
        if positions is None:
            raise ValueError(f"{key}: {total} frames, {config.num_frames} needed at a step of {step:g}")
        wanted, frames, upright = set(positions), {}, Upright(stream)
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames[index] = _resize_crop(frame, upright, config.width, config.height)
            if index >= positions[-1]:
                break
    if len(frames) < len(wanted):
        raise ValueError(f"{key}: only {len(frames)} of {len(wanted)} frames decoded")
    return np.stack([frames[i] for i in positions])


def _resize_crop(frame: av.VideoFrame, upright: Upright, width: int, height: int) -> np.ndarray:
    """Scale to cover width x height (aspect kept), then centre-crop, as RGB uint8. The colours are
    read as the mp4 tags them (pack writes BT.709, limited range), as a player reads them."""
    shown_w, shown_h = upright.display_size(frame)
    scale = max(width / shown_w, height / shown_h)
    scaled_w, scaled_h = max(width, math.ceil(shown_w * scale)), max(height, math.ceil(shown_h * scale))
    rgb = upright.rgb(frame, scaled_w, scaled_h, "BILINEAR")
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return np.ascontiguousarray(rgb[top : top + height, left : left + width])


class SkipCounter:
    """The error handler: counts skipped samples and warns at most every few seconds (per worker).
    The count since the last batch travels with each batch, so the trainer sees every skip."""

    def __init__(self):
        self.pending = 0
        self.total = 0
        self._last_warning = -math.inf

    def __call__(self, exc: Exception) -> bool:
        self.pending += 1
        self.total += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            log.warning("skipped a training sample (%d so far in this worker): %s", self.total, exc)
            self._last_warning = now
        return True  # go on with the next sample

    def take(self) -> int:
        count, self.pending = self.pending, 0
        return count


def make_dataset(
    config: DataConfig, rank: int = 0, world_size: int = 1, epoch: int = 0, start: dict[int, tuple[int, int]] | None = None,
    first_worker: int = 0, epochs: int | None = 1,
) -> _Stream:
    """The per-worker stream of batches: shards → samples → decoded, batched tensors, epoch after
    epoch (`epochs` of them from `epoch`; None: without end, as the trainer reads it, so worker
    processes never restart between epochs). Plain picklable state, copied into spawned workers.

    `start` resumes: worker id → (epoch, samples that worker had already handed out in that
    epoch), i.e. the `epoch` and `position` of the last batch the trainer consumed from it. The
    samples are passed over before decoding, so resuming costs tar reading, not video decoding.
    `first_worker` is the worker whose batch comes next: the DataLoader always asks its first
    process first, so that process plays that worker's part (worker ids here are these logical ids)."""
    return _Stream(config, shard_urls(config.shards), rank, world_size, epoch, dict(start or {}), first_worker, epochs)


def _worker(first_worker: int) -> tuple[int, int]:
    """(logical worker id, number of workers) of the calling DataLoader worker process."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0, 1
    return (info.id + first_worker) % info.num_workers, info.num_workers


class _Stream(torch.utils.data.IterableDataset):
    """One worker's batches (see `make_dataset`). Each batch carries the worker id and the epoch
    and number of its last sample: the data position a checkpoint saves."""

    def __init__(self, config: DataConfig, urls: list[str], rank: int, world_size: int, first_epoch: int,
                 start: dict[int, tuple[int, int]], first_worker: int, epochs: int | None):  # fmt: skip
        self.config, self.urls, self.rank, self.world_size = config, urls, rank, world_size
        self.first_epoch, self.start, self.first_worker, self.epochs = first_epoch, start, first_worker, epochs

    def __iter__(self):
        worker, workers = _worker(self.first_worker)
        skips = SkipCounter()
        batch: list[dict] = []
        for sample in self._samples(worker, workers, skips):
            batch.append(sample)
            if len(batch) == self.config.batch_size:
                yield _collate(batch, skips.take())
                batch = []
        if batch:
            yield _collate(batch, skips.take())

    def _samples(self, worker: int, workers: int, skips: SkipCounter):
        """Decoded samples, epoch after epoch, numbered within each epoch from 1."""
        epoch, done = self.start.get(worker, (self.first_epoch, 0))
        while self.epochs is None or epoch < self.first_epoch + self.epochs:
            urls = self._shards(epoch, worker, workers)
            if not urls:
                return  # fewer shards than workers: this one has none, in any epoch
            decoded = 0
            for number, sample in enumerate(self._read(urls, epoch, worker, skips), start=1):
                if number <= done:  # handed out before the checkpoint this run resumes from
                    continue
                try:
                    training_sample = _to_training_sample(sample, self.config)
                except Exception as exc:  # a bad sample is skipped and counted, never fatal
                    skips(exc)
                    continue
                decoded += 1
                yield {**training_sample, "position": (worker, epoch, number)}
            if not decoded and not done:
                return  # a whole epoch without one usable sample: stop rather than spin
            epoch, done = epoch + 1, 0

    def _shards(self, epoch: int, worker: int, workers: int) -> list[str]:
        """This worker's shards in `epoch`: the whole list permuted by seed + epoch (the same
        permutation everywhere), every world_size-th from `rank`, then every num_workers-th of
        those from the worker's id. Resampled: a seeded draw with replacement per worker and
        epoch, of as many shards as that share would hold (at least one)."""
        seed = self.config.seed
        if self.config.resampled:
            rng = random.Random(_mix(seed, self.rank * 1000 + worker, epoch))
            draws = max(1, math.ceil(len(self.urls) / (self.world_size * workers)))
            return [rng.choice(self.urls) for _ in range(draws)]
        order = list(self.urls)
        random.Random(_mix(seed, 0, epoch)).shuffle(order)
        return order[self.rank :: self.world_size][worker::workers]

    def _read(self, urls: list[str], epoch: int, worker: int, skips: SkipCounter):
        """The raw samples of `urls`, through a shuffle buffer seeded by seed, rank, epoch and
        worker (workers that read the same shard in resampled mode still differ; runs repeat)."""
        samples = read_shards(urls, skips)
        if not self.config.shuffle_buffer:
            return samples
        return _shuffled(samples, self.config.shuffle_buffer, random.Random(_mix(self.config.seed, self.rank, epoch) * 101 + worker))


def read_shards(urls: list[str], handler) -> Iterator[dict]:
    """The samples of the tars at `urls`, in order, as webdataset dicts (`__key__`, one bytes
    value per member extension). Object-store URLs open through fsspec; local paths, `pipe:`
    and http(s) through webdataset. Errors go to `handler` (True: go on)."""
    return group_by_keys(tar_file_expander(_open_shards(urls, handler), handler=handler), handler=handler)


def _open_shards(urls: list[str], handler) -> Iterator[dict]:
    for url in urls:
        try:
            through_fsspec = storage.is_url(url) and storage.url_protocol(url) not in ("http", "https")
            stream = storage.as_path(url).open("rb") if through_fsspec else gopen(url)
        except Exception as exc:
            if handler(exc):
                continue
            raise
        yield {"url": url, "stream": stream}


def _mix(seed: int, rank: int, epoch: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + epoch) % 2**63


def _shuffled(samples, bufsize: int, rng: random.Random):
    """A buffer shuffle: each sample swaps into a random slot of a `bufsize` buffer."""
    buffer: list = []
    for sample in samples:
        if len(buffer) < bufsize:
            buffer.append(sample)
            continue
        index = rng.randrange(len(buffer))
        yield buffer[index]
        buffer[index] = sample
    rng.shuffle(buffer)
    yield from buffer


def _to_training_sample(sample: dict, config: DataConfig) -> dict:
    """A video sample's decoded frames, or a latent sample's latents and text embedding."""
    key = sample["__key__"]
    caption = sample.get("txt", b"").decode("utf-8", errors="replace").strip()
    common = {"key": key, "caption": caption}
    if is_latent_sample(sample):  # written by `python -m train precompute`
        latents, text = decode_sample(sample)
        return {**common, "latents": latents, "text": text}
    if "mp4" not in sample:
        raise ValueError(f"{key}: no .mp4 member")
    return {**common, "frames": decode_clip(sample["mp4"], config, key)}


def _collate(batch: list[dict], skipped: int) -> dict:
    worker, epoch, position = batch[-1]["position"]
    kinds = {"latents" in s for s in batch}
    if len(kinds) > 1:
        raise ValueError("the shards mix video samples and latent samples; train from one kind")
    if "latents" in batch[0]:
        tensors = {"latents": torch.from_numpy(np.stack([s["latents"] for s in batch]).astype(np.float32)), "text": _pad_texts(batch)}
    else:
        tensors = {"frames": torch.from_numpy(np.stack([s["frames"] for s in batch]))}
    return {
        **tensors,
        "captions": [s["caption"] for s in batch],
        "keys": [s["key"] for s in batch],
        "skipped": skipped,
        "worker": worker,  # with epoch and position: where this worker's stream is after this batch
        "epoch": epoch,
        "position": position,
    }


def _pad_texts(batch: list[dict]) -> torch.Tensor:
    """Text embeddings (L_i, D), stored without trailing zeros, zero-padded to the longest: (B, L, D)."""
    length = max(s["text"].shape[0] for s in batch)
    padded = np.zeros((len(batch), length, batch[0]["text"].shape[1]), np.float32)
    for row, sample in enumerate(batch):
        padded[row, : sample["text"].shape[0]] = sample["text"]
    return torch.from_numpy(padded)


def make_loader(
    config: DataConfig, rank: int = 0, world_size: int = 1, epoch: int = 0, start: dict[int, tuple[int, int]] | None = None,
    first_worker: int = 0, epochs: int | None = 1,
) -> torch.utils.data.DataLoader:
    """A DataLoader over `make_dataset`: batches are built in the workers (batch_size=None here)."""
    dataset = make_dataset(config, rank, world_size, epoch, start, first_worker, epochs)
    workers = config.num_workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        # spawn: workers start clean (forking a process with FFmpeg or CUDA threads is unsafe).
        multiprocessing_context="spawn" if workers else None,
    )
