"""Pack stage, second half: group the encoded clips into tar shards, with their captions and rows.

Runs in the main process after the pack units (`curate.stages.pack.stage`) have encoded every kept
clip; the runner says which units finished. The samples are ordered by video and time, planned into shards from their sizes alone, and
each shard is written only when it is missing or its planned content changed (a caption was
edited, a threshold moved a clip in or out): a marker next to the units records what each shard
was written from. Shards left over from a bigger plan are removed, the wids index is rewritten,
and clips.parquet gets each packed clip's `shard`.

A sample is `<key>.mp4` (the encoded clip), `<key>.txt` (its caption, else its source caption,
else empty) and `<key>.json` (its clips.parquet row, without `shard`, plus what was packed).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from curate.config import PackConfig
from curate.manifest import OutputLayout
from curate.shards import INDEX_NAME, Sample, member_bytes, plan_shards, shard_files, shard_name, wids_index, write_shard
from curate.storage import makedirs, read_parquet, read_parquets, write_text_atomic


@dataclass
class ShardStats:
    """What `write_shards` left in the shards folder."""

    shards: int = 0
    samples: int = 0
    bytes: int = 0
    written: int = 0  # shards (re)written by this run; the others were already up to date
    uncaptioned: int = 0  # samples with an empty .txt

    def line(self, out: str) -> str:
        """The command's line on the shards in `out` (the --out folder as the user gave it)."""
        missing = f"; {self.uncaptioned} samples have no caption" if self.uncaptioned else ""
        size = f"{self.samples} samples, {self.bytes / 1e9:.2f} GB"
        return f"shards: {self.shards} in {out}/shards ({self.written} written now), {size}{missing}"


def write_shards(layout: OutputLayout, pack: PackConfig, work_dir: Path, done: set[str], progress: bool) -> tuple[ShardStats, pa.Table]:
    """Bring OUT/shards in line with the packable clips of clips.parquet, from the encoded samples
    of the `done` units in `work_dir`; return what is there and a (clip_id, shard) table for
    clips.parquet."""
    rows = _packable_rows(layout)
    texts = [_text(row) for row in rows]
    metas = [_json(row) for row in rows]
    sizes = [member_bytes([row["pack_mp4_bytes"], len(t), len(m)]) for row, t, m in zip(rows, texts, metas, strict=True)]
    plan = plan_shards(sizes, pack.max_shard_bytes, pack.max_shard_samples)
    makedirs(layout.shards)
    # A run killed mid-write leaves its temporary files (shards, index.json; local folders only).
    for leftover in layout.shards.glob(".*.tmp"):
        leftover.unlink()
    markers = work_dir / "shards"
    makedirs(markers)
    locations = _sample_locations(work_dir, done)
    stats = ShardStats(samples=len(rows), uncaptioned=sum(not t for t in texts))
    index, shard_of = [], {}
    digests = [_digest(work_dir, rows, texts, metas, members) for members in plan]
    todo = [n for n in range(len(plan)) if not _up_to_date(layout.shards, markers, shard_name(pack.prefix, n), digests[n])]
    with tqdm(total=sum(sizes[i] for n in todo for i in plan[n]), desc="shards", unit="B", unit_scale=True,
              disable=not (progress and todo), file=sys.stderr) as bar:  # fmt: skip
        for number in todo:
            members, name = plan[number], shard_name(pack.prefix, number)
            samples = _samples(locations, [rows[i] for i in members], [texts[i] for i in members], [metas[i] for i in members])
            write_shard(layout.shards / name, samples)
            write_text_atomic(digests[number], markers / f"{name}.plan")  # after the rename: never ahead of the shard
            stats.written += 1
            bar.update(sum(sizes[i] for i in members))
    for number, members in enumerate(plan):
        name = shard_name(pack.prefix, number)
        index.append((name, len(members), (layout.shards / name).stat().st_size))
        shard_of.update({rows[i]["clip_id"]: name for i in members})
    for stale in shard_files(layout.shards, pack.prefix)[len(plan) :]:
        stale.unlink()
        (markers / f"{stale.name}.plan").unlink(missing_ok=True)
    write_text_atomic(wids_index(index, pack.prefix), layout.shards / INDEX_NAME)
    stats.shards, stats.bytes = len(plan), sum(size for _, _, size in index)
    table = pa.table(
        {"clip_id": list(shard_of), "shard": list(shard_of.values())},
        schema=pa.schema([("clip_id", pa.string()), ("shard", pa.string())]),
    )
    return stats, table


def _packable_rows(layout: OutputLayout) -> list[dict]:
    """The kept, encoded clips' rows (without `shard`), by video and time."""
    clips = read_parquet(layout.clips)
    if "shard" in clips.column_names:
        clips = clips.drop_columns(["shard"])
    if "key" not in clips.column_names:
        return []
    frame = clips.select(["video_id", "start_frame", "drop_reason", "key"]).to_pandas()
    keep = frame[frame.drop_reason.isna() & frame.key.notna()].sort_values(["video_id", "start_frame"], kind="stable")
    return clips.take(pa.array(keep.index.to_numpy())).to_pylist()


def _text(row: dict) -> bytes:
    return (row.get("caption") or row.get("source_caption") or "").encode()


def _json(row: dict) -> bytes:
    """The row as JSON: keys sorted, NaN as null, so the same row gives the same bytes."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    return json.dumps(clean, sort_keys=True, ensure_ascii=False, default=str).encode()


def _digest(work_dir: Path, rows, texts, metas, members) -> str:
    """What a shard is written from: the encoding settings (the work folder), and per sample its
    key, mp4 size, caption and row."""
    digest = hashlib.sha1(work_dir.name.encode())
    for i in members:
        digest.update(f"\n{rows[i]['key']}\t{rows[i]['pack_mp4_bytes']}\t".encode())
        digest.update(hashlib.sha1(texts[i] + b"\0" + metas[i]).digest())
    return digest.hexdigest()


def _up_to_date(folder: Path, markers: Path, name: str, digest: str) -> bool:
    """Whether the shard `name` exists and was written from exactly this content."""
    marker = markers / f"{name}.plan"
    return (folder / name).exists() and marker.exists() and marker.read_text() == digest


def _sample_locations(work_dir: Path, done: set[str]) -> dict[str, Path]:
    """Which finished unit's samples file holds each key (reads only the key column)."""
    paths = [p for p in sorted(work_dir.glob("*.samples.parquet")) if p.name.removesuffix(".samples.parquet") in done]
    locations = {}
    for path, table in zip(paths, read_parquets(paths, columns=["key"]), strict=True):
        for key in table.column("key").to_pylist():
            locations.setdefault(key, path)
    return locations


def _samples(locations: dict[str, Path], rows: list[dict], texts: list[bytes], metas: list[bytes]) -> list[Sample]:
    """The shard's samples, their mp4 bytes read from the units that encoded them."""
    keys_by_path: dict[Path, set[str]] = {}
    for row in rows:
        keys_by_path.setdefault(locations[row["key"]], set()).add(row["key"])
    mp4s: dict[str, bytes] = {}
    for path, keys in sorted(keys_by_path.items()):
        table = read_parquet(path, columns=["key", "mp4"])
        for key, mp4 in zip(table.column("key").to_pylist(), table.column("mp4").to_pylist(), strict=True):
            if key in keys:
                mp4s[key] = mp4
    return [Sample(row["key"], {"mp4": mp4s[row["key"]], "txt": t, "json": m}) for row, t, m in zip(rows, texts, metas, strict=True)]
