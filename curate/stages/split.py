"""Split stage: decode each video once, find its shot boundaries, and cut its shots into clips.

Unit: one input video. Outputs: one `videos` row (probe results, `cut_frames`, or the error that
stopped it) and its `clips` rows. Clips keep a margin away from every boundary (and from every
abrupt change the detector was unsure of), skip shots that are too short, and split long shots
into equal windows, so no clip ever holds a boundary.
"""

from __future__ import annotations

import math

import numpy as np

from curate.config import SplitConfig
from curate.inputs import VideoInput
from curate.manifest import CLIP_SCHEMA, VIDEO_SCHEMA, to_table
from curate.shots import ShotDetector, Transition, shots_between
from curate.stages.base import Stage, Unit
from curate.videoio import DecodeLog, LumaGrid, VideoError, check_complete, iter_frames, luma, open_video


class SplitStage(Stage):
    """Shot detection and clip shaping for one video per unit."""

    name = "split"

    def __init__(self, config: SplitConfig):
        self.config = config

    def process(self, unit: Unit) -> tuple[dict, dict]:
        video: VideoInput = unit.payload
        if video.duplicate_of is not None:
            return self._error(video, f"same file as {video.duplicate_of}")
        try:
            container, stream, info = open_video(video.path, threads=self.config.decoder_threads)
        except VideoError as exc:
            return self._error(video, str(exc))
        log = DecodeLog()
        try:
            detector = ShotDetector(info.fps, self.config)
            _feed(detector, iter_frames(container, stream, log), self.config)
        finally:
            container.close()
        check_complete(info, log)
        if log.num_frames == 0:
            return self._error(video, f"no decodable video frames ({log.first_problem or 'empty stream'})", info)
        fps = info.fps or _measured_fps(log.frame_times_s)
        detection = detector.finish()
        # Clips leave out the uncertain changes too, though they are not boundaries (cut_frames).
        spans = clip_spans(log.num_frames, detection.transitions + detection.uncertain, fps, self.config)
        row = _video_row(video, info, log, fps, detection.transitions)
        clips = [_clip_row(video, row, start, end, log.frame_times_s) for start, end in spans]
        stats = {"frames": log.num_frames, "clips": len(clips), "status": row["status"]}
        return {"videos": to_table([row], VIDEO_SCHEMA), "clips": to_table(clips, CLIP_SCHEMA)}, stats

    def failed(self, unit: Unit, message: str) -> tuple[dict, dict]:
        return self._error(unit.payload, message)

    def _error(self, video: VideoInput, message: str, info=None) -> tuple[dict, dict]:
        row = {
            "video_id": video.video_id,
            "path": video.path,
            "status": "error",
            "error": message,
            "source_caption": video.source_caption,
            "cut_frames": [],
            "cut_kinds": [],
        }
        if info is not None:
            row.update(codec=info.codec, width=info.width, height=info.height, fps=info.fps)
        tables = {"videos": to_table([row], VIDEO_SCHEMA), "clips": to_table([], CLIP_SCHEMA)}
        return tables, {"frames": 0, "clips": 0, "status": "error"}


def _feed(detector: ShotDetector, frames, config: SplitConfig) -> None:
    """Push each frame's luma grid into the detector. A stream whose frame size changes midway
    gets a new sampler, and its grids are fitted to the first shape so vectors stay comparable."""
    grid, plane_shape, first_shape = None, None, None
    for frame in frames:
        plane = luma(frame)
        if plane.shape != plane_shape:
            plane_shape = plane.shape
            grid = LumaGrid(plane.shape[1], plane.shape[0], config.analysis_width, config.analysis_height)
        small = grid(plane)
        first_shape = first_shape or small.shape
        detector.push(small if small.shape == first_shape else np.resize(small, first_shape))


def clip_spans(num_frames: int, transitions: list[Transition], fps: float, config: SplitConfig) -> list[tuple[int, int]]:
    """[start, end) frame spans of the clips: shots trimmed by the margin at each boundary, shots
    shorter than the minimum skipped, longer ones split into equal windows under the maximum
    (or, when equal windows would be shorter than the minimum, into maximum-length ones)."""
    margin = round(config.margin_s * fps)
    min_frames = max(1, math.ceil(config.min_clip_s * fps - 1e-6))
    max_frames = max(min_frames, math.floor(config.max_clip_s * fps + 1e-6))
    spans = []
    for start, end in shots_between(num_frames, transitions):
        start += margin if start > 0 else 0  # the video's own first and last frames are no boundary
        end -= margin if end < num_frames else 0
        length = end - start
        if length < min_frames:
            continue
        windows = math.ceil(length / max_frames)
        if length / windows >= min_frames:
            edges = [start + round(i * length / windows) for i in range(windows + 1)]
        else:  # equal windows would fall under the minimum: take whole maximum-length ones
            edges = [start + i * max_frames for i in range(length // max_frames + 1)]
        spans.extend(zip(edges[:-1], edges[1:]))
    return spans


def clip_id(video_id: str, start_frame: int, end_frame: int) -> str:
    """Deterministic, file-name-safe clip id (no dots: WebDataset keys end at the first dot)."""
    return f"{video_id}-{start_frame:06d}-{end_frame:06d}"


def _measured_fps(times: list[float]) -> float:
    if len(times) > 1 and times[-1] > times[0]:
        return (len(times) - 1) / (times[-1] - times[0])
    return 25.0


def _video_row(video: VideoInput, info, log: DecodeLog, fps: float, transitions: list[Transition]) -> dict:
    boundaries = [t for t in transitions if t.cut_frame is not None]
    problem = None
    if log.first_problem:
        skipped = f", {log.bad_packets} damaged packets skipped" if log.bad_packets else ""
        problem = f"partly decoded: kept {log.num_frames} frames{skipped}; {log.first_problem}"
    return {
        "video_id": video.video_id,
        "path": video.path,
        "status": "ok",
        "error": problem,
        "duration_s": _end_time(log.frame_times_s, log.num_frames, fps) - log.frame_times_s[0],
        "fps": fps,
        "num_frames": log.num_frames,
        "width": info.width,
        "height": info.height,
        "codec": info.codec,
        "cut_frames": [t.cut_frame for t in boundaries],
        "cut_kinds": [t.kind for t in boundaries],
        "source_caption": video.source_caption,
    }


def _end_time(times: list[float], index: int, fps: float) -> float:
    """Time of frame `index`, or one frame past the last frame when index == len(times)."""
    if index < len(times):
        return times[index]
    return times[-1] + 1.0 / fps


def _clip_row(video: VideoInput, video_row: dict, start: int, end: int, times: list[float]) -> dict:
    return {
        "clip_id": clip_id(video.video_id, start, end),
        "video_id": video.video_id,
        "path": video.path,
        "start_frame": start,
        "end_frame": end,
        "start_s": times[start],
        "end_s": _end_time(times, end, video_row["fps"]),
        "num_frames": end - start,
        "fps": video_row["fps"],
        "width": video_row["width"],
        "height": video_row["height"],
        "drop_reason": None,
        "source_caption": video.source_caption,
    }
