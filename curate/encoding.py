"""Re-encoding a clip's frames into a small, self-contained H.264 mp4 held in memory.

The pack stage streams a clip's decoded frames through `ClipEncoder`: each frame is scaled (and
centre-cropped) by FFmpeg straight into yuv420p, and encoded with libx264 at a fixed thread
count, so the same frames and settings give the same bytes on every run. `output_frames` says
which source frames make the clip at another frame rate. Plain functions and one small class,
with no knowledge of manifests or shards.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter


def output_size(width: int, height: int, short_side: int, crop: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(scaled width, scaled height, output width, output height) for a width x height source.

    Without `crop` the short side becomes `short_side` (0: the source's), aspect kept. With
    `crop` = (width, height) the frame is scaled to just cover it, then centre-cropped to it.
    Every size is even, as yuv420p needs."""
    if crop:
        scale = max(crop[0] / width, crop[1] / height)
        scaled = (_even(max(width * scale, crop[0])), _even(max(height * scale, crop[1])))
        return (*scaled, _even(crop[0]), _even(crop[1]))
    scale = short_side / min(width, height) if short_side else 1.0
    scaled = (_even(width * scale), _even(height * scale))
    return (*scaled, *scaled)


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def output_frames(num_frames: int, source_fps: float, fps: float) -> list[int]:
    """Offsets (from the clip's first frame) of the source frames that make the clip at `fps`:
    every frame when `fps` is 0 or the source's, else the frame shown at each output frame's
    time (frames dropped to go slower, repeated to go faster)."""
    if not fps or not source_fps or math.isclose(fps, source_fps, rel_tol=1e-6):
        return list(range(num_frames))
    count = max(1, math.floor(num_frames * fps / source_fps + 1e-6))
    return [min(num_frames - 1, math.floor(j * source_fps / fps + 1e-6)) for j in range(count)]


class ClipEncoder:
    """Encode frames of one clip into an mp4 (H.264, yuv420p, no audio) in memory."""

    def __init__(self, source_size: tuple[int, int], fps: float, short_side: int, crop: tuple[int, int] | None,
                 crf: int, preset: str, threads: int):  # fmt: skip
        self.scaled_w, self.scaled_h, self.width, self.height = output_size(*source_size, short_side, crop)
        self.buffer = io.BytesIO()
        # bitexact: no library version strings in the file, so the bytes depend only on the frames
        # and settings.
        self.container = av.open(self.buffer, "w", format="mp4", options={"fflags": "+bitexact"})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.frame_time_base = 1 / rate
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.options = {"crf": str(crf), "preset": preset}
        self.stream.codec_context.thread_count = threads  # fixed: x264's output depends on it
        self.reformatter = VideoReformatter()
        self.num_frames = 0

    def add(self, frame: av.VideoFrame) -> None:
        """Scale, crop and encode the next frame of the clip."""
        scaled = self.reformatter.reformat(
            frame, width=self.scaled_w, height=self.scaled_h, format="yuv420p", interpolation="BICUBIC", threads=1
        )
        if (self.scaled_w, self.scaled_h) != (self.width, self.height):
            scaled = _centre_crop(scaled, self.width, self.height)
        # The frame's number, in units of 1 / fps (a fixed value: the stream's own time base is
        # changed by the muxer when it writes the header; PyAV rescales packets to it).
        scaled.pts = self.num_frames
        scaled.time_base = self.frame_time_base
        for packet in self.stream.encode(scaled):
            self.container.mux(packet)
        self.num_frames += 1

    def finish(self) -> bytes:
        """Flush the encoder, close the file, and return its bytes."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        return self.buffer.getvalue()

    def abort(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, ValueError):
            pass


def _centre_crop(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """The centre width x height of a yuv420p frame (offsets even, so chroma stays aligned)."""
    full_w, full_h = frame.width, frame.height
    flat = frame.to_ndarray().reshape(-1)  # Y, then U and V at half resolution, each flattened
    luma_size, chroma_size = full_w * full_h, (full_w // 2) * (full_h // 2)
    y = flat[:luma_size].reshape(full_h, full_w)
    u = flat[luma_size : luma_size + chroma_size].reshape(full_h // 2, full_w // 2)
    v = flat[luma_size + chroma_size :].reshape(full_h // 2, full_w // 2)
    top, left = (full_h - height) // 4 * 2, (full_w - width) // 4 * 2
    parts = [
        y[top : top + height, left : left + width],
        u[top // 2 : (top + height) // 2, left // 2 : (left + width) // 2],
        v[top // 2 : (top + height) // 2, left // 2 : (left + width) // 2],
    ]
    stacked = np.concatenate([part.reshape(-1) for part in parts]).reshape(-1, width)
    return av.VideoFrame.from_ndarray(stacked, format="yuv420p")
