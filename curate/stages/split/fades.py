"""Fades: what a contrast ramp around a dip does, frame by frame.

`ShotDetector._fades` finds the dips in contrast (blank frames, or frames far flatter than both
sides) and walks out over the ramps around them (`ramp_step`). These measures decide what the walk
found: a dip entered and left at once is a flash (`abrupt_blip`), and a ramp counts only if it heads
for black or white (`ramp_heads_for_blank`). A fade maps every pixel p to c + a * (p - c) (c the
fade colour, a its progress), so across a ramp mean luma is a straight line in contrast that meets c
at zero contrast; a dim, mid-grey stretch of one shot dips in contrast alone and keeps its mean.
"""

from __future__ import annotations

import numpy as np

_BLIP_JUMP = 2.0  # the contrast ratio of "at once", into a dip or out of it
_BLIP_FRAMES = 3  # dips this short, entered and left in one frame each, are flashes
_BLIP_BOTTOM = 1.25  # frames within this ratio of such a dip's flattest are in it
_FADE_STEP = 1.02  # per-frame contrast change that still counts as part of a fade
_LEVEL = 0.8  # a fade ends where contrast is back to this share of the shot's level
_SLOW_FADE_STEP = 1.003  # below that level, even this slow a rise continues the fade
_FADE_LEVEL_MARGIN = 64.0  # a fade heads for a luma level this close to black (0) or white (255)


def abrupt_blip(std: np.ndarray, start: int, end: int) -> bool:
    """A dip of at most a few frames that contrast falls into and climbs out of at once. The dip's
    frames are those as flat as its bottom, give or take _BLIP_BOTTOM: a flash's two frames may
    straddle the threshold that found the dip."""
    bottom = _BLIP_BOTTOM * float(std[start:end].min())
    while start > 0 and std[start - 1] <= bottom:
        start -= 1
    while end < len(std) and std[end] <= bottom:
        end += 1
    if end - start > _BLIP_FRAMES or start == 0 or end == len(std):
        return False
    return all(abrupt_edges(std, start, end))


def abrupt_edges(std: np.ndarray, start: int, end: int) -> tuple[bool, bool]:
    """Whether contrast falls into the dip [start, end) at once (by `_BLIP_JUMP` in one frame, or
    the dip starts the video), and whether it climbs out of it at once (or the dip ends the video)."""
    into = start == 0 or std[start - 1] > _BLIP_JUMP * std[start]
    out_of = end == len(std) or std[end] > _BLIP_JUMP * std[end - 1]
    return bool(into), bool(out_of)


def ramp_heads_for_blank(std: np.ndarray, mean: np.ndarray) -> bool:
    """Does a contrast ramp fade towards black or white? Its line of mean luma against contrast
    meets the fade colour at zero contrast (`_heads_for_blank`), read by least squares or robustly
    (`_robust_level`): a ramp may climb on into the next shot's own changes (something crossing it
    right after a fade), whose frames pull a least-squares line off the fade's, not the median of
    the slopes between every two frames."""
    return _heads_for_blank(std, mean) or _is_blank_colour(_robust_level(std.astype(np.float64), mean.astype(np.float64)))


def _robust_level(std: np.ndarray, mean: np.ndarray) -> float:
    """Mean luma at zero contrast along the line through frames' (contrast, mean luma): the median
    of the slopes between every two frames, and the median intercept at that slope, which a few
    frames off the line cannot sway."""
    first, second = np.triu_indices(len(std), 1)
    run = std[second] - std[first]
    apart = np.abs(run) > 1e-6
    slope = float(np.median((mean[second] - mean[first])[apart] / run[apart])) if apart.any() else 0.0
    return float(np.median(mean - slope * std))


def _heads_for_blank(std: np.ndarray, mean: np.ndarray) -> bool:
    """Do frames along a contrast ramp fade towards black or white? The least-squares line of
    mean luma against contrast, extrapolated to zero contrast, gives the fade colour."""
    _, level = np.polyfit(std.astype(np.float64), mean.astype(np.float64), 1)
    return _is_blank_colour(level)


def _is_blank_colour(level: float) -> bool:
    """Whether a fade colour (a luma level) is black or white, within `_FADE_LEVEL_MARGIN`."""
    return bool(level <= _FADE_LEVEL_MARGIN or level >= 255.0 - _FADE_LEVEL_MARGIN)


def ramp_step(outer: np.ndarray, inner: float, level: float) -> int:
    """How many frames a ramp walk moves outwards from a frame with contrast `inner`, given the
    next one or two frames outwards (`outer`, nearest first): 1 if the next frame continues the
    fade, 2 if only the one after it does (one frame wobbling against the trend), else 0."""
    for k, value in enumerate(outer[:2]):
        if _still_fading(float(value), inner, level):
            return k + 1
    return 0


def _still_fading(outer: float, inner: float, level: float) -> bool:
    """Is a frame with contrast `outer`, next to one with `inner`, still part of a fade towards
    `level`? Yes while contrast rises clearly, or rises at all while still well below the level."""
    return outer > inner * _FADE_STEP or (outer < _LEVEL * level and outer > inner * _SLOW_FADE_STEP)
