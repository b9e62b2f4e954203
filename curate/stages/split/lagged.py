"""How much of the picture a third of a second changes beyond the camera's move: what a long
dissolve between two shots in motion leaves.

Such a dissolve hides from the window tests of `shots.py`, since the shots' own motion changes the
picture as fast as the blend does, and from the moved-end blends of `pans.py` once it is long: in
a 48-frame dissolve each frame differs from the one before by a fiftieth of the two pictures'
difference. Over a lag of k frames that adds up. Within one shot, frame t - k moved by the
camera's move over those k frames matches frame t up to noise and whatever moves inside the
picture; during a blend every cell has changed by k frames' share of the two pictures' difference.
So per frame: the median over the grid's cells of what the best move leaves. The median keeps the
blend's change, spread over the whole picture, and ignores a moving subject or a passing object
as long as it covers under half the picture.

The move over the lag is read from the grids' column and row means, which slide along with a pan
(as in `pans.PanTracker`, but over the whole lag: up to 3/8 of the grid across and 2/7 of it
down), then refined by a whole cell either way on a sparse sample of the cells; the median is
taken over every other row and column. Every fourth frame is measured.
A subject the camera follows stays put in the frame while the scenery moves, and pulls the whole
picture's column means towards no move. It rarely covers more than one of four horizontal bands,
so the move across that most bands' own column means agree on is a second reading. Where the two
readings differ, the value is the lesser of what each leaves: a blend changes the picture under
any move, and a wrong reading (bands of a dim, flat shot disagree) can only raise the value.
`ShotDetector` reads the values against the frames well clear of them on both sides
(`_lagged_blends`).
"""

from __future__ import annotations

from array import array

import numpy as np

from curate.stages.split.medians import nanmedians

_REACH = (3 / 8, 2 / 7)  # the share of the grid's width and height a move over the lag may take
_STEP = 4  # every fourth frame is measured: the dissolves this serves last many
_EVERY = 2  # ...on every other row and column
_BATCH = 256  # frames measured together
_BANDS = 4  # horizontal bands whose shifts across vote for a second reading of the move
_COVER = 0.25  # the least share of the grid that a move leaves to compare
_SMALLEST = 8  # grids with fewer rows or columns are not measured
# The moves a cell either way of the profiles' move, as offsets into its neighbourhood (`_changes`):
# that move first, so that a tie keeps it.
_CANDIDATES = [(1, 1)] + [(y, x) for y in range(3) for x in range(3) if (y, x) != (1, 1)]


class LaggedChange:
    """Feed it consecutive grids (`push`); `finish` gives per frame the median luma change over
    `lag` frames that no whole-cell camera move explains (see the module docstring). It keeps the
    grids of the last `lag` frames measured and of up to `_BATCH` frames not measured yet."""

    def __init__(self, lag: int) -> None:
        self.lag = max(2, lag)
        self._recent: np.ndarray | None = None  # the grids of the `lag` frames before the pending ones
        self._pending: list[np.ndarray] = []  # grids pushed and not measured yet
        self._num_pending = 0
        self._values = array("f")  # per frame measured: the change from frame t - lag to t, NaN if not measured
        self.num_frames = 0  # frames measured (pushed frames may still be pending)

    def push(self, grids: np.ndarray) -> None:
        """Add the next grids (float32, one per frame). They are measured against the grids `lag`
        frames before them a few hundred at a time: a handful of numpy calls per batch then serve
        many frames."""
        self._pending.append(np.array(grids, np.float32))  # a copy: the caller refills its buffer
        self._num_pending += len(grids)
        if self._num_pending >= _BATCH:
            self._measure()

    def _measure(self) -> None:
        """Measure the pending grids."""
        if not self._pending:
            return
        first, count = self.num_frames, self._num_pending
        window = np.concatenate(([] if self._recent is None else [self._recent]) + self._pending)
        self._pending, self._num_pending = [], 0
        self.num_frames += count
        start = self.num_frames - len(window)  # the frame of window[0]
        frames = np.arange(max(first, self.lag), self.num_frames)
        frames = frames[frames % _STEP == 0]
        if min(window.shape[1:]) < _SMALLEST:  # too small a grid to read a move from
            frames = frames[:0]
        values = np.full(count, np.nan, np.float32)
        if len(frames):
            values[frames - first] = _changes(window[frames - start - self.lag], window[frames - start])
        self._values.extend(values.tolist())
        self._recent = window[-self.lag :].copy()  # not a view that would hold the whole window

    def finish(self) -> np.ndarray:
        """Per frame fed, the change over the lag that the frame stands in the middle of (frames
        between two measured ones take their interpolation); NaN where no lag reaches."""
        self._measure()
        values = np.asarray(self._values, np.float32)
        measured = np.flatnonzero(~np.isnan(values))
        centred = np.full(len(values), np.nan, np.float32)
        if len(measured):
            frames = np.arange(measured[0], measured[-1] + 1)
            centred[frames - self.lag // 2] = np.interp(frames, measured, values[measured])
        return centred


def _changes(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per pair of grids (two stacks), the median absolute difference over the cells that the
    best whole-cell move of `before` onto `after` leaves to compare (NaN where none leaves enough):
    the lesser of the values that the whole picture's move and the bands' move leave."""
    height, width = after.shape[1:]
    reach_x, reach_y = max(1, round(_REACH[0] * width)), max(1, round(_REACH[1] * height))
    whole_x = _profile_shifts(before.mean(axis=1), after.mean(axis=1), reach_x)
    values = _left_over(before, after, _with_move_down(before, after, whole_x, reach_y), reach_x, reach_y)
    band_x = _band_shifts(before, after, reach_x)
    differ = np.flatnonzero(np.abs(band_x - whole_x) > 1)  # within a cell, the refinement covers it
    if len(differ):
        b, a = before[differ], after[differ]
        banded = _left_over(b, a, _with_move_down(b, a, band_x[differ], reach_y), reach_x, reach_y)
        values[differ] = np.fmin(values[differ], banded)
    return values


def _left_over(before: np.ndarray, after: np.ndarray, moves: np.ndarray, reach_x: int, reach_y: int) -> np.ndarray:
    """Per pair of grids, the median absolute difference that `moves` (x, y), refined by a cell
    either way, leave over the cells compared."""
    count, height, width = after.shape
    # Padded by the reach and a cell, each grid's neighbourhood of its move (a cell either way)
    # is one slice; the cells a move takes past the edge are NaN and left out.
    pad_y, pad_x = reach_y + 1, reach_x + 1
    padded = np.pad(before, ((0, 0), (pad_y, pad_y), (pad_x, pad_x)), constant_values=np.nan)
    tops, lefts = pad_y - 1 - moves[:, 1], pad_x - 1 - moves[:, 0]
    around = np.stack([g[t : t + height + 2, u : u + width + 2] for g, t, u in zip(padded, tops, lefts, strict=True)])
    # The move a cell either way that best matches on a sparse sample of the cells (every other
    # row and column of those compared), then the median over all those compared at that move.
    sparse = 2 * _EVERY
    target = after[:, ::sparse, ::sparse]
    best, chosen = np.full(count, np.inf), np.zeros(count, int)
    for i, (y, x) in enumerate(_CANDIDATES):
        difference = np.abs(target - around[:, y : y + height : sparse, x : x + width : sparse])
        compared = ~np.isnan(difference)
        counts = compared.sum(axis=(1, 2))
        mismatch = np.where(compared, difference, 0).sum(axis=(1, 2)) / np.maximum(counts, 1)
        better = (counts >= _COVER * compared[0].size) & (mismatch < best)
        best[better], chosen[better] = mismatch[better], i
    offsets = [_CANDIDATES[i] for i in chosen]
    moved = np.stack([a[y : y + height : _EVERY, x : x + width : _EVERY] for a, (y, x) in zip(around, offsets, strict=True)])
    differences = np.abs(after[:, ::_EVERY, ::_EVERY] - moved)
    medians = nanmedians(differences.reshape(count, -1))  # NaN: no cell compared
    return np.where(np.isfinite(best), medians, np.nan).astype(np.float32)


def _with_move_down(before: np.ndarray, after: np.ndarray, move_x: np.ndarray, reach_y: int) -> np.ndarray:
    """Per pair of grids, the whole-cell move (x, y) of `before` onto `after`: `move_x` across,
    then down from the row means over the columns that move keeps in the picture (a fast pan
    sideways brings new columns in, which change every row's mean and would pass for a tilt)."""
    width = before.shape[2]
    columns = np.arange(width)
    # Row means over the columns kept, with each pair's averaging weights.
    kept_before = ((columns >= -move_x[:, None]) & (columns < width - move_x[:, None])).astype(np.float32)
    kept_after = ((columns >= move_x[:, None]) & (columns < width + move_x[:, None])).astype(np.float32)
    kept_before /= kept_before.sum(axis=1, keepdims=True)
    kept_after /= kept_after.sum(axis=1, keepdims=True)
    rows_before = np.einsum("frc,fc->fr", before, kept_before)
    rows_after = np.einsum("frc,fc->fr", after, kept_after)
    return np.stack([move_x, _profile_shifts(rows_before, rows_after, reach_y)], axis=1)


def _band_shifts(before: np.ndarray, after: np.ndarray, reach: int) -> np.ndarray:
    """Per pair of grids, the shift across that most of `_BANDS` horizontal bands agree on (within
    a cell), each read from its own column means (where no two agree, the top band's: `_changes`
    takes it only where it leaves less)."""
    count, height, width = before.shape
    edges = np.linspace(0, height, _BANDS + 1).astype(int)
    bands = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    profiles = [np.stack([grids[:, top:bottom].mean(axis=1) for top, bottom in bands], axis=1) for grids in (before, after)]
    shifts = _profile_shifts(*(p.reshape(-1, width) for p in profiles), reach).reshape(count, _BANDS)
    agreeing = (np.abs(shifts[:, :, None] - shifts[:, None, :]) <= 1).sum(axis=2)  # each band's, itself included
    return np.take_along_axis(shifts, agreeing.argmax(axis=1)[:, None], axis=1)[:, 0]


def _profile_shifts(before: np.ndarray, after: np.ndarray, reach: int) -> np.ndarray:
    """Per row of two stacks of profiles (column or row means), the whole-cell shift within
    `reach` that best moves the profile before onto the one after: the least mean absolute
    mismatch over the cells both cover."""
    length = before.shape[1]
    # Window j of the padded profile is the profile moved by s = reach - j.
    padded = np.pad(before, ((0, 0), (reach, reach)))
    moved = np.lib.stride_tricks.sliding_window_view(padded, length, axis=1)
    shifts = reach - np.arange(2 * reach + 1)
    cells = np.arange(length)
    covered = (cells >= shifts[:, None]) & (cells < length + shifts[:, None])  # what each shift leaves to compare
    mismatch = (np.abs(moved - after[:, None, :]) * covered).sum(axis=2) / covered.sum(axis=1)
    # A flat profile matches every shift alike: the smallest shift wins a tie.
    return shifts[np.argmin(mismatch + 1e-4 * np.abs(shifts), axis=1)]
