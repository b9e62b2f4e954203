"""Each clip's best match among the clips that rank above it, and how alike the two are.

The rank is the keep rule: a larger picture first, then a higher aesthetic score, then a longer
clip (then the clip id, so ties break the same way every run). Before all of those comes the clip's
`dedup_round`, the dedup run that first compared it: clips an earlier run decided on rank above the
new ones, so a later run on new videos drops the new copies of old footage and leaves every
earlier decision as it was. A clip is only ever matched with
clips above it, so whatever threshold `curate filter` later sets, the top clip of any group of
alike clips is kept and each of the others names a clip above it (`duplicate_of`).

Clips of the same video are never matched: split cuts a video into clips that share no moment.
Exact copies (the same frames' hashes) are found by sorting; for the others, the clips whose
signature vectors are closest (`candidates` of them, and within cosine FLOOR) are compared frame by
frame, thousands of pairs at once. The search is exact up to `neighbours.EXACT_MAX` clips; beyond,
an approximate index proposes the closest, and clips that share half of a frame's hash exactly
propose themselves too (what the index misses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from curate.stages.dedup.signature import BITS, bit_matrix

_CHUNK = 2048  # clips whose neighbours are searched at once (a CHUNK x N matrix of floats)


@dataclass(frozen=True)
class Match:
    """A clip's best match above it (None: nothing above it to compare with)."""

    clip_id: str
    match: str | None
    similarity: float | None


def keep_order(clips: pd.DataFrame) -> pd.DataFrame:
    """The clips in keep order: the one to keep first."""
    width = clips.crop_width.fillna(clips.width) if "crop_width" in clips else clips.width
    height = clips.crop_height.fillna(clips.height) if "crop_height" in clips else clips.height
    aesthetic = clips.aesthetic_score.fillna(-np.inf) if "aesthetic_score" in clips else pd.Series(0.0, index=clips.index)
    first = clips.dedup_round.fillna(np.inf) if "dedup_round" in clips else pd.Series(0.0, index=clips.index)
    ranked = clips.assign(
        _round=first.astype(float), _area=-(width * height).astype(float), _aesthetic=-aesthetic, _length=-(clips.end_s - clips.start_s)
    )
    keys = ["_round", "_area", "_aesthetic", "_length"]
    return ranked.sort_values([*keys, "clip_id"], kind="stable").drop(columns=keys)


def best_matches(clips: pd.DataFrame, signatures: dict[str, list[int]], candidates: int) -> list[Match]:
    """For each clip of `clips` (clip_id, video_id, sizes, aesthetic_score, times) that has a
    signature: its most alike clip above it in keep order, from another video (None where no
    candidate's signature vector comes within cosine FLOOR of its own)."""
    from curate.stages.dedup.neighbours import EXACT_MAX, nearest

    ranked = keep_order(clips[clips.clip_id.isin(signatures.keys())])
    ids = ranked.clip_id.tolist()
    if not ids:
        return []
    videos = pd.factorize(ranked.video_id)[0]
    hashes = Signatures([signatures[i] for i in ids])
    vectors = hashes.vectors()
    if len(ids) <= EXACT_MAX:
        near = _nearest_above(vectors, videos, candidates)
    else:  # more clips than an exact search takes: the approximate index's neighbours
        rows, sims = nearest(vectors, 2 * candidates, probes=32)
        # A copy the index misses (its vector fell outside the cells searched) is still likely
        # to share half of some frame's hash exactly with its original: those are candidates too.
        near = np.concatenate([_indexed_above(rows, sims, videos, candidates), _sharing_a_half(hashes, videos)], axis=1)
    similarities = hashes.similarities(near)
    best = np.argmax(similarities, axis=1)  # the first of equally alike candidates
    match = near[np.arange(len(ids)), best]
    value = similarities[np.arange(len(ids)), best].astype(float)
    copy = _exact_copies(hashes, videos)  # the same hashes: found whatever the index proposed
    match, value = np.where(copy >= 0, copy, match), np.where(copy >= 0, 1.0, value)
    return [
        Match(clip_id, None, None) if row < 0 else Match(clip_id, ids[row], float(sim))
        for clip_id, row, sim in zip(ids, match.tolist(), value.tolist(), strict=True)
    ]


# Signature vectors of the same footage (re-encodes, crops, excerpts) measured 0.77-1.0 in cosine,
# of other footage about 0.1: candidates below this are not compared frame by frame.
FLOOR = 0.3


class Signatures:
    """Clips' frame hashes as one array, so thousands of clip pairs compare at once: `hashes`
    (clips x most frames, int64; padding past each clip's `counts` is never read)."""

    def __init__(self, signatures: list[list[int]]):
        self.counts = np.array([len(s) for s in signatures], np.int64)
        self.hashes = np.zeros((len(signatures), max(1, int(self.counts.max(initial=1)))), np.int64)
        for row, signature in enumerate(signatures):
            self.hashes[row, : len(signature)] = signature

    def vectors(self) -> np.ndarray:
        """Each clip as one unit vector (rows of one float32 array): its frames' bits as +-1,
        averaged. Alike clips point alike, so a nearest-neighbour search over these vectors finds
        the candidates worth comparing frame by frame."""
        out = np.empty((len(self.counts), BITS), np.float32)
        for start in range(0, len(out), _CHUNK):
            hashes, counts = self.hashes[start : start + _CHUNK], self.counts[start : start + _CHUNK]
            signs = bit_matrix(hashes.ravel()).reshape(*hashes.shape, BITS).astype(np.float32) * 2 - 1
            valid = np.arange(hashes.shape[1])[None, :, None] < counts[:, None, None]
            mean = (signs * valid).sum(axis=1) / np.maximum(counts, 1)[:, None]
            out[start : start + len(mean)] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-6)
        return out

    def similarities(self, near: np.ndarray) -> np.ndarray:
        """How alike each clip (row) and each of its candidates are (`near`, rows of this table, -1
        for none), 0-1 as `_pairs` measures it; -inf where there is no candidate."""
        out = np.full(near.shape, -np.inf, np.float32)
        for start in range(0, len(near), _CHUNK // 2):
            block = near[start : start + _CHUNK // 2]
            own = np.arange(start, start + len(block))[:, None].repeat(block.shape[1], axis=1)
            valid = block >= 0
            if valid.any():
                out[start : start + len(block)][valid] = self._pairs(own[valid], block[valid])
        return out

    def _pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """How alike clip rows a[i] and b[i] are (0-1): for each frame of the clip with fewer (a's
        on a tie), the share of its 64 bits its closest frame in the other shares, and of those
        values the median (half of the shorter clip's frames match at least that well)."""
        a_short = self.counts[a] <= self.counts[b]
        short, other = np.where(a_short, a, b), np.where(a_short, b, a)
        pairs = self.hashes[short][:, :, None] ^ self.hashes[other][:, None, :]
        distance = np.bitwise_count(pairs.view(np.uint64))  # unsigned: on signed ints it counts the absolute value's bits
        frames = np.arange(self.hashes.shape[1])
        distance = np.where(frames[None, None, :] < self.counts[other][:, None, None], distance, BITS + 1)  # past its end
        closest = distance.min(axis=2)  # per frame of the shorter clip
        closest[frames[None, :] >= self.counts[short][:, None]] = BITS + 1  # past its end: sorts last
        ordered = np.sort(closest, axis=1)
        count = np.maximum(self.counts[short], 1)[:, None]
        middle = (np.take_along_axis(ordered, (count - 1) // 2, 1) + np.take_along_axis(ordered, count // 2, 1))[:, 0] / 2
        return np.where(self.counts[short] > 0, 1 - middle / BITS, 0.0)


SHARED_HALF_MAX = 64  # clips sharing one half-hash, at most, for it to propose candidates


def _sharing_a_half(hashes: Signatures, videos: np.ndarray) -> np.ndarray:
    """For each clip (row, in keep order): the highest-ranked clips of other videos that have a
    frame hash with the same upper or lower 32 bits as one of its own (-1 where none; a column
    per frame and half). A re-encode flips a few bits of a frame's 64, so some frame of a copy
    almost always keeps one half whole. Halves that many clips share (the hash of a flat or
    black frame) say nothing about footage and propose no one."""
    width = hashes.hashes.shape[1]
    present = np.flatnonzero((np.arange(width)[None, :] < hashes.counts[:, None]).ravel())  # (row, frame) as row * width + frame
    values = hashes.hashes.ravel().view(np.uint64)[present]
    out = np.full((len(hashes.counts), 2 * width), -1, np.int64)
    for half, key in enumerate((values >> np.uint64(32), values & np.uint64(0xFFFFFFFF))):
        order = np.lexsort((present, key))  # by half, then rank: each run starts at its highest-ranked clip
        key, slot = key[order], present[order]
        row = slot // width
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        run_length = np.diff(np.r_[starts, len(key)])
        first = np.repeat(row[starts], run_length)  # each entry's run's highest-ranked clip
        usable = (first != row) & (videos[first] != videos[row]) & (np.repeat(run_length, run_length) <= SHARED_HALF_MAX)
        out[row[usable], half * width + slot[usable] % width] = first[usable]
    return out


def _exact_copies(hashes: Signatures, videos: np.ndarray) -> np.ndarray:
    """For each clip (row, in keep order): the highest-ranked clip with the very same hashes, when
    that one is of another video (-1 otherwise)."""
    padding = np.arange(hashes.hashes.shape[1])[None, :] >= hashes.counts[:, None]
    keys = np.concatenate([hashes.counts[:, None], np.where(padding, 0, hashes.hashes)], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    top = first[inverse.ravel()]  # np.unique's index is each value's first row: the highest-ranked
    rows = np.arange(len(top))
    return np.where((top != rows) & (videos[top] != videos), top, -1)


def _nearest_above(vectors: np.ndarray, videos: np.ndarray, k: int) -> np.ndarray:
    """For each row: the up to `k` rows above it (in keep order), of other videos, whose vectors
    are closest, if within FLOOR (-1 past those); exact, by chunks of a matrix product."""
    n = len(vectors)
    out = np.full((n, k), -1, np.int64)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        cosine = vectors[start:stop] @ vectors[:stop].T
        rows = np.arange(start, stop)[:, None]
        cosine[(np.arange(stop)[None, :] >= rows) | (videos[start:stop, None] == videos[None, :stop]) | (cosine < FLOOR)] = -np.inf
        take = min(k, stop)
        order = np.argpartition(-cosine, take - 1, axis=1)[:, :take] if take < stop else np.argsort(-cosine, axis=1)[:, :take]
        found = np.isfinite(np.take_along_axis(cosine, order, axis=1))
        out[start:stop, :take] = np.where(found, order, -1)
    return out


def _indexed_above(rows: np.ndarray, sims: np.ndarray, videos: np.ndarray, k: int) -> np.ndarray:
    """Like _nearest_above, from the approximate index's nearest rows and their cosines (closest
    first): those above in keep order, of other videos, within FLOOR, `k` at most."""
    own = np.arange(len(rows))[:, None]
    usable = (rows >= 0) & (rows < own) & (videos[np.maximum(rows, 0)] != videos[:, None]) & (sims >= FLOOR)
    first = np.argsort(~usable, axis=1, kind="stable")[:, :k]  # the usable ones, closest first
    return np.where(np.take_along_axis(usable, first, axis=1), np.take_along_axis(rows, first, axis=1), -1)


def semantic_matches(clips: pd.DataFrame, embeddings: dict[str, np.ndarray], candidates: int) -> list[Match]:
    """For each clip of `clips` that has a CLIP embedding (unit length): its closest clip by
    cosine above it in keep order, from another video, among its `candidates` nearest
    (`curate.stages.dedup.neighbours`: exact for small sets, an approximate index for millions)."""
    from curate.stages.dedup.neighbours import nearest

    ranked = keep_order(clips[clips.clip_id.isin(embeddings.keys())])
    ids = ranked.clip_id.tolist()
    if not ids:
        return []
    videos = ranked.video_id.to_numpy()
    rows, sims = nearest(np.stack([embeddings[i] for i in ids]), candidates)
    matches = []
    for row, (near, cosine) in enumerate(zip(rows, sims, strict=True)):
        usable = (near >= 0) & (near < row) & (videos[np.maximum(near, 0)] != videos[row])
        hit = int(np.argmax(usable)) if usable.any() else None
        matches.append(Match(ids[row], None if hit is None else ids[near[hit]], None if hit is None else float(cosine[hit])))
    return matches
