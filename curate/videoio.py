"""Video reading with PyAV: open and probe a file, and stream its frames robustly.

Decoding is the cost of every pass, so this module decodes once, lets FFmpeg thread the decoder,
and reads the luma plane straight from the frame's buffer instead of asking FFmpeg to convert or
scale (PyAV's `reformat` to a small size costs more than the decode itself).
"""

from __future__ import annotations

import os
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import numpy as np

from curate.storage import is_url, local_copy

# Consecutive undecodable packets after which the rest of a stream is treated as lost.
_MAX_CONSECUTIVE_ERRORS = 100


class VideoError(Exception):
    """A file that cannot be read as a video; the message is short and meant for the manifest."""


@dataclass
class VideoInfo:
    """What the container says about the video stream before any frame is decoded."""

    codec: str
    width: int
    height: int
    fps: float
    declared_frames: int  # what the container's index promises (0 when it does not say)


@dataclass
class DecodeLog:
    """What happened while streaming frames: counts and the first problem met, for the manifest."""

    num_frames: int = 0
    bad_packets: int = 0  # packets the decoder rejected (skipped)
    first_problem: str | None = None
    frame_times_s: array = field(default_factory=lambda: array("d"))  # 8 bytes a frame, not 32

    def note(self, problem: str) -> None:
        if self.first_problem is None:
            self.first_problem = problem


def open_video(path: str, threads: int = 0) -> tuple[av.container.InputContainer, av.video.stream.VideoStream, VideoInfo]:
    """Open `path` (a local file or an object-store URL) and return its first video stream, or
    raise VideoError saying why not. `threads` caps the decoder's threads (0: FFmpeg's choice).

    FFmpeg needs a seekable file, so an object is first downloaded to a temporary file. The open
    container holds that file, so its name is removed at once: nothing is left behind, whenever
    and however the process ends after that.
    """
    if is_url(path):
        try:
            with local_copy(path) as local:
                return open_video(local, threads)
        except FileNotFoundError:  # as for a missing local file; other failures fail the unit
            raise VideoError("cannot read file: No such file or directory") from None
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise VideoError(f"cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        container = av.open(path, mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise VideoError(f"not a readable video file ({_ffmpeg_reason(exc)})") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoError(f"cannot open file ({exc})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no"]
        container.close()
        raise VideoError(f"no video stream ({'/'.join(kinds)} streams only)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: the biggest single decode speed-up
    if threads:
        stream.codec_context.thread_count = threads
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    info = VideoInfo(
        codec=ctx.name if ctx else "unknown",
        width=int(ctx.width or 0),
        height=int(ctx.height or 0),
        fps=float(rate) if rate else 0.0,
        declared_frames=_declared_frames(stream, float(rate) if rate else 0.0),
    )
    return container, stream, info


def _declared_frames(stream, fps: float) -> int:
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base and fps:
        return int(float(stream.duration * stream.time_base) * fps)
    return 0


def check_complete(info: VideoInfo, log: DecodeLog) -> None:
    """Note in `log` when fewer frames decoded than the container promised (a truncated file)."""
    missing = info.declared_frames - log.num_frames
    if missing > max(2, 0.02 * info.declared_frames):
        log.note(f"stream ends early: {info.declared_frames} frames expected")


def iter_frames(container, stream, log: DecodeLog) -> Iterator[av.VideoFrame]:
    """Yield decoded frames in decode order, surviving damaged packets.

    Bad packets are counted in `log` and skipped; a container that cannot be read further (a
    truncated file) ends the stream early, keeping every frame decoded so far.
    """
    packets = container.demux(stream)
    consecutive_errors = 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as exc:
            log.note(f"container unreadable after frame {log.num_frames} ({_ffmpeg_reason(exc)})")
            break
        try:
            frames = packet.decode()
            consecutive_errors = 0
        except av.FFmpegError as exc:
            log.bad_packets += 1
            log.note(f"damaged data near frame {log.num_frames} ({_ffmpeg_reason(exc)})")
            consecutive_errors += 1
            if consecutive_errors >= _MAX_CONSECUTIVE_ERRORS:
                break
            continue
        for frame in frames:
            log.frame_times_s.append(_frame_time(frame, log, stream))
            log.num_frames += 1
            yield frame


def iter_spans(
    container, stream, spans: list[tuple[float, float, int]], fps: float, log: DecodeLog | None = None, seek_gap_s: float = 2.0
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield `(span_index, frame)` for the frames of each span, reading only around the spans.

    A span is `(start_s, end_s, num_frames)` as in clips.parquet: `start_s` is the time the split
    stage recorded for the span's first frame, and the span is that frame and the `num_frames - 1`
    frames after it in output order: exactly frames start_frame..end_frame-1 of a full
    `iter_frames` pass. The first frame is found by its timestamp and the rest are counted, not
    picked by a time window, because some files (MPEG-4 in AVI, badly muxed mp4) carry timestamps
    that are not monotonic in output order; `end_s` only bounds a span whose frames were lost.

    Spans are visited in time order. The reader seeks to the keyframe before a span when the span
    starts more than `seek_gap_s` past the last frame read (decoding a short gap is cheaper than a
    seek) or before it, so the clips of one video cost one pass over the parts that are needed.
    """
    log = log if log is not None else DecodeLog()
    tolerance = 0.25 / fps if fps > 0 else 1e-3
    slack = _REORDER_FRAMES / fps if fps > 0 else 0.5
    cursor: _Cursor | None = None
    for index in sorted(range(len(spans)), key=lambda i: spans[i][0]):
        start_s, end_s, num_frames = spans[index]
        if num_frames <= 0:
            continue
        if cursor is None or not cursor.ahead(start_s, seek_gap_s, tolerance, slack):
            cursor = _Cursor.seek(container, stream, start_s, log, tolerance)
        frame = cursor.find(start_s, tolerance, slack)
        taken = 0
        while frame is not None:
            yield index, frame
            taken += 1
            if taken == num_frames:
                break
            frame = cursor.next()
            if frame is not None and cursor.time_s >= end_s + slack:
                cursor.pending = frame  # frames were lost: this one may open the next span
                break


# How many frames a timestamp may stray from its frame's place in output order in files whose
# timestamps are not monotonic; a span's first frame not met within it is taken as lost.
_REORDER_FRAMES = 8


class _Cursor:
    """The decoder's position since the last seek: the frame iterator, the newest and the recent
    timestamps read (to tell whether a span's first frame is still ahead), and a frame read but
    not used yet (`pending`)."""

    def __init__(self, frames: Iterator[av.VideoFrame], log: DecodeLog):
        self.frames, self.log = frames, log
        self.pending: av.VideoFrame | None = None
        self.time_s = float("-inf")  # timestamp of the newest frame read
        self.top_s = float("-inf")  # the largest timestamp read
        self.recent: deque[float] = deque(maxlen=2 * _REORDER_FRAMES)

    @classmethod
    def seek(cls, container, stream, start_s: float, log: DecodeLog, tolerance: float) -> _Cursor:
        """Seek to the keyframe before `start_s`. Containers index keyframes by decode time,
        which runs ahead of presentation time when frames are reordered, so the keyframe found can
        come just after `start_s`; then seek again from further back."""
        for back_s in (0.0, 2.0, 10.0):
            cursor = cls(_seek(container, stream, start_s - back_s, log), log)
            cursor.pending = cursor.next()
            if cursor.pending is None or cursor.time_s <= start_s + tolerance or start_s - back_s <= 0:
                break
        return cursor

    def next(self) -> av.VideoFrame | None:
        frame = next(self.frames, None)
        if frame is not None:
            self.time_s = self.log.frame_times_s[-1]
            self.top_s = max(self.top_s, self.time_s)
            self.recent.append(self.time_s)
        return frame

    def ahead(self, start_s: float, seek_gap_s: float, tolerance: float, slack: float) -> bool:
        """Whether the frame at `start_s` can still be reached by reading on (no seek)."""
        if self.pending is not None and abs(self.time_s - start_s) <= tolerance:
            return True
        if start_s - self.top_s > seek_gap_s or start_s < self.top_s - slack:
            return False
        return not any(abs(t - start_s) <= tolerance for t in self.recent)

    def find(self, start_s: float, tolerance: float, slack: float) -> av.VideoFrame | None:
        """Read on to the frame whose timestamp is `start_s`. Meeting a frame past
        `start_s + slack` first means that frame was lost (damaged data): start there instead."""
        frame, self.pending = (self.pending, None) if self.pending is not None else (self.next(), None)
        while frame is not None and abs(self.time_s - start_s) > tolerance:
            if self.time_s > start_s + slack:
                self.log.note(f"no frame at {start_s:.3f} s")
                break
            frame = self.next()
        return frame


def _seek(container, stream, start_s: float, log: DecodeLog) -> Iterator[av.VideoFrame]:
    """Seek to the keyframe at or before `start_s` and return a fresh frame iterator from there."""
    target = (stream.start_time or 0) + max(0, int(start_s / float(stream.time_base)))
    try:
        container.seek(target, stream=stream, backward=True)
    except av.FFmpegError as exc:  # an unseekable file: read from the start instead
        log.note(f"cannot seek to {start_s:.2f} s ({_ffmpeg_reason(exc)})")
        container.seek(0)
    return iter_frames(container, stream, log)


def _frame_time(frame: av.VideoFrame, log: DecodeLog, stream) -> float:
    """Seconds from the stream start; frames without a timestamp continue the previous one."""
    time_base = frame.time_base
    if frame.pts is not None and time_base is not None:
        # Integer arithmetic, then one correctly rounded division: the same float as going through
        # Fraction, at a fraction of the cost per frame.
        return (frame.pts - (stream.start_time or 0)) * time_base.numerator / time_base.denominator
    if log.frame_times_s:
        rate = stream.average_rate or stream.guessed_rate
        return log.frame_times_s[-1] + (1.0 / float(rate) if rate else 0.0)
    return 0.0


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma plane as a (height, width) array on the 0-255 scale, without a copy
    when the pixel format stores luma as its first plane."""
    fmt = frame.format
    first = fmt.components[0] if fmt.components else None
    if first is not None and first.is_luma and not fmt.is_rgb:
        plane = frame.planes[0]
        if first.bits <= 8:
            buf = np.frombuffer(plane, np.uint8)
            return buf.reshape(plane.height, plane.line_size)[:, : plane.width]
        if fmt.name.endswith("le"):
            buf = np.frombuffer(plane, "<u2")
            return buf.reshape(plane.height, plane.line_size // 2)[:, : plane.width] >> (first.bits - 8)
    # Packed RGB, palette and other rare formats: let FFmpeg convert (slower, but correct).
    return frame.to_ndarray(format="gray")


class LumaGrid:
    """Samples a luma plane down to a small grid by striding (no full-frame pass).

    Each cell averages a 2x2 pattern of pixels spread inside it, which damps the aliasing of pure
    point sampling at almost no cost.
    """

    def __init__(self, width: int, height: int, grid_width: int, grid_height: int):
        self.grid_width = max(1, min(grid_width, width))
        self.grid_height = max(1, min(grid_height, height))
        self.step_x = max(1, width // self.grid_width)
        self.step_y = max(1, height // self.grid_height)
        quarter_x, quarter_y = self.step_x // 4, self.step_y // 4
        self.offsets = sorted(
            {(quarter_y, quarter_x), (quarter_y, 3 * quarter_x), (3 * quarter_y, quarter_x), (3 * quarter_y, 3 * quarter_x)}
        )

    def __call__(self, plane: np.ndarray) -> np.ndarray:
        gh, gw = self.grid_height, self.grid_width
        total = np.zeros((gh, gw), np.float32)
        for dy, dx in self.offsets:
            total += plane[dy :: self.step_y, dx :: self.step_x][:gh, :gw]
        return total / len(self.offsets)


def _ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's own short reason, without the file name PyAV appends."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).split(":")[0].strip() or type(exc).__name__
