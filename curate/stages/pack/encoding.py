"""Re-encoding a clip's frames into a small, self-contained H.264 mp4 held in memory.

The pack stage streams a clip's decoded frames, each with its timestamp, through `ClipEncoder`.
One FFmpeg filter graph per clip makes each frame what a player shows of the clip's picture: cut
to its crop box (black borders off, first, so nothing later works on them), deinterlaced when the
stream is interlaced (bwdif), turned upright (the display matrix), scaled to square pixels at the
output size and converted to BT.709 limited-range YUV (the matrix and range the encoder tags),
then centre-cropped. Frames are picked by their timestamps for a constant output rate, so a
variable-frame-rate clip plays in real time. Nothing is ever scaled up.

The same frames and settings give the same bytes on every run: x264 runs with a fixed thread
count and without its AVX-512 code (which reads memory it never wrote: the same frames came out
as other bytes from run to run, while every other instruction set gives identical bytes), and
frames reach it without the decoder's picture types (libx264 would follow them).
Plain functions and one small class, with no knowledge of manifests or shards.
"""

from __future__ import annotations

import io
import math
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import av
from av.video.frame import PictureType

from curate.picture import Box, Picture
from curate.x264 import repeatable

_BT709 = 1  # AVColorSpace, AVColorPrimaries and AVColorTransferCharacteristic all number BT.709 1
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


def output_size(width: int, height: int, short_side: int, crop: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(scaled width, scaled height, output width, output height) for a picture shown at
    `width` x `height`. Never larger than the picture: a smaller one keeps its size.

    Without `crop` the short side becomes `short_side` (0: the picture's), aspect kept. With
    `crop` = (width, height) the picture is scaled to just cover it, then centre-cropped to it; a
    picture too small to cover it gives the largest crop of that shape it holds. Every size is
    even, as yuv420p needs."""
    if crop:
        scale = max(crop[0] / width, crop[1] / height)
        if scale > 1:  # too small: the crop's shape, as large as the picture holds
            fit = min(width / crop[0], height / crop[1])
            return (*_fit(width, height, 1.0), _even_within(crop[0] * fit, width), _even_within(crop[1] * fit, height))
        return (*_fit(width, height, scale), _even(crop[0]), _even(crop[1]))
    scale = min(1.0, short_side / min(width, height)) if short_side else 1.0
    scaled = _fit(width, height, scale)
    return (*scaled, *scaled)


def _fit(width: int, height: int, scale: float) -> tuple[int, int]:
    return _even_within(width * scale, width), _even_within(height * scale, height)


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def _even_within(value: float, limit: int) -> int:
    """`value` rounded to an even number, at most `limit` (rounded down to even)."""
    return max(2, min(_even(value), limit // 2 * 2))


class FramePicker:
    """Which source frames make a constant-rate clip, from their timestamps: output frame j (at
    `j / fps` seconds into the clip) shows the newest source frame whose time has come. Frames
    are fed in order; each one's count of copies (0: dropped, 2+: repeated) is known once the
    next frame's time, or the end of the clip, is."""

    def __init__(self, duration_s: float, fps: float, source_fps: float):
        self.fps = fps
        self.num_frames = max(1, math.floor(duration_s * fps + 1e-6))
        # Timestamps jitter (milliseconds in Matroska): a frame a tenth of a frame late still
        # counts as on time.
        self.tolerance_s = 0.1 / (source_fps or fps)
        self.next_output = 0

    def copies_before(self, time_s: float) -> int:
        """Output frames due before a source frame at `time_s` (from the clip's start) arrives:
        the copies of the frame before it."""
        start = self.next_output
        while self.next_output < self.num_frames and self.next_output / self.fps + self.tolerance_s < time_s:
            self.next_output += 1
        return self.next_output - start

    def copies_left(self) -> int:
        """Output frames still due at the end of the clip: the copies of its last frame."""
        left = self.num_frames - self.next_output
        self.next_output = self.num_frames
        return left


@dataclass(frozen=True)
class Encoded:
    """A finished clip: its mp4 bytes and what they hold."""

    mp4: bytes
    width: int
    height: int
    num_frames: int


class ClipEncoder:
    """Encode frames of one clip into an mp4 (H.264, yuv420p BT.709 limited range, no audio) in
    memory. Feed each source frame with `add(frame, time_s)`, then call `finish()`."""

    def __init__(self, picture: Picture, coded_size: tuple[int, int], duration_s: float, fps: float, source_fps: float,
                 short_side: int, crop: tuple[int, int] | None, crf: int, preset: str, threads: int,
                 box: Box | None = None):  # fmt: skip
        self.picture = picture
        self.box = box  # the picture inside black borders, in coded pixels at even offsets (None: the whole frame)
        display = picture.display_size(*(box[2:] if box else coded_size))
        self.scaled_w, self.scaled_h, self.width, self.height = output_size(*display, short_side, crop)
        self.picker = FramePicker(duration_s, fps, source_fps)
        self.buffer = io.BytesIO()
        # bitexact: no library version strings in the file, so the bytes depend only on the frames
        # and settings.
        self.container = av.open(self.buffer, "w", format="mp4", options={"fflags": "+bitexact"})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.frame_time_base = 1 / rate
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.options = repeatable({"crf": str(crf), "preset": preset})
        self.stream.codec_context.thread_count = threads  # fixed: x264's output depends on it
        context = self.stream.codec_context
        context.colorspace, context.color_primaries, context.color_trc = _BT709, _BT709, _BT709
        context.color_range = _LIMITED_RANGE
        self.graph: av.filter.Graph | None = None
        self.held: av.VideoFrame | None = None  # the newest source frame, its copies not known yet
        self.copies: deque[int] = deque()  # copies of each frame pushed into the graph, in order
        self.pushed = 0
        self.num_frames = 0  # frames encoded

    def add(self, frame: av.VideoFrame, time_s: float) -> None:
        """Take the clip's next source frame, shown from `time_s` seconds after the clip's start."""
        if self.held is not None:
            self._push(self.held, self.picker.copies_before(time_s))
        self.held = frame

    def finish(self) -> Encoded:
        """Encode what is left, flush the encoder, close the file, and return the clip."""
        if self.held is not None:
            self._push(self.held, self.picker.copies_left())
            self.held = None
        if self.graph is not None:
            self.graph.push(None)  # end of stream: bwdif gives back the frame it held
            self._drain()
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        return Encoded(self.buffer.getvalue(), self.width, self.height, self.num_frames)

    def abort(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, ValueError):
            pass

    def _push(self, frame: av.VideoFrame, copies: int) -> None:
        """Filter `frame` and encode it `copies` times. A frame that is not shown is filtered
        anyway when deinterlacing, which needs every neighbour of the frames that are."""
        if copies == 0 and not self.picture.interlaced:
            return
        if self.graph is None:
            scaled, output = (self.scaled_w, self.scaled_h), (self.width, self.height)
            self.graph = _filter_graph(frame, self.frame_time_base, self.picture, scaled, output, self.box)
        frame.pts = self.pushed  # the graph wants increasing timestamps; ours are set on output
        frame.time_base = self.frame_time_base
        self.pushed += 1
        self.copies.append(copies)
        self.graph.push(frame)
        self._drain()

    def _drain(self) -> None:
        """Encode every frame the graph has ready."""
        while True:
            try:
                filtered = self.graph.vpull()
            except (av.BlockingIOError, av.EOFError):
                return
            filtered.pict_type = PictureType.NONE  # libx264 would force the decoder's frame types
            for _ in range(self.copies.popleft()):
                # The frame's number, in units of 1 / fps (a fixed value: the stream's own time
                # base is changed by the muxer when it writes the header; PyAV rescales packets).
                filtered.pts = self.num_frames
                filtered.time_base = self.frame_time_base
                for packet in self.stream.encode(filtered):
                    self.container.mux(packet)
                self.num_frames += 1


def _filter_graph(frame: av.VideoFrame, time_base: Fraction, picture: Picture, scaled: tuple[int, int],
                  output: tuple[int, int], box: Box | None = None) -> av.filter.Graph:  # fmt: skip
    """buffer -> [crop box] -> [bwdif] -> [turn upright] -> scale + colours -> [centre crop] -> yuv420p -> sink."""
    graph = av.filter.Graph()
    graph.threads = 1  # the workers already keep the cores busy
    chain = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name, time_base=time_base)]
    if box is not None:  # even offsets: chroma and the interlaced fields stay aligned
        chain.append(graph.add("crop", f"w={box.width}:h={box.height}:x={box.x}:y={box.y}:exact=1"))
    if picture.interlaced:
        chain.append(graph.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced"))
    chain.extend(graph.add(name, args) for name, args in _turns(picture.quarter_turns))
    range_in = "pc" if picture.full_range else "tv"
    # accurate_rnd: without it, converting the matrix or the range darkens every colour by 1-3 levels.
    chain.append(graph.add(
        "scale", f"w={scaled[0]}:h={scaled[1]}:flags=bicubic+accurate_rnd:in_color_matrix={picture.matrix}:out_color_matrix=bt709:"
        f"in_range={range_in}:out_range=tv",
    ))  # fmt: skip
    if scaled != output:  # centred, at even offsets so chroma stays aligned
        left, top = (scaled[0] - output[0]) // 4 * 2, (scaled[1] - output[1]) // 4 * 2
        chain.append(graph.add("crop", f"w={output[0]}:h={output[1]}:x={left}:y={top}"))
    chain.append(graph.add("format", "yuv420p"))
    chain.append(graph.add("buffersink"))
    graph.link_nodes(*chain)
    graph.configure()
    return graph


def _turns(quarter_turns: int) -> list[tuple[str, str]]:
    """The filters that turn a frame counter-clockwise by `quarter_turns` quarter turns."""
    return {0: [], 1: [("transpose", "cclock")], 2: [("hflip", ""), ("vflip", "")], 3: [("transpose", "clock")]}[quarter_turns % 4]
