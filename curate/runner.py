"""Run a stage over its units with a progress bar, then merge the unit parts into the manifests."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from curate.config import Config
from curate.executor import LocalExecutor, is_done, part_path
from curate.inputs import VideoInput
from curate.manifest import CLIP_SCHEMA, VIDEO_SCHEMA, OutputLayout, concat_parts, write_parquet_atomic, write_text_atomic
from curate.stages.base import Unit


@dataclass
class RunStats:
    """What a stage run did, for the end-of-run summary."""

    units: int = 0
    skipped: int = 0  # already done by an earlier run
    frames: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # unit id -> error; retried next run


def run_split(inputs: list[VideoInput], layout: OutputLayout, config: Config, workers: int | None, progress: bool = True) -> RunStats:
    """Split every input video (resuming earlier work), then write videos.parquet and clips.parquet."""
    from curate.stages.split import SplitStage  # numpy/PyAV load only when a split really runs

    units = [Unit(v.video_id, v) for v in inputs]
    work_dir = layout.stage_work("split", config.section_hash("split"))
    stats = RunStats(units=len(units), skipped=sum(is_done(work_dir, u.unit_id) for u in units))
    started = time.perf_counter()
    remaining = len(units) - stats.skipped
    with tqdm(total=remaining, desc="split", unit="video", disable=not progress or remaining == 0, file=sys.stderr) as bar:

        def on_done(unit_id: str, unit_stats: dict) -> None:
            stats.frames += unit_stats.get("frames", 0)
            bar.update(1)
            bar.set_postfix(frames_per_s=f"{stats.frames / max(time.perf_counter() - started, 1e-9):.0f}")

        stats.failed = LocalExecutor(workers).run(SplitStage(config.split), units, work_dir, on_done)
    _merge_split([u for u in units if is_done(work_dir, u.unit_id)], work_dir, layout)
    write_text_atomic(yaml.safe_dump(config.to_dict(), sort_keys=False), layout.config)
    stats.seconds = time.perf_counter() - started
    return stats


def _merge_split(units: list[Unit], work_dir: Path, layout: OutputLayout) -> None:
    """Concatenate the unit parts, in input order, into the two manifests.

    Paths and captions come from this run's inputs, not from the parts: a moved file or an
    edited caption list is reflected without redoing the video. A marker records what the
    manifests were last merged from (settings, inputs), so re-running a finished command
    compares a hash instead of re-reading thousands of part files.
    """
    ids = [u.unit_id for u in units]
    inputs = [f"{u.unit_id}\t{u.payload.path}\t{u.payload.source_caption}" for u in units]
    fingerprint = hashlib.sha1("\n".join([work_dir.name, *inputs]).encode()).hexdigest()
    marker = layout.work / "split.merged"
    if marker.exists() and marker.read_text() == fingerprint and layout.videos.exists() and layout.clips.exists():
        return
    videos = concat_parts([part_path(work_dir, i, "videos") for i in ids], VIDEO_SCHEMA)
    clips = concat_parts([part_path(work_dir, i, "clips") for i in ids], CLIP_SCHEMA)
    current = {u.unit_id: u.payload for u in units}
    write_parquet_atomic(_with_inputs(videos, current), layout.videos)
    write_parquet_atomic(_with_inputs(clips, current), layout.clips)
    write_text_atomic(fingerprint, marker)


def _with_inputs(table: pa.Table, current: dict[str, VideoInput]) -> pa.Table:
    """Set `path` and `source_caption` from the current inputs, by video_id."""
    video_ids = table.column("video_id").to_pylist()
    for name, value in (("path", lambda v: v.path), ("source_caption", lambda v: v.source_caption)):
        column = pa.array([value(current[i]) for i in video_ids], pa.string())
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def summarize(layout: OutputLayout) -> str:
    """A one-screen summary of the manifests under `layout` (used by `split` and `status`)."""
    lines = [f"manifests: {layout.manifests}/"]
    if layout.videos.exists():
        videos = pq.read_table(layout.videos, columns=["status", "error", "path", "duration_s"]).to_pandas()
        ok = videos[videos.status == "ok"]
        partial = int(ok.error.notna().sum())
        hours = ok.duration_s.sum() / 3600
        lines.append(
            f"videos:    {len(videos)} inputs, {len(ok)} ok ({hours:.2f} h), {len(videos) - len(ok)} errors"
            + (f", {partial} partly decoded" if partial else "")
        )
        problems = videos[videos.error.notna()]
        for row in problems.head(5).itertuples():
            lines.append(f"  {row.status:5} {row.path}: {row.error}")
        if len(problems) > 5:
            lines.append(f"  ... and {len(problems) - 5} more (see the error column of videos.parquet)")
    if layout.clips.exists():
        clips = pq.read_table(layout.clips, columns=["num_frames", "fps", "drop_reason"]).to_pandas()
        kept = clips[clips.drop_reason.isna()]
        seconds = (kept.num_frames / kept.fps).sum()
        lines.append(f"clips:     {len(clips)} ({len(kept)} kept, {seconds / 3600:.2f} h kept)")
        for reason, count in clips.drop_reason.value_counts().items():
            lines.append(f"  dropped ({reason}): {count}")
    return "\n".join(lines)
