"""Motion maths: how much a clip moves, from codec motion vectors or, failing them, optical flow.

Every speed is in frame WIDTHS PER SECOND (0.1: something crosses a tenth of the frame each
second), so scores do not depend on a video's resolution or frame rate.

Both sources give a motion field per frame pair, which `MotionField` reduces the same way: it
averages the displacement VECTORS over the cells of a 12x6 grid and over half-second windows, and
only then takes their length. Coherent motion (a pan, a walking person, a moving hand) keeps its
full size under this averaging, because its vectors point the same way; the random vectors that
sensor and coding noise produce on a still picture partly cancel. Whether anything moves at all
is judged from each window's FASTEST cell, not from the mean: a small person walking across a
still scene adds as little to the frame's mean as noise does, but moves its own cells far faster.

- `VectorMotion`: the motion vectors the decoder exports for P-frames (nearly free: the encoder
  already did the motion search).
- `FlowMotion`: OpenCV Farneback flow on small luma images a few times a second, for streams that
  carry no vectors (intra-only codecs, all-intra H.264, codecs FFmpeg exports no vectors for).
- `LumaJumps`: the largest frame-to-frame luma change (flashes, glitches, garbage frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from curate.videoio import LumaGrid

REGIONS = 3  # regions per side of the grid `min_region` is taken over (3x3)
CELLS = (12, 6)  # columns, rows of the cells vectors are averaged over (4x2 cells per region)
WINDOW_S = 0.5  # seconds of frame pairs whose vectors are averaged together
JUMP_GRID = (64, 36)  # size of the luma grid the jump measure compares (see LumaGrid)
I_FRAME, P_FRAME = 1, 2  # FFmpeg's AVPictureType values, as `frame.pict_type` gives them
# A cell counts towards a window's fastest cell only when its vectors cover this share of the
# average cell's area: a cell coded almost entirely intra has too few vectors to average.
_MIN_CELL_COVER = 0.25


@dataclass
class MotionResult:
    """A clip's motion columns (see `curate.stages.motion.MotionStage.columns`)."""

    score: float  # mean displacement, frame widths per second
    min_region: float  # the least-moving of the 3x3 regions, same unit
    static_frac: float  # fraction of the clip's windows in which no cell moves faster than static_speed
    max_jump: float  # largest mean absolute luma change between consecutive frames, 0..1
    method: str  # "mvs" or "flow"

    def row(self) -> dict:
        return {
            "motion_score": self.score,
            "motion_min_region": self.min_region,
            "motion_static_frac": self.static_frac,
            "motion_max_jump": self.max_jump,
            "motion_method": self.method,
        }


class MotionField:
    """Cell-averaged motion of a clip, window by window.

    Each frame pair adds, per cell, area-weighted sums of its displacement (x and y, in pixels
    per frame of gap) and the area measured. When a window closes, the length of each cell's
    summed vector is the cell's moved area (|mean vector| x area): these add up into the 3x3
    regions (for the mean and the least-moving region), and the fastest cell says whether
    anything at all moved in that window (for the static fraction).
    """

    def __init__(self, width: int, window_frames: int):
        self.width = width
        self.window_frames = max(1, window_frames)
        self.sums = np.zeros((3, CELLS[0] * CELLS[1]))  # the open window: area*dx, area*dy, area
        self.window_start: int | None = None
        self.moved = np.zeros(REGIONS * REGIONS)  # over closed windows, pixels per frame x area
        self.area = np.zeros(REGIONS * REGIONS)
        self.peaks: list[float] = []  # per closed window: its fastest cell, pixels per frame
        self.pairs = 0

    def add(self, index: int, dx: np.ndarray, dy: np.ndarray, area: np.ndarray, gap_frames: int) -> None:
        """One pair, ending at the clip's frame `index`, of frames `gap_frames` apart: per cell,
        the sums of area x displacement over the pair (x, y) and of the area measured."""
        if gap_frames <= 0 or area.sum() <= 0:
            return
        if self.window_start is not None and index - self.window_start >= self.window_frames:
            self._close()
        if self.window_start is None:
            self.window_start = index - gap_frames
        self.sums += (dx / gap_frames, dy / gap_frames, area)
        self.pairs += 1

    def _close(self) -> None:
        moved, area = np.hypot(self.sums[0], self.sums[1]), self.sums[2]
        self.moved += np.bincount(_CELL_REGION, moved, REGIONS * REGIONS)
        self.area += np.bincount(_CELL_REGION, area, REGIONS * REGIONS)
        covered = area >= _MIN_CELL_COVER * area.mean()
        self.peaks.append(float((moved[covered] / area[covered]).max()))
        self.sums[:] = 0
        self.window_start = None

    def result(self, frame_interval_s: float, static_speed: float) -> tuple[float, float, float]:
        """(score, min_region, static_frac), speeds in widths per second; NaN when nothing was
        measured."""
        if self.window_start is not None:
            self._close()
        if not self.peaks:
            return math.nan, math.nan, math.nan
        scale = 1.0 / (self.width * frame_interval_s)  # pixels per frame -> widths per second
        score = self.moved.sum() / self.area.sum() * scale
        seen = self.area > 0  # a region coded entirely intra tells nothing
        min_region = (self.moved[seen] / self.area[seen]).min() * scale
        static_frac = (np.asarray(self.peaks) * scale < static_speed).mean()
        return float(score), float(min_region), float(static_frac)


def _cell_regions() -> np.ndarray:
    """The 3x3 region (row-major) of every cell of the CELLS grid (row-major)."""
    cols, rows = CELLS
    return (np.arange(rows)[:, None] * REGIONS // rows * REGIONS + np.arange(cols)[None, :] * REGIONS // cols).ravel()


_CELL_REGION = _cell_regions()


class VectorMotion:
    """Motion from the vectors of a clip's P-frames.

    FFmpeg exports each inter-predicted block's vector (`motion_x / motion_scale` pixels from the
    block to where it was predicted from) but not which reference it used: `source` only says
    past (-1) or future (+1), and with B-frames that reference can be several frames away. So only
    P-frames are used, and a P-frame's vectors are divided by its distance, in output (display)
    order, to the previous I- or P-frame: the reference an MPEG-2/4 P-frame always uses and the one
    H.264 encoders choose for nearly every block (x264 puts the nearest past frame first in the
    reference list). B-frames carry the same motion again and are skipped; a clip's first P-frame
    is skipped when its reference lies before the clip.

    Blocks are weighted by their area over the area the vectors cover, so intra-coded blocks (no
    vector: new content, or motion the encoder gave up on) count neither as still nor as moving,
    and a frame that is mostly intra weighs little in the clip's mean.
    """

    def __init__(self, width: int, height: int, window_frames: int):
        self.width, self.height = width, height
        self.field = MotionField(width, window_frames)
        self.last_anchor: int | None = None  # output index of the newest I/P frame in the clip

    def add(self, index: int, pict_type: int, vectors: np.ndarray | None) -> None:
        """Feed the clip's frame number `index` (output order, from 0), its picture type
        (`frame.pict_type`) and, for a P-frame, its exported vectors (a structured array)."""
        if pict_type not in (I_FRAME, P_FRAME):
            return
        if pict_type == P_FRAME and vectors is not None and len(vectors) and self.last_anchor is not None:
            self.field.add(index, *self._cell_sums(vectors), index - self.last_anchor)
        self.last_anchor = index

    def _cell_sums(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per cell (by block centre): sums of area x displacement (x, y) and of block area."""
        cols, rows = CELLS
        area = vectors["w"].astype(np.float32) * vectors["h"]  # w, h are uint8: 16 * 16 would overflow
        weight = area / np.maximum(vectors["motion_scale"], 1)
        # Block centres lie inside the coded frame, which can be a few pixels taller or wider than
        # the picture (16-pixel macroblocks): clamp them onto the last row and column of cells.
        column = np.minimum(vectors["dst_x"].astype(np.int32) * cols // self.width, cols - 1)
        row = np.minimum(vectors["dst_y"].astype(np.int32) * rows // self.height, rows - 1)
        cell = row * cols + column
        n = cols * rows
        return (
            np.bincount(cell, weight * vectors["motion_x"], n),
            np.bincount(cell, weight * vectors["motion_y"], n),
            np.bincount(cell, area, n),
        )


class FlowMotion:
    """Motion from dense optical flow (OpenCV Farneback) on small luma images, for streams
    without motion vectors.

    Frames `step` apart are compared (a few pairs a second): over several frames even slow motion
    moves far enough to stand above the noise. Farneback only follows shifts of a few pixels from
    its coarsest level, so each pair is also solved starting from the flow between its first frame
    and the very next one, scaled by `step` (which catches a fast pan), and each cell keeps the
    solution that better maps the first frame onto the second (the guess misleads on shaking).

    Frames are only resized as they arrive; the flow runs when `field` is first asked for, so a
    clip that turns out to carry motion vectors never pays for it.
    """

    def __init__(self, width: int, height: int, flow_width: int, step: int, window_frames: int):
        flow_width = min(flow_width, width)
        self.size = (flow_width, max(8, round(height * flow_width / width)))
        self.step = max(1, step)
        self.window_frames = window_frames
        self.frames: dict[int, np.ndarray] = {}  # clip frame index -> small luma image
        self._field: MotionField | None = None

    def wants(self, index: int) -> bool:
        """Whether the clip's frame `index` is used (the others are not even resized)."""
        return index % self.step in (0, 1)

    def add(self, index: int, plane: np.ndarray) -> None:
        """Feed the clip's frame number `index` (output order) as a full-size luma plane."""
        self.frames[index] = cv2.resize(plane, self.size, interpolation=cv2.INTER_AREA)
        self._field = None

    @property
    def field(self) -> MotionField:
        """The flow of every complete pair (frames `step` apart) seen so far."""
        if self._field is None:
            self._field = MotionField(self.size[0], self.window_frames)
            starts = sorted(i for i in self.frames if i % self.step == 0)
            for start in starts:
                if start + self.step in self.frames:
                    self._measure(start)
        return self._field

    def _measure(self, start: int) -> None:
        before, after = self.frames[start], self.frames[start + self.step]
        flow, error = self._cells(before, after, _farneback(before, after, None))
        following = self.frames.get(start + 1)
        if self.step > 1 and following is not None:  # solve again from the next frame's flow
            guess = _farneback(before, following, None) * self.step
            guided, guided_error = self._cells(before, after, _farneback(before, after, guess))
            flow = np.where((guided_error < error)[..., None], guided, flow)
        cols, rows = CELLS
        cell_area = before.size / (cols * rows)
        dx, dy = flow[..., 0].ravel() * cell_area, flow[..., 1].ravel() * cell_area
        self._field.add(start + self.step, dx, dy, np.full(cols * rows, cell_area), self.step)

    def _cells(self, before: np.ndarray, after: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per cell: the mean flow, and how badly it maps `before` onto `after` (mean absolute
        difference between `before` and `after` sampled where the flow points)."""
        height, width = before.shape
        x, y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        warped = cv2.remap(after, x + flow[..., 0], y + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        error = cv2.absdiff(warped, before).astype(np.float32)
        means = [cv2.resize(a, CELLS, interpolation=cv2.INTER_AREA) for a in (flow, error)]
        return means[0], means[1]


def _farneback(before: np.ndarray, after: np.ndarray, guess: np.ndarray | None) -> np.ndarray:
    flags = cv2.OPTFLOW_USE_INITIAL_FLOW if guess is not None else 0
    # pyramid scale 0.5, 3 levels, 15-pixel window, 3 iterations, polynomial of 5 px, sigma 1.2
    return cv2.calcOpticalFlowFarneback(before, after, guess, 0.5, 3, 15, 3, 5, 1.2, flags)


class LumaJumps:
    """The largest frame-to-frame change of a clip: the mean absolute difference of consecutive
    frames' luma grids, on the 0..1 scale. A flash, a glitch or a garbage frame changes most of
    the picture at once, which even a fast pan does not."""

    def __init__(self, width: int, height: int):
        self.grid = LumaGrid(width, height, *JUMP_GRID)
        self.previous: np.ndarray | None = None
        self.max_jump = 0.0

    def add(self, plane: np.ndarray) -> None:
        small = self.grid(plane)
        if self.previous is not None and small.shape == self.previous.shape:
            difference = cv2.norm(small, self.previous, cv2.NORM_L1)  # a third of numpy's time here
            self.max_jump = max(self.max_jump, difference / (small.size * 255.0))
        self.previous = small
