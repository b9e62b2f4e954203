"""Camera pans between consecutive luma grids, and the dissolves that hide inside them.

A dissolve next to a fast pan fools the picture tests of `shots.py`: a pan changes the coarse
grid as fast as the blend does, and the pan's own contrast does not dip. What gives it away is
that no single camera move explains its frames. Within one panning shot, the previous frame
moved by the pan matches the next one closely; during a blend with another shot, neither the
pan's shift nor standing still does. So, per frame:

- the pan's shift (half a grid cell at a time, a few cells a frame at most) is estimated from
  the grid's column and row means, which slide along with a pan; a shift counts only where it
  matches clearly better than standing still;
- the residual: the mean absolute luma difference between the frame and the previous one moved
  by the best of standing still, the horizontal shift, the vertical one and both (the edges
  that a shift uncovers are left out);

`ShotDetector` keeps both per frame and decides which runs of frames are such blends.
"""

from __future__ import annotations

import math

import numpy as np

_MAX_SHIFT = 4  # cells a frame a pan may move, each way (a 64-cell-wide grid: 6% of the width)
_MAX_SHIFT_Y = 2  # ... up or down (the grid is about half as tall)
_CLEAR = 0.7  # a profile shift counts where it leaves this share of standing still's mismatch at most


class PanTracker:
    """Feed it batches of consecutive grids (`describe`); it keeps the last grid for the next."""

    def __init__(self) -> None:
        self._last: np.ndarray | None = None

    def describe(self, grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per grid: the residual after the best camera move from the previous grid (luma levels),
        and that move's length in cells (0 for the first grid of a video, which has none)."""
        # The grid before each one, in front of the batch: the previous batch's last (or, for a
        # video's first grid, itself). Its rows [:-1] are each grid's previous one, as a view.
        with_first = np.concatenate([grids[:1] if self._last is None else self._last[None], grids])
        previous = with_first[:-1]
        self._last = with_first[-1].copy()  # one grid, not a view that would hold the whole batch
        height, width = grids.shape[1:]
        top, left = _MAX_SHIFT_Y + 1, _MAX_SHIFT + 1
        if height <= 2 * top or width <= 2 * left:  # too small a grid to move: standing still only
            return np.abs(grids - previous).mean(axis=(1, 2)), np.zeros(len(grids), np.float32)
        core = grids[:, top : height - top, left : width - left]
        still = np.subtract(core, previous[:, top : height - top, left : width - left])
        residual = np.abs(still, out=still).reshape(len(grids), -1).mean(axis=1)
        move = np.zeros(len(grids), np.float32)
        # Column and row means as products with averaging vectors: BLAS does them many times
        # faster than mean() over an axis. Each frame's previous profiles are the frame before's.
        down, across = np.full(height, 1 / height, np.float32), np.full(width, 1 / width, np.float32)
        columns, rows = down @ with_first, with_first @ across
        dx = _profile_shift(columns[:-1], columns[1:], _MAX_SHIFT)
        dy = _profile_shift(rows[:-1], rows[1:], _MAX_SHIFT_Y)
        # Each other candidate only where it is a move, and not one tried already (in this order,
        # so ties go to the simpler move); frames sharing a move are done together: a pan keeps
        # its move for many frames, so a batch holds few distinct ones.
        zero = np.zeros_like(dx)
        for x, y, needed in ((dx, zero, dx != 0), (zero, dy, dy != 0), (dx, dy, (dx != 0) & (dy != 0))):
            for mx, my, frames in _groups(x, y, needed):
                shifted = _shifted(previous[frames], mx, my, top, left)
                tried = np.abs(core[frames] - shifted).mean(axis=(1, 2))
                better = tried < residual[frames]
                residual[frames[better]] = tried[better]
                move[frames[better]] = math.hypot(mx, my)
        return residual, move


def _groups(dx: np.ndarray, dy: np.ndarray, needed: np.ndarray):
    """(dx, dy, frames) for each distinct move among the frames `needed`."""
    frames = np.flatnonzero(needed)
    keys = dx[frames] * 1000 + dy[frames]  # half cells, a few cells at most: distinct keys
    for key in np.unique(keys).tolist():
        rows = frames[keys == key]
        yield float(dx[rows[0]]), float(dy[rows[0]]), rows


def _profile_shift(previous: np.ndarray, current: np.ndarray, reach: int) -> np.ndarray:
    """Per row of two stacks of profiles (column or row means), the shift in half cells of at
    most `reach` cells that best moves the previous profile onto the current one; 0 where it
    matches no better than `_CLEAR` times standing still (a flat picture, a change of shot).
    The profiles are longer than 2 * (reach + 1): `describe` sees to it."""
    count, width = previous.shape
    margin = reach + 1
    span = width - 2 * margin
    target = current[:, None, margin : width - margin]
    # Moved by a whole k cells, the previous profile over the target's cells is the window that
    # starts at margin - k; moved by k + 1/2, the same window of the midpoints between cells.
    middles = (previous[:, :-1] + previous[:, 1:]) / 2
    whole = np.lib.stride_tricks.sliding_window_view(previous, span, axis=1)[:, 1 : 2 * reach + 2]  # k = reach ... -reach
    halves = np.lib.stride_tricks.sliding_window_view(middles, span, axis=1)[:, 1 : 2 * reach + 1]  # k + 1/2 = reach - 1/2 ... -reach + 1/2
    mismatch = np.empty((count, 4 * reach + 1), np.float32)  # shifts reach, reach - 1/2, ..., -reach
    mismatch[:, ::2] = np.abs(target - whole).mean(axis=2)
    mismatch[:, 1::2] = np.abs(target - halves).mean(axis=2)
    shifts = reach - np.arange(4 * reach + 1) / 2
    best = mismatch.argmin(axis=1)
    still = mismatch[:, 2 * reach]
    clear = mismatch[np.arange(count), best] < _CLEAR * still
    return np.where(clear, shifts[best], 0.0).astype(np.float32)


def _shifted(grids: np.ndarray, dx: float, dy: float, top: int, left: int) -> np.ndarray:
    """grids[:, y - dy, x - dx] over the core (the grids less `top` and `left` cells each side);
    a half-cell move averages the two whole-cell moves around it."""
    height, width = grids.shape[1:]
    ys = [math.floor(dy)] if dy == math.floor(dy) else [math.floor(dy), math.floor(dy) + 1]
    xs = [math.floor(dx)] if dx == math.floor(dx) else [math.floor(dx), math.floor(dx) + 1]
    views = [grids[:, top - y : height - top - y, left - x : width - left - x] for y in ys for x in xs]
    return views[0] if len(views) == 1 else sum(views) / len(views)
