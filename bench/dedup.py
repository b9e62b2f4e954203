"""Semantic dedup at scale: the nearest-neighbour search of curate/stages/dedup/neighbours.py on
synthetic CLIP-sized embeddings with planted near-duplicates.

Each size runs in a fresh process (its peak memory is its own): N random unit vectors of 768
dimensions in float16 (what manifests/embeddings holds), 1% of them replaced by noisy copies of
others (cosine 0.98-0.995, what re-uploads of one clip give). Recall is the share of planted copies
whose closest neighbour found is their original (exact search finds every one of them); up to
20k, where the exact search is used, the approximate index is run too and compared with it.

    python bench/dedup.py                 # 10k, 100k, 1M
    python bench/dedup.py --sizes 10000
    python bench/dedup.py --hashes --sizes 10000 100000   # the frame-hash matching instead

With --hashes, the clips are 8-frame signatures of random 64-bit hashes, 1% of them copies (3 bits
of each hash flipped) of clips of other videos ranked above them, and the whole best-match pass of
curate/stages/dedup/match.py runs (exact search up to 20k clips; beyond, the index and the
frames' shared half-hashes propose candidates; then the frame comparisons); recall is the share
of copies whose match is their original.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import cpu_model, load_averages, peak_rss_mb  # noqa: E402
from curate.stages.dedup.neighbours import nearest  # noqa: E402

DIMS = 768
PLANTED = 0.01


def embeddings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N unit vectors (float16) and the planted pairs: copies[i] is a noisy copy of originals[i]."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIMS), np.float16)
    for start in range(0, n, 65536):
        block = rng.standard_normal((min(65536, n - start), DIMS), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    planted = rng.choice(n, size=2 * int(n * PLANTED), replace=False)
    originals, copies = planted[: len(planted) // 2], planted[len(planted) // 2 :]
    noise = rng.standard_normal((len(copies), DIMS), dtype=np.float32) * (rng.uniform(0.1, 0.2, (len(copies), 1)) / np.sqrt(DIMS))
    copy = out[originals].astype(np.float32) + noise
    out[copies] = copy / np.linalg.norm(copy, axis=1, keepdims=True)
    return out, originals, copies


def one_size(n: int) -> dict:
    vectors, originals, copies = embeddings(n)
    started = time.perf_counter()
    rows, sims = nearest(vectors, k=8)
    seconds = time.perf_counter() - started
    result = {
        "clips": n,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak_rss_mb() / 1024, 2),
        "planted": len(copies),
        "planted_recall": float(np.mean(rows[copies, 0] == originals)),
        "planted_min_cosine": float(sims[copies, 0].min()),
    }
    if n <= 20_000:
        # The same size through the approximate index: of the pairs exact search finds at cosine
        # 0.9 and up, the share the index finds too (random vectors' neighbours, at cosine 0.1, do not matter).
        exact_rows, exact_sims = nearest(vectors, k=8, exact=True)
        approx_rows, _ = nearest(vectors, k=8, exact=False)
        close = exact_sims[:, 0] >= 0.9
        result["approximate_recall_vs_exact"] = float(np.mean(approx_rows[close, 0] == exact_rows[close, 0]))
    return result


def one_size_hashes(n: int) -> dict:
    import pandas as pd

    from curate.stages.dedup.match import best_matches

    rng = np.random.default_rng(0)
    hashes = rng.integers(-(2**63), 2**63 - 1, size=(n, 8), dtype=np.int64)
    copies = np.arange(n - n // 100, n)
    flips = np.zeros((len(copies), 8), np.int64)
    for _ in range(3):
        flips ^= np.left_shift(np.int64(1), rng.integers(0, 63, size=(len(copies), 8)).astype(np.int64))
    hashes[copies] = hashes[copies - (n - n // 100)] ^ flips
    clips = pd.DataFrame({"clip_id": [f"c{i:07d}" for i in range(n)], "video_id": [f"v{i:07d}" for i in range(n)]})
    clips = clips.assign(width=np.where(np.arange(n) >= copies[0], 320, 640), height=180, start_s=0.0, end_s=4.0)
    signatures = dict(zip(clips.clip_id, hashes.tolist(), strict=True))
    started = time.perf_counter()
    matches = {m.clip_id: m.match for m in best_matches(clips, signatures, candidates=16)}
    seconds = time.perf_counter() - started
    found = [matches[f"c{c:07d}"] == f"c{c - copies[0]:07d}" for c in copies]
    return {
        "clips": n,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak_rss_mb() / 1024, 2),
        "planted": len(copies),
        "planted_recall": float(np.mean(found)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--hashes", action="store_true", help="measure the frame-hash matching instead of the embedding search")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size_hashes(args.one) if args.hashes else one_size(args.one)))
        return 0
    print(f"# {cpu_model()}, load {load_averages()}")
    for n in args.sizes:
        command = [sys.executable, __file__, "--one", str(n), *(["--hashes"] if args.hashes else [])]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        print(done.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
