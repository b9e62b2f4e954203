"""A clip's perceptual signature: a 64-bit DCT hash of each of a few frames, and how alike two are.

A frame is shrunk to 32x32 grey (FFmpeg's area filter, from the clip's crop box), transformed
with a 2-D DCT, and its 8x8 lowest frequencies (the DC term aside, its sign carries nothing)
compared with their median: one bit each. Re-encoding, resizing and small crops barely move
those frequencies, while other footage, even of the same colours, flips about half the bits.

Two clips are alike where most of the shorter one's frames have a close frame in the other, so
an excerpt that overlaps another clip's time window for most of its length matches it, wherever
the two windows start (`match.Signatures.similarities` compares many clips that way at once).
"""

from __future__ import annotations

import math

import numpy as np

HASH_SIDE = 32  # the grey picture hashed, pixels a side
LOW = 8  # the DCT's LOW x LOW lowest frequencies make the 64 bits
BITS = LOW * LOW


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: `m @ x @ m.T` transforms an n x n picture."""
    k = np.arange(n)[:, None]
    m = np.cos(math.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


_DCT = _dct_matrix(HASH_SIDE)[:LOW]  # only the low rows are needed


def frame_hash(rgb: np.ndarray) -> int:
    """The 64-bit hash (as a signed int64 value, what parquet stores) of a HASH_SIDE-square RGB picture."""
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    low = _DCT @ grey @ _DCT.T
    values = low.ravel()
    bits = values > np.median(values[1:])
    bits[0] = False  # the DC term says how bright the frame is, not what is in it
    return int(np.packbits(bits).view(">i8")[0])


def bit_matrix(hashes: list[int]) -> np.ndarray:
    """Hashes as rows of 64 bits (uint8 0/1)."""
    return np.unpackbits(np.array(hashes, ">i8").view(np.uint8).reshape(-1, 8), axis=1)
