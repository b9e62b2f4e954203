"""Camera moves between luma grids (`curate.stages.split.pans`): the shift found, and what it leaves."""

from __future__ import annotations

import numpy as np
import pytest

from curate.stages.split import pans
from curate.stages.split.pans import MovingBlends, PanTracker


def _world(seed: int, width: int = 400) -> np.ndarray:
    """A smooth random picture 36 cells tall and `width` wide, luma 40-215."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (10, width // 8 + 2))
    rows = np.linspace(0, 9, 36)
    cols = np.linspace(0, coarse.shape[1] - 1, width)
    across = np.array([np.interp(cols, np.arange(coarse.shape[1]), row) for row in coarse])
    return np.array([np.interp(rows, np.arange(10), column) for column in across.T]).T.astype(np.float32)


def _pan(world: np.ndarray, num_frames: int, cells_per_frame: float, noise: float = 0.5) -> np.ndarray:
    """64-cell-wide views of `world`, the camera moving right by `cells_per_frame` (linear
    interpolation between cells for half steps), with fresh noise in every frame as a sensor and
    a codec leave it."""
    rng = np.random.default_rng(0)
    columns = np.arange(world.shape[1])
    frames = []
    for i in range(num_frames):
        left = 10 + i * cells_per_frame
        frames.append(np.array([np.interp(left + np.arange(64), columns, row) for row in world]))
    return (np.stack(frames) + rng.normal(0, noise, (num_frames, *world.shape[:1], 64))).astype(np.float32)


def _describe(grids: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    tracker = PanTracker()
    parts = [tracker.describe(grids[i : i + batch]) for i in range(0, len(grids), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.mark.parametrize("speed", [1.0, 2.5, 3.0])
def test_a_pan_is_explained_by_its_shift(speed):
    """A steady pan: the move found is the pan's speed, and the picture moved by it matches the next
    frame far better than the unmoved one does. Batches split anywhere give the same answer."""
    grids = _pan(_world(1), 100, speed)
    residual, move = _describe(grids)
    unmoved = np.abs(np.diff(grids, axis=0)).mean(axis=(1, 2))
    assert np.allclose(move[1:], speed)
    assert residual[0] == 0.0 and move[0] == 0.0  # the first frame has nothing before it
    assert np.median(residual[1:]) < 0.2 * np.median(unmoved)
    assert np.array_equal(_describe(grids, batch=7)[0], residual)


def test_a_still_picture_needs_no_move():
    grids = np.repeat(_world(2)[None, :, :64], 20, axis=0)
    residual, move = _describe(grids)
    assert not move.any() and not residual.any()


def test_a_blend_of_a_pan_and_a_still_shot_is_explained_by_no_move():
    """Frames blending a pan with a still picture: neither the pan's shift nor standing still
    brings the previous frame onto the next, so the residual there is many times the pan's own."""
    pan, still = _pan(_world(3), 40, 3.0), _world(4)[:, :64]
    share = np.linspace(0, 1, 40)[:, None, None]
    blend = (1 - share) * pan + share * still
    residual_pan, _ = _describe(pan)
    residual_blend, _ = _describe(blend.astype(np.float32))
    middle = slice(12, 28)  # both pictures well present
    assert np.median(residual_blend[middle]) > 4 * np.median(residual_pan[1:])


def _moving_blends(grids: np.ndarray, half_width: int = 8) -> np.ndarray:
    """`MovingBlends`'s per-frame answer, fed as the detector feeds it (batches of 64)."""
    tracker, blends = PanTracker(), MovingBlends(half_width)
    for first in range(0, len(grids), 64):
        batch = grids[first : first + 64]
        tracker.describe(batch)
        blends.push(batch, tracker)
    return blends.finish()


def _dissolve(a: np.ndarray, b: np.ndarray, start: int, length: int) -> np.ndarray:
    """Frames of a until `start`, then `length` frames blending into b, then b's."""
    share = np.clip((np.arange(len(a)) - start + 1) / (length + 1), 0, 1)[:, None, None]
    return ((1 - share) * a + share * b).astype(np.float32)


@pytest.mark.parametrize("speed", [2.5, 0.5])
def test_a_dissolve_from_a_still_shot_into_a_pan_is_a_blend_of_its_moved_ends(speed):
    """A 16-frame dissolve (frames 60..75) from a still picture into a pan, fast or slow: the
    centres around its middle, and no others, are even blends of their ends moved by each shot's
    pan. Batches of any size give the same answer."""
    still = np.repeat(_world(5)[None, :, 10:74], 136, axis=0) + np.random.default_rng(1).normal(0, 0.5, (136, 36, 64))
    grids = _dissolve(still.astype(np.float32), _pan(_world(6), 136, speed), 60, 16)
    blended = np.flatnonzero(_moving_blends(grids)).tolist()
    assert blended and all(64 <= t <= 72 for t in blended), blended
    tracker, blends = PanTracker(), MovingBlends(8)
    for first in range(0, len(grids), 7):
        tracker.describe(grids[first : first + 7])
        blends.push(grids[first : first + 7], tracker)
    assert np.flatnonzero(blends.finish()).tolist() == blended


@pytest.mark.parametrize("speed", [2.5, 0.5])
def test_a_pan_alone_is_no_blend_of_moved_ends(speed):
    """Each window's middle is its start moved, not a blend of two pictures."""
    assert not _moving_blends(_pan(_world(6), 136, speed)).any()


def test_a_pan_that_brightens_steadily_is_no_blend_of_two_shots():
    """A pan whose brightness and contrast grow steadily: every window's middle IS an even blend
    of its moved ends, by the fit alone (checked here), as in any smooth change within one shot.
    But the ends differ only about twice as much as the shot's own frames a window apart, not
    three times (`_BLEND_OWN`): no blend of two shots."""
    grids = _pan(_world(7), 100, 1.5)
    grids = np.stack([(grid - 128) * (1 + t / 48) + 100 + 2 * t for t, grid in enumerate(grids)]).astype(np.float32)
    h, t, move = 8, 48, np.array([-12, 0])  # the picture moves left 1.5 cells a frame, for 8 frames
    fit = pans._fits(grids[t - h : t - h + 1], grids[t : t + 1], grids[t + h : t + h + 1], move, -move)
    assert pans._blended(fit)[0] and fit[3][0] >= pans._BLEND_APART, fit
    assert not pans._even_blend(grids, t, h, move, -move)
    assert not _moving_blends(grids).any()


def test_moves_that_leave_too_little_of_the_grid_are_no_blend():
    """Moves so long that the moved ends share under a quarter of the grid: nothing to compare,
    so no blend (and no error), whether screened or tested whole."""
    grids = _pan(_world(8), 40, 1.0)
    far = np.array([[30, 0, -30, 0]] * 2)
    assert pans._fits(grids[[12]], grids[[20]], grids[[28]], far[0, :2], far[0, 2:]) is None
    assert MovingBlends(8)._blended_at(grids, np.array([20, 22]), far).tolist() == [False, False]
    assert not pans._even_blend(grids, 20, 8, far[0, :2], far[0, 2:])


def test_a_grid_too_small_to_move_stands_still():
    """A sliver of a video (a grid 4 cells tall): standing still is the only move tried, every
    shift is 0, and no centre is a blend of moved ends."""
    grids = np.random.default_rng(3).uniform(0, 255, (80, 4, 64)).astype(np.float32)
    residual, move, shifts = PanTracker().describe(grids)
    assert residual.shape == move.shape == (80,) and shifts.shape == (80, 2)
    assert not move.any() and not shifts.any()
    assert not _moving_blends(grids).any()
