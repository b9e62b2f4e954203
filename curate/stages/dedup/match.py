"""Each clip's best match among the clips that rank above it, and how alike the two are.

The rank is the keep rule: a larger picture first, then a higher aesthetic score, then a longer
clip (then the clip id, so ties break the same way every run). Before all of those comes the clip's
`dedup_round`, the dedup run that first compared it: clips an earlier run decided on rank above the
new ones, so a later run on new videos drops the new copies of old footage and leaves every
earlier decision as it was. A clip is only ever matched with
clips above it, so whatever threshold `curate filter` later sets, the top clip of any group of
alike clips is kept and each of the others names a clip above it (`duplicate_of`).

Clips of the same video are never matched: split cuts a video into clips that share no moment.
Exact copies (the same frames' hashes) are found by a dictionary; for the others, the clips whose
signature vectors are closest (`candidates` of them, and within cosine FLOOR) are compared frame by
frame. The search is exact up to `neighbours.EXACT_MAX` clips, through an approximate index beyond.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from curate.stages.dedup.signature import clip_vector, similarity

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
    videos = ranked.video_id.to_numpy()
    if not ids:
        return []
    vectors = np.stack([clip_vector(signatures[i]) for i in ids])
    if len(ids) <= EXACT_MAX:
        search = partial(_nearest_above, vectors, videos=videos, k=candidates)
    else:  # more clips than an exact search takes: the approximate index's neighbours, found once
        # Copies' signature vectors are looser pairs (cosine 0.77 and up) than CLIP's near-duplicates
        # (0.98): more cells are searched (bench/dedup.py --hashes: recall 0.955 with 8 at 100k clips).
        search = partial(_indexed_above, *nearest(vectors, 2 * candidates, probes=32), videos=videos, k=candidates)
    first_of: dict[tuple, int] = {}  # an exact signature -> the highest-ranked clip that has it
    matches = []
    for start in range(0, len(ids), _CHUNK):
        stop = min(start + _CHUNK, len(ids))
        near = search(start=start, stop=stop)
        for row in range(start, stop):
            matches.append(_best(ids, videos, signatures, row, near[row - start], first_of))
    return matches


# Signature vectors of the same footage (re-encodes, crops, excerpts) measured 0.77-1.0 in cosine,
# of other footage about 0.1: candidates below this are not compared frame by frame.
FLOOR = 0.3


def _nearest_above(vectors: np.ndarray, start: int, stop: int, videos: np.ndarray, k: int) -> list[np.ndarray]:
    """For rows start..stop: the up to `k` rows above each (in keep order), of other videos,
    whose vectors are closest, if within FLOOR (exact: a matrix product)."""
    above = vectors[:stop]
    cosine = vectors[start:stop] @ above.T
    rows = np.arange(start, stop)[:, None]
    cosine[(np.arange(stop)[None, :] >= rows) | (videos[start:stop, None] == videos[None, :stop]) | (cosine < FLOOR)] = -np.inf
    if stop <= k:
        order = np.argsort(-cosine, axis=1)
    else:
        order = np.argpartition(-cosine, k - 1, axis=1)[:, :k]
    return [o[np.isfinite(cosine[n, o])] for n, o in enumerate(order)]


def _indexed_above(rows: np.ndarray, sims: np.ndarray, start: int, stop: int, videos: np.ndarray, k: int) -> list[np.ndarray]:
    """Like _nearest_above, from the approximate index's nearest rows and their cosines (closest
    first): those above in keep order, of other videos, within FLOOR, `k` at most."""
    out = []
    for row in range(start, stop):
        near, cosine = rows[row], sims[row]
        usable = (near >= 0) & (near < row) & (videos[np.maximum(near, 0)] != videos[row]) & (cosine >= FLOOR)
        out.append(near[usable][:k])
    return out


def _best(ids: list[str], videos: np.ndarray, signatures: dict, row: int, near: np.ndarray, first_of: dict) -> Match:
    """The clip at `row`'s best match among `near` (and an exact copy above it, if any)."""
    own = signatures[ids[row]]
    exact = tuple(own)
    best_id, best_sim = None, None
    if exact in first_of and videos[first_of[exact]] != videos[row]:
        best_id, best_sim = ids[first_of[exact]], 1.0
    first_of.setdefault(exact, row)
    for other in near.tolist():
        if best_sim == 1.0:
            break
        value = similarity(own, signatures[ids[other]])
        if best_sim is None or value > best_sim:
            best_id, best_sim = ids[other], value
    return Match(ids[row], best_id, best_sim)


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
