"""One video through the split: decode it once, find its shot boundaries, and turn its shots
into clip rows (`split_video`).

Every frame is decoded once. Each frame's luma grid feeds our detector (`shots.py`); with a learned
`split.detector`, a 48x27 RGB copy of the same decoded frame feeds TransNetV2 (`transnet.py`), whose
per-frame probabilities become a `transitions` table; about one frame a second feeds the
frame-quality samples (`frame_quality.py`: crop box, exposure, sharpness). Clips keep a margin
away from every boundary (and from every abrupt change the detector was unsure of), skip shots
that are too short, and split long shots into equal windows, so no clip ever holds a boundary.

Only the stage's workers import this module (PyAV, numpy, the detectors, OpenCV for the
frame-quality samples); the command's own process never does (`stage.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from curate.config import SplitConfig
from curate.inputs import VideoInput
from curate.manifest import CLIP_SCHEMA, VIDEO_SCHEMA, to_table
from curate.picture import Picture, picture_of
from curate.stages.split import transnet
from curate.stages.split.frame_quality import FrameQuality
from curate.stages.split.shots import Detection, ShotDetector, Transition, frames_in, shots_between
from curate.videoio import (
    DecodeLog,
    LumaGrid,
    VideoError,
    check_complete,
    dominant_fps,
    iter_frames,
    luma,
    nominal_rates,
    open_video,
    still_image,
)


def split_video(video: VideoInput, config: SplitConfig, model: transnet.TransNet | None = None) -> tuple[dict, dict]:
    """The `videos` row and the `clips` rows of one video (and its `transitions` row, with
    `model`: TransNetV2 for a learned `split.detector`), as tables, and the stats of the unit.
    Raises `VideoError` for a video that cannot be opened, holds no decodable frame or is a still image."""
    container, stream, info = open_video(video.path, threads=config.decoder_threads)
    log = DecodeLog()
    windows = model.stream() if model is not None else None
    try:
        detector = ShotDetector(info.fps, config)
        rate = config.quality_samples_per_s
        quality = FrameQuality(info.fps, rate, config.min_clip_s) if rate > 0 else None  # crop box, exposure, sharpness
        picture = _feed(detector, stream, iter_frames(container, stream, log), config, windows, quality)
        rates = nominal_rates(stream)
    finally:
        container.close()
    check_complete(info, log)
    if log.num_frames == 0:
        raise VideoError(f"no decodable video frames ({log.first_problem or 'empty stream'})", info)
    if still := still_image(info, log):
        raise VideoError(still, info)
    fps = dominant_fps(log.frame_times_s, rates)
    detection, tables = detector.finish(), {}
    if windows is not None:
        probabilities = windows.finish()
        detection = _learned_detection(detection, probabilities, detector.blank_frames(), fps, config)
        tables["transitions"] = transitions_table(video.video_id, probabilities)
    # Clips leave out the uncertain changes too, though they are not boundaries (cut_frames).
    spans = clip_spans(log.num_frames, detection.transitions + detection.uncertain, fps, config, log.frame_times_s)
    row = _video_row(video, info, log, fps, detection.transitions, picture)
    shots = shots_between(log.num_frames, detection.transitions + detection.uncertain)
    measured = quality.clip_columns(spans, shots) if quality is not None else [{}] * len(spans)
    clips = [{**_clip_row(video, row, start, end, log.frame_times_s), **m} for (start, end), m in zip(spans, measured, strict=True)]
    stats = {"frames": log.num_frames, "clips": len(clips), "status": row["status"]}
    return {"videos": to_table([row], VIDEO_SCHEMA), "clips": to_table(clips, CLIP_SCHEMA), **tables}, stats


def _learned_detection(
    ours: Detection, probabilities: transnet.Probabilities, blank: np.ndarray, fps: float, config: SplitConfig
) -> Detection:
    """TransNetV2's transitions (transnetv2), or both detectors' joined (ensemble), from the
    model's per-frame probabilities; `blank` marks the frames our detector found blank (what
    makes a transition a fade). The frames the model puts inside a transition where none was
    found stay out of clips (`transnet.uncertain_from`), beside our uncertain changes."""
    min_gap = frames_in(config.min_shot_s, fps)
    theirs = transnet.transitions_from(probabilities, config.transnet_threshold, min_gap, blank)
    if config.detector == "transnetv2":
        found, uncertain = theirs, []
    else:
        found = transnet.ensemble(ours.transitions, theirs, min_gap, probabilities.single, config.ensemble_threshold)
        uncertain = ours.uncertain
    longest = frames_in(config.max_transition_s, fps)  # a doubt grows no longer than the longest transition
    doubts = transnet.uncertain_from(probabilities, config.transnet_uncertain, found, longest)
    return Detection(found, sorted(uncertain + doubts, key=lambda t: (t.start, t.end)))


TRANSITIONS_SCHEMA = pa.schema(
    [("video_id", pa.string()), ("single_frame_probs", pa.list_(pa.float32())), ("many_hot_probs", pa.list_(pa.float32()))]
)


def transitions_table(video_id: str, probabilities: transnet.Probabilities) -> pa.Table:
    """The `transitions` row of one video: TransNetV2's two probabilities for every frame."""
    single, many_hot = (p.astype(np.float32).tolist() for p in (probabilities.single, probabilities.many_hot))
    return to_table([{"video_id": video_id, "single_frame_probs": single, "many_hot_probs": many_hot}], TRANSITIONS_SCHEMA)


def _feed(
    detector: ShotDetector, stream, frames, config: SplitConfig, windows: transnet.WindowStream | None = None,
    quality: FrameQuality | None = None,
) -> Picture | None:  # fmt: skip
    """Push each frame's luma grid into the detector; return how the first frame is shown. A stream
    whose frame size changes midway gets a new sampler, and its grids are fitted to the first shape
    so vectors stay comparable. (The detector works on the coded picture: turning it upright or
    squaring its pixels changes no boundary.) With `windows`, each frame's 48x27 RGB goes to
    TransNetV2 too, from the same decoded frame; `quality` gets every full-size luma plane."""
    grid, plane_shape, first_shape, picture = None, None, None, None
    for frame in frames:
        if windows is not None:
            windows.push(transnet.small_rgb(frame))
        plane = luma(frame)
        if plane.shape != plane_shape:
            plane_shape = plane.shape
            grid = LumaGrid(plane.shape[1], plane.shape[0], config.analysis_width, config.analysis_height)
            picture = picture or picture_of(stream, frame)
        if quality is not None:
            quality.push(frame, plane, picture)
        small = grid(plane)
        first_shape = first_shape or small.shape
        detector.push(small if small.shape == first_shape else np.resize(small, first_shape))
    return picture


def clip_spans(
    num_frames: int, transitions: list[Transition], fps: float, config: SplitConfig, times_s: Sequence[float] | None = None
) -> list[tuple[int, int]]:
    """[start, end) frame spans of the clips: shots trimmed by the margin at each boundary, shots
    shorter than the minimum skipped, longer ones split into equal windows under the maximum
    (or, when equal windows would be shorter than the minimum, into maximum-length ones).

    Lengths are measured in time: each frame stands at its timestamp's place on a grid of `fps`
    (the video's dominant rate), the rules count grid steps, and each edge goes to the first frame
    at or after its grid place. A constant-rate video (or `times_s` None) gives exactly the spans
    of counting frames; a variable-rate one gets clips as long in seconds as the settings say
    (give or take a source frame).
    """
    margin = round(config.margin_s * fps)
    min_frames = max(1, math.ceil(config.min_clip_s * fps - 1e-6))
    max_frames = max(min_frames, math.floor(config.max_clip_s * fps + 1e-6))
    grid = _grid_places(times_s, fps) if times_s is not None else np.arange(num_frames)
    spans = []
    for first, stop in shots_between(num_frames, transitions):
        # Grid places of the shot's ends; the video's own first and last frames are no boundary.
        start = int(grid[first]) + (margin if first > 0 else 0)
        end = (int(grid[stop]) - margin) if stop < num_frames else int(grid[-1]) + 1
        length = end - start
        if length < min_frames:
            continue
        windows = math.ceil(length / max_frames)
        if length / windows >= min_frames:
            edges = [start + round(i * length / windows) for i in range(windows + 1)]
        else:  # equal windows would fall under the minimum: take whole maximum-length ones
            edges = [start + i * max_frames for i in range(length // max_frames + 1)]
        frames = np.clip(np.searchsorted(grid, edges), first, stop).tolist()
        spans.extend((a, b) for a, b in zip(frames[:-1], frames[1:], strict=False) if b > a)
    return spans


def _grid_places(times_s: Sequence[float], fps: float) -> np.ndarray:
    """Each frame's place, in whole frames at `fps` from the first frame, from the timestamps: the
    k-th frame gets the k-th earliest time (files whose timestamps are not monotonic in output order
    still show their frames one after the other), rounded to the grid (half a frame absorbs jitter)."""
    times = np.sort(np.asarray(times_s, dtype=np.float64))
    return np.rint((times - times[0]) * fps).astype(np.int64)


def clip_id(video_id: str, start_frame: int, end_frame: int) -> str:
    """Deterministic, file-name-safe clip id (no dots: WebDataset keys end at the first dot)."""
    return f"{video_id}-{start_frame:06d}-{end_frame:06d}"


def _video_row(video: VideoInput, info, log: DecodeLog, fps: float, transitions: list[Transition],
               picture: Picture) -> dict:  # fmt: skip
    boundaries = [t for t in transitions if t.cut_frame is not None]
    width, height = picture.display_size(info.width, info.height)  # as players show it
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
        "width": width,
        "height": height,
        "codec": info.codec,
        "rotation": picture.rotation,
        "pixel_aspect": float(picture.pixel_aspect),
        "interlaced": picture.interlaced,
        "color_matrix": picture.matrix,
        "full_range": picture.full_range,
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
