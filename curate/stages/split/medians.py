"""Medians and quantiles of many short windows at once, for the shot detector and its pan tests."""

from __future__ import annotations

import numpy as np


def nanmedians(windows: np.ndarray) -> np.ndarray:
    """Along the last axis, the median of the values other than NaN (NaN where there are none):
    what np.nanmedian gives, without its per-call cost (masked arrays, checks), which for short
    windows outweighs the work."""
    ordered = np.sort(windows, axis=-1)  # NaN sorts last
    count = windows.shape[-1] - np.isnan(windows).sum(axis=-1)
    low = np.take_along_axis(ordered, (np.maximum(count - 1, 0) // 2)[..., None], axis=-1)[..., 0]
    high = np.take_along_axis(ordered, (count // 2)[..., None], axis=-1)[..., 0]  # the same value when count is odd
    return np.where(count > 0, (low + high) / 2, np.nan)


def nanquantiles(windows: np.ndarray, q: float) -> np.ndarray:
    """Along the last axis, the `q` quantile of the values other than NaN, interpolated linearly
    between the two nearest ranks as np.nanquantile does by default (NaN where there are none)."""
    ordered = np.sort(windows, axis=-1)  # NaN sorts last
    last = np.maximum(windows.shape[-1] - np.isnan(windows).sum(axis=-1) - 1, 0)  # the last value's rank
    position = q * last
    low = np.floor(position).astype(np.intp)
    below = np.take_along_axis(ordered, low[..., None], axis=-1)[..., 0]
    above = np.take_along_axis(ordered, np.minimum(low + 1, last)[..., None], axis=-1)[..., 0]
    return below + (position - low) * (above - below)  # a window of NaN only reads its first NaN
