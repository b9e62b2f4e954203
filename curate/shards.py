"""WebDataset shards: which samples go in which tar, writing tars byte for byte the same, the index.

A sample is a few files sharing a key (`<key>.mp4`, `<key>.txt`, `<key>.json`); a shard is a
plain tar of samples, read by `webdataset` with no project code. Shards are planned from the
samples' sizes alone (`plan_shards`), in a fixed order, so the same samples always give the same
shards. `write_shard` gives every tar member the same metadata (owner 0, mtime 0, mode 0644) and
writes atomically (`curate.storage.write_atomic`: a hidden temporary name then a rename, or one
upload to an object store), so a shard under its final name is always complete. `wids_index` is
the index the wids library (and our trainer) reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from curate.storage import write_atomic

_BLOCK = tarfile.BLOCKSIZE  # 512: every member is a header block plus its data padded to blocks
_END = 2 * _BLOCK  # two empty blocks close a tar
_RECORD = tarfile.RECORDSIZE  # tarfile pads the whole archive to a multiple of this
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
INDEX_NAME = "index.json"  # the wids index beside the shards


def sample_key(clip_id: str, box_id: str | None = None) -> str:
    """A key webdataset keeps whole: letters, digits, '_' and '-' only (webdataset splits a member
    name at its first dot, and a '/' would make a folder). clip_ids already are; anything else is
    replaced, so a key is always a safe file name. A clip packed from a crop box (`box_id`, see
    `ClipRef.box_id`) gets "-b" and 8 hex digits of the box after its id: the same clip packed from
    another box is another sample, and a re-packed folder never mixes the two."""
    suffix = f"-b{hashlib.sha1(box_id.encode()).hexdigest()[:8]}" if box_id else ""
    return (_UNSAFE.sub("_", clip_id) or "_") + suffix


@dataclass(frozen=True)
class Sample:
    """One sample's files: extension (without the dot) → bytes, in the order they are written."""

    key: str
    files: dict[str, bytes]

    @property
    def tar_bytes(self) -> int:
        return member_bytes([len(data) for data in self.files.values()])


def member_bytes(sizes: Iterable[int]) -> int:
    """What files of these sizes take in a tar: a header block each, data padded to blocks."""
    return sum(_BLOCK + -(-size // _BLOCK) * _BLOCK for size in sizes)


def tar_size(sample_bytes: int) -> int:
    """The size of a tar holding samples of `sample_bytes` tar bytes in all."""
    return -(-(sample_bytes + _END) // _RECORD) * _RECORD


def plan_shards(sizes: list[int], max_bytes: int, max_samples: int) -> list[range]:
    """Cut samples (their tar bytes, in order) into consecutive shards: a shard is closed before
    the sample that would take it past `max_bytes` or `max_samples` (0: no limit); every shard
    holds at least one sample."""
    shards, start, total = [], 0, 0
    for index, size in enumerate(sizes):
        full = index > start and ((max_bytes and tar_size(total + size) > max_bytes) or (max_samples and index - start >= max_samples))
        if full:
            shards.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        shards.append(range(start, len(sizes)))
    return shards


def write_shard(path, samples: Iterable[Sample]) -> int:
    """Write a tar of `samples` at `path` (local or object store) atomically; return its size.
    The same samples give the same bytes."""

    def write(raw) -> None:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                for ext, data in sample.files.items():
                    tar.addfile(_member(f"{sample.key}.{ext}", len(data)), io.BytesIO(data))

    return write_atomic(path, write)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def wids_index(shards: list[tuple[str, int, int]], name: str) -> str:
    """The wids shard index (JSON) for (file name, samples, bytes) per shard; urls are relative to
    the index's folder."""
    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": name,
        "shardlist": [{"url": url, "nsamples": count, "filesize": size} for url, count, size in shards],
    }
    return json.dumps(index, indent=2) + "\n"


def shard_name(prefix: str, number: int) -> str:
    return f"{prefix}-{number:06d}.tar"


def shard_files(folder: Path, prefix: str) -> list[Path]:
    """The shards with this prefix in `folder` (anything else there is left alone)."""
    pattern = re.compile(rf"{re.escape(prefix)}-\d{{6}}\.tar")
    return sorted(p for p in folder.glob(f"{prefix}-*.tar") if pattern.fullmatch(p.name))
