"""The wipe test: is a window of frames a wipe from one picture to another, cell by cell?

A dissolve blends every cell of the picture at once; a wipe (or a slide's front) replaces the old
picture by the new one region by region. So inside a wipe each cell of the coarse grid matches one
of the window's two end pictures, the cells that match the new one form one region, and that region
grows across the window. `ShotDetector` screens the windows worth the test and judges the windows
that pass it against their neighbours (`_wipe_scores`, `_wipes`, `_partial_wipes`).
"""

from __future__ import annotations

import numpy as np

IS_WIPE, IS_PARTIAL_WIPE = 1.0, 0.5  # what `wipe_like` gives a wipe, and one between pictures alike in part (else 0)
_CELL_CHANGE = 12.0  # luma levels by which a coarse cell differs between a wipe's two pictures
_WIPE_CHANGED = 0.8  # share of the cells a wipe changes (the whole picture, give or take flat areas)
_PARTIAL_CHANGED = 0.4  # a wipe between pictures alike in part changes fewer: kept out of clips only...
_STRAIGHT = 0.9  # ...if one straight front splits this share of the cells it changed
_WIPE_RESIDUAL = 0.3  # how far a frame inside a wipe may be from the nearer picture, cell by cell
_WIPE_SHARE = (0.3, 0.7)  # the new picture's share of the changed cells at the wipe's middle...
_WIPE_PROGRESS = 0.1  # ...which grows by at least this from a quarter of the window to the middle and on
_WIPE_COHERENT = 0.8  # share of neighbouring cells on the same side: one front, not scattered cells


def wipe_like(blocks: np.ndarray, a: np.ndarray, early: np.ndarray, m: np.ndarray, late: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per window (rows of `blocks`, one (rows, cols) grid of block means per frame: its ends `a`
    and `b`, its middle `m`, and the frames a quarter of the way from the middle, `early` and
    `late`), IS_WIPE where the window looks like a wipe from picture a to picture b, else 0: a
    and b differ in nearly every cell, each cell of the three inner frames is close to a's or to
    b's, b's cells form one region, and that region grows from `early` through `m` to `late`.
    Where a and b differ in fewer cells (down to _PARTIAL_CHANGED of them: pictures alike in
    part), IS_PARTIAL_WIPE if the same holds and one straight front splits the changed cells at
    the middle (`_straight_front`). Each test runs only on the windows that passed the ones before
    (most fail the first)."""
    found = np.zeros(len(a), np.float32)
    grid = blocks.shape[1:]
    cells = blocks.reshape(len(blocks), -1)  # one row of cells per frame: sums over one axis are cheaper
    ends = np.abs(cells[a] - cells[b])
    changed = ends > _CELL_CHANGE
    changed_share = changed.mean(axis=1)
    left = np.flatnonzero(changed_share >= _PARTIAL_CHANGED)
    ends, changed = ends[left], changed[left]
    count = np.maximum(changed.sum(axis=1), 1)
    scale = np.sqrt(np.maximum(np.einsum("ij,ij->i", ends**2, changed) / count, 1e-6))
    kept: dict[str, np.ndarray] = {}  # per window still in: each inner frame's share of new cells, the middle's labels
    for name, frame in (("m", m), ("early", early), ("late", late)):
        inner = cells[frame[left]]
        to_a, to_b = np.abs(inner - cells[a[left]]), np.abs(inner - cells[b[left]])
        residual = np.sqrt(np.einsum("ij,ij->i", np.minimum(to_a, to_b) ** 2, changed) / count) / scale
        new = to_b < to_a
        share = (new & changed).sum(axis=1) / count
        ok = residual <= _WIPE_RESIDUAL
        if name == "m":
            ok &= (share >= _WIPE_SHARE[0]) & (share <= _WIPE_SHARE[1])
        keep = np.flatnonzero(ok)
        coherent = _coherence(new[keep].reshape(-1, *grid), changed[keep].reshape(-1, *grid)) >= _WIPE_COHERENT
        keep = keep[coherent]  # the costliest test: last
        left, changed, count, scale = left[keep], changed[keep], count[keep], scale[keep]
        kept = {k: v[keep] for k, v in kept.items()}
        kept[name] = share[keep]
        if name == "m":
            kept["new_at_m"] = new[keep]
        if not len(left):
            return found
    grows = (kept["early"] < kept["m"] - _WIPE_PROGRESS) & (kept["late"] > kept["m"] + _WIPE_PROGRESS)
    # Fewer changed cells than a wipe changes: pictures alike in part, or something moving in
    # one part of the picture. Only a front straight across the picture tells a wipe there.
    whole = changed_share[left] >= _WIPE_CHANGED
    straight = _straight_front(kept["new_at_m"].reshape(-1, *grid), changed.reshape(-1, *grid)) >= _STRAIGHT
    found[left] = np.where(grows & whole, IS_WIPE, np.where(grows & straight, IS_PARTIAL_WIPE, 0.0))
    return found


def _straight_front(new: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Per (rows, cols) grid of booleans, the largest share of the `changed` cells that one
    straight front across the picture (between two columns or two rows, the new picture on either
    side of it) labels as `new` does."""
    best = np.zeros(len(new))
    for axis in (1, 2):  # summed over rows: a front between columns; over columns: between rows
        fresh = _prefix_sums((new & changed).sum(axis=axis))  # new cells before each place of the front
        stale = _prefix_sums((~new & changed).sum(axis=axis))
        new_first = fresh + stale[:, -1:] - stale  # new before the front, old after it
        old_first = stale + fresh[:, -1:] - fresh
        best = np.maximum(best, np.maximum(new_first, old_first).max(axis=1))
    return best / np.maximum(changed.sum(axis=(1, 2)), 1)


def _prefix_sums(counts: np.ndarray) -> np.ndarray:
    """Per row, the sums of its first 0, 1, ..., all values."""
    return np.pad(np.cumsum(counts, axis=1), ((0, 0), (1, 0)))


def _coherence(labels: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Per (rows, cols) grid of booleans, the share of horizontally and vertically neighbouring
    pairs of `changed` cells that carry the same label: 1 for two regions split by a straight front,
    about 0.5 for scattered cells. (An unchanged cell matches both pictures: its label is noise.)"""
    across = changed[:, :, 1:] & changed[:, :, :-1]
    down = changed[:, 1:, :] & changed[:, :-1, :]
    same_across = (labels[:, :, 1:] == labels[:, :, :-1]) & across
    same_down = (labels[:, 1:, :] == labels[:, :-1, :]) & down
    pairs = across.sum(axis=(1, 2)) + down.sum(axis=(1, 2))
    return (same_across.sum(axis=(1, 2)) + same_down.sum(axis=(1, 2))) / np.maximum(pairs, 1)
