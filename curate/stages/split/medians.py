"""Medians of many short windows at once, for the shot detector and its pan tests."""

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
