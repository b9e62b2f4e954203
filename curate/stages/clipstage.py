"""What every clip stage is: score kept clips, grouped so each source video is opened once.

A clip stage (motion, aesthetic, caption) reads clips.parquet, scores the clips that no earlier
stage dropped and that it has not scored yet, and stores one small table of scores per unit. It
never decides what is dropped: that is `curate.filters`, applied to the stored scores, so a new
threshold never needs a model or a video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa

from curate.manifest import to_table
from curate.stages.base import Resources, Stage, Unit


class UnitSize(NamedTuple):
    """How a clip stage groups clips into units."""

    max_clips: int | None  # clips per unit at most (None: no limit)
    one_video: bool  # True: a unit holds clips of one video only (the file opened once per unit)


# Each clip stage's units. Model stages want big batches, across videos; motion reads all of a
# video's clips in one pass; pack too, in runs of 32 clips, so the encoded bytes a unit holds
# stay small and a long film spreads over the workers. Here, not only on the stage classes, so
# `curate status` can count units without importing torch.
UNIT_SIZES: dict[str, UnitSize] = {
    "motion": UnitSize(None, one_video=True),
    "aesthetic": UnitSize(64, one_video=False),
    "caption": UnitSize(32, one_video=False),
    "pack": UnitSize(32, one_video=True),
}


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

    @property
    def span(self) -> tuple[float, float, int]:
        """The (start_s, end_s, num_frames) span `curate.videoio.iter_spans` reads."""
        return (self.start_s, self.end_s, self.num_frames)


class ClipStage(Stage):
    """Base of clip stages. Subclasses set `name`, `columns` and `unit_size`, and implement
    `score` (and `setup` when they load a model).

    A unit's payload is a list of ClipRef sorted by video and time, grouped as `unit_size` says:
    the clips of one video, or up to so many clips, possibly of several videos.
    """

    columns: pa.Schema = pa.schema([])  # the score columns this stage adds to clips.parquet
    unit_size: UnitSize = UnitSize(None, one_video=True)

    @property
    def error_column(self) -> str:
        """Set (with the reason) on a clip this stage could not score; the filter drops it."""
        return f"{self.name}_error"

    @property
    def schema(self) -> pa.Schema:
        """The schema of the stored score parts: clip_id, the score columns, the error column."""
        return pa.schema([("clip_id", pa.string()), *self.columns, (self.error_column, pa.string())])

    def score(self, clips: list[ClipRef]) -> list[dict]:
        """One dict of column values per clip, in order. A clip that cannot be scored gets
        `{error_column: reason}`; an exception means the whole unit failed (retried next run)."""
        raise NotImplementedError

    def process(self, unit: Unit) -> tuple[dict, dict]:
        clips: list[ClipRef] = unit.payload
        rows = [{"clip_id": clip.clip_id, **values} for clip, values in zip(clips, self.score(clips), strict=True)]
        stats = {"clips": len(clips), "frames": sum(c.num_frames for c in clips)}
        return {"scores": to_table(rows, self.schema)}, stats

    def finish(self, layout, work_dir, progress: bool) -> tuple[object, pa.Table | None]:
        """Work on all the finished units together, once clips.parquet holds the stage's columns
        (pack writes its shards here). Returns a summary for the command's output (or None) and
        more clip columns as a table keyed by clip_id (or None)."""
        return None, None

    def failed(self, unit: Unit, message: str) -> tuple[dict, dict]:
        rows = [{"clip_id": clip.clip_id, self.error_column: message} for clip in unit.payload]
        return {"scores": to_table(rows, self.schema)}, {"clips": len(rows), "frames": 0}


class ModelClipStage(ClipStage):
    """A clip stage that runs a model (its config has `device`, `ray_num_cpus`, `ray_num_gpus`):
    one local worker per GPU, or a single one on the CPU, where torch already uses every core;
    on Ray, long-lived actors that load the model once."""

    loads_model = True

    @property
    def default_workers(self) -> int:
        import torch

        if self.config.device in ("auto", "cuda") and torch.cuda.is_available():
            return max(1, torch.cuda.device_count())
        return 1

    def resources(self) -> Resources:
        """`ray_num_cpus`, and `ray_num_gpus` unless the stage's device is the CPU."""
        gpus = 0.0 if self.config.device == "cpu" else self.config.ray_num_gpus
        return Resources(cpus=self.config.ray_num_cpus, gpus=gpus)
