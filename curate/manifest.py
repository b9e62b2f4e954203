"""Manifest tables: their columns, where they live under `--out`, and atomic parquet writes.

Users read `DIR/manifests/videos.parquet` and `DIR/manifests/clips.parquet` with pandas; the
column lists here are the contract documented in manifests/README.md. Stages write one small
part file per unit under `DIR/manifests/.work/`, and the parts are merged into the tables.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

VIDEO_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("codec", pa.string()),
        ("cut_frames", pa.list_(pa.int64())),
        ("cut_kinds", pa.list_(pa.string())),
        ("source_caption", pa.string()),
    ]
)

CLIP_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("num_frames", pa.int64()),
        ("fps", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("drop_reason", pa.string()),
        ("source_caption", pa.string()),
    ]
)


class OutputLayout:
    """Where everything lives under one `--out` folder."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.manifests = self.out / "manifests"
        self.videos = self.manifests / "videos.parquet"
        self.clips = self.manifests / "clips.parquet"
        self.config = self.manifests / "config.yaml"
        self.work = self.manifests / ".work"
        self.shards = self.out / "shards"

    def stage_work(self, stage: str, config_hash: str) -> Path:
        """Per-unit parts of one stage under one config: other settings never reuse them."""
        return self.work / f"{stage}-{config_hash}"


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table with exactly the schema's columns, in order; missing keys are null."""
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.table(columns, schema=schema)


def write_parquet_atomic(table: pa.Table, path: str | Path) -> None:
    """Write a parquet file atomically: a reader, or a run killed at any instant, sees the old
    file or the new one, never half a file."""
    _write_atomic(path, "wb", lambda f: pq.write_table(table, f))


def write_text_atomic(text: str, path: str | Path) -> None:
    """The same discipline for small text files (markers, configs)."""
    _write_atomic(path, "w", lambda f: f.write(text))


def _write_atomic(path: str | Path, mode: str, write) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide manifests from other users
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def concat_parts(paths: list[Path], schema: pa.Schema) -> pa.Table:
    """Concatenate part files (in the given order) into one table with the schema."""
    tables = [pq.read_table(p).select(schema.names).cast(schema) for p in paths]
    return pa.concat_tables(tables) if tables else schema.empty_table()
