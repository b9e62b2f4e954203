"""What every clip stage is: score kept clips, grouped so each source video is opened once.

A clip stage (motion, aesthetic, caption) reads clips.parquet, scores the clips that no earlier
stage dropped and that it has not scored yet, and stores one small table of scores per unit. It
never decides what is dropped: that is `curate.filters`, applied to the stored scores, so a new
threshold never needs a model or a video.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pyarrow as pa

from curate.devices import visible_ids
from curate.manifest import ClipRef, clip_refs, to_table
from curate.pipeline import UnitSize
from curate.stages.base import Resources, Stage, Unit

if TYPE_CHECKING:
    import pandas as pd


def clip_units(clips: pd.DataFrame, size: UnitSize) -> list[Unit]:
    """Group clips into units: the clips in video and time order, cut into consecutive runs of
    `size.max_clips` clips (all of them: None) that never mix videos when `size.one_video`.

    Fixed-size runs keep resumes exact: the units finished before an interruption were whole
    runs, so cutting what remains into runs again gives the same units as an uninterrupted run.
    """
    groups: dict[str, list[ClipRef]] = {}
    for ref in clip_refs(clips):
        groups.setdefault(ref.video_id if size.one_video else "", []).append(ref)
    batches = []
    for group in groups.values():
        step = size.max_clips or len(group)
        batches.extend(group[i : i + step] for i in range(0, len(group), step))
    return [Unit(_unit_id(batch), batch) for batch in batches]


def _unit_id(batch: list[ClipRef]) -> str:
    """Named by its clips, and by the crop boxes of those cropped (a new box is new work; clips
    seen whole keep the ids they had before crop boxes existed)."""
    names = [ref.clip_id + (f"@{','.join(map(str, ref.box))}" if ref.box else "") for ref in batch]
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    return f"{batch[0].video_id}-{digest}"


class ClipStage(Stage):
    """Base of clip stages. Subclasses set `name` and `columns`, and implement `score` (and
    `setup` when they load a model).

    A unit's payload is a list of ClipRef sorted by video and time, grouped as the stage's row
    in `curate.pipeline` says: the clips of one video, or up to so many clips of several videos.
    """

    columns: pa.Schema = pa.schema([])  # the score columns this stage adds to clips.parquet

    @property
    def error_column(self) -> str:
        """Set (with the reason) on a clip this stage could not score; the filter drops it."""
        return f"{self.name}_error"

    @property
    def schema(self) -> pa.Schema:
        """The schema of the stored score parts: clip_id, the box the clip was measured on
        (`ClipRef.box_id`), the score columns, the error column."""
        return pa.schema([("clip_id", pa.string()), ("picture_box", pa.string()), *self.columns, (self.error_column, pa.string())])

    def score(self, clips: list[ClipRef]) -> list[dict]:
        """One dict of column values per clip, in order. A clip that cannot be scored gets
        `{error_column: reason}`; an exception means the whole unit failed (retried next run)."""
        raise NotImplementedError

    def scores_table(self, clips: list[ClipRef], values: list[dict]) -> pa.Table:
        """A unit's "scores" part: per clip its id, the box it was measured on, and its values."""
        rows = [{"clip_id": clip.clip_id, "picture_box": clip.box_id, **v} for clip, v in zip(clips, values, strict=True)]
        return to_table(rows, self.schema)

    def process(self, unit: Unit) -> tuple[dict, dict]:
        clips: list[ClipRef] = unit.payload
        stats = {"clips": len(clips), "frames": sum(c.num_frames for c in clips)}
        return {"scores": self.scores_table(clips, self.score(clips))}, stats

    def finish(self, layout, work_dir, done: set[str], progress: bool) -> tuple[object, pa.Table | None]:
        """Work on all the finished units (`done`, ids of units in `work_dir`) together, once
        clips.parquet holds the stage's columns (pack writes its shards here). Returns a summary
        for the command's output (or None: an object whose `line(out)` is the line printed) and
        more clip columns as a table keyed by clip_id (or None)."""
        return None, None

    def failed(self, unit: Unit, message: str) -> tuple[dict, dict]:
        clips: list[ClipRef] = unit.payload
        return {"scores": self.scores_table(clips, [{self.error_column: message}] * len(clips))}, {"clips": len(clips), "frames": 0}


class ModelClipStage(ClipStage):
    """A clip stage that runs a model (its config has `device`, `ray_num_cpus`, `ray_num_gpus`;
    its row in `curate.pipeline` says `loads_model`): one local worker per GPU, or a single one on
    the CPU, where torch already uses every core; on Ray, long-lived actors that load the model once."""

    @property
    def default_workers(self) -> int:
        return max(1, len(self.gpu_ids()))

    def gpu_ids(self) -> list[str]:
        """The GPUs its local workers share out, one each (`curate.devices`): every one this
        process sees when the device is auto or cuda, else none (cuda:N and cpu name their device).
        device_count counts through NVML where it can, which leaves CUDA uninitialised here."""
        if self.config.device not in ("auto", "cuda"):
            return []
        import torch

        return visible_ids(torch.cuda.device_count())

    def resources(self) -> Resources:
        """`ray_num_cpus`, and `ray_num_gpus` unless the stage's device is the CPU."""
        gpus = 0.0 if self.config.device == "cpu" else self.config.ray_num_gpus
        return Resources(cpus=self.config.ray_num_cpus, gpus=gpus)
