"""`python -m train precompute`: latent shards, so that training skips the VAE and the text encoder.

Every sample of the video shards becomes a latent sample (`train.latents`: latents, trimmed text
embedding, caption, metadata) with the same key in a shard of the same name under OUT.

The frames are those the loader picks for the sample (its bucket's shape, its fixed seeded offset,
at the stride or fps), so a latent shard holds one temporal crop per clip. With buckets, each clip
is encoded at its own bucket's shape (the encoder's batches group clips of one bucket) and its
json records that shape under "latent"; the loader batches latents by it, as it batches videos.
A latent shard keeps its video shard's sample order. Only the encoders are loaded (the
transformer's config, not its weights). Each output shard is written atomically, and
shards already written are skipped, so a killed precompute resumes where it stopped. Samples that
cannot be decoded or fit no bucket are left out and counted.
"""

from __future__ import annotations

import json
import logging
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from curate.models.hub import resolve_device
from curate.shards import Sample, wids_index, write_shard
from curate.storage import write_text_atomic
from train.buckets import Bucket, Buckets
from train.config import TrainConfig
from train.data import caption_of, choose_bucket, decode_clip, read_shards, sample_meta, shard_urls
from train.latents import encode_sample
from train.models import VideoFamily, load_family

log = logging.getLogger(__name__)
DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class PrecomputeStats:
    shards_written: int = 0
    shards_skipped: int = 0  # already there from an earlier run
    samples: int = 0
    bad_samples: int = 0


def precompute(config: TrainConfig, out: Path, dtype: str = "float16", progress: bool = True) -> PrecomputeStats:
    """Write the latent shards of `config.shards` into `out` (see the module docstring)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    urls = shard_urls(config.shards)
    names = [_shard_name(url) for url in urls]
    if len(set(names)) != len(names):
        raise ValueError("two input shards have the same file name; latent shards are named after them")
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device, "device")
    text_dtype = torch.bfloat16 if device.type == "cuda" and config.mixed_precision == "auto" else torch.float32
    family = load_family(config.preset, device, text_dtype, seed=config.seed, source=config.model_source or None, with_transformer=False)
    family.check_video_shape(config.num_frames, config.height, config.width)
    buckets = Buckets.for_run(config, *family.shape_steps())
    _claim(out, _recipe(config, family, dtype))
    stats, counts = PrecomputeStats(), []
    for url, name in tqdm(list(zip(urls, names, strict=True)), desc="precompute", unit="shard", disable=not progress, file=sys.stderr):
        target = out / name
        if target.exists():
            stats.shards_skipped += 1
        else:
            samples = _latent_samples(url, family, config, buckets, DTYPES[dtype], stats)
            write_shard(target, samples)
            stats.shards_written += 1
        counts.append((name, _count_samples(target), target.stat().st_size))
    _write_index(out, counts)
    return stats


def _latent_samples(url: str, family: VideoFamily, config: TrainConfig, buckets: Buckets, dtype, stats: PrecomputeStats) -> list[Sample]:
    """The latent samples of one video shard, in its order, encoded `config.batch_size` clips of
    one bucket at a time."""
    keys: list[str] = []
    waiting: dict[Bucket, list[tuple[dict, np.ndarray]]] = {}
    encoded: dict[str, Sample] = {}
    for sample in read_shards([url], _warn_and_continue):
        try:
            bucket = choose_bucket(sample, buckets, config)
            frames = decode_clip(sample["mp4"], config, sample["__key__"], bucket)
        except ValueError as exc:  # too short, cropped too much, corrupt: the loader would skip it too
            log.warning("left out %s: %s", sample["__key__"], exc)
            stats.bad_samples += 1
            continue
        keys.append(sample["__key__"])
        group = waiting.setdefault(bucket, [])
        group.append((sample, frames))
        if len(group) == config.batch_size:
            encoded.update((s.key, s) for s in _encode_batch(waiting.pop(bucket), bucket, family, config, dtype, stats))
    for bucket, group in sorted(waiting.items()):
        encoded.update((s.key, s) for s in _encode_batch(group, bucket, family, config, dtype, stats))
    return [encoded[key] for key in keys]


def _encode_batch(
    batch: list[tuple[dict, np.ndarray]], bucket: Bucket, family: VideoFamily, config: TrainConfig, dtype, stats: PrecomputeStats
) -> Iterator[Sample]:
    captions = [caption_of(sample) for sample, _ in batch]
    frames = torch.from_numpy(np.stack([f for _, f in batch]))
    latents = family.encode_video(frames).cpu().numpy()
    texts = family.encode_text(captions).cpu().numpy()
    recipe = _recipe(config, family, np.dtype(dtype).name)
    for (sample, _), latent, text, caption in zip(batch, latents, texts, captions, strict=True):
        meta = sample_meta(sample)
        meta["latent"] = {**recipe, "num_frames": bucket.num_frames, "height": bucket.height, "width": bucket.width}
        stats.samples += 1
        yield Sample(sample["__key__"], encode_sample(latent, text, caption, meta, dtype))


def _warn_and_continue(exc: Exception) -> bool:
    log.warning("skipped part of a shard: %s", exc)
    return True


def _recipe(config: TrainConfig, family: VideoFamily, dtype: str) -> dict:
    """What the latents depend on (the input shards too): a folder holds latents of one recipe only."""
    recipe = {
        "shards": config.shards, "preset": config.preset, "source": family.source, "num_frames": config.num_frames,
        "height": config.height, "width": config.width, "frame_stride": config.frame_stride, "fps": config.fps,
        "seed": config.seed, "dtype": dtype,
    }  # fmt: skip
    if config.buckets:  # (a recipe without buckets reads as before they existed)
        bucketing = ("buckets", "bucket_aspects", "bucket_max_crop", "bucket_min_frames")
        recipe.update({name: getattr(config, name) for name in bucketing})
    return recipe


def _claim(out: Path, recipe: dict) -> None:
    """Record the recipe in OUT/precompute.json, or refuse a folder made with another one (its
    finished shards would be skipped and mixed with new ones)."""
    path = out / "precompute.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        if earlier != recipe:
            changed = ", ".join(f"{k}: {earlier.get(k)!r} -> {v!r}" for k, v in recipe.items() if earlier.get(k) != v)
            raise ValueError(f"{out} holds latents made with other settings ({changed}); use another folder")
        return
    write_text_atomic(json.dumps(recipe, indent=2, sort_keys=True) + "\n", path)


def _shard_name(url: str) -> str:
    """The output name of an input shard: its file name (a `pipe:` command's last .tar word)."""
    words = [w for w in url.split() if w.endswith(".tar")] or [url]
    name = Path(words[-1].split("://")[-1]).name
    if not name.endswith(".tar"):
        raise ValueError(f"cannot name a latent shard after {url!r}: it names no .tar file")
    return name


def _count_samples(path: Path) -> int:
    """Samples (distinct keys) in a tar, from its member headers alone (tarfile seeks past data)."""
    with tarfile.open(path) as tar:
        return len({member.name.split(".", 1)[0] for member in tar})


def _write_index(out: Path, counts: list[tuple[str, int, int]]) -> None:
    write_text_atomic(wids_index(counts, "latents"), out / "index.json")
