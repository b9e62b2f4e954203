"""Decode chosen frames of many clips in a small thread pool, ahead of a model that consumes them.

Model stages (aesthetic, caption) read a few frames per clip. Each video is opened once, by one
thread, which seeks to the wanted frames in time order and converts each clip's picture (its crop
box, without black borders) to the model's input size with FFmpeg; the main thread receives them in a fixed order (clip order, whatever the
threads' timing), so results are repeatable. PyAV and torch both release the GIL, so decoding
overlaps the model's work. `background` runs any other producer (e.g. a processor building
model inputs) one step ahead in the same way.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np

from curate.manifest import ClipRef
from curate.picture import CroppedUpright, Upright
from curate.videoio import DecodeLog, VideoError, iter_spans, open_video

# frame, the clip's converter to upright RGB of its crop box (it keeps FFmpeg's scaler) → model input pixels
Convert = Callable[[av.VideoFrame, Upright | CroppedUpright], np.ndarray]

_DONE = object()


def frame_indices(clip: ClipRef, positions: list[float]) -> list[int]:
    """The clip's frame index at each position (a fraction of the clip), nearest with halves up."""
    last = max(clip.num_frames, 1) - 1
    return [clip.start_frame + math.floor(p * last + 0.5) for p in positions]


def count_at_rate(clip: ClipRef, per_s: float, least: int, most: int) -> int:
    """How many frames `per_s` frames a second of the clip come to (rounded up), kept between
    `least` and `most`, and never more than the clip has."""
    seconds = clip.num_frames / clip.fps if clip.fps > 0 else 0.0
    wanted = math.ceil(seconds * per_s)
    return max(1, min(clip.num_frames, max(least, min(most, wanted))))


def uniform_positions(count: int) -> list[float]:
    """`count` positions spread evenly over a clip: the middles of `count` equal parts."""
    return [(i + 0.5) / count for i in range(count)]


def decode_frames(clips: list[ClipRef], wanted: list[list[int]], convert: Convert, threads: int, queue_size: int) -> Iterator[tuple]:
    """Yield ("frame", clip_no, frame_index, pixels) for every frame in `wanted[clip_no]` and
    ("error", clip_no, reason) for clips whose frames cannot all be read, grouped by video in
    first-appearance order and in time order within a video. Up to `threads` videos decode at
    once, each at most `queue_size` frames ahead of the consumer."""
    by_video: dict[str, list[int]] = {}
    for clip_no, clip in enumerate(clips):
        by_video.setdefault(clip.path, []).append(clip_no)
    stop = threading.Event()
    channels = [_Channel(queue_size, stop) for _ in by_video]
    pool = ThreadPoolExecutor(max_workers=max(1, min(threads, len(by_video))), thread_name_prefix="curate-decode")
    try:
        for channel, members in zip(channels, by_video.values(), strict=True):
            jobs = [(n, clips[n], sorted(set(wanted[n]))) for n in members]
            pool.submit(_run_into, channel, lambda jobs=jobs: _read_frames(jobs, convert))
        for channel in channels:  # tasks start in this order, so the one read now is always running
            yield from channel
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def background(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate `items` in a separate thread, at most `depth` items ahead; the producer's
    exceptions are raised here, and leaving the loop early stops the producer."""
    stop = threading.Event()
    channel = _Channel(depth, stop)
    thread = threading.Thread(target=_run_into, args=(channel, lambda: iter(items)), name="curate-prefetch", daemon=True)
    thread.start()
    try:
        yield from channel
    finally:
        stop.set()
        thread.join()


# -- plumbing ---------------------------------------------------------------------------------


class _Stopped(Exception):
    """The consumer has gone (it raised or stopped early): the producer ends without finishing."""


class _Crash:
    """An exception raised by a producer, carried to the consumer, which re-raises it."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class _Channel:
    """A bounded queue from one producer thread to the consumer, which a stop event can break."""

    def __init__(self, maxsize: int, stop: threading.Event):
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.stop = stop

    def put(self, item) -> None:
        while True:
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise _Stopped from None

    def __iter__(self):
        while (item := self.queue.get()) is not _DONE:
            if isinstance(item, _Crash):  # a bug or an infrastructure failure, not bad data
                raise item.exc
            yield item


def _run_into(channel: _Channel, produce: Callable[[], Iterable]) -> None:
    """Put everything `produce()` yields into `channel`, then mark it done (whatever happened)."""
    try:
        for item in produce():
            channel.put(item)
    except _Stopped:
        return
    except BaseException as exc:  # handed to the consumer, which re-raises it
        try:
            channel.put(_Crash(exc))
        except _Stopped:
            return
    try:
        channel.put(_DONE)
    except _Stopped:
        pass


def _read_frames(jobs: list[tuple[int, ClipRef, list[int]]], convert: Convert) -> Iterator[tuple]:
    """Open the video once, yield every wanted frame of its clips in time order, then report the
    clips whose frames could not all be had."""
    try:
        container, stream, _ = open_video(jobs[0][1].path)
    except VideoError as exc:
        for clip_no, _, _ in jobs:
            yield ("error", clip_no, str(exc))
        return
    spans, owners, bad = _frame_spans(jobs)
    for clip_no, why in bad:
        yield ("error", clip_no, why)
    log = DecodeLog()
    found = set()  # (span_no, offset) of every frame handed out
    seen = [0] * len(spans)  # frames read per span: the next one's offset in it
    upright = Upright(stream)
    views = {clip_no: upright.crop(clip.box) for clip_no, clip, _ in jobs}  # each clip sees its crop box
    try:
        for span_no, frame in iter_spans(container, stream, spans, jobs[0][1].fps, log):
            clip_no, picks = owners[span_no]
            offset = seen[span_no]
            seen[span_no] += 1
            index = picks.get(offset)
            if index is None:  # a frame of a clip read whole that is not wanted
                continue
            try:
                pixels = convert(frame, views[clip_no])
            except (av.FFmpegError, ValueError) as exc:
                yield ("error", clip_no, f"cannot convert frame {index} ({exc})")
                continue
            yield ("frame", clip_no, index, pixels)
            found.add((span_no, offset))
    finally:
        container.close()
    missing: dict[int, list[int]] = {}
    for span_no, (clip_no, picks) in enumerate(owners):
        for offset, index in picks.items():
            if (span_no, offset) not in found:
                missing.setdefault(clip_no, []).append(index)
    why = f" ({log.first_problem})" if log.first_problem else ""
    for clip_no, indices in missing.items():
        yield ("error", clip_no, f"frames {indices} could not be decoded{why}")


def _frame_spans(jobs: list[tuple[int, ClipRef, list[int]]]) -> tuple[list, list, list]:
    """The spans to read; for each, the clip it serves and the wanted frames in it, as
    (clip_no, {offset in the span: frame index}); and the clips that cannot be timed at all.

    A clip whose frames are evenly spaced at its fps (it lasts `num_frames / fps`) gets a
    single-frame span per wanted frame, timed as the split stage timed its frames (`start_s` is the
    time of `start_frame`), so the reader can seek past the frames in between. Any other clip (a
    variable frame rate) is one span, read whole, and its wanted frames are picked by counting."""
    spans, owners, bad = [], [], []
    for clip_no, clip, indices in jobs:
        if not clip.fps > 0:  # no frame rate, no frame times: a bad manifest row, not a crash
            bad.append((clip_no, f"unknown frame rate ({clip.fps})"))
            continue
        if abs((clip.end_s - clip.start_s) * clip.fps - clip.num_frames) > 0.5:
            spans.append(clip.span)
            owners.append((clip_no, {index - clip.start_frame: index for index in indices}))
            continue
        for index in indices:
            start_s = clip.start_s + (index - clip.start_frame) / clip.fps
            spans.append((start_s, start_s + 1 / clip.fps, 1))
            owners.append((clip_no, {0: index}))
    return spans, owners, bad
