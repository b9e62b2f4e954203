"""The scene test: do two thumbnails, taken before and after a change, show one scene?

A run of frames that changes the picture far more than the frames around it (`lagged.py`) may be
a long dissolve, or something that passed in front of the camera, or the light changing. Only a
dissolve leaves another scene behind it. So the test compares the 16x9 thumbnails kept before and
after the run, moved against each other by whole cells (the camera may have moved meanwhile):
the same scene matches over most cells, or, relit, correlates well with the same contrast for its
brightness. `ShotDetector._lagged_blends` drops the runs that pass it.
"""

from __future__ import annotations

import numpy as np

from curate.stages.split.medians import nanquantiles

_SAME_SCENE = 0.3  # moved, two thumbnails of one scene differ this little for their contrast...
_SAME_SHARE = 2 / 3  # ...over this share of their cells...
_SAME_LIGHT = 0.9  # ...or, relit, correlate this well...
_SAME_LIGHT_CONTRAST = 2 / 3  # ...each with at least this share of the other's contrast for its brightness
_REACH = (4, 2)  # whole thumbnail cells across and down that the scene may have moved meanwhile


def one_scene(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two thumbnails show one scene. Moved by the whole cells (within `_REACH`) that
    match them best, either `_SAME_SHARE` of the cells differ by at most `_SAME_SCENE` of
    their contrast (standard deviation), or they correlate at least `_SAME_LIGHT`: the same
    picture, lit brighter or darker: light scales contrast and brightness alike, so each keeps at
    least `_SAME_LIGHT_CONTRAST` of the other's contrast for its brightness (standard deviation over
    mean). A dissolve half done into a flat picture correlates as well with where it began, but has
    half its contrast at about its brightness. The share leaves out a subject that moved meanwhile.
    Two shots that a blend joins differ over more of the picture, however alike: smooth shapes may
    correlate at 0.6 at some move, and shots sharing a sky and a meadow match on half the cells."""
    left_over, correlation = scene_match(a, b)
    contrast_a, contrast_b = a.std(), b.std()
    flatter, livelier = sorted([float(contrast_a / max(a.mean(), 1.0)), float(contrast_b / max(b.mean(), 1.0))])
    relit = correlation >= _SAME_LIGHT and flatter >= _SAME_LIGHT_CONTRAST * livelier
    return left_over <= _SAME_SCENE * (contrast_a + contrast_b) / 2 or relit


def scene_match(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Over the moves of `a` by whole cells within `_REACH` that leave a quarter of the
    picture or more to compare with `b`: the least absolute difference that `_SAME_SHARE` of the
    cells compared stay within, and the highest correlation (-1 where the pictures are flat)."""
    height, width = a.shape
    reach_x, reach_y = _REACH
    # Every move at once: `a` padded with NaN, each move a window of it; the cells a move takes
    # past the edge are NaN and left out of both measures.
    padded = np.pad(a.astype(np.float64), ((reach_y, reach_y), (reach_x, reach_x)), constant_values=np.nan)
    moves = [(dy, dx) for dy in range(-reach_y, reach_y + 1) for dx in range(-reach_x, reach_x + 1)]
    moved = np.stack([padded[reach_y - dy : reach_y - dy + height, reach_x - dx : reach_x - dx + width] for dy, dx in moves])
    moved = moved.reshape(len(moves), -1)
    compared = ~np.isnan(moved)
    count = compared.sum(axis=1)
    enough = count >= 0.25 * height * width
    moved, compared, count = moved[enough], compared[enough], count[enough]
    there = np.where(compared, b.ravel().astype(np.float64), np.nan)
    least = float(nanquantiles(np.abs(moved - there), _SAME_SHARE).min())
    centred = [np.where(compared, v - np.nanmean(v, axis=1, keepdims=True), 0.0) for v in (moved, there)]
    norms = [np.sqrt(np.einsum("ij,ij->i", c, c)) for c in centred]
    varied = (norms[0] > 1e-3 * np.sqrt(count)) & (norms[1] > 1e-3 * np.sqrt(count))  # a std over 1e-3
    correlation = np.einsum("ij,ij->i", *centred)[varied] / (norms[0] * norms[1])[varied]
    return least, float(correlation.max()) if len(correlation) else -1.0
