"""Camera moves between luma grids (`curate.stages.split.pans`): the shift found, and what it leaves."""

from __future__ import annotations

import numpy as np
import pytest

from curate.stages.split.pans import PanTracker


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
