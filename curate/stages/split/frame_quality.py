"""Clean frames: each clip's picture box inside its black borders, its exposure and its sharpness.

The split stage decodes every frame once; a few of them per second (`split.quality_samples_per_s`)
also pass through `FrameQuality.push`, which keeps a compact summary of each (a few kB, whatever
the resolution), measured on the coded luma plane as it comes out of the decoder:

a copy box-averaged to a short side of about 256 pixels (the fixed working size that makes
sharpness resolution-independent) gives

- row and column luma profiles (mean and spread along each row / column), for the borders;
- per cell of a 32x18 grid: the sum of luma, the counts of clipped dark and bright pixels, and
  the Laplacian energy.

Once the clips are known, `clip_columns` reduces the samples inside each clip:

- **Borders.** A row (column) of the frame's edge is a border when it is dark (mean under
  `_DARK_MAX`), featureless (spread under `_FLAT_SPREAD`), static (its mean moves by under
  `_STATIC_RANGE` over the clip) and of the same colour as the edge row in nearly all the clip's
  samples; the bar is the run of such rows from the edge, and it only counts when the picture
  plainly starts right after it (`_EDGE_CONTRAST`). Blank samples (a black frame of a fade) vote
  neither way. A wide bar on one side needs a bar of at least half its size on the opposite side
  (letterbox and pillarbox bars come in pairs; a night sky or a dark floor comes alone), so only
  bars of up to `_LONE_BAR` of the side are cropped alone, and bars that would leave less than
  `_MIN_KEPT` of a side (a title on black, a lit face in the dark) are no bars. Each kept bar grows by a small margin
  (codecs smear the picture's edge into it), and the box is given in the clip's displayed grid
  (upright, square pixels: the `width`/`height` columns), with even offsets and sizes.
- **Exposure**, inside the box: mean brightness and the shares of pixels near black and near
  white, on the full 0-255 scale (limited-range video is stretched first).
- **Sharpness**, inside the box: per sample, the RMS Laplacian of the brightest-detailed quarter
  of the cells (a focused subject before a soft background is sharp), then the median over the
  samples. Samples come at least every `split.min_clip_s / 2`, so every clip holds two; a clip
  that still has none (a stream whose frame rate is far from its nominal one) takes the sample
  nearest its middle within the same shot; with none there either, its columns stay null (no
  crop, no rule fires).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import av
import cv2  # imported by the fork server, before the workers: not on the first sample of each
import numpy as np

from curate.picture import Box, Picture

WORK_SHORT_SIDE = 256  # the working copy's short side (about): sharpness is measured at this scale
CELLS = (32, 18)  # columns, rows of the cell grid over the working copy
_DARK_MAX = 64.0  # a border is darker than this (0-255, full range): black or dark grey
_FLAT_SPREAD = 4.0  # ... and its rows vary less than this along themselves (codec noise on black: ~1)
_STATIC_RANGE = 6.0  # ... and less than this over the clip
_COLOUR_TOLERANCE = 8.0  # ... all of one colour, the edge row's
_BAR_SHARE = 0.8  # share of the clip's (non-blank) samples in which a border row must look so
_EDGE_CONTRAST = 16.0  # the picture after a bar differs from the bar by this much (mean difference + spread)
_LONE_BAR = 0.02  # bars up to this share of the side are cropped without a matching opposite bar
_MARGIN = 0.005  # share of the side added to each bar, at least 2 pixels
# Bars leave at least this share of each side: a 9:16 phone picture in a 16:9 frame keeps 32%; a
# title on black, or a small bright subject in the dark, would keep less and is no picture in bars.
_MIN_KEPT = 0.3
_BLANK_SPREAD = 4.0  # a sample whose luma varies less than this is blank (black or one colour)
_DARK_LEVEL, _BRIGHT_LEVEL = 12.0, 243.0  # clipped pixels: at most / at least (full range)
_SHARP_QUANTILE = 0.75  # sharpness is the mean energy of the cells above this quantile
# The working copy holds levels less mid-grey: its sums of squares over a row or a column stay
# exact in float32 (under 2**24) whatever the brightness, where a bright flat row's spread would
# otherwise be a small difference of large, rounded squares.
_MID = 128.0

# Per-cell statistics, in this order on a sample's `cells` array.
_N, _SUM, _DARK, _BRIGHT, _LAP = range(5)


@dataclass
class _Sample:
    """The summary of one sampled frame (coded orientation and pixels)."""

    index: int  # frame index in decode order
    size: tuple[int, int]  # coded width, height of the plane
    row_mean: np.ndarray  # per row of the working copy
    row_spread: np.ndarray
    col_mean: np.ndarray
    col_spread: np.ndarray
    step: tuple[int, int]  # coded pixels per profile entry (x, y): the working copy's block size
    cells: np.ndarray  # (5, rows, cols) float32 sums, see _N ... _LAP
    cell_px: tuple[int, int]  # coded pixels per cell (x, y)
    spread: float  # the luma's standard deviation over the frame (blank below _BLANK_SPREAD)


class FrameQuality:
    """Samples frames as split decodes them, and reduces the samples to each clip's columns."""

    def __init__(self, fps: float, samples_per_s: float, min_clip_s: float):
        fps = fps if fps > 0 else 25.0
        # At least two samples fall in the shortest clip, whatever the rate asked for.
        self.step = max(1, min(round(fps / samples_per_s), math.floor(min_clip_s * fps / 2)))
        self.count = 0  # frames pushed so far: the index of the next one
        self.samples: list[_Sample] = []
        self.picture: Picture | None = None
        self._scratch = Scratch()

    def push(self, frame: av.VideoFrame, plane: np.ndarray, picture: Picture) -> None:
        """Take the next decoded frame (its luma plane, 0-255); a few of them are measured."""
        index, self.count = self.count, self.count + 1
        if index % self.step != self.step // 2:  # the middle of each interval: no clip edge bias
            return
        self.picture = self.picture or picture
        full_range = picture.full_range or frame.format.is_rgb  # luma of RGB formats is full range already
        self.samples.append(measure(index, plane, full_range, self._scratch))

    def clip_columns(self, spans: Sequence[tuple[int, int]], shots: Sequence[tuple[int, int]]) -> list[dict]:
        """Per clip span [start, end): its crop box and exposure and sharpness columns; `shots` are
        the video's shots (for a clip with no sample of its own)."""
        return [self._clip(start, end, shots) for start, end in spans]

    def _clip(self, start: int, end: int, shots: Sequence[tuple[int, int]]) -> dict:
        inside = [s for s in self.samples if start <= s.index < end] or self._nearest(start, end, shots)
        if not inside or self.picture is None:
            return {}
        inside = [s for s in inside if s.size == inside[0].size]  # a stream that changes size midway
        coded = border_box(inside)
        display = self.picture.display_box(coded, *inside[0].size)
        return {**display.columns(), **exposure_and_sharpness(inside, coded)}

    def _nearest(self, start: int, end: int, shots: Sequence[tuple[int, int]]) -> list[_Sample]:
        shot = next(((a, b) for a, b in shots if a <= start < b), (start, end))
        near = [s for s in self.samples if shot[0] <= s.index < shot[1]]
        middle = (start + end) / 2
        return [min(near, key=lambda s: abs(s.index - middle))] if near else []


class Scratch:
    """Float32 arrays kept from one sample to the next. A fresh array the size of a frame costs
    more than the pass that fills it (the kernel hands out and zeroes its pages anew every time)."""

    def __init__(self):
        self._arrays: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = (name, shape)
        if key not in self._arrays:
            self._arrays[key] = np.empty(shape, np.float32)
        return self._arrays[key]


def measure(index: int, plane: np.ndarray, full_range: bool, scratch: Scratch | None = None) -> _Sample:
    """Summarise one luma plane (coded pixels, 0-255)."""
    scratch = scratch or Scratch()
    height, width = plane.shape
    work, k = _box_average(plane, scratch)
    # Limited-range luma (16-235) is stretched to 0-255, so that levels mean the same for every
    # video. The stretch is linear: it is applied to the sums, not to every pixel.
    stretch = _Stretch(1.0, _MID) if full_range else _Stretch(255.0 / 219.0, (_MID - 16.0) * 255.0 / 219.0)
    row_sums, row_squares = cv2.reduce(work, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).ravel(), np.einsum("ij,ij->i", work, work)
    col_sums, col_squares = cv2.reduce(work, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32F).ravel(), np.einsum("ij,ij->j", work, work)
    row_mean, row_spread = stretch.mean_spread(row_sums, row_squares, work.shape[1])
    col_mean, col_spread = stretch.mean_spread(col_sums, col_squares, work.shape[0])
    _, spread = stretch.mean_spread(row_sums.sum(dtype=np.float64), row_squares.sum(dtype=np.float64), work.size)
    cells, cell_px = _cell_sums(work, stretch)  # last: it overwrites the working copy
    return _Sample(
        index, (width, height), row_mean, row_spread, col_mean, col_spread, (k, k),
        cells, (cell_px[0] * k, cell_px[1] * k), float(spread),
    )  # fmt: skip


@dataclass(frozen=True)
class _Stretch:
    """The linear map from the working copy's levels to the full 0-255 scale: gain * level + offset."""

    gain: float
    offset: float

    def level(self, full_scale: float) -> float:
        """The working copy's level that maps to `full_scale`."""
        return (full_scale - self.offset) / self.gain

    def mean_spread(self, sums, squares, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Full-scale mean and standard deviation (float32) from the sums of levels and of their
        squares over `count` pixels."""
        mean = np.asarray(sums, np.float64) / count
        spread = np.sqrt(np.maximum(np.asarray(squares, np.float64) / count - mean * mean, 0.0))
        return (self.gain * mean + self.offset).astype(np.float32), (self.gain * spread).astype(np.float32)


def _box_average(plane: np.ndarray, scratch: Scratch) -> tuple[np.ndarray, int]:
    """The plane's levels less _MID (float32), averaged over k x k blocks, k chosen so the short
    side is about WORK_SHORT_SIDE (never enlarged). Area resampling by a whole factor is the exact
    block mean."""
    height, width = plane.shape
    k = max(1, min(height, width) // WORK_SHORT_SIDE)
    rows, cols = height // k, width // k
    whole = scratch("plane", (rows * k, cols * k))
    cv2.subtract(plane[: rows * k, : cols * k], _MID, dst=whole, dtype=cv2.CV_32F)
    if k == 1:
        return whole, k
    return cv2.resize(whole, (cols, rows), dst=scratch("work", (rows, cols)), interpolation=cv2.INTER_AREA), k


def _cell_sums(work: np.ndarray, stretch: _Stretch) -> tuple[np.ndarray, tuple[int, int]]:
    """Per cell of the CELLS grid, on the full scale: pixel count, luma sum, clipped dark and
    bright counts, and the sum of the squared Laplacian (4-neighbour, zero on the cells' outer
    ring). Overwrites `work` with the Laplacian: one frame-sized array less to keep in the cache."""
    rows, cols = min(CELLS[1], work.shape[0]), min(CELLS[0], work.shape[1])
    cell_h, cell_w = work.shape[0] // rows, work.shape[1] // cols
    work = work[: rows * cell_h, : cols * cell_w]  # the cells' whole rows and columns only (a view)

    def sums(values: np.ndarray) -> np.ndarray:  # per cell: over its rows, then over its columns
        # Counts of up to cell_h pixels fit uint16; numpy sums float32 fastest in float32.
        per_row = values.reshape(rows, cell_h, values.shape[1]).sum(axis=1, dtype=np.uint16 if values.dtype == bool else None)
        return per_row.reshape(rows, cols, cell_w).sum(axis=2, dtype=np.float64)

    area = float(cell_h * cell_w)
    count = np.full((rows, cols), area)
    # Clipped pixels: at most _DARK_LEVEL, at least _BRIGHT_LEVEL on the full scale.
    dark = sums(work <= np.float32(stretch.level(_DARK_LEVEL)))
    bright = sums(work >= np.float32(stretch.level(_BRIGHT_LEVEL)))
    luma_sum = stretch.gain * sums(work) + stretch.offset * area
    laplacian = cv2.Laplacian(work, cv2.CV_32F, dst=work, ksize=1)  # the 4-neighbour kernel, in place
    laplacian[[0, -1], :] = 0.0
    laplacian[:, [0, -1]] = 0.0
    cv2.multiply(laplacian, laplacian, dst=laplacian)
    energy = stretch.gain**2 * sums(laplacian)  # the offset cancels in the Laplacian
    return np.stack([count, luma_sum, dark, bright, energy]).astype(np.float32), (cell_w, cell_h)


# -- borders --------------------------------------------------------------------------------------


def border_box(samples: list[_Sample]) -> Box:
    """The picture's box in coded pixels (the whole frame when no border is found)."""
    width, height = samples[0].size
    shown = [s for s in samples if s.spread >= _BLANK_SPREAD]  # blank frames say nothing about bars
    if not shown:
        return Box(0, 0, width, height)
    step_x, step_y = shown[0].step
    rows = _pair(np.stack([s.row_mean for s in shown]), np.stack([s.row_spread for s in shown]), step_y, height)
    cols = _pair(np.stack([s.col_mean for s in shown]), np.stack([s.col_spread for s in shown]), step_x, width)
    (top, bottom), (left, right) = rows, cols
    return Box(left, top, width - left - right, height - top - bottom)


def _pair(means: np.ndarray, spreads: np.ndarray, step: int, side: int) -> tuple[int, int]:
    """The two bars (coded pixels, margin included) of one axis, from (samples, positions) profiles."""
    first = _bar(means, spreads) * step
    last = _bar(means[:, ::-1], spreads[:, ::-1]) * step
    lone = _LONE_BAR * side
    keep_first = first <= lone or last >= first / 2
    keep_last = last <= lone or first >= last / 2
    margin = max(2, math.ceil(_MARGIN * side))
    first, last = (first + margin if first and keep_first else 0), (last + margin if last and keep_last else 0)
    if side - first - last < _MIN_KEPT * side:  # too little left between them: not a border
        return 0, 0
    return first, last


def _bar(means: np.ndarray, spreads: np.ndarray) -> int:
    """How many profile entries from the start (index 0) are border."""
    like = (spreads <= _FLAT_SPREAD) & (means <= _DARK_MAX)
    colour = float(np.median(means[:, 0]))
    # Over the samples where each row looks like a border: how much it moves, and its mean colour.
    static = np.where(like, means, -np.inf).max(0) - np.where(like, means, np.inf).min(0) <= _STATIC_RANGE
    held_colour = np.where(like, means, 0).sum(0) / np.maximum(like.sum(0), 1)
    same = np.abs(held_colour - colour) <= _COLOUR_TOLERANCE
    border = (like.mean(0) >= _BAR_SHARE) & static & same
    count = int(np.argmin(border)) if not border.all() else len(border)
    if count == 0 or count == len(border):
        return 0
    after = slice(count, count + 3)  # the picture must plainly start here (a vignette fades in)
    contrast = np.abs(means[:, after] - colour) + spreads[:, after]
    return count if float(contrast.max()) >= _EDGE_CONTRAST else 0


# -- exposure and sharpness -----------------------------------------------------------------------


def exposure_and_sharpness(samples: list[_Sample], box: Box) -> dict:
    """The clip's `brightness`, `dark_frac`, `bright_frac` (0-1) and `sharpness` inside `box`."""
    inside = _cells_inside(samples[0], box)
    cells = np.stack([s.cells[:, inside] for s in samples]).astype(np.float64)  # (samples, 5, cells)
    count = cells[:, _N].sum()
    energy = cells[:, _LAP] / np.maximum(cells[:, _N], 1)  # mean squared Laplacian per cell
    top = np.quantile(energy, _SHARP_QUANTILE, axis=1, keepdims=True)
    sharp = [math.sqrt(float(e[e >= t].mean())) for e, t in zip(energy, top[:, 0], strict=True)]
    return {
        "brightness": float(cells[:, _SUM].sum() / count / 255.0),
        "dark_frac": float(cells[:, _DARK].sum() / count),
        "bright_frac": float(cells[:, _BRIGHT].sum() / count),
        "sharpness": float(np.median(sharp)),
    }


def _cells_inside(sample: _Sample, box: Box) -> np.ndarray:
    """Boolean mask (rows, cols) of the cells wholly inside `box`; of those whose centre is in it
    when none is (a tiny picture), and of all when not even that."""
    rows, cols = sample.cells.shape[1:]
    cell_w, cell_h = sample.cell_px
    x0, y0 = np.arange(cols) * cell_w, np.arange(rows) * cell_h
    whole = np.outer((y0 >= box.y) & (y0 + cell_h <= box.y + box.height), (x0 >= box.x) & (x0 + cell_w <= box.x + box.width))
    if whole.any():
        return whole
    cy, cx = y0 + cell_h / 2, x0 + cell_w / 2
    centre = np.outer((cy >= box.y) & (cy < box.y + box.height), (cx >= box.x) & (cx < box.x + box.width))
    return centre if centre.any() else np.ones((rows, cols), bool)
