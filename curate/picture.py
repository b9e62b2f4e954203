"""How a decoded frame is meant to be seen: turned upright, with square pixels, in the right colours.

Containers and codecs describe the picture apart from its pixels, and players honour all of it:

- a display matrix (phones record sideways and say how to turn the picture),
- a sample aspect ratio (anamorphic DVD and broadcast video: 720x576 pixels shown at 16:9),
- a colour matrix (BT.601 or BT.709; untagged video is BT.601 below HD and BT.709 from HD up,
  as players assume) and a range (limited 16-235, or full 0-255 in MJPEG and many phones),
- interlacing (two fields of different instants woven into one frame).

Every stage that looks at pixels goes through here, so a model, a preview and a packed clip see
the picture a player shows. `Upright` converts frames to RGB for models and previews (FFmpeg
scales and converts the colours in one call; numpy turns the small result); the pack stage's
encoder builds its FFmpeg filter graph from the same `Picture` (`curate.stages.pack.encoding`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

# FFmpeg's AVColorSpace codes -> the names its scale filter takes; codes not listed are
# unspecified (2) or exotic, and get the players' guess.
_MATRIX_BY_CODE = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_REFORMAT_MATRIX = {
    "bt709": Colorspace.ITU709,
    "bt601": Colorspace.ITU601,
    "fcc": Colorspace.FCC,
    "smpte240m": Colorspace.SMPTE240M,
    "bt2020": Colorspace.BT2020,
}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
_PROGRESSIVE = 1  # AVFieldOrder: 0 unknown, 1 progressive, 2-5 the interlaced orders


class Box(NamedTuple):
    """A rectangle of pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    def columns(self) -> dict:
        """As the clips.parquet crop columns."""
        return {"crop_x": self.x, "crop_y": self.y, "crop_width": self.width, "crop_height": self.height}


@dataclass(frozen=True)
class Picture:
    """What a stream says about showing its frames."""

    rotation: int  # degrees to turn the coded frame counter-clockwise to show it (0, 90, 180, 270), as ffprobe reports
    pixel_aspect: Fraction  # a pixel's width over its height (1: square pixels)
    matrix: str  # YUV colour matrix: bt601, bt709, fcc, smpte240m or bt2020 (irrelevant for RGB formats)
    full_range: bool  # YUV values span 0-255 instead of 16-235
    interlaced: bool

    @property
    def quarter_turns(self) -> int:
        """Counter-clockwise quarter turns, as `np.rot90` counts them."""
        return self.rotation // 90

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        """The size a player shows a `width` x `height` coded frame at: square pixels, upright."""
        shown_width = max(1, round(width * self.pixel_aspect))
        return (height, shown_width) if self.quarter_turns % 2 else (shown_width, height)

    def display_box(self, box: Box, width: int, height: int) -> Box:
        """`box`, a rectangle of a `width` x `height` coded frame, where a player shows it (in the
        grid of `display_size`), shrunk to even offsets and sizes; the whole frame stays whole."""
        shown_w, shown_h = self.display_size(width, height)
        if box == Box(0, 0, width, height):
            return Box(0, 0, shown_w, shown_h)
        pa = float(self.pixel_aspect)
        x0, x1 = box.x * pa, (box.x + box.width) * pa
        y0, y1 = box.y, box.y + box.height
        turn = self.quarter_turns % 4
        wide = width * pa  # the squared coded width, before the turn
        if turn == 1:
            x0, y0, x1, y1 = y0, wide - x1, y1, wide - x0
        elif turn == 2:
            x0, y0, x1, y1 = wide - x1, height - y1, wide - x0, height - y0
        elif turn == 3:
            x0, y0, x1, y1 = height - y1, x0, height - y0, x1
        left, top = _even_up(x0), _even_up(y0)
        right, bottom = _even_down(min(x1, shown_w)), _even_down(min(y1, shown_h))
        return Box(left, top, max(2, right - left), max(2, bottom - top))

    def coded_box(self, box: Box, width: int, height: int, even: bool = False) -> Box:
        """The rectangle of a `width` x `height` coded frame that a player shows as `box` (a
        `display_box`), rounded inwards (to even offsets and sizes with `even`, as chroma needs)."""
        pa = float(self.pixel_aspect)
        wide = width * pa
        x0, y0, x1, y1 = box.x, box.y, box.x + box.width, box.y + box.height
        turn = self.quarter_turns % 4
        if turn == 1:
            x0, y0, x1, y1 = wide - y1, x0, wide - y0, x1
        elif turn == 2:
            x0, y0, x1, y1 = wide - x1, height - y1, wide - x0, height - y0
        elif turn == 3:
            x0, y0, x1, y1 = y0, height - x1, y1, height - x0
        x0, x1 = x0 / pa, x1 / pa
        up, down = (_even_up, _even_down) if even else (_up, _down)
        left, top = max(0, up(x0)), max(0, up(y0))
        right, bottom = min(width, down(x1)), min(height, down(y1))
        if even:
            right, bottom = min(right, width // 2 * 2), min(bottom, height // 2 * 2)
        return Box(left, top, max(1, right - left), max(1, bottom - top))


def _up(value: float) -> int:
    return math.ceil(value - 1e-6)


def _down(value: float) -> int:
    return math.floor(value + 1e-6)


def _even_up(value: float) -> int:
    return _up(value / 2) * 2


def _even_down(value: float) -> int:
    return _down(value / 2) * 2


def picture_of(stream, frame: av.VideoFrame) -> Picture:
    """The picture description of `stream`, read from one of its decoded frames (the display
    matrix and the colour tags travel with each frame; the pixel shape and field order with the
    stream)."""
    code = frame.colorspace
    matrix = _MATRIX_BY_CODE.get(code) or ("bt709" if frame.width >= 1280 or frame.height > 576 else "bt601")
    full_range = frame.color_range == _FULL_RANGE or frame.format.name.startswith("yuvj")
    context = stream.codec_context
    interlaced = bool(frame.interlaced_frame) or (context is not None and context.field_order > _PROGRESSIVE)
    return Picture(_rotation(frame), _pixel_aspect(stream), matrix, full_range, interlaced)


def _rotation(frame: av.VideoFrame) -> int:
    """The display matrix's rotation as 0, 90, 180 or 270 (a matrix may say -90 or 89.99)."""
    try:
        degrees = frame.rotation
    except (ValueError, TypeError):  # a malformed display matrix: show the frame as coded
        return 0
    return int(round((degrees or 0) / 90.0)) % 4 * 90


def _pixel_aspect(stream) -> Fraction:
    """The stream's sample aspect ratio; 1 when unset, 0/1 or absurd (a broken header)."""
    ratio = stream.sample_aspect_ratio or (stream.codec_context.sample_aspect_ratio if stream.codec_context else None)
    if not ratio or not (Fraction(1, 4) <= ratio <= 4):
        return Fraction(1)
    return Fraction(ratio)


class Upright:
    """Converts the frames of one stream to upright, square-pixel RGB (uint8, height x width x 3)
    at a requested display size. One per stream: it keeps FFmpeg's scaler between frames, which
    halves the cost of each conversion, and reads the stream's picture description once."""

    def __init__(self, stream):
        self.stream = stream
        self.picture: Picture | None = None
        self.reformatter = VideoReformatter()

    def picture_of(self, frame: av.VideoFrame) -> Picture:
        if self.picture is None:
            self.picture = picture_of(self.stream, frame)
        return self.picture

    def display_size(self, frame: av.VideoFrame) -> tuple[int, int]:
        """The frame's size as a player shows it."""
        return self.picture_of(frame).display_size(frame.width, frame.height)

    def rgb(self, frame: av.VideoFrame, width: int, height: int, interpolation: str = "BICUBIC") -> np.ndarray:
        """The frame as RGB at `width` x `height` *as shown*: FFmpeg scales the coded frame to
        the turned size and converts its colours with the stream's matrix and range (threads=1:
        frames are small, and the workers already keep the cores busy); numpy turns it upright."""
        picture = self.picture_of(frame)
        coded_width, coded_height = (height, width) if picture.quarter_turns % 2 else (width, height)
        rgb = self.reformatter.reformat(
            frame,
            width=coded_width,
            height=coded_height,
            format="rgb24",
            src_colorspace=_REFORMAT_MATRIX[picture.matrix],
            src_color_range=ColorRange.JPEG if picture.full_range else ColorRange.MPEG,
            dst_color_range=ColorRange.JPEG,
            interpolation=interpolation,
            threads=1,
        ).to_ndarray()
        if picture.quarter_turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, picture.quarter_turns))
        return rgb

    def crop(self, box: tuple[int, int, int, int] | None) -> Upright | CroppedUpright:
        """This converter showing only `box` (x, y, width, height) of each frame, in display
        pixels (a clip's crop box, `ClipRef.box`), or itself when `box` is None."""
        return self if box is None else CroppedUpright(self, Box(*box))


class CroppedUpright:
    """An `Upright` that shows only a box of the picture: its display size is the box's, and
    `rgb` converts the whole picture at the scale that gives the box the requested size (one
    FFmpeg call, as for the whole frame), then cuts the box out. The stream's `Upright` (and its
    scaler) is shared by all the clips of a video."""

    def __init__(self, upright: Upright, box: Box):
        self.upright = upright
        self.box = box

    def picture_of(self, frame: av.VideoFrame) -> Picture:
        return self.upright.picture_of(frame)

    def display_size(self, frame: av.VideoFrame) -> tuple[int, int]:
        return self._box(frame)[2:]

    def rgb(self, frame: av.VideoFrame, width: int, height: int, interpolation: str = "BICUBIC") -> np.ndarray:
        shown_w, shown_h = self.upright.display_size(frame)
        x, y, box_w, box_h = self._box(frame)
        scale_x, scale_y = width / box_w, height / box_h
        full_w, full_h = max(width, round(shown_w * scale_x)), max(height, round(shown_h * scale_y))
        rgb = self.upright.rgb(frame, full_w, full_h, interpolation)
        left, top = min(round(x * scale_x), full_w - width), min(round(y * scale_y), full_h - height)
        return np.ascontiguousarray(rgb[top : top + height, left : left + width])

    def _box(self, frame: av.VideoFrame) -> Box:
        """The box, inside the frame as shown (a box from a larger frame size is cut to fit)."""
        shown_w, shown_h = self.upright.display_size(frame)
        x, y = min(self.box.x, shown_w - 2), min(self.box.y, shown_h - 2)
        return Box(x, y, max(2, min(self.box.width, shown_w - x)), max(2, min(self.box.height, shown_h - y)))
