"""`curate status`, and the summary after every command: one screen on an output folder.

Totals, each clip stage's progress (units done under its last settings, clips it has looked at,
kept clips still waiting), the drops with what each reason means, and whether the shards still
hold exactly the kept clips. Reads the manifests and the work folders' done markers; loads no
stage and no model.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

from curate.config import Config, load_config
from curate.errors import ConfigError
from curate.executor import done_units
from curate.filters import drop_reasons
from curate.manifest import OutputLayout
from curate.pipeline import CLIP_STAGES, REASONS, Columns, StageSpec, present
from curate.shards import INDEX_NAME
from curate.stages.clipstage import clip_units
from curate.storage import read_parquet

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa


def _stage_line(clips: pd.DataFrame, spec: StageSpec, config: Config, units_done: int) -> list[str]:
    """How far a clip stage has got: units finished under its last settings, clips it has
    looked at, and kept clips it has still to look at."""
    scored = clips[spec.scored_by].notna()
    if spec.error_column in clips:
        scored |= clips[spec.error_column].notna()
    waiting = drop_reasons(clips, config, before=spec.name).isna() & ~scored
    total = units_done + len(clip_units(clips[waiting], spec.units))
    line = f"  {spec.name}: {units_done}/{total} units done, {int(scored.sum())} clips {spec.done_word}"
    return [line + (f", {int(waiting.sum())} kept clips waiting (run `python -m curate {spec.name}`)" if waiting.any() else "")]


def _saved_config(layout: OutputLayout) -> Config | None:
    """The settings each stage last ran with (config.yaml), or None without a readable one."""
    if not layout.config.exists():
        return None
    try:
        return load_config(layout.config)
    except ConfigError:  # a hand-edited file: the counts it gives are only informative
        return None


def _units_done(layout: OutputLayout, stage: str, saved: Config | None) -> int:
    """Finished units of `stage` under the settings it last ran with (`saved`)."""
    return len(done_units(layout.stage_work(stage, saved.section_hash(stage)))) if saved is not None else 0


def _shards_line(layout: OutputLayout, clips: Columns | None) -> list[str]:
    """The shards' totals, and whether they still hold exactly the kept clips."""
    index = layout.shards / INDEX_NAME
    if not index.exists():
        return []
    shards = json.loads(index.read_text())["shardlist"]
    size = sum(s.get("filesize", 0) for s in shards)
    lines = [f"shards:    {len(shards)} in {layout.shards}/, {sum(s['nsamples'] for s in shards)} samples, {size / 1e9:.2f} GB"]
    return lines + (_stale_shards(clips, layout) if clips is not None else [])


def _stale_shards(clips: Columns, layout: OutputLayout) -> list[str]:
    """A line when the shards no longer match the manifests: `filter` (or a stage) moved clips
    in or out since `pack` last ran. A dropped clip still has the shard it was packed into; a kept
    clip encoded by an earlier pack (it has a key) is in no shard."""
    if "shard" not in clips:
        return []
    kept, packed = ~present(clips["drop_reason"]), present(clips["shard"])
    dropped = int((~kept & packed).sum())
    missing = int((kept & ~packed & present(clips["key"])).sum()) if "key" in clips else 0
    if not dropped and not missing:
        return []
    what = [f"{dropped} packed clip{'s' * (dropped != 1)} now dropped"] if dropped else []
    what += [f"{missing} kept clip{'s' * (missing != 1)} not packed"] if missing else []
    return [f"  shards are out of date: {', '.join(what)}; `python -m curate pack --out {layout.out}` updates them"]


def _duplicates_line(clips: Columns, duplicates: np.ndarray, config: Config) -> str:
    """What the dropped duplicates (the rows `duplicates` marks) duplicate: the same footage
    (frame hashes), the same content (CLIP embeddings), clips of other folders (--against)."""

    def count(name: str, holds) -> int:
        return int(holds(clips[name][duplicates]).sum()) if name in clips else 0

    footage = count("duplicate_similarity", lambda similarity: similarity >= config.dedup.threshold)
    semantic = count("semantic_similarity", lambda similarity: similarity >= config.dedup.semantic_threshold)
    elsewhere = count("duplicate_in", present)
    return f"    {footage} same footage (duplicate_of), {semantic} same content by CLIP embedding, {elsewhere} of clips in other folders"


def summarize(layout: OutputLayout) -> str:
    """A one-screen summary of the manifests under `layout` (after every command, and `status`):
    totals, each stage's progress, drops, the shards and whether they are out of date. pandas
    loads only to show a clip stage's progress (its units): a split command never needs it."""
    lines = [f"manifests: {layout.manifests}/"]
    if layout.videos.exists():
        lines.extend(_videos_lines(read_parquet(layout.videos, columns=["status", "error", "path", "duration_s"])))
    clips = None
    if layout.clips.exists():
        table = read_parquet(layout.clips)
        clips = Columns(table)
        reasons = clips["drop_reason"]
        kept = ~present(reasons)
        seconds = float((clips["end_s"] - clips["start_s"])[kept].sum())  # not num_frames / fps: variable frame rates
        lines.append(f"clips:     {clips.num_rows} ({int(kept.sum())} kept, {seconds / 3600:.2f} h kept)")
        config = load_config(remembered=layout.config)  # the folder's thresholds
        saved = _saved_config(layout)  # read once, not once per stage
        frame = None
        for spec in CLIP_STAGES:
            if spec.scored_by in clips:
                frame = table.to_pandas() if frame is None else frame
                lines.extend(_stage_line(frame, spec, config, _units_done(layout, spec.name, saved)))
        for reason, count in Counter(reasons[~kept]).most_common():
            lines.append(f"  dropped ({reason}): {count}" + (f"  [{REASONS[reason]}]" if reason in REASONS else ""))
            if reason == "duplicate":
                lines.append(_duplicates_line(clips, reasons == reason, config))
    lines.extend(_shards_line(layout, clips))
    return "\n".join(lines)


def _videos_lines(videos: pa.Table) -> list[str]:
    """The inputs' totals, and the first few problems."""
    rows = videos.to_pylist()
    ok = [row for row in rows if row["status"] == "ok"]
    partial = sum(row["error"] is not None for row in ok)
    hours = sum(row["duration_s"] or 0.0 for row in ok) / 3600
    lines = [
        f"videos:    {len(rows)} inputs, {len(ok)} ok ({hours:.2f} h), {len(rows) - len(ok)} errors"
        + (f", {partial} partly decoded" if partial else "")
    ]
    problems = [row for row in rows if row["error"] is not None]
    lines.extend(f"  {row['status']:5} {row['path']}: {row['error']}" for row in problems[:5])
    if len(problems) > 5:
        lines.append(f"  ... and {len(problems) - 5} more (see the error column of videos.parquet)")
    return lines
