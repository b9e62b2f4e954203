"""Video reading with PyAV: open and probe a file, and stream its frames robustly.

Decoding is the cost of every pass, so this module decodes once, lets FFmpeg thread the decoder,
and reads the luma plane straight from the frame's buffer instead of asking FFmpeg to convert or
scale (PyAV's `reformat` to a small size costs more than the decode itself).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import numpy as np

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


def open_video(path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream, VideoInfo]:
    """Open `path` and return its first video stream, or raise VideoError saying why not."""
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


def _frame_time(frame: av.VideoFrame, log: DecodeLog, stream) -> float:
    """Seconds from the stream start; frames without a timestamp continue the previous one."""
    if frame.pts is not None and frame.time_base is not None:
        start = stream.start_time or 0
        return float((frame.pts - start) * frame.time_base)
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
