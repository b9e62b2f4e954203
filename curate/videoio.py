"""Video reading with PyAV: open and probe a file, and stream its frames robustly.

Decoding is the cost of every pass, so this module decodes once, lets FFmpeg thread the decoder,
and reads the luma plane straight from the frame's buffer instead of asking FFmpeg to convert or
scale (PyAV's `reformat` to a small size costs more than the decode itself).
"""

from __future__ import annotations

import os
import re
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain

import av
import numpy as np

from curate.storage import is_url, local_copy

# Consecutive undecodable packets after which the rest of a stream is treated as lost.
_MAX_CONSECUTIVE_ERRORS = 100

# Decoders of picture formats: one frame of one of these is a still image, not a video.
IMAGE_CODECS = frozenset(
    "png apng mjpeg jpegls jpeg2000 libopenjpeg jpegxl libjxl bmp tiff webp libwebp gif ppm pgm pgmyuv pbm pam pfm "
    "qoi sgi targa dpx exr hdr pcx xbm xpm xwd sunrast psd dds pictor photocd gem vbn pgx alias_pix brender_pix".split()
)
_NO_BYTE_SEEK = 0x8000  # AVFMT_NO_BYTE_SEEK: the demuxer cannot restart at a byte offset (mp4, ...)
# Packets read ahead, at most, to time the frames that lead a stream without timestamps.
_MAX_LEAD_PACKETS = 1024
_MAX_LEAD_BYTES = 64 << 20
_REORDER_PACKETS = 16  # the deepest frame reordering of H.264/HEVC: the first timed frame is among these


class VideoError(Exception):
    """A file that cannot be read as a video; the message is short and meant for the manifest.
    `info` is what probing the file found, when it could be opened (None otherwise)."""

    def __init__(self, message: str, info: VideoInfo | None = None):
        super().__init__(message)
        self.info = info


@dataclass
class VideoInfo:
    """What the container says about the video stream before any frame is decoded."""

    codec: str
    width: int
    height: int
    fps: float
    declared_frames: int  # what the container's index promises (0 when it does not say)
    image: bool = False  # an image codec or an image file format: one frame of it is a still image


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
    """Open `path` (a local file or an object-store URL) and return its main video stream (see
    `main_video_stream`), or raise VideoError saying why not. `threads` caps the decoder's threads
    (0: FFmpeg's choice).

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
    stream = main_video_stream(container)
    if stream is None:  # an audio file with cover art
        others = "/".join(sorted({s.type for s in container.streams if s.type != "video"}))
        container.close()
        raise VideoError(f"no video stream ({others + ' streams and ' if others else ''}a cover picture only)")
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
        image=(ctx.name if ctx else "") in IMAGE_CODECS or _is_image_format(container.format.name),
    )
    return container, stream, info


def main_video_stream(container) -> av.video.stream.VideoStream | None:
    """The video track to read, the same in every stage: not an attached picture (cover art; None
    when there is nothing else), then the largest of the tracks about as long as the longest (a
    preview track can be a frame longer than the main one). A file's first video track can be a
    one-frame cover image."""
    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        return None
    seconds = [_stream_seconds(s) for s in moving]
    return max((s for s, t in zip(moving, seconds, strict=True) if t >= 0.9 * max(seconds)), key=_pixels)


def _stream_seconds(stream) -> float:
    """How long the container says the track plays: its duration, its frame count at its rate, or
    (Matroska, which records no per-track duration) its DURATION tag; 0 when nothing says."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    rate = stream.average_rate or stream.guessed_rate
    if stream.frames and rate:
        return stream.frames / float(rate)
    tag = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", str(stream.metadata.get("DURATION", "")).strip())
    return int(tag[1]) * 3600 + int(tag[2]) * 60 + float(tag[3]) if tag else 0.0


def _pixels(stream) -> int:
    ctx = stream.codec_context
    return (ctx.width or 0) * (ctx.height or 0) if ctx else 0


def _is_image_format(name: str) -> bool:
    """FFmpeg's single-image demuxers: `image2` (files) and the `*_pipe` ones (png_pipe, ...)."""
    return name == "image2" or name.endswith("_pipe")


def _declared_frames(stream, fps: float) -> int:
    """The frames the container promises: its sample count, unless its duration says fewer (an
    mp4 cut without re-encoding keeps the samples before the cut, which its edit list hides)."""
    counted = int(stream.frames or 0)
    timed = int(float(stream.duration * stream.time_base) * fps + 1e-6) if stream.duration and stream.time_base and fps else 0
    return min(counted, timed) if counted and timed else counted or timed


def check_complete(info: VideoInfo, log: DecodeLog) -> None:
    """Note in `log` when fewer frames decoded than the container promised (a truncated file)."""
    missing = info.declared_frames - log.num_frames
    if missing > max(2, 0.02 * info.declared_frames):
        log.note(f"stream ends early: {info.declared_frames} frames expected")


def still_image(info: VideoInfo, log: DecodeLog) -> str | None:
    """Why the input is a picture rather than a video (one frame of an image format), or None."""
    if log.num_frames == 1 and info.image:
        return f"a still image ({info.codec}), not a video"
    return None


def nominal_rates(stream) -> list[float]:
    """The frame rates the container states for `stream` (average, guessed, base), best first."""
    rates = (stream.average_rate, stream.guessed_rate, stream.base_rate)
    return [float(rate) for rate in rates if rate and rate > 0]


def dominant_fps(times_s: Iterable[float], nominal: Iterable[float] = ()) -> float:
    """The frame rate most of the video plays at, from its frames' timestamps: the mean of the
    intervals near the median one (millisecond timestamps jitter), so a variable-rate video gets
    the rate of its longest stretches, not the average. The closest `nominal` rate within 1% of it
    wins (it is exact: 24, 30000/1001); else the nearest usual rate within 0.5% (whole, half,
    NTSC), else the measured rate as a fraction."""
    times = np.sort(np.asarray(times_s, dtype=np.float64))
    steps = np.diff(times)
    steps = steps[steps > 0]
    nominal = [rate for rate in nominal if rate > 0]
    if len(steps) == 0:
        return nominal[0] if nominal else 25.0
    typical = float(np.median(steps))
    measured = 1.0 / float(steps[np.abs(steps - typical) <= 0.25 * typical].mean())
    agreeing = [rate for rate in nominal if abs(rate - measured) <= 0.01 * measured]
    if agreeing:  # the closest: a few dropped frames move the average rate, not the stated one
        return min(agreeing, key=lambda rate: abs(rate - measured))
    usual = [Fraction(round(measured)), Fraction(round(2 * measured), 2), Fraction(round(measured * 1.001) * 1000, 1001)]
    best = min((rate for rate in usual if rate > 0), key=lambda rate: abs(rate - measured), default=None)
    if best is not None and abs(best - measured) <= 0.005 * measured:
        return float(best)
    return float(Fraction(measured).limit_denominator(1001))


def iter_frames(container, stream, log: DecodeLog) -> Iterator[av.VideoFrame]:
    """Yield decoded frames in decode order, surviving damaged packets, and append each one's time
    to `log.frame_times_s` before yielding it.

    Times are seconds from the stream's start time, from the frames' timestamps; a frame without
    one is timed one frame after the previous one (leading ones: see `_timed_head`).

    Bad packets are counted in `log` and skipped; a container that cannot be read further (a
    truncated file) ends the stream early, keeping every frame decoded so far. Returns (as the
    generator's value) True when the stream ended normally, False when damage ended it.
    """
    rate = stream.average_rate or stream.guessed_rate
    step_s = 1.0 / float(rate) if rate else 0.0  # how far apart frames without timestamps are put
    packets = container.demux(stream)
    head, lead_s, error = _timed_head(packets, stream, step_s)
    packets = chain(head, _raise(error) if error else packets)
    origin = stream.start_time or 0
    # Every packet demux yields carries the stream's time base, and so does every frame decoded from
    # one: read once here, where each frame.time_base would build a new Fraction.
    time_base = stream.time_base
    time_s = None
    consecutive_errors = 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return True
        except av.FFmpegError as exc:
            log.note(f"container unreadable after frame {log.num_frames} ({_ffmpeg_reason(exc)})")
            return False
        try:
            frames = packet.decode()
            consecutive_errors = 0
        except av.FFmpegError as exc:
            log.bad_packets += 1
            log.note(f"damaged data near frame {log.num_frames} ({_ffmpeg_reason(exc)})")
            consecutive_errors += 1
            if consecutive_errors >= _MAX_CONSECUTIVE_ERRORS:
                return False
            continue
        for frame in frames:
            pts = frame.pts
            if pts is not None and time_base is not None:
                # Integer arithmetic, then one correctly rounded division: the same float as going
                # through Fraction, at a fraction of the cost per frame.
                time_s = (pts - origin) * time_base.numerator / time_base.denominator
            elif lead_s:
                time_s = lead_s.popleft()
            else:  # no timestamp: one frame after the previous frame of this pass
                time_s = time_s + step_s if time_s is not None else 0.0
            log.frame_times_s.append(time_s)
            log.num_frames += 1
            yield frame


def _timed_head(packets: Iterator[av.Packet], stream, step_s: float) -> tuple[list[av.Packet], deque[float], av.FFmpegError | None]:
    """The packets read ahead to time frames that lead the stream without a timestamp, the times
    of those frames, and the error that stopped the reading ahead, if any.

    A file cut without re-encoding (`ffmpeg -ss ... -c copy`) keeps the frames before the cut
    back to their keyframe, with negative timestamps, which some demuxers (Matroska) drop. Those
    frames come first, so they are timed `step_s` apart, back from the earliest
    timestamp of the packets that follow. A stream whose first packet is timed (nearly all) costs
    one packet read; one that has no timestamps at all (a raw .h264 file, start_time None) is not
    read ahead, and its frames are counted from 0.
    """
    head: list[av.Packet] = []
    if stream.start_time is None:
        return head, deque(), None
    untimed, timed, size, error = 0, [], 0, None
    try:
        while len(timed) < _REORDER_PACKETS and len(head) < _MAX_LEAD_PACKETS and size < _MAX_LEAD_BYTES:
            packet = next(packets)
            head.append(packet)
            if packet.pts is not None:
                timed.append(packet.pts)
            elif packet.size == 0:  # the end of the stream
                break
            elif not timed:
                untimed += 1
            if not untimed:  # the stream starts with a timestamp: nothing to time here
                break
            size += packet.size
    except StopIteration:
        pass
    except av.FFmpegError as exc:  # raised again after the packets read
        error = exc
    if not untimed or not timed:
        return head, deque(), error
    first_s = float((min(timed) - (stream.start_time or 0)) * stream.time_base)
    return head, deque(first_s - (untimed - k) * step_s for k in range(untimed)), error


def _raise(error: Exception) -> Iterator:
    """An iterator that raises `error` when it is first read."""
    raise error
    yield


def iter_spans(
    container, stream, spans: list[tuple[float, float, int]], fps: float, log: DecodeLog | None = None, seek_gap_s: float = 2.0
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield `(span_index, frame)` for the frames of each span, reading only around the spans.
    `container` must be as `open_video` returned it (nothing read from it yet).

    A span is `(start_s, end_s, num_frames)` as in clips.parquet: `start_s` is the time the split
    stage recorded for the span's first frame, and the span is that frame and the `num_frames - 1`
    frames after it in output order: exactly frames start_frame..end_frame-1 of a full
    `iter_frames` pass. The first frame is found by its timestamp and the rest are counted, not
    picked by a time window, because some files (MPEG-4 in AVI, badly muxed mp4) carry timestamps
    that are not monotonic in output order; `end_s` only bounds a span whose frames were lost.
    When a frame is yielded, `log.frame_times_s[-1]` is its time, as the split stage timed it.

    Spans are visited in time order. The reader seeks to the keyframe before a span when the span
    starts more than `seek_gap_s` past the last frame read (decoding a short gap is cheaper than a
    seek) or before it, so the clips of one video cost one pass over the parts that are needed.
    Near the stream's start (within `seek_gap_s`) the reader never seeks: the first span there is
    read from the start of the unread file, later ones by reading on. MPEG-TS seeks there land on
    the next keyframe, and Matroska indexes no keyframe without a timestamp (a cut file's first).
    """
    log = log if log is not None else DecodeLog()
    tolerance = 0.25 / fps if fps > 0 else 1e-3
    slack = _REORDER_FRAMES / fps if fps > 0 else 0.5
    cursor: _Cursor | None = None
    for index in sorted(range(len(spans)), key=lambda i: spans[i][0]):
        start_s, end_s, num_frames = spans[index]
        if num_frames <= 0:
            continue
        if cursor is None and start_s <= seek_gap_s:
            cursor = _Cursor.start(iter_frames(container, stream, log), log)
        elif cursor is not None and cursor.beyond_end(start_s, tolerance):
            continue  # the stream ended before this span: no seek can reach it
        elif cursor is None or not cursor.ahead(start_s, seek_gap_s, tolerance, slack):
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
    timestamps read (to tell whether a span's first frame is still ahead), a frame read but not
    used yet (`pending`), and whether the frames have run out (`done`), normally (`at_end`)."""

    def __init__(self, frames: Iterator[av.VideoFrame], log: DecodeLog):
        self.frames, self.log = frames, log
        self.pending: av.VideoFrame | None = None
        self.time_s = float("-inf")  # timestamp of the newest frame read
        self.top_s = float("-inf")  # the largest timestamp read
        self.recent: deque[float] = deque(maxlen=2 * _REORDER_FRAMES)
        self.done = self.at_end = False

    @classmethod
    def start(cls, frames: Iterator[av.VideoFrame], log: DecodeLog) -> _Cursor:
        """A cursor on `frames`, with their first frame read into `pending`."""
        cursor = cls(frames, log)
        cursor.pending = cursor.next()
        return cursor

    @classmethod
    def seek(cls, container, stream, start_s: float, log: DecodeLog, tolerance: float) -> _Cursor:
        """Seek to the keyframe before `start_s`. Containers index keyframes by decode time, which
        runs ahead of presentation time when frames are reordered, and MPEG-TS seeks land a
        keyframe late (or at the end of the file): a seek that lands past `start_s` is tried again
        from further back, and finally from the stream's start (`rewind`)."""
        for back_s in (0.0, 2.0, 10.0):
            if start_s - back_s <= 0:
                break
            cursor = cls.start(_seek(container, stream, start_s - back_s, log), log)
            if cursor.reaches(start_s, tolerance):
                return cursor
        return cls.rewind(container, stream, start_s, log, tolerance)

    @classmethod
    def rewind(cls, container, stream, start_s: float, log: DecodeLog, tolerance: float) -> _Cursor:
        """Back to the stream's first frame: a seek to its start time, or, when that lands past
        `start_s` (MPEG-TS, MPEG-PS), a seek to the file's first byte, where the demuxer allows it."""
        cursor = cls.start(_seek(container, stream, 0.0, log), log)
        if cursor.reaches(start_s, tolerance) or container.format.flags & _NO_BYTE_SEEK:
            return cursor
        try:
            container.seek(0, unsupported_byte_offset=True)
            restarted = cls.start(iter_frames(container, stream, log), log)
        except av.FFmpegError:
            restarted = None
        if restarted is not None and restarted.reaches(start_s, tolerance):
            return restarted
        return cls.start(_seek(container, stream, 0.0, log), log)  # no better: as the seek landed

    def reaches(self, start_s: float, tolerance: float) -> bool:
        """Whether the cursor stands at or before `start_s` (a seek that did not land too late)."""
        return self.pending is not None and self.time_s <= start_s + tolerance

    def next(self) -> av.VideoFrame | None:
        try:
            frame = next(self.frames)
        except StopIteration as stop:
            self.at_end = self.at_end or stop.value is True
            self.done = True
            return None
        self.time_s = self.log.frame_times_s[-1]
        self.top_s = max(self.top_s, self.time_s)
        self.recent.append(self.time_s)
        return frame

    def ahead(self, start_s: float, seek_gap_s: float, tolerance: float, slack: float) -> bool:
        """Whether the frame at `start_s` can still be reached by reading on, and reading on costs
        less than a seek: it is at most `seek_gap_s` ahead, or at most `seek_gap_s` from the
        stream's start (where a seek would land no further on than the reader already is)."""
        if self.pending is not None and abs(self.time_s - start_s) <= tolerance:
            return True
        if self.done and self.pending is None:
            return False
        if start_s < self.top_s - slack or any(abs(t - start_s) <= tolerance for t in self.recent):
            return False  # passed
        return start_s - self.top_s <= seek_gap_s or start_s <= seek_gap_s

    def beyond_end(self, start_s: float, tolerance: float) -> bool:
        """Whether `start_s` lies past the end of a stream this cursor read to its normal end."""
        return self.at_end and self.pending is None and start_s > self.top_s + tolerance

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
    except av.FFmpegError as exc:  # an unseekable file (a raw stream): read from its first byte instead
        log.note(f"cannot seek to {start_s:.2f} s ({_ffmpeg_reason(exc)})")
        try:
            container.seek(0)
        except av.FFmpegError:
            container.seek(0, unsupported_byte_offset=True)
    return iter_frames(container, stream, log)


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
