"""Manifest tables: their columns, where they live under `--out`, and atomic parquet writes.

Users read `DIR/manifests/videos.parquet` and `DIR/manifests/clips.parquet` with pandas; the
column lists here are the contract documented in manifests/README.md. Stages write one small
part file per unit under `DIR/manifests/.work/`, and the parts are merged into the tables.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from curate.storage import as_path, read_parquets, write_atomic

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
        ("rotation", pa.int64()),
        ("pixel_aspect", pa.float64()),
        ("interlaced", pa.bool_()),
        ("color_matrix", pa.string()),
        ("full_range", pa.bool_()),
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
    """Where everything lives under one `--out` folder: a local folder (`pathlib.Path`s) or an
    object-store prefix (`UPath`s with the same API; see `curate.storage`)."""

    def __init__(self, out):
        self.out = as_path(out)
        self.manifests = self.out / "manifests"
        self.videos = self.manifests / "videos.parquet"
        self.clips = self.manifests / "clips.parquet"
        self.config = self.manifests / "config.yaml"
        self.work = self.manifests / ".work"
        self.shards = self.out / "shards"

    def stage_work(self, stage: str, config_hash: str):
        """Per-unit parts of one stage under one config: other settings never reuse them."""
        return self.work / f"{stage}-{config_hash}"


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table with exactly the schema's columns, in order; missing keys are null."""
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.table(columns, schema=schema)


def write_parquet_atomic(table: pa.Table, path) -> None:
    """Write a parquet file atomically (local or object store, see `curate.storage`): a reader,
    or a run killed at any instant, sees the old file or the new one, never half a file."""
    write_atomic(path, lambda f: pq.write_table(table, f))


def concat_parts(paths: list, schema: pa.Schema) -> pa.Table:
    """Concatenate part files (in the given order) into one table with the schema."""
    tables = [t.select(schema.names).cast(schema) for t in read_parquets(paths)]
    return pa.concat_tables(tables) if tables else schema.empty_table()
