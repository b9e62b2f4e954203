"""The lagged change (`curate.stages.split.lagged`): what a third of a second changes beyond the
camera's move, on rendered luma grids (64x36, from `curate.synthetic` at 320x180)."""

import numpy as np
import pytest
from test_shots import _rendered_grids

from curate.stages.split.lagged import LaggedChange, _band_shifts, _profile_shifts
from curate.synthetic import Join, Shot

LAG = 8  # a third of a second at 24 fps


def _lagged(grids: list[np.ndarray], batch: int = 64) -> np.ndarray:
    change = LaggedChange(LAG)
    stack = np.stack(grids).astype(np.float32)
    for start in range(0, len(stack), batch):
        change.push(stack[start : start + batch])
    return change.finish()


@pytest.mark.parametrize("pan", [(0.0, 0.0), (1.3, -0.6), (0.0, 2.0), (-2.0, 0.0)])
def test_a_shot_in_motion_changes_little_beyond_its_move(pan):
    """A still camera and slow pans and tilts, each with its moving subject: once frame t - lag is
    moved by the camera's move, what is left over most of the picture is about a luma level."""
    values = _lagged(_rendered_grids([Shot(96, 31, pan=pan)], []))
    measured = values[~np.isnan(values)]
    assert len(measured) >= 96 - 2 * LAG, values
    assert np.median(measured) < 1.0 and np.percentile(measured, 90) < 2.0, values


@pytest.mark.parametrize("pan", [(-9.0, 0.0), (5.5, 0.0)])
def test_a_fast_pan_that_follows_its_subject_is_read_by_the_scenery(pan):
    """A fast pan (9 and 5.5 pixels a frame at 320x180) keeps its moving subject in frame, so the
    subject pulls the whole picture's column means towards no move (they read a move 2 cells long
    for one 14 long, leaving 6-7 luma levels). The horizontal bands the subject does not cover
    outvote it: what is left is under 2 luma levels for most frames."""
    values = _lagged(_rendered_grids([Shot(96, 31, pan=pan)], []))
    assert np.nanmedian(values) < 2.0, values


def test_a_long_dissolve_between_moving_shots_changes_every_cell():
    """A 48-frame dissolve from a slow pan into another: no frame differs much from the one before,
    but over the lag every cell has changed by a sixth of the two pictures' difference: over the
    whole middle of the dissolve, more than twice what either shot's frames typically change
    beyond their move (the detector's test, `shots._LAGGED_RISE`)."""
    shots, joins = [Shot(96, 32, pan=(-1.2, 0.5)), Shot(96, 33, pan=(1.0, 0.8))], [Join("dissolve", 48)]
    values = _lagged(_rendered_grids(shots, joins))  # the dissolve: frames 48..95
    inside, sides = values[56:88], [values[LAG:36], values[110:-LAG]]
    assert np.nanmin(inside) > 2.0, values
    assert np.nanmin(inside) > 2 * max(np.nanmedian(side) for side in sides), values


def test_batches_change_nothing_and_every_frame_gets_a_value():
    """Fed in batches of any size, the values are the same; frames between two measured ones take
    their interpolation, and only the first and last half lag have none."""
    grids = _rendered_grids([Shot(70, 34, pan=(2.0, 0.0)), Shot(70, 35)], [Join("dissolve", 24)])
    whole, pieces = _lagged(grids, batch=len(grids)), _lagged(grids, batch=7)
    np.testing.assert_array_equal(whole, pieces)
    missing = np.flatnonzero(np.isnan(whole))
    assert set(missing.tolist()) <= set(range(LAG // 2)) | set(range(len(grids) - LAG, len(grids))), missing


def test_a_grid_too_small_to_move_is_not_measured():
    """A sliver of a video (grids a few cells tall) gets no values, and no error."""
    values = _lagged([np.full((3, 64), 100.0, np.float32) + i for i in range(40)])
    assert np.isnan(values).all()


def test_profile_shifts_find_the_move_and_keep_still_on_a_flat_profile():
    rng = np.random.default_rng(0)
    profile = rng.uniform(0, 255, 90).astype(np.float32)
    before = np.stack([profile[10:74], profile[10:74], np.full(64, 50.0, np.float32)])
    after = np.stack([profile[3:67], profile[17:81], np.full(64, 50.0, np.float32)])  # moved by +7, -7, flat
    np.testing.assert_array_equal(_profile_shifts(before, after, reach=24), [7, -7, 0])


def test_band_shifts_follow_the_bands_that_agree():
    """Three of four bands moved by +5 cells and one holding a subject that stays put: +5."""
    rng = np.random.default_rng(1)
    scenery = rng.uniform(0, 255, (36, 90)).astype(np.float32)
    before, after = scenery[:, 10:74].copy(), scenery[:, 5:69].copy()  # moved by +5
    after[:9] = before[:9]  # the top band: a subject filling it, still in the frame
    np.testing.assert_array_equal(_band_shifts(before[None], after[None], reach=24), [5])
