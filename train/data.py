"""Streaming training clips from the shards `curate pack` writes, with no conversion step.

The pipeline keeps shuffling honest across nodes and workers (open_clip's order): the shard list
is shuffled with seed + epoch, split by node (rank), then by DataLoader worker; each worker reads
its tars, shuffles samples in a buffer, puts each sample in its bucket (`train.buckets`: the
training shape nearest its own, chosen from its json before any decoding), and hands on a bucket's
samples as a batch once it holds batch_size of them: every batch has one shape. Only then are the
batch's mp4s decoded in memory with PyAV (up to the last frame needed), resized to cover the
bucket and centre-cropped, so the main process receives whole batches. A worker's epoch ends with
its partly filled buckets, as smaller batches; nothing is carried into the next epoch.

Each worker goes on from one epoch to the next by itself, so the trainer keeps one DataLoader for
the whole run (worker processes never restart at epoch boundaries). A sample that cannot be used
is skipped and counted by reason (too_short, crop_too_large, undecodable, held_out: kept for
validation by `val_fraction`); warnings are rate-limited and nothing ever sleeps. Latent shards
(`python -m train precompute`, format in `train.latents`) give batches of latents and text
embeddings instead of frames, grouped by the shape they were made at. The settings are a
`train.config.DataConfig` (the trainer passes its TrainConfig, which is one).

A worker's data position is the number of batches it has handed on in its epoch: the buckets are
filled from the json alone, so a resumed worker re-reads its epoch, fills the buckets again
without decoding, and passes over the batches handed on before; the samples that were waiting
in buckets at the checkpoint are neither lost nor repeated.

When a rank has fewer shards than workers, each of its workers reads all of them and keeps every
workers-th sample (every sample once per epoch, whatever the count); with fewer shards than ranks,
every rank reads them all and keeps its own share the same way. In resampled mode each worker
draws its shards with replacement from the whole list. Its epoch is as many draws as the shards
it would get without replacement; epochs keep the data position small, so a resumed run only
passes over the samples of the current epoch.

Shards can be a brace pattern (`shards/clips-{000000..000009}.tar`), a folder, a wids
`index.json`, a comma-separated list, object-store URLs of any of these (`s3://bucket/work/shards`,
read through fsspec like `curate`'s outputs), or `pipe:` commands (`pipe:aws s3 cp s3://... -`).
"""

from __future__ import annotations

import hashlib
import io
import itertools
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

from curate import forkserver, storage
from curate.picture import Upright
from train.buckets import Bucket, Buckets, SkippedSample
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


def decode_clip(mp4: bytes, config: DataConfig, key: str, bucket: Bucket | None = None) -> np.ndarray:
    """The training frames of one sample, uint8 (num_frames, height, width, 3) of `bucket` (default:
    the configured shape). Raises ValueError for a clip that cannot give them (the handler skips it)."""
    bucket = bucket or Bucket(config.num_frames, config.height, config.width)
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total = stream.frames
        source_fps = float(stream.average_rate or 0)
        if not total:  # no frame count in the header: count by decoding (rare: we write mp4s that have it)
            total = sum(1 for _ in container.decode(stream))
            container.seek(0)
        step = frame_step(config, source_fps)
        # The offset depends on the seed and the sample only, so runs repeat whatever the worker.
        positions = frame_positions(total, bucket.num_frames, step, zlib.crc32(key.encode()) ^ config.seed)
        if positions is None:
            raise SkippedSample("too_short", f"{key}: {total} frames, {bucket.num_frames} needed at a step of {step:g}")
        wanted, frames, upright = set(positions), {}, Upright(stream)
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames[index] = _resize_crop(frame, upright, bucket.width, bucket.height)
            if index >= positions[-1]:
                break
    if len(frames) < len(wanted):
        raise ValueError(f"{key}: only {len(frames)} of {len(wanted)} frames decoded")
    return np.stack([frames[i] for i in positions])


def frame_step(config: DataConfig, source_fps: float) -> float:
    """Source frames between training frames: from the target fps when set, else frame_stride."""
    return source_fps / config.fps if config.fps and source_fps else float(config.frame_stride)


def _resize_crop(frame: av.VideoFrame, upright: Upright, width: int, height: int) -> np.ndarray:
    """Scale to cover width x height (aspect kept), then centre-crop, as RGB uint8. The colours are
    read as the mp4 tags them (pack writes BT.709, limited range), as a player reads them."""
    shown_w, shown_h = upright.display_size(frame)
    scale = max(width / shown_w, height / shown_h)
    scaled_w, scaled_h = max(width, math.ceil(shown_w * scale)), max(height, math.ceil(shown_h * scale))
    rgb = upright.rgb(frame, scaled_w, scaled_h, "BILINEAR")
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return np.ascontiguousarray(rgb[top : top + height, left : left + width])


def choose_bucket(sample: dict, buckets: Buckets, config: DataConfig) -> Bucket:
    """The bucket of a sample read from a shard, before any decoding: a latent sample's is the
    shape it was made at; a video sample's comes from the size, length and frame rate of its mp4,
    as pack's json gives them (`pack_width`, `pack_height`, `pack_num_frames`, `pack_fps`), else
    as its first frame shows them. Raises SkippedSample when no bucket fits."""
    key = sample["__key__"]
    meta = sample_meta(sample)
    if is_latent_sample(sample):
        made = meta.get("latent") or {}
        if not all(made.get(k) for k in ("num_frames", "height", "width")):
            raise SkippedSample("undecodable", f"{key}: a latent sample without the shape it was made at in its json")
        return Bucket(int(made["num_frames"]), int(made["height"]), int(made["width"]))
    if "mp4" not in sample:
        raise SkippedSample("undecodable", f"{key}: no .mp4 member")
    shape = [meta.get(k) for k in ("pack_width", "pack_height", "pack_num_frames", "pack_fps")]
    width, height, total, fps = shape if all(shape) else _probe(sample["mp4"], key)
    return buckets.choose(int(width), int(height), int(total), frame_step(config, float(fps)))


def sample_meta(sample: dict) -> dict:
    """A shard sample's json as a dict: empty when it has none, or one that is not a JSON object
    (a bad json never stops a run)."""
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _probe(mp4: bytes, key: str) -> tuple[int, int, int, float]:
    """(width, height as shown, frames, fps) of an mp4, from its header and first frame."""
    try:
        with av.open(io.BytesIO(mp4)) as container:
            stream = container.streams.video[0]
            total, fps = stream.frames, float(stream.average_rate or 0)
            width, height = Upright(stream).display_size(next(container.decode(stream)))
            if not total:
                container.seek(0)
                total = sum(1 for _ in container.decode(stream))
    except Exception as exc:  # PyAV's errors, StopIteration for a stream without frames
        raise SkippedSample("undecodable", f"{key}: cannot read the mp4 ({type(exc).__name__}: {exc})") from None
    return width, height, total, fps


class SkipCounter:
    """The error handler: counts skipped samples by reason and warns at most every few seconds
    (per worker). The counts since the last batch travel with each batch, so the trainer sees
    every skip."""

    def __init__(self):
        self.pending: dict[str, int] = {}
        self.total = 0
        self._last_warning = -math.inf

    def __call__(self, exc: Exception) -> bool:
        self.count(getattr(exc, "reason", "undecodable"))
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            log.warning("skipped a training sample (%d so far in this worker): %s", self.total, exc)
            self._last_warning = now
        return True  # go on with the next sample

    def count(self, reason: str) -> None:
        """Count a skip that needs no warning (a sample held out for validation)."""
        self.pending[reason] = self.pending.get(reason, 0) + 1
        self.total += 1

    def take(self) -> dict[str, int]:
        counts, self.pending = self.pending, {}
        return counts


def held_out(key: str, fraction: float) -> bool:
    """Whether the sample `key` is in the validation share `fraction`: its SHA-1, read as a number
    in [0, 1), falls below it. The same keys on every machine, run and worker."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64 < fraction


def make_dataset(
    config: DataConfig,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    start: dict[int, tuple[int, int]] | None = None,
    first_worker: int = 0,
    epochs: int | None = 1,
    buckets: Buckets | None = None,
) -> _Stream:
    """The per-worker stream of batches: shards → samples → buckets → decoded, batched tensors,
    epoch after epoch (`epochs` of them from `epoch`; None: without end, as the trainer reads it,
    so worker processes never restart between epochs). Plain picklable state, copied into
    each worker process. `buckets`: the run's shapes (`Buckets.for_run`, which needs the model);
    None: the configured shape alone, every clip centre-cropped to it.

    `start` resumes: worker id → (epoch, batches that worker had already handed on in that
    epoch), i.e. the `epoch` and `position` of the last batch the trainer consumed from it. Those
    batches are passed over before decoding, so resuming costs tar reading, not video decoding.
    `first_worker` is the worker whose batch comes next: the DataLoader always asks its first
    process first, so that process plays that worker's part (worker ids here are these logical ids)."""
    buckets = buckets or Buckets.fixed(config.num_frames, config.height, config.width)
    return _Stream(config, shard_urls(config.shards), rank, world_size, epoch, dict(start or {}), first_worker, epochs, buckets)


def _worker(first_worker: int) -> tuple[int, int]:
    """(logical worker id, number of workers) of the calling DataLoader worker process."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0, 1
    return (info.id + first_worker) % info.num_workers, info.num_workers


class _Stream(torch.utils.data.IterableDataset):
    """One worker's batches (see `make_dataset`). Each batch carries the worker id, the epoch and
    its number in that epoch: the data position a checkpoint saves."""

    def __init__(self, config: DataConfig, urls: list[str], rank: int, world_size: int, first_epoch: int,
                 start: dict[int, tuple[int, int]], first_worker: int, epochs: int | None, buckets: Buckets):  # fmt: skip
        self.config, self.urls, self.rank, self.world_size = config, urls, rank, world_size
        self.first_epoch, self.start, self.first_worker, self.epochs = first_epoch, start, first_worker, epochs
        self.buckets = buckets

    def __iter__(self):
        worker, workers = _worker(self.first_worker)
        skips = SkipCounter()
        epoch, done = self.start.get(worker, (self.first_epoch, 0))
        while self.epochs is None or epoch < self.first_epoch + self.epochs:
            handed_on = 0
            for number, (bucket, group) in enumerate(self._groups(epoch, worker, workers, skips), start=1):
                if number <= done:  # handed on before the checkpoint this run resumes from: not decoded again
                    skips.take()  # its skips were counted with it
                    continue
                samples = decode_group(group, bucket, self.config, skips)
                if samples:
                    handed_on += 1
                    # skipped: reason -> samples skipped since this worker's previous batch; worker,
                    # epoch and position: where this worker's stream is after this batch.
                    yield {**collate(samples, bucket), "skipped": skips.take(), "worker": worker, "epoch": epoch, "position": number}
            if not handed_on and not done:
                return  # a whole epoch without one usable sample (or no shard at all): stop rather than spin
            epoch, done = epoch + 1, 0

    def _groups(self, epoch: int, worker: int, workers: int, skips: SkipCounter) -> Iterator[tuple[Bucket, list[dict]]]:
        """The epoch's batches, undecoded: its samples (without those held out for validation)
        through the shuffle buffer, grouped by bucket."""
        urls, every, offset = self._share(epoch, worker, workers)
        samples = read_shards(urls, skips)
        if every > 1:
            samples = itertools.islice(samples, offset, None, every)
        if self.config.val_fraction:
            samples = _without_held_out(samples, self.config.val_fraction, skips)
        if self.config.shuffle_buffer:
            rng = random.Random(_mix(self.config.seed, self.rank, epoch) * 101 + worker)
            samples = _shuffled(samples, self.config.shuffle_buffer, rng)
        return bucket_groups(samples, self.buckets, self.config, skips)

    def _share(self, epoch: int, worker: int, workers: int) -> tuple[list[str], int, int]:
        """What this worker reads in `epoch`: (shards, every, offset), keeping the samples whose
        number in those shards' stream is offset modulo every. The whole shard list is permuted
        by seed + epoch (the same permutation everywhere); a rank takes every world_size-th shard,
        and a worker every num_workers-th of those, or, when its rank has fewer shards than
        workers, every num_workers-th sample of them (every sample once, every worker busy). With
        fewer shards than ranks, each rank and worker reads them all and keeps its own samples.
        Resampled: a seeded draw with replacement per worker and epoch, of as many shards as
        that share would hold (at least one)."""
        seed = self.config.seed
        if self.config.resampled:
            rng = random.Random(_mix(seed, self.rank * 1000 + worker, epoch))
            draws = max(1, math.ceil(len(self.urls) / (self.world_size * workers)))
            return [rng.choice(self.urls) for _ in range(draws)], 1, 0
        order = list(self.urls)
        random.Random(_mix(seed, 0, epoch)).shuffle(order)
        mine = order[self.rank :: self.world_size]
        if not mine:
            return order, self.world_size * workers, self.rank * workers + worker
        if len(mine) < workers:
            return mine, workers, worker
        return mine[worker::workers], 1, 0


def bucket_groups(samples: Iterator[dict], buckets: Buckets, config: DataConfig, skips: SkipCounter) -> Iterator[tuple[Bucket, list[dict]]]:
    """(bucket, undecoded samples) batches: each sample goes to its bucket's list (`choose_bucket`,
    from its json), and a list is handed on when it holds batch_size samples; at the end, the
    partly filled lists, in bucket order. Depends on the samples alone, never on decoding."""
    waiting: dict[Bucket, list[dict]] = {}
    for sample in samples:
        try:
            bucket = choose_bucket(sample, buckets, config)
        except Exception as exc:  # a sample that fits no bucket is skipped and counted, never fatal
            skips(exc)
            continue
        group = waiting.setdefault(bucket, [])
        group.append(sample)
        if len(group) == config.batch_size:
            yield bucket, waiting.pop(bucket)
    for bucket in sorted(waiting):
        yield bucket, waiting[bucket]


def decode_group(group: list[dict], bucket: Bucket, config: DataConfig, skips: SkipCounter) -> list[dict]:
    """The training samples of a group at its bucket's shape; those that fail are skipped."""
    decoded = []
    for sample in group:
        try:
            decoded.append(_to_training_sample(sample, config, bucket))
        except Exception as exc:  # a bad sample is skipped and counted, never fatal
            skips(exc)
    return decoded


def _without_held_out(samples: Iterator[dict], fraction: float, skips: SkipCounter) -> Iterator[dict]:
    for sample in samples:
        if held_out(sample["__key__"], fraction):
            skips.count("held_out")
        else:
            yield sample


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


def _to_training_sample(sample: dict, config: DataConfig, bucket: Bucket) -> dict:
    """A video sample's decoded frames at `bucket`'s shape, or a latent sample's latents and text embedding."""
    key = sample["__key__"]
    common = {"key": key, "caption": caption_of(sample)}
    if is_latent_sample(sample):  # written by `python -m train precompute`
        latents, text = decode_sample(sample)
        return {**common, "latents": latents, "text": text}
    return {**common, "frames": decode_clip(sample["mp4"], config, key, bucket)}


def caption_of(sample: dict) -> str:
    """A shard sample's caption (its .txt member), empty when it has none."""
    return sample.get("txt", b"").decode("utf-8", errors="replace").strip()


def collate(samples: list[dict], bucket: Bucket) -> dict:
    """One batch of a bucket's decoded samples: its frames (or latents and text embeddings),
    captions, keys and bucket."""
    kinds = {"latents" in s for s in samples}
    if len(kinds) > 1:
        raise ValueError("the shards mix video samples and latent samples; train from one kind")
    if "latents" in samples[0]:
        latents = torch.from_numpy(np.stack([s["latents"] for s in samples]).astype(np.float32))
        tensors = {"latents": latents, "text": _pad_texts(samples)}
    else:
        tensors = {"frames": torch.from_numpy(np.stack([s["frames"] for s in samples]))}
    return {
        **tensors,
        "captions": [s["caption"] for s in samples],
        "keys": [s["key"] for s in samples],
        "bucket": bucket.name,  # "HxWxF": the shape of these frames (of the clips these latents were made from)
    }


def _pad_texts(batch: list[dict]) -> torch.Tensor:
    """Text embeddings (L_i, D), stored without trailing zeros, zero-padded to the longest: (B, L, D)."""
    length = max(s["text"].shape[0] for s in batch)
    padded = np.zeros((len(batch), length, batch[0]["text"].shape[1]), np.float32)
    for row, sample in enumerate(batch):
        padded[row, : sample["text"].shape[0]] = sample["text"]
    return torch.from_numpy(padded)


def make_loader(config: DataConfig, **stream) -> torch.utils.data.DataLoader:
    """A DataLoader over `make_dataset(config, **stream)` (`stream`: its rank, world_size, epoch,
    start, first_worker, epochs and buckets): batches are built in the workers (batch_size=None here)."""
    dataset = make_dataset(config, **stream)
    workers = config.num_workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        # Workers are forks of the process's fork server, a fresh process that imported this module:
        # forking the trainer itself is unsafe (FFmpeg's and CUDA's threads), and a spawned worker,
        # clean too, would import torch anew, about 2 CPU-s per worker each time a loader starts.
        multiprocessing_context=forkserver.context([__name__]) if workers else None,
    )
