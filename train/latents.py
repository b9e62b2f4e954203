"""The latent-sample format: what `python -m train precompute` writes and the loader reads back.

A latent sample is a WebDataset sample (the key of the video sample it was made from) with the
members:

    <key>.latent.npy   (C, T', H', W') normalised VAE latents of the frames the loader would train on
    <key>.text.npy     (L, D) the caption's text embedding, without its trailing all-zero rows
    <key>.txt          the caption
    <key>.json         the source sample's metadata plus "latent": how the latents were made

Arrays are plain .npy (no pickles: shards are untrusted input). Embeddings are stored without
their padding (Wan zeroes every position past the prompt); the loader pads them back per batch.
This module knows the format only; it imports no other train module, so both sides can use it.
"""

from __future__ import annotations

import io
import json

import numpy as np
from numpy.typing import DTypeLike

LATENT = "latent.npy"
TEXT = "text.npy"
CAPTION = "txt"
META = "json"


def is_latent_sample(sample: dict) -> bool:
    """Whether a sample read from a shard is a latent sample (else a video sample)."""
    return LATENT in sample


def encode_sample(latent: np.ndarray, text: np.ndarray, caption: str, meta: dict, dtype: DTypeLike) -> dict[str, bytes]:
    """The members of a latent sample: `latent` and `text` (its padding trimmed) stored as `dtype`."""
    return {
        LATENT: to_npy(latent.astype(dtype)),
        TEXT: to_npy(trim_padding(text).astype(dtype)),
        CAPTION: caption.encode(),
        META: json.dumps(meta, sort_keys=True).encode(),
    }


def decode_sample(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """(latents, trimmed text embedding) of a latent sample; ValueError when a member is missing."""
    if TEXT not in sample:
        raise ValueError(f"{sample.get('__key__')}: a latent sample without its {TEXT}")
    return load_npy(sample[LATENT]), load_npy(sample[TEXT])


def trim_padding(embedding: np.ndarray) -> np.ndarray:
    """(L, D) without its trailing rows that are exactly zero (at least one row is kept)."""
    nonzero = np.flatnonzero(np.any(embedding != 0, axis=1))
    end = int(nonzero[-1]) + 1 if nonzero.size else 1
    return embedding[:end]


def load_npy(data: bytes) -> np.ndarray:
    """An array stored as a .npy member (pickles are refused: shards are untrusted)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def to_npy(array: np.ndarray) -> bytes:
    """The .npy bytes of `array` (C order, no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
