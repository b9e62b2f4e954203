"""Run a stage over its units with a progress bar, then merge the unit parts into the manifests.

clips.parquet is updated in place, one stage's columns at a time: split (re)writes the columns it
owns and keeps every score already there for clips that still exist; a clip stage replaces only
its own columns. Each command's settings therefore touch only its own stage, and `drop_reason`
is recomputed from all the stored scores with the folder's thresholds after every change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from curate.config import Config, load_config
from curate.filters import CLIP_STAGES, REASONS, SCORE_COLUMNS, drop_reasons
from curate.executor import LocalExecutor, is_done, part_path
from curate.inputs import InputError, VideoInput
from curate.manifest import CLIP_SCHEMA, VIDEO_SCHEMA, OutputLayout, concat_parts, write_parquet_atomic, write_text_atomic
from curate.stages.base import Stage, Unit
from curate.stages.clipstage import ClipRef

_CLIPREF_FIELDS = [f for f in ClipRef.__dataclass_fields__]


@dataclass
class RunStats:
    """What a stage run did, for the end-of-run summary."""

    units: int = 0
    skipped: int = 0  # already done by an earlier run
    frames: int = 0
    clips: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # unit id -> error; retried next run


def run_split(inputs: list[VideoInput], layout: OutputLayout, config: Config, workers: int | None, progress: bool = True) -> RunStats:
    """Split every input video (resuming earlier work), then write videos.parquet and clips.parquet."""
    from curate.stages.split import SplitStage  # numpy/PyAV load only when a split really runs

    started = time.perf_counter()
    units = [Unit(v.video_id, v) for v in inputs]
    work_dir = layout.stage_work("split", config.section_hash("split"))
    stats = _execute(SplitStage(config.split), units, work_dir, workers, progress, size=lambda unit: 1, unit_name="video")
    _merge_split([u for u in units if is_done(work_dir, u.unit_id)], work_dir, layout, config)
    _save_config(layout, config, "split")
    stats.seconds = time.perf_counter() - started
    return stats


def _execute(stage: Stage, units: list[Unit], work_dir: Path, workers: int | None, progress: bool, size, unit_name: str) -> RunStats:
    """Run the units not done yet on the local executor, with a progress bar counting
    `size(unit)` items (videos, clips) per unit."""
    stats = RunStats(units=len(units), skipped=sum(is_done(work_dir, u.unit_id) for u in units))
    sizes = {u.unit_id: size(u) for u in units if not is_done(work_dir, u.unit_id)}
    started = time.perf_counter()
    show = progress and bool(sizes)
    with tqdm(total=sum(sizes.values()), desc=stage.name, unit=unit_name, disable=not show, file=sys.stderr) as bar:

        def on_done(unit_id: str, unit_stats: dict) -> None:
            stats.frames += unit_stats.get("frames", 0)
            stats.clips += unit_stats.get("clips", 0)
            bar.update(sizes.get(unit_id, 0))
            bar.set_postfix(frames_per_s=f"{stats.frames / max(time.perf_counter() - started, 1e-9):.0f}")

        stats.failed = LocalExecutor(workers).run(stage, units, work_dir, on_done)
    return stats


def _save_config(layout: OutputLayout, config: Config, section: str | None = None) -> None:
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


def _merge_split(units: list[Unit], work_dir: Path, layout: OutputLayout, config: Config) -> None:
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
    update_clips(layout, config, split_clips=_with_inputs(clips, current))
    write_text_atomic(fingerprint, marker)


def _with_inputs(table: pa.Table, current: dict[str, VideoInput]) -> pa.Table:
    """Set `path` and `source_caption` from the current inputs, by video_id."""
    video_ids = table.column("video_id").to_pylist()
    for name, value in (("path", lambda v: v.path), ("source_caption", lambda v: v.source_caption)):
        column = pa.array([value(current[i]) for i in video_ids], pa.string())
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def run_clip_stage(name: str, layout: OutputLayout, config: Config, workers: int | None, progress: bool = True) -> RunStats:
    """Score every kept clip the stage has not scored under these settings (resuming earlier
    work), then put the stage's columns into clips.parquet and re-apply the filters."""
    _require_clips(layout)
    started = time.perf_counter()
    stage = make_clip_stage(name, config)
    work_dir = layout.stage_work(name, config.section_hash(name))
    clips = pq.read_table(layout.clips).to_pandas()
    scored = set(read_scores(work_dir, stage.schema).column("clip_id").to_pylist())
    todo = clips[drop_reasons(clips, config, before=name).isna() & ~clips.clip_id.isin(scored)]
    units = clip_units(todo, stage.clips_per_unit)
    if units:
        stage.prepare()  # fetch or find model weights once, here, so a missing model fails in one line
    stats = _execute(stage, units, work_dir, workers or stage.default_workers, progress, size=lambda unit: len(unit.payload), unit_name="clip")
    update_clips(layout, config, stage_scores=read_scores(work_dir, stage.schema))
    for table in stage.extra_tables:
        _publish(work_dir, table, layout.manifests / table)
    _save_config(layout, config, name)
    stats.seconds = time.perf_counter() - started
    return stats


def _require_clips(layout: OutputLayout) -> None:
    """Clip stages and `filter` work on clips.parquet: say how to make it when it is missing."""
    if not layout.clips.exists():
        raise InputError(f"no clips manifest in {layout.manifests}/ (run `python -m curate split INPUT... --out {layout.out}` first)")


def make_clip_stage(name: str, config: Config):
    """The stage object for a clip stage name (imported here: torch loads only for model stages)."""
    if name == "motion":
        from curate.stages.motion import MotionStage

        return MotionStage(config.motion)
    if name == "aesthetic":
        from curate.stages.aesthetic import AestheticStage

        return AestheticStage(config.aesthetic)
    raise ValueError(f"unknown clip stage {name!r}")


def clip_units(clips: pd.DataFrame, clips_per_unit: int | None) -> list[Unit]:
    """Group clips into units: each video's clips in time order, either one video per unit or
    consecutive runs of `clips_per_unit` clips.

    Fixed-size runs keep resumes exact: the units finished before an interruption were whole
    runs, so cutting what remains into runs again gives the same units as an uninterrupted run.
    """
    clips = clips.sort_values(["video_id", "start_frame"], kind="stable")  # video_id: deterministic order
    refs = [ClipRef(**{f: getattr(row, f) for f in _CLIPREF_FIELDS}) for row in clips.itertuples(index=False)]
    if clips_per_unit is None:
        groups: dict[str, list[ClipRef]] = {}
        for ref in refs:
            groups.setdefault(ref.video_id, []).append(ref)
        batches = list(groups.values())
    else:
        batches = [refs[i : i + clips_per_unit] for i in range(0, len(refs), clips_per_unit)]
    return [Unit(_unit_id(batch), batch) for batch in batches]


def _unit_id(batch: list) -> str:
    digest = hashlib.sha1("\n".join(ref.clip_id for ref in batch).encode()).hexdigest()[:12]
    return f"{batch[0].video_id}-{digest}"


def read_scores(work_dir: Path, schema: pa.Schema) -> pa.Table:
    """Every score a stage stored under `work_dir` (finished units only), one row per clip."""
    paths = [p for p in sorted(work_dir.glob("*.scores.parquet")) if is_done(work_dir, p.name.removesuffix(".scores.parquet"))]
    table = concat_parts(paths, schema)
    first = ~pd.Series(table.column("clip_id").to_pylist(), dtype=object).duplicated()
    return table.filter(pa.array(first.to_numpy()))  # a clip scored by two overlapping runs: keep one


def update_clips(layout: OutputLayout, config: Config, split_clips: pa.Table | None = None, stage_scores: pa.Table | None = None) -> None:
    """Rewrite clips.parquet with new split columns (keeping stored scores of the clips that
    remain) or with one stage's new columns, then recompute every drop_reason."""
    current = pq.read_table(layout.clips) if layout.clips.exists() else None
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
    order = "__row__"
    joined = left.append_column(order, pa.array(range(left.num_rows), pa.int64())).join(right, "clip_id", join_type="left outer")
    return joined.sort_by(order).drop_columns([order])


def _with_drop_reasons(clips: pa.Table, config: Config) -> pa.Table:
    reasons = drop_reasons(clips.to_pandas(), config)
    column = pa.array(reasons.tolist(), pa.string())
    return clips.set_column(clips.schema.get_field_index("drop_reason"), "drop_reason", column)


def refilter(layout: OutputLayout, config: Config) -> tuple[int, int]:
    """Re-apply `config`'s thresholds to the stored scores (`curate filter`): no model, no video.
    Returns the number of kept clips before and after."""
    _require_clips(layout)
    clips = pq.read_table(layout.clips)
    kept_before = clips.column("drop_reason").null_count  # null drop_reason = kept
    clips = _with_drop_reasons(clips, config)
    write_parquet_atomic(clips, layout.clips)
    _save_config(layout, config)
    return kept_before, clips.column("drop_reason").null_count


def _publish(work_dir: Path, table: str, folder: Path) -> None:
    """Mirror a stage's extra per-unit tables (embeddings) into `folder`, one parquet file per
    finished unit, so `pd.read_parquet(folder)` reads them all. Hard links cost no space."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {}
    for part in work_dir.glob(f"*.{table}.parquet"):
        unit_id = part.name.removesuffix(f".{table}.parquet")
        if is_done(work_dir, unit_id):
            wanted[f"{unit_id}.parquet"] = part
    for stale in folder.glob("*.parquet"):
        if stale.name not in wanted:
            stale.unlink()
    for name, part in wanted.items():
        target = folder / name
        if not target.exists():
            tmp = folder / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(part, tmp)
            except OSError:  # another file system: copy instead
                shutil.copyfile(part, tmp)
            os.replace(tmp, target)


def _stage_line(clips: pd.DataFrame, stage: str, config: Config) -> list[str]:
    """How far a clip stage has got: clips scored, and kept clips it has still to score."""
    column, error = SCORE_COLUMNS[stage], f"{stage}_error"
    if column not in clips:
        return []
    scored = clips[column].notna() | clips.get(error, pd.Series(None, index=clips.index)).notna()
    waiting = drop_reasons(clips, config, before=stage).isna() & ~scored
    line = f"  {stage}: {int(scored.sum())} scored"
    return [line + (f", {int(waiting.sum())} kept clips not scored yet (run `python -m curate {stage}`)" if waiting.any() else "")]


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
        clips = pq.read_table(layout.clips).to_pandas()
        kept = clips[clips.drop_reason.isna()]
        seconds = (kept.num_frames / kept.fps).sum()
        lines.append(f"clips:     {len(clips)} ({len(kept)} kept, {seconds / 3600:.2f} h kept)")
        config = load_config(remembered=layout.config)  # the folder's thresholds
        for stage in CLIP_STAGES:
            lines.extend(_stage_line(clips, stage, config))
        for reason, count in clips.drop_reason.value_counts().items():
            lines.append(f"  dropped ({reason}): {count}" + (f"  [{REASONS[reason]}]" if reason in REASONS else ""))
    return "\n".join(lines)
