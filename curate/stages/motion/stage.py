"""Motion stage: how much each kept clip moves, so static and broken clips can be dropped.

Unit: every kept clip of one video. The video is opened once and only the clips' frames are
decoded (`iter_spans` seeks between distant clips). The decoder exports its motion vectors
(`flags2=+export_mvs`), which makes the motion signal nearly free; a clip whose frames carry no
vectors falls back to optical flow on small luma images. The maths is in `curate.stages.motion.field`; this
file routes frames to it.
"""

from __future__ import annotations

import math
from itertools import groupby

import av
import numpy as np
import pyarrow as pa

from curate.config import MotionConfig
from curate.manifest import ClipRef
from curate.picture import Box, picture_of
from curate.stages.clipstage import ClipStage
from curate.stages.motion.field import P_FRAME, WINDOW_S, FlowMotion, LumaJumps, MotionResult, VectorMotion
from curate.videoio import DecodeLog, VideoError, iter_spans, luma, open_video

# P-frame measurements after which `auto` trusts the clip's motion vectors and stops the flow.
_VECTOR_PAIRS_ENOUGH = 2


class MotionStage(ClipStage):
    """Scores every clip's motion; `curate.filters` drops static and extreme clips from them."""

    name = "motion"
    columns = pa.schema(
        [
            ("motion_score", pa.float32()),
            ("motion_min_region", pa.float32()),
            ("motion_static_frac", pa.float32()),
            ("motion_max_jump", pa.float32()),
            ("motion_method", pa.string()),
        ]
    )

    def __init__(self, config: MotionConfig):
        self.config = config

    def score(self, clips: list[ClipRef]) -> list[dict]:
        rows: dict[str, dict] = {}
        for path, group in groupby(clips, key=lambda c: c.path):  # a unit is one video; be safe anyway
            group = list(group)
            rows.update(zip((c.clip_id for c in group), self._score_video(path, group), strict=True))
        return [rows[c.clip_id] for c in clips]

    def _score_video(self, path: str, clips: list[ClipRef]) -> list[dict]:
        try:
            container, stream, info = open_video(path)
        except VideoError as exc:
            return [{self.error_column: str(exc)} for _ in clips]
        log = DecodeLog()
        meters: dict[int, _ClipMeter] = {}
        try:
            if self.config.method != "flow" and stream.codec_context is not None:
                stream.codec_context.options = {"flags2": "+export_mvs"}  # must precede the first decode
                # Frame threads make the exported vectors vary from run to run (seen: scores differing
                # by 0.002 between identical runs); slice threads keep them deterministic.
                stream.thread_type = "SLICE"
            fps = clips[0].fps or info.fps
            for index, frame in iter_spans(container, stream, [c.span for c in clips], fps, log):
                if index not in meters:
                    meters[index] = _ClipMeter(clips[index], _coded_box(clips[index], stream, frame), self.config)
                meters[index].add(frame)
        except av.FFmpegError as exc:  # a file that cannot even be seeked: keep what was read
            log.note(f"reading stopped ({exc})")
        finally:
            container.close()
        unread = "no decodable frames in the clip" + (f" ({log.first_problem})" if log.first_problem else "")
        return [meters[i].result(self.config) if i in meters else {self.error_column: unread} for i in range(len(clips))]


def _coded_box(clip: ClipRef, stream, frame: av.VideoFrame) -> Box:
    """The clip's picture in the frame's coded pixels: its crop box, or the whole frame."""
    if clip.box is None:
        return Box(0, 0, frame.width, frame.height)
    return picture_of(stream, frame).coded_box(Box(*clip.box), frame.width, frame.height)


class _ClipMeter:
    """Everything measured on one clip's frames while they stream past, inside its picture box
    (`box`, coded pixels): black borders neither move nor count in the frame's width."""

    def __init__(self, clip: ClipRef, box: Box, config: MotionConfig):
        self.box = box
        self.cropped = clip.box is not None  # else vectors stay as they are (blocks may overhang the frame)
        width, height = box.width, box.height
        self.fps = clip.fps if clip.fps > 0 else 25.0
        window = round(WINDOW_S * self.fps)
        step = round(self.fps / config.flow_fps)
        self.vectors = VectorMotion(width, height, window) if config.method != "flow" else None
        self.flow = FlowMotion(width, height, config.flow_width, step, window) if config.method != "mvs" else None
        self.auto = config.method == "auto"
        self.jumps = LumaJumps(width, height)
        self.count = 0  # frames seen: the index, in output order, of the next one
        self.pts: list[int] = []  # the frames' timestamps, in `time_base` units
        self.time_base = None

    def add(self, frame: av.VideoFrame) -> None:
        x, y, width, height = self.box
        plane = luma(frame)[y : y + height, x : x + width]
        self.jumps.add(plane)
        if self.vectors is not None:
            kind = int(frame.pict_type)
            side = frame.side_data.get("MOTION_VECTORS") if kind == P_FRAME else None  # only P-frames are used
            self.vectors.add(self.count, kind, self._vectors(side))
            if self.auto and self.flow is not None and self.vectors.field.pairs >= _VECTOR_PAIRS_ENOUGH:
                self.flow = None  # the stream has vectors: the flow would only cost time
        if self.flow is not None and self.flow.wants(self.count):
            self.flow.add(self.count, plane)
        if frame.pts is not None:
            self.pts.append(frame.pts)
            self.time_base = frame.time_base
        self.count += 1

    def _vectors(self, side) -> np.ndarray | None:
        if side is None:
            return None
        vectors = side.to_ndarray()
        return _inside(vectors, self.box) if self.cropped else vectors

    def frame_interval_s(self) -> float:
        """Seconds between consecutive frames, from the clip's own timestamps (their spread, which
        holds when they are reordered or the rate varies), else from the nominal rate."""
        if len(self.pts) > 1 and self.time_base and max(self.pts) > min(self.pts):
            return float((max(self.pts) - min(self.pts)) * self.time_base) / (len(self.pts) - 1)
        return 1.0 / self.fps

    def result(self, config: MotionConfig) -> dict:
        use_flow = self.flow is not None and (self.vectors is None or self.flow.field.pairs > 0)
        field, method = (self.flow.field, "flow") if use_flow else (self.vectors.field, "mvs")
        score, min_region, static_frac = field.result(self.frame_interval_s(), config.static_speed)
        if math.isnan(score):
            why = "no motion vectors in the clip's frames" if method == "mvs" else "too few frames to compare"
            return {"motion_error": f"{why} ({self.count} frames decoded)"}
        return MotionResult(score, min_region, static_frac, self.jumps.max_jump, method).row()


def _inside(vectors: np.ndarray, box: Box) -> np.ndarray:
    """The motion vectors of the blocks that land inside `box`, their positions made relative to it."""
    x, y = vectors["dst_x"].astype(np.int32) - box.x, vectors["dst_y"].astype(np.int32) - box.y
    kept = vectors[(x >= 0) & (x < box.width) & (y >= 0) & (y < box.height)].copy()
    kept["dst_x"] -= box.x
    kept["dst_y"] -= box.y
    return kept
