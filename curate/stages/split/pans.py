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

That per-frame test needs a fast pan: the blend changes each frame by a fraction of the two
shots' difference, which a slow pan's own residual hides. `MovingBlends` looks across a whole
window instead. Each shot's pan, read from its own frames, predicts where its picture stands at
the window's middle; a dissolve's middle frame is then an even blend of the two moved ends. Smooth
motion of one shot (a zoom, something turning) also makes a middle frame the blend of frames on
either side, so the test asks more: the moved ends differ several times more than each shot's
own frames do after their move, which they do between two shots and not inside one.
"""

from __future__ import annotations

import math
from array import array
from typing import NamedTuple

import numpy as np

from curate.stages.split.medians import nanmedians

_MAX_SHIFT = 4  # cells a frame a pan may move, each way (a 64-cell-wide grid: 6% of the width)
_MAX_SHIFT_Y = 2  # ... up or down (the grid is about half as tall)
_CLEAR = 0.7  # a profile shift counts where it leaves this share of standing still's mismatch at most
_BLEND_STEP = 2  # every other centre is tried: a dissolve's middle passes the test over several
_BLEND_PANNING = 0.5  # a side counts as panning where this share of its frames has a profile shift
_BLEND_REFINE = 1  # cells each way around the pan's predicted move that are searched for its best match
_BLEND_COVER = 0.25  # the least share of the grid that both moved ends still cover
_BLEND_RESIDUAL = 0.15  # the share of the middle frame's variance that the blend may leave unexplained
_BLEND_WEIGHT = 0.3  # each moved end's least weight in that blend...
_BLEND_TOTAL = 0.2  # ...and how far from 1 the weights may sum (an even blend keeps the brightness)
_BLEND_APART = 12.0  # luma levels by which the moved ends differ on average, at least...
_BLEND_OWN = 3.0  # ...and this many times more, against their contrast, than each shot's own frames h apart


class PanTracker:
    """Feed it batches of consecutive grids (`describe`); it keeps the last grid for the next, and
    per frame what it measured (`residual`, `move`, `dx`, `dy`: see `describe`), which the
    detector's pan tests read."""

    def __init__(self) -> None:
        self._last: np.ndarray | None = None
        self.residual, self.move = array("f"), array("f")
        self.dx, self.dy = array("f"), array("f")

    def describe(self, grids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per grid: the residual after the best camera move from the previous grid (luma levels),
        that move's length in cells (0 for the first grid of a video, which has none), and the
        profiles' shift from the previous grid, (x, y) in cells (0 where no shift matches clearly)."""
        # The grid before each one, in front of the batch: the previous batch's last (or, for a
        # video's first grid, itself). Its rows [:-1] are each grid's previous one, as a view.
        with_first = np.concatenate([grids[:1] if self._last is None else self._last[None], grids])
        previous = with_first[:-1]
        self._last = with_first[-1].copy()  # one grid, not a view that would hold the whole batch
        height, width = grids.shape[1:]
        top, left = _MAX_SHIFT_Y + 1, _MAX_SHIFT + 1
        if height <= 2 * top or width <= 2 * left:  # too small a grid to move: standing still only
            still = np.zeros(len(grids), np.float32)
            return self._kept(np.abs(grids - previous).mean(axis=(1, 2)), still, still, still)
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
        return self._kept(residual, move, dx, dy)

    def _kept(self, residual, move, dx, dy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keep a batch's measures per frame, and return them as `describe` does."""
        for kept, values in ((self.residual, residual), (self.move, move), (self.dx, dx), (self.dy, dy)):
            kept.extend(values.tolist())
        return residual, move, np.stack([dx, dy], axis=1)


class MovingBlends:
    """Feed it consecutive grids as a `PanTracker` describes them (`push`); `finish` says, per frame t,
    whether frame t is an even blend of the frames t - h and t + h once each is moved by its own
    shot's pan (see the module docstring). Only centres beside a pan are tried, every other one:
    elsewhere the picture tests of `shots.py` see a dissolve. It keeps the last 4h grids."""

    def __init__(self, half_width: int) -> None:
        self.h = max(2, half_width)
        self._grids: np.ndarray | None = None  # the grids of frames [_first, num_frames)
        self._first = 0
        self._blends = array("B")  # per centre decided so far
        self.num_frames = 0

    def push(self, grids: np.ndarray, pans: PanTracker) -> None:
        """Add the next grids, which `pans` has just described (its residuals and shifts of every
        frame so far), and decide every centre whose window of 2h frames each side is now complete."""
        self.num_frames += len(grids)
        start, stop = len(self._blends), self.num_frames - 2 * self.h
        found = np.zeros(max(0, stop - start), bool)
        centres, moves = self._candidates(pans, start, stop)
        if len(centres):  # the grids only now: a still or steady video never stacks them
            window = grids if self._grids is None else np.concatenate([self._grids, grids])
            found[centres - start] = self._blended_at(window, centres - self._first, moves)
        self._blends.extend(found.tolist())
        # The last 4h grids for the next batch's windows (copied: the batch's buffer is refilled).
        recent = grids if self._grids is None or len(grids) >= 4 * self.h else np.concatenate([self._grids, grids])
        self._grids = np.array(recent[-4 * self.h :], np.float32)
        self._first = self.num_frames - len(self._grids)

    def finish(self) -> np.ndarray:
        """Per frame fed, whether it is such a blend (centres within 2h of either end are not)."""
        return np.concatenate([np.asarray(self._blends, bool), np.zeros(self.num_frames - len(self._blends), bool)])

    def _candidates(self, pans: PanTracker, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The centres in [start, stop) worth the test, and per centre the moves that its shots'
        pans predict: (a's x, a's y, b's x, b's y) in cells."""
        h = self.h
        first = max(0, start - 2 * h)  # the shifts and residuals of frames [first, stop + 2h)
        shifts = np.stack([pans.dx[first : stop + 2 * h], pans.dy[first : stop + 2 * h]], axis=1)
        residual = np.asarray(pans.residual[first : stop + 2 * h], np.float32)
        # Per run of h frames from each index: the share of them with a shift.
        moving = np.concatenate([[0], np.cumsum((shifts != 0).any(axis=1))])
        panning = (moving[h:] - moving[:-h]) / h
        centres = np.arange(max(start, 2 * h), stop)
        centres = centres[centres % _BLEND_STEP == 0]
        before, after = centres - 2 * h + 1 - first, centres + h + 1 - first  # each side's run of h frames
        centres, before, after = _kept(np.maximum(panning[before], panning[after]) >= _BLEND_PANNING, centres, before, after)
        if not len(centres):
            return centres, np.zeros((0, 4), int)
        # A blend adds to each frame what no camera move explains: around the middle, more of it
        # than either shot's own frames have (most windows in a pan fail that, at little cost).
        residuals = np.lib.stride_tricks.sliding_window_view(residual, h)
        middle = np.lib.stride_tricks.sliding_window_view(residual, 2 * (h // 2) + 1).mean(axis=1)
        sides = np.maximum(nanmedians(residuals[before]), nanmedians(residuals[after]))
        centres, before, after = _kept(middle[centres - h // 2 - first] >= sides, centres, before, after)
        # Each shot's move over h frames: its median shift a frame, times h. The one that took
        # frame t - 2h to t - h also takes t - h to the middle; after it, backwards in time.
        runs_of = np.lib.stride_tricks.sliding_window_view(shifts, h, axis=0)  # (first frame, x or y, frame)
        moves = np.concatenate([nanmedians(runs_of[before]), -nanmedians(runs_of[after])], axis=1)
        return centres, np.rint(moves * h).astype(int)

    def _blended_at(self, grids: np.ndarray, middles: np.ndarray, moves: np.ndarray) -> np.ndarray:
        """Per window (its middle's index in `grids`, and its moves), whether it is an even blend."""
        h, found = self.h, np.zeros(len(middles), bool)
        # Windows that share their moves (most of a pan's) are screened together: the ends at
        # their predicted moves, on every other cell and with looser limits. Most windows in a pan
        # fail there (the middle frame is one shot's picture, moved), at a small share of the cost
        # of the whole test that the others take.
        for rows in _groups_of(moves):
            move_a, move_b = moves[rows[0], :2], moves[rows[0], 2:]
            at = middles[rows]
            screen = _fits(grids[at - h], grids[at], grids[at + h], move_a, move_b, every=2)
            if screen is None:  # the moves leave too little of the grid to compare
                continue
            for row in rows[_blended(screen, loose=2.0)].tolist():
                found[row] = _even_blend(grids, int(middles[row]), h, move_a, move_b)
        return found


def _kept(keep: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each array's elements where `keep` holds."""
    return tuple(a[keep] for a in arrays)


def _groups_of(moves: np.ndarray):
    """The row indices of each distinct row of `moves` (small whole numbers of cells)."""
    keys = np.zeros(len(moves), np.int64)
    for column in moves.T:  # one number per row: np.unique over rows costs many times more
        keys = keys * 1024 + (column + 512)
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    yield from np.split(order, bounds) if len(order) else ()


def _even_blend(grids: np.ndarray, t: int, h: int, move_a: np.ndarray, move_b: np.ndarray) -> bool:
    """Whether grid t is an even blend of grids t - h and t + h, each moved by its shot's move
    (refined against the shot's own grid a move further, t - 2h and t + 2h), between two shots:
    the moved ends differ far more than each shot's own grids do after the same move."""
    move_a, own_a = _refined(grids[t - 2 * h], grids[t - h], move_a)
    move_b, own_b = _refined(grids[t + 2 * h], grids[t + h], move_b)
    fit = _fits(grids[t - h : t - h + 1], grids[t : t + 1], grids[t + h : t + h + 1], move_a, move_b)
    if fit is None or not _blended(fit)[0]:
        return False
    apart, contrast = float(fit.apart[0]), float(fit.contrast[0])
    return apart >= _BLEND_APART and apart / contrast >= _BLEND_OWN * max(own_a, own_b)


class Fits(NamedTuple):
    """Per window, the middle frame as a blend of its moved ends (`_fits`)."""

    unexplained: np.ndarray  # the share of the middle's variance the blend leaves
    weight_a: np.ndarray
    weight_b: np.ndarray
    apart: np.ndarray  # the moved ends' mean absolute difference, luma levels
    contrast: np.ndarray  # their mean luma std, at least 1


def _fits(a: np.ndarray, middle: np.ndarray, b: np.ndarray, move_a, move_b, every: int = 1) -> Fits | None:
    """Per row of the stacks `middle`, `a` and `b` (grids of k windows: the middle frame and the
    ends), the middle as a least-squares blend (plus a constant) of the ends moved by `move_a` and
    `move_b`, over the cells both still cover (every `every`-th row and column of them): the share
    of its variance left unexplained, the two weights, how far apart the moved ends are (mean
    absolute difference) and their mean contrast (luma std, at least 1). None when the moved ends
    cover too little of the grid."""
    height, width = middle.shape[1:]
    (ax, ay), (bx, by) = (int(v) for v in move_a), (int(v) for v in move_b)
    y0, y1 = max(0, ay, by), height + min(0, ay, by)
    x0, x1 = max(0, ax, bx), width + min(0, ax, bx)
    if y1 <= y0 or x1 <= x0 or (y1 - y0) * (x1 - x0) < _BLEND_COVER * height * width:
        return None
    ys, xs = slice(y0, y1, every), slice(x0, x1, every)
    cells = np.stack([_slid(a, ys, xs, ax, ay), _slid(b, ys, xs, bx, by), middle[:, ys, xs]], axis=1)
    cells = cells.reshape(len(middle), 3, -1)
    apart = np.abs(cells[:, 0] - cells[:, 1]).mean(axis=1)
    # Centred, the constant drops out and two weights remain: a 2x2 system, solved in closed form.
    centred = (cells - cells.mean(axis=2, keepdims=True)).astype(np.float64)
    gram = centred @ centred.transpose(0, 2, 1)
    xx, xy, xm, yy, ym, mm = (gram[:, i, j] for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
    count = cells.shape[2]
    contrast = np.maximum(0.5 * (np.sqrt(xx / count) + np.sqrt(yy / count)), 1.0)
    det = xx * yy - xy * xy
    solvable = (det > 1e-6 * xx * yy) & (mm > 0)
    det, mm = np.where(solvable, det, 1.0), np.where(solvable, mm, 1.0)
    weight_a, weight_b = (yy * xm - xy * ym) / det, (xx * ym - xy * xm) / det
    unexplained = np.where(solvable, np.maximum(mm - weight_a * xm - weight_b * ym, 0.0) / mm, np.inf)
    return Fits(unexplained, weight_a, weight_b, apart, contrast)


def _slid(grids: np.ndarray, ys: slice, xs: slice, dx: int, dy: int) -> np.ndarray:
    """grids[:, y - dy, x - dx] for the rows `ys` and columns `xs` (which the move keeps inside)."""
    return grids[:, ys.start - dy : ys.stop - dy : ys.step, xs.start - dx : xs.stop - dx : xs.step]


def _blended(fit: Fits, loose: float = 1.0) -> np.ndarray:
    """Per window, whether it is an even blend; `loose` widens every limit by that factor."""
    return (
        (fit.unexplained <= loose * _BLEND_RESIDUAL)
        & (np.minimum(fit.weight_a, fit.weight_b) >= _BLEND_WEIGHT / loose)
        & (np.abs(fit.weight_a + fit.weight_b - 1) <= loose * _BLEND_TOTAL)
    )


def _refined(source: np.ndarray, target: np.ndarray, move: np.ndarray) -> tuple[tuple[int, int], float]:
    """The whole-cell move within _BLEND_REFINE of `move` that best takes `source` onto
    `target`, and how far off it leaves it: the mean absolute difference over the cells that
    every move tried covers, against the target's contrast there."""
    height, width = source.shape
    mx, my, r = int(move[0]), int(move[1]), _BLEND_REFINE
    y0, y1, x0, x1 = max(0, my + r), height + min(0, my - r), max(0, mx + r), width + min(0, mx - r)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return (mx, my), math.inf
    moves = [(dx, dy) for dy in range(my - r, my + r + 1) for dx in range(mx - r, mx + r + 1)]
    part = target[y0:y1, x0:x1]
    tried = np.stack([source[y0 - dy : y1 - dy, x0 - dx : x1 - dx] for dx, dy in moves])
    mismatch = np.abs(tried - part).mean(axis=(1, 2))
    best = int(mismatch.argmin())
    return moves[best], float(mismatch[best]) / max(float(part.std()), 1.0)


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
