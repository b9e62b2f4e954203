"""`curate status`, and the summary after every command: one screen on an output folder.

Totals, each clip stage's progress (units done under its last settings, clips it has looked at,
kept clips still waiting), the drops with what each reason means, and whether the shards still
hold exactly the kept clips. Reads the manifests and the work folders' done markers; loads no
stage and no model.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from curate.config import Config, load_config
from curate.errors import ConfigError
from curate.executor import done_units
from curate.filters import drop_reasons
from curate.manifest import OutputLayout
from curate.pipeline import CLIP_STAGES, REASONS, StageSpec
from curate.shards import INDEX_NAME
from curate.stages.clipstage import clip_units
from curate.storage import read_parquet

if TYPE_CHECKING:  # pandas loads with the first manifest read
    import pandas as pd


def _stage_line(clips: pd.DataFrame, spec: StageSpec, config: Config, units_done: int) -> list[str]:
    """How far a clip stage has got: units finished under its last settings, clips it has
    looked at, and kept clips it has still to look at."""
    if spec.scored_by not in clips:
        return []
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


def _shards_line(layout: OutputLayout, clips: pd.DataFrame | None) -> list[str]:
    """The shards' totals, and whether they still hold exactly the kept clips."""
    index = layout.shards / INDEX_NAME
    if not index.exists():
        return []
    shards = json.loads(index.read_text())["shardlist"]
    size = sum(s.get("filesize", 0) for s in shards)
    lines = [f"shards:    {len(shards)} in {layout.shards}/, {sum(s['nsamples'] for s in shards)} samples, {size / 1e9:.2f} GB"]
    return lines + (_stale_shards(clips, layout) if clips is not None else [])


def _stale_shards(clips: pd.DataFrame, layout: OutputLayout) -> list[str]:
    """A line when the shards no longer match the manifests: `filter` (or a stage) moved clips
    in or out since `pack` last ran. A dropped clip still has the shard it was packed into; a kept
    clip encoded by an earlier pack (it has a key) is in no shard."""
    if "shard" not in clips:
        return []
    kept = clips.drop_reason.isna()
    dropped = int((~kept & clips.shard.notna()).sum())
    missing = int((kept & clips.shard.isna() & clips.key.notna()).sum()) if "key" in clips else 0
    if not dropped and not missing:
        return []
    what = [f"{dropped} packed clip{'s' * (dropped != 1)} now dropped"] if dropped else []
    what += [f"{missing} kept clip{'s' * (missing != 1)} not packed"] if missing else []
    return [f"  shards are out of date: {', '.join(what)}; `python -m curate pack --out {layout.out}` updates them"]


def _duplicates_line(duplicates: pd.DataFrame, config: Config) -> str:
    """What the dropped duplicates duplicate: the same footage (frame hashes), the same content
    (CLIP embeddings), clips of other folders (--against)."""
    footage = int((duplicates.duplicate_similarity >= config.dedup.threshold).sum()) if "duplicate_similarity" in duplicates else 0
    semantic = int((duplicates.semantic_similarity >= config.dedup.semantic_threshold).sum()) if "semantic_similarity" in duplicates else 0
    elsewhere = int(duplicates.duplicate_in.notna().sum()) if "duplicate_in" in duplicates else 0
    return f"    {footage} same footage (duplicate_of), {semantic} same content by CLIP embedding, {elsewhere} of clips in other folders"


def summarize(layout: OutputLayout) -> str:
    """A one-screen summary of the manifests under `layout` (after every command, and `status`):
    totals, each stage's progress, drops, the shards and whether they are out of date."""
    lines = [f"manifests: {layout.manifests}/"]
    if layout.videos.exists():
        videos = read_parquet(layout.videos, columns=["status", "error", "path", "duration_s"]).to_pandas()
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
    clips = None
    if layout.clips.exists():
        clips = read_parquet(layout.clips).to_pandas()
        kept = clips[clips.drop_reason.isna()]
        seconds = (kept.end_s - kept.start_s).sum()  # not num_frames / fps: variable frame rates
        lines.append(f"clips:     {len(clips)} ({len(kept)} kept, {seconds / 3600:.2f} h kept)")
        config = load_config(remembered=layout.config)  # the folder's thresholds
        saved = _saved_config(layout)  # read once, not once per stage
        for spec in CLIP_STAGES:
            lines.extend(_stage_line(clips, spec, config, _units_done(layout, spec.name, saved)))
        for reason, count in clips.drop_reason.value_counts().items():
            lines.append(f"  dropped ({reason}): {count}" + (f"  [{REASONS[reason]}]" if reason in REASONS else ""))
            if reason == "duplicate":
                lines.append(_duplicates_line(clips[clips.drop_reason == reason], config))
    lines.extend(_shards_line(layout, clips))
    return "\n".join(lines)
