"""Manifest tables: their columns, where they live under `--out`, and how unit parts merge into them.

Users read `DIR/manifests/videos.parquet` and `DIR/manifests/clips.parquet` with pandas; the
column lists here are the contract documented in manifests/README.md. Stages write one small
part file per unit under `DIR/manifests/.work/`; the runner hands the finished parts here.

clips.parquet is updated in place, one stage's columns at a time: split (re)writes the columns it
owns and keeps every score already there for clips that still exist; a clip stage replaces only
its own columns. Each command's settings therefore touch only its own stage, and `drop_reason`
is recomputed from all the stored scores with the folder's thresholds after every change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curate import arrow
from curate.config import Config
from curate.errors import InputError
from curate.filters import derived_columns, reasons_of
from curate.inputs import VideoInput
from curate.pipeline import Columns
from curate.storage import as_path, copy_atomic, makedirs, read_parquet, read_parquets, write_atomic, write_text_atomic

if TYPE_CHECKING:  # pandas loads with the first table turned into a DataFrame
    import pandas as pd

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
        # The picture inside its black borders, in the grid of width/height (null: the whole frame).
        ("crop_x", pa.int64()),
        ("crop_y", pa.int64()),
        ("crop_width", pa.int64()),
        ("crop_height", pa.int64()),
        ("brightness", pa.float32()),
        ("dark_frac", pa.float32()),
        ("bright_frac", pa.float32()),
        ("sharpness", pa.float32()),
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
    """Rows (dicts) as a table with exactly the schema's columns, in order; missing keys are null.
    Built without pandas where the types allow (`curate.arrow`): a split worker never loads it."""
    columns = [arrow.array([row.get(field.name) for row in rows], field.type) for field in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def write_parquet_atomic(table: pa.Table, path) -> None:
    """Write a parquet file atomically (local or object store, see `curate.storage`): a reader,
    or a run killed at any instant, sees the old file or the new one, never half a file."""
    write_atomic(path, lambda f: pq.write_table(table, f))


def concat_parts(paths: list, schema: pa.Schema) -> pa.Table:
    """Concatenate part files (in the given order) into one table with the schema. A column the
    schema has gained since a part was written (a score part without `picture_box`) is null there."""
    tables = [_conformed(t, schema) for t in read_parquets(paths)]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    table = table.select(schema.names)
    # A part written under this schema needs no cast, which would import pyarrow.compute (0.06 s).
    return table if table.schema.equals(schema) else table.cast(schema)


@dataclass(frozen=True)
class ClipRef:
    """One clip as a stage sees it: where its frames are, from its clips.parquet row."""

    clip_id: str
    video_id: str
    path: str
    start_frame: int
    end_frame: int  # exclusive
    start_s: float
    end_s: float
    num_frames: int
    fps: float
    width: int
    height: int
    source_caption: str | None = None  # from the input list, for prompts that use it
    # The picture's box inside black borders, in the grid of width x height (None: the whole
    # frame, as in manifests made before crop boxes existed).
    crop_x: int | None = None
    crop_y: int | None = None
    crop_width: int | None = None
    crop_height: int | None = None

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """The crop box (x, y, width, height; `curate.picture.Box` takes it) when it leaves anything
        out, else None: the stage sees the whole frame."""
        if self.crop_width is None or self.crop_height is None:
            return None
        box = (self.crop_x or 0, self.crop_y or 0, self.crop_width, self.crop_height)
        return None if box == (0, 0, self.width, self.height) else box

    @property
    def box_id(self) -> str | None:
        """The crop box as text ("x,y,width,height"), None for the whole frame: what a clip stage's
        scores were measured on (`read_scores` keeps only scores of the box a clip has now)."""
        return None if self.box is None else ",".join(map(str, self.box))

    @property
    def span(self) -> tuple[float, float, int]:
        """The (start_s, end_s, num_frames) span `curate.videoio.iter_spans` reads."""
        return (self.start_s, self.end_s, self.num_frames)


_CLIPREF_FIELDS = [f.name for f in dataclasses.fields(ClipRef)]
_CROP_FIELDS = ("crop_x", "crop_y", "crop_width", "crop_height")


def clip_refs(clips: pd.DataFrame) -> list[ClipRef]:
    """The clips of a clips.parquet frame as ClipRefs, in video and time order (video_id first:
    a deterministic order)."""
    clips = clips.sort_values(["video_id", "start_frame"], kind="stable")
    fields = [f for f in _CLIPREF_FIELDS if f in clips.columns]  # optional ones (source_caption) may be absent
    if "source_caption" in clips:  # pandas reads a missing string as NaN; a ClipRef holds None
        clips = clips.assign(source_caption=clips.source_caption.astype(object).where(clips.source_caption.notna(), None))
    for name in _CROP_FIELDS:  # nullable ints read as floats with NaN; a ClipRef holds int or None
        if name in clips:
            clips = clips.assign(**{name: clips[name].map(lambda v: None if v != v or v is None else int(v)).astype(object)})
    return [ClipRef(**{f: getattr(row, f) for f in fields}) for row in clips.itertuples(index=False)]


def require_clips(layout: OutputLayout) -> None:
    """Clip stages and `filter` work on clips.parquet: say how to make it when it is missing."""
    if not layout.clips.exists():
        raise InputError(f"no clips manifest in {layout.manifests}/ (run `python -m curate split INPUT... --out {layout.out}` first)")


def with_earlier_inputs(layout: OutputLayout, inputs: list[VideoInput]) -> list[VideoInput]:
    """The videos an earlier run put in this folder that `inputs` does not name again, then
    `inputs`: a run on new videos adds them to the folder (their clips are deduplicated against
    the earlier ones) instead of replacing it. The earlier ones are not decoded again unless the
    split settings changed."""
    if not layout.videos.exists():
        return inputs
    given = {v.video_id for v in inputs}
    earlier = read_parquet(layout.videos, columns=["video_id", "path", "source_caption"]).to_pylist()
    return [VideoInput(row["video_id"], row["path"], row["source_caption"]) for row in earlier if row["video_id"] not in given] + inputs


def merge_split(layout: OutputLayout, config: Config, inputs: list[VideoInput], videos_parts: list, clips_parts: list, source: str) -> None:
    """Concatenate split's unit parts (one per input, in input order) into the two manifests.

    Paths and captions come from this run's inputs, not from the parts: a moved file or an
    edited caption list is reflected without redoing the video. A marker records what the
    manifests were last merged from (`source`: the work folder's settings; the thresholds, which
    the drop reasons follow; the inputs), so re-running a finished command compares a hash
    instead of re-reading thousands of part files.
    """
    lines = [f"{v.video_id}\t{v.path}\t{v.source_caption}" for v in inputs]
    thresholds = json.dumps(config.thresholds(), sort_keys=True, default=str)
    fingerprint = hashlib.sha1("\n".join([source, thresholds, *lines]).encode()).hexdigest()
    marker = layout.work / "split.merged"
    if marker.exists() and marker.read_text() == fingerprint and layout.videos.exists() and layout.clips.exists():
        return
    current = {v.video_id: v for v in inputs}
    write_parquet_atomic(_with_inputs(concat_parts(videos_parts, VIDEO_SCHEMA), current), layout.videos)
    update_clips(layout, config, split_clips=_with_inputs(concat_parts(clips_parts, CLIP_SCHEMA), current))
    write_text_atomic(fingerprint, marker)


def _with_inputs(table: pa.Table, current: dict[str, VideoInput]) -> pa.Table:
    """Set `path` and `source_caption` from the current inputs, by video_id."""
    video_ids = table.column("video_id").to_pylist()
    for name, value in (("path", lambda v: v.path), ("source_caption", lambda v: v.source_caption)):
        column = arrow.array([value(current[i]) for i in video_ids], pa.string())
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def read_scores(parts: list, schema: pa.Schema, boxes: dict[str, str | None] | None = None) -> pa.Table:
    """A clip stage's finished score parts as one table, one row per clip (a clip scored by two
    overlapping runs keeps its first row), without the `picture_box` each row was measured on.

    With `boxes` (clip_id -> `ClipRef.box_id` now), a clip listed there keeps only a row measured
    on that box: a clip whose crop box changed since (a re-split that found black borders, or
    `text.crop` switched on) has no score, and is scored again. Parts written before crop boxes
    existed have no box: they were measured on the whole frame."""
    table = concat_parts(parts, schema)
    measured_on = table.column("picture_box").to_pylist() if "picture_box" in table.column_names else [None] * table.num_rows
    seen: set[str] = set()
    keep = []
    for clip_id, box in zip(table.column("clip_id").to_pylist(), measured_on, strict=True):
        first = clip_id not in seen and (boxes is None or clip_id not in boxes or boxes[clip_id] == box)
        keep.append(first)
        if first:
            seen.add(clip_id)
    table = table.filter(pa.array(keep, pa.bool_()))
    return table.drop_columns(["picture_box"]) if "picture_box" in table.column_names else table


def update_clips(layout: OutputLayout, config: Config, split_clips: pa.Table | None = None, stage_scores: pa.Table | None = None) -> None:
    """Rewrite clips.parquet with new split columns (keeping stored scores of the clips that
    remain) or with one stage's new columns, then recompute every drop_reason."""
    current = read_parquet(layout.clips) if layout.clips.exists() else None
    if split_clips is not None:
        clips = split_clips
        if current is not None:
            scores = current.select(["clip_id", *[c for c in current.column_names if c not in CLIP_SCHEMA.names]])
            clips = _left_join(clips, scores)
    else:
        assert current is not None and stage_scores is not None
        own = [c for c in stage_scores.column_names if c != "clip_id" and c in current.column_names]
        clips = _left_join(current.drop_columns(own), stage_scores)
    write_parquet_atomic(_with_drop_reasons(clips, config), layout.clips)


def _left_join(left: pa.Table, right: pa.Table) -> pa.Table:
    """`left` with `right`'s columns matched on clip_id, keeping left's rows and order."""
    if right.num_columns <= 1:
        return left
    # Matched by a lookup and `take`, not Arrow's hash join, which cannot carry list columns
    # (the text stage's boxes); ids compare as Python strings, whatever their Arrow string type.
    row_of = {clip_id: row for row, clip_id in enumerate(right.column("clip_id").to_pylist())}
    rows = arrow.array([row_of.get(clip_id) for clip_id in left.column("clip_id").to_pylist()], pa.int64())
    matched = right.drop_columns(["clip_id"]).take(rows)
    for name, values in zip(matched.column_names, matched.columns, strict=True):
        left = left.append_column(matched.schema.field(name), values)
    return left


def _with_drop_reasons(clips: pa.Table, config: Config) -> pa.Table:
    """`clips` with every drop_reason recomputed, and the columns that follow from them
    (`filters.derived_columns`: a dropped duplicate's `duplicate_of`, the kept clip)."""
    reasons = reasons_of(Columns(clips), config)
    clips = clips.set_column(clips.schema.get_field_index("drop_reason"), "drop_reason", arrow.array(reasons.tolist(), pa.string()))
    derived = derived_columns(clips, reasons, config)
    # Last, after the stages' columns (which each run re-appends), so the order stays put.
    clips = clips.drop_columns([name for name in derived if name in clips.column_names])
    for name, values in derived.items():
        clips = clips.append_column(name, arrow.array(values, pa.string()))
    return clips


def refilter(layout: OutputLayout, config: Config) -> tuple[int, int]:
    """Re-apply `config`'s thresholds to the stored scores (`curate filter`): no model, no video.
    Returns the number of kept clips before and after."""
    require_clips(layout)
    clips = read_parquet(layout.clips)
    kept_before = clips.column("drop_reason").null_count  # null drop_reason = kept
    clips = _with_drop_reasons(clips, config)
    write_parquet_atomic(clips, layout.clips)
    save_config(layout, config)
    return kept_before, clips.column("drop_reason").null_count


def save_config(layout: OutputLayout, config: Config, section: str | None = None) -> None:
    """Record the settings next to the manifests: `section` as the stage that just ran used it,
    and every threshold (later commands on this folder remember them). Other sections keep what
    their own stage last ran with."""
    saved = yaml.safe_load(layout.config.read_text()) if layout.config.exists() else {}
    current = config.to_dict()
    for name, thresholds in config.thresholds().items():
        saved.setdefault(name, {}).update(thresholds)
    if section is not None:
        saved[section] = current[section]
    ordered = {name: saved[name] for name in current if name in saved}
    write_text_atomic(yaml.safe_dump(ordered, sort_keys=False), layout.config)


def publish(parts: dict[str, Path], folder) -> None:
    """Mirror a stage's extra per-unit tables (embeddings) into `folder`: `parts` maps each
    finished unit's file name there to its part, so `pd.read_parquet(folder)` reads them all,
    and files of units no longer finished go (all of them when `parts` is empty: a table the
    stage did not write under these settings). Hard links cost no space (on an object store:
    server-side copies)."""
    if not parts and not folder.exists():
        return  # nothing to mirror, and no empty folder for users to trip over
    makedirs(folder)
    present = set()
    for existing in folder.glob("*.parquet"):
        if existing.name in parts:
            present.add(existing.name)
        else:
            existing.unlink()
    for name, part in parts.items():
        if name not in present:
            copy_atomic(part, folder / name)
