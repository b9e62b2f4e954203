"""The closest vectors to each of many unit vectors (cosine), fast enough for millions of clips.

Up to `EXACT_MAX` vectors the search is exact: chunks of a matrix product. Beyond that it is
approximate: the vectors are projected onto their `PCA_DIMS` main directions (a near-duplicate
pair, cosine 0.98 and up, stays close there while the search gets several times cheaper), an
inverted-file index of faiss (k-means cells; each query looks in its `nprobe` closest cells)
proposes `k` candidates per vector, and the candidates' cosines are computed again on the full
vectors. bench/dedup.py measures its time, memory and recall against the exact search.
"""

from __future__ import annotations

import math

import numpy as np

EXACT_MAX = 20_000  # up to this many vectors, the exact search (about 15 s at 768 dimensions on 2 cores)
PCA_DIMS = 128
_CHUNK = 4096  # query vectors per block


def nearest(vectors: np.ndarray, k: int, exact: bool | None = None, probes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `vectors` (unit length, float16 or float32): the rows of its `k` closest
    other rows (-1 where fewer exist) and their cosines, closest first. `probes`: the cells each
    query looks in, for the approximate search (more: higher recall of looser pairs, slower)."""
    n = len(vectors)
    k = max(1, min(k, n - 1)) if n > 1 else 1
    if exact if exact is not None else n <= EXACT_MAX:
        rows = _exact(vectors, k)
    else:
        rows = _approximate(vectors, k, probes)
    return _rescored(vectors, rows)


def _exact(vectors: np.ndarray, k: int) -> np.ndarray:
    full = vectors.astype(np.float32, copy=False)
    out = np.full((len(vectors), k), -1, np.int64)
    for start in range(0, len(vectors), _CHUNK):
        block = full[start : start + _CHUNK] @ full.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not itself
        take = min(k, block.shape[1] - 1) if block.shape[1] > 1 else 0
        if take:
            out[start : start + len(block), :take] = np.argpartition(-block, take - 1, axis=1)[:, :take]
    return out


def _approximate(vectors: np.ndarray, k: int, probes: int) -> np.ndarray:
    import faiss  # only for large sets: the exact search needs nothing but numpy

    n, dims = vectors.shape
    rng = np.random.default_rng(0)
    sample = vectors[np.sort(rng.choice(n, size=min(n, 100_000), replace=False))].astype(np.float32)
    pca = faiss.PCAMatrix(dims, min(PCA_DIMS, dims))
    pca.train(sample)
    cells = max(64, min(4096, int(4 * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(pca.d_out)
    index = faiss.IndexIVFFlat(quantizer, pca.d_out, cells, faiss.METRIC_INNER_PRODUCT)
    index.train(_unit(pca.apply(sample[: min(len(sample), 40 * cells)])))
    for start in range(0, n, _CHUNK * 4):
        index.add(_unit(pca.apply(vectors[start : start + _CHUNK * 4].astype(np.float32))))
    index.nprobe = probes
    out = np.empty((n, k), np.int64)
    for start in range(0, n, _CHUNK * 4):
        _, rows = index.search(_unit(pca.apply(vectors[start : start + _CHUNK * 4].astype(np.float32))), k + 1)
        out[start : start + len(rows)] = _without_self(rows, start, k)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.float32)


def _without_self(rows: np.ndarray, start: int, k: int) -> np.ndarray:
    """Each query's result rows with the query itself taken out (k of the k + 1 left)."""
    own = np.arange(start, start + len(rows))[:, None]
    keep = rows != own
    keep[keep.sum(axis=1) > k, -1] = False  # itself was not found: drop the farthest instead
    return rows[keep].reshape(len(rows), k)


def _rescored(vectors: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' cosines on the full vectors, candidates sorted closest first."""
    sims = np.full(rows.shape, -np.inf, np.float32)
    for start in range(0, len(rows), _CHUNK):
        block = rows[start : start + _CHUNK]
        valid = block >= 0
        own = vectors[start : start + len(block)].astype(np.float32)
        other = vectors[np.where(valid, block, 0)].astype(np.float32)
        sims[start : start + len(block)] = np.where(valid, np.einsum("nd,nkd->nk", own, other), -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(sims, order, axis=1)
