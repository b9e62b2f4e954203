"""The dedup stage: copies, re-encodes, crops and overlapping excerpts of one source reach the
shards once; other footage of the same colours is kept; the threshold re-tunes without decoding."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, curate, read_manifests, run_module

from curate.synthetic import Join, Shot, render, write_video

FPS = 24
SHOTS = [Shot(4 * FPS, 71, pan=(1.0, 0.3)), Shot(4 * FPS, 72, pan=(-0.8, 0.0))]


def _matched_colours(frames, like):
    """`frames` with each frame's per-channel mean and spread set to those of the frame in `like`."""
    for frame, model in zip(frames, like, strict=False):
        f, m = frame.astype(np.float32), model.astype(np.float32)
        out = (f - f.mean((0, 1))) / (f.std((0, 1)) + 1e-6) * m.std((0, 1)) + m.mean((0, 1))
        yield np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    """A source video and what the web makes of it, plus other footage of the same colours."""
    videos = tmp_path_factory.mktemp("dedup") / "videos"
    frames = list(render(SHOTS, [Join("cut")], 320, 180))
    write_video(videos / "source.mp4", frames, fps=FPS)
    shutil.copy(videos / "source.mp4", videos / "copy.mp4")  # the same bytes under another name
    write_video(videos / "small.mp4", (f[::2, ::2] for f in frames), fps=FPS, options={"preset": "veryfast", "crf": "38"})
    write_video(videos / "cropped.mp4", (f[9:171, 16:304] for f in frames), fps=FPS)  # 10% of each side's length cut off
    write_video(videos / "excerpt.mp4", frames[36:156], fps=FPS)  # 1.5 s in, into the second shot
    others = render([Shot(4 * FPS, 81, pan=(1.0, 0.3)), Shot(4 * FPS, 82, pan=(-0.8, 0.0))], [Join("cut")], 320, 180)
    write_video(videos / "other.mp4", _matched_colours(others, frames), fps=FPS)
    return videos


@pytest.fixture(scope="module")
def deduped(copies, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dedup_out") / "out"
    curate("split", copies, "--out", out)
    printed = curate("dedup", "--out", out)
    assert "dedup:" in printed
    return out


def _by_file(clips: pd.DataFrame) -> pd.DataFrame:
    return clips.assign(file=clips.path.str.rsplit("/", n=1).str[-1])


def _kept(clips: pd.DataFrame, clip_ids: pd.Series) -> bool:
    """Whether every clip of `clip_ids` is a kept clip of `clips`."""
    return bool(clips.set_index("clip_id").loc[clip_ids].drop_reason.isna().all())


def test_each_moment_is_kept_once(deduped):
    _, clips = read_manifests(deduped)
    clips = _by_file(clips)
    assert set(clips.file) == {"source.mp4", "copy.mp4", "small.mp4", "cropped.mp4", "excerpt.mp4", "other.mp4"}
    assert clips.dedup_frames.notna().all()
    files = clips.set_index("clip_id").file
    kept = clips[clips.drop_reason.isna()]
    # Source and copy are the same bytes: one of them keeps each moment (a larger picture than the
    # re-encode's and the crop's, and longer clips than the excerpt's).
    assert len(kept) == 4 and (kept.file == "other.mp4").sum() == 2
    assert kept.file.isin(["source.mp4", "copy.mp4", "other.mp4"]).all()
    copies = clips[clips.file != "other.mp4"].drop(kept.index, errors="ignore")
    assert (copies.drop_reason == "duplicate").all(), copies[["file", "start_s", "drop_reason", "duplicate_similarity"]]
    assert _kept(clips, copies.duplicate_of) and files[copies.duplicate_of].isin(["source.mp4", "copy.mp4"]).all()
    assert clips[clips.drop_reason != "duplicate"].duplicate_of.isna().all()  # named for dropped duplicates only
    assert copies.duplicate_similarity.between(0.8, 1.0).all()
    exact = clips[clips.file.isin(["source.mp4", "copy.mp4"]) & clips.drop_reason.notna()]
    assert (exact.duplicate_similarity == 1.0).all()  # the same decoded pictures
    other = clips[clips.file == "other.mp4"]
    assert (other.duplicate_similarity.fillna(0) < 0.75).all(), other.duplicate_similarity  # null: no candidate came near


def test_the_threshold_retunes_without_decoding(deduped, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(deduped, out)
    _, before = read_manifests(out)
    curate("filter", "--out", out, "--set", "dedup.threshold=1.01")
    _, loose = read_manifests(out)
    assert loose.drop_reason.isna().all()
    assert loose.duplicate_similarity.equals(before.duplicate_similarity)  # the stored matches stay
    curate("filter", "--out", out, "--set", "dedup.threshold=0.8")
    _, again = read_manifests(out)
    assert again.drop_reason.equals(before.drop_reason)
    assert "duplicate" in curate("status", "--out", out)


def test_the_demos_shared_shots_are_kept_once(tmp_path):
    """The demo's damaged.mp4 is the first two thirds of cuts_and_dissolves.mp4: its clip is the
    one duplicate among the demo's clips, and the whole file's copy of that moment is kept."""
    from curate.synthetic import demo_set

    demo_set(tmp_path / "videos")
    curate("split", tmp_path / "videos", "--out", tmp_path / "out")
    curate("dedup", "--out", tmp_path / "out")
    clips = _by_file(read_manifests(tmp_path / "out")[1])
    duplicates = clips[clips.drop_reason == "duplicate"]
    assert duplicates.file.tolist() == ["damaged.mp4"]
    original = clips.set_index("clip_id").loc[duplicates.duplicate_of.iloc[0]]
    assert original.file == "cuts_and_dissolves.mp4" and pd.isna(original.drop_reason)
    assert original.start_frame == duplicates.start_frame.iloc[0] and duplicates.duplicate_similarity.iloc[0] == 1.0


def test_the_report_links_a_duplicate_to_the_clip_it_duplicates(deduped, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(deduped, out)
    curate("report", "--out", out)
    page = (out / "report" / "index.html").read_text()
    _, clips = read_manifests(out)
    for row in clips[clips.drop_reason == "duplicate"].itertuples():
        assert f'duplicate of <a href="#clip-{row.duplicate_of}">' in page
        assert f'id="clip-{row.duplicate_of}"' in page  # every clip is a card here: the link lands


def _with_embeddings(out: Path, model: str, close: tuple[str, str]) -> None:
    """Give every clip a random unit CLIP embedding, the two `close` clips nearly the same one
    (cosine about 0.99), and record that the aesthetic stage ran `model`."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    _, clips = read_manifests(out)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(clips), 64)).astype(np.float32)
    ids = clips.clip_id.tolist()
    vectors[ids.index(close[1])] = vectors[ids.index(close[0])] + rng.standard_normal(64).astype(np.float32) * 0.1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float16).ravel(), pa.float16()), 64)
    (out / "manifests" / "embeddings").mkdir()
    pq.write_table(pa.table({"clip_id": ids, "embedding": column}), out / "manifests" / "embeddings" / "unit.parquet")
    config = yaml.safe_load((out / "manifests" / "config.yaml").read_text())
    config["aesthetic"] = {"model": model, "pretrained": "openai"}
    (out / "manifests" / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("model", ["ViT-B-32", "tiny"])
def test_semantic_duplicates_from_real_clip_embeddings_only(deduped, tmp_path, model):
    """Two clips of other footage whose CLIP embeddings nearly agree: one is dropped as a semantic
    duplicate of the other with real weights; with --models tiny's random embeddings nothing is."""
    out = tmp_path / "out"
    shutil.copytree(deduped, out)
    clips = _by_file(read_manifests(out)[1])
    source = clips[clips.file.isin(["source.mp4", "copy.mp4"]) & clips.drop_reason.isna()].clip_id.iloc[0]
    other = clips[clips.file == "other.mp4"].clip_id.iloc[0]
    _with_embeddings(out, model, (source, other))
    assert "dedup: 0 clips hashed" in curate("dedup", "--out", out)  # the signatures are stored
    after = read_manifests(out)[1].set_index("clip_id")
    if model == "tiny":
        assert after.semantic_similarity.isna().all()
        assert after.drop_reason.equals(clips.set_index("clip_id").drop_reason)
        return
    pair = after.loc[[source, other]]
    assert pair.drop_reason.tolist().count("duplicate") == 1
    dropped = pair[pair.drop_reason == "duplicate"].iloc[0]
    assert dropped.semantic_match in (source, other) and dropped.semantic_similarity >= 0.98
    assert dropped.duplicate_of == dropped.semantic_match  # kept: the rule keeps the other
    assert not dropped.duplicate_similarity >= 0.75  # not the same pictures (null: none near): the embeddings said so
    kept = after[after.drop_reason.isna()]
    assert (kept.semantic_similarity.fillna(0) < 0.98).all()


@pytest.mark.parametrize("exact", [True, False])
def test_nearest_finds_planted_copies_exactly_and_through_the_index(exact):
    from curate.stages.dedup.neighbours import nearest

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 96)).astype(np.float32)
    vectors[2900:] = vectors[:100] + rng.standard_normal((100, 96)).astype(np.float32) * 0.15
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows, sims = nearest(vectors.astype(np.float16), k=4, exact=exact)
    assert (rows[2900:, 0] == np.arange(100)).all() and (rows[:100, 0] == np.arange(2900, 3000)).all()
    assert (sims[2900:, 0] > 0.97).all() and (np.diff(sims, axis=1) <= 0).all()  # closest first
    assert (rows != np.arange(3000)[:, None]).all()  # never itself


def test_a_later_run_drops_new_copies_of_old_footage_and_keeps_old_decisions(copies, tmp_path):
    """Run 1 on the source and other footage; run 2, given only the new videos, adds a copy, an
    excerpt and a re-encode at twice the size. The folder keeps the old videos' clips, the new
    clips are deduplicated against them, and the old clips stay kept, even where a new clip has
    the larger picture."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    for name in ("source.mp4", "other.mp4"):
        shutil.copy(copies / name, videos / name)
    curate("split", videos, "--out", out)
    curate("dedup", "--out", out)
    first = read_manifests(out)[1].set_index("clip_id")
    assert first.drop_reason.isna().all() and (first.dedup_round == 1).all()
    new_videos = tmp_path / "new"
    new_videos.mkdir()
    for name in ("copy.mp4", "excerpt.mp4"):
        shutil.copy(copies / name, new_videos / name)
    frames = list(render(SHOTS, [Join("cut")], 320, 180))
    write_video(new_videos / "big.mp4", (f.repeat(2, axis=0).repeat(2, axis=1) for f in frames), fps=FPS)
    curate("split", new_videos, "--out", out)  # the new videos only: the folder keeps the old ones
    assert "dedup: 6 clips hashed" in curate("dedup", "--out", out)  # only the new ones
    second = _by_file(read_manifests(out)[1])
    old = second[second.clip_id.isin(first.index)].set_index("clip_id")
    assert len(old) == len(first) and set(second.file) == {"source.mp4", "other.mp4", "copy.mp4", "excerpt.mp4", "big.mp4"}
    columns = ["drop_reason", "dedup_round", "duplicate_of", "duplicate_similarity"]
    assert old[columns].equals(first[columns])
    new = second[~second.clip_id.isin(first.index)]
    assert (new.dedup_round == 2).all() and (new.drop_reason == "duplicate").all()
    files = second.set_index("clip_id").file
    assert _kept(second, new.duplicate_of) and files[new.duplicate_of].eq("source.mp4").all()


def test_against_another_folder(deduped, copies, tmp_path):
    """A new folder deduplicated against a curated one: its clips of the same footage (the very
    same file included) are dropped, duplicate_in naming the other folder, whose clips rank first;
    a later dedup run remembers the other folder (stored absolute: it runs from anywhere)."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    for name in ("source.mp4", "small.mp4"):
        shutil.copy(copies / name, videos / name)
    curate("split", videos, "--out", out)
    curate("dedup", "--out", out, "--against", os.path.relpath(deduped, REPO))  # as typed in the repo folder
    clips = read_manifests(out)[1]
    theirs = read_manifests(deduped)[1].set_index("clip_id")
    assert (clips.drop_reason == "duplicate").all() and (clips.duplicate_in == str(deduped)).all()
    assert theirs.loc[clips.duplicate_of].drop_reason.isna().all()  # their kept clips
    again = run_module("dedup", "--out", str(out), cwd=tmp_path)  # from another folder
    assert again.returncode == 0, again.stderr
    printed = again.stdout
    assert read_manifests(out)[1].equals(clips)
    assert f"{len(clips)} same footage (duplicate_of), 0 same content by CLIP embedding, {len(clips)} of clips in other folders" in printed


@pytest.mark.parametrize("exact_max", [20_000, 10])
def test_best_matches_exactly_and_through_the_index(monkeypatch, exact_max):
    """300 clips of random hashes, 20 of them copies (3 bits of each hash flipped) of clips of other
    videos that rank above them: each copy finds its original, by exact search or (more clips than
    `exact_max`) through the approximate index; no other clip finds anything alike."""
    from curate.stages.dedup import neighbours
    from curate.stages.dedup.match import best_matches

    monkeypatch.setattr(neighbours, "EXACT_MAX", exact_max)
    rng = np.random.default_rng(5)
    hashes = rng.integers(-(2**63), 2**63 - 1, size=(300, 8), dtype=np.int64)
    for copy in range(280, 300):
        flips = np.zeros(8, np.int64)
        for bit in rng.choice(64, size=3, replace=False):
            flips ^= np.int64(1) << np.int64(bit) if bit < 63 else np.int64(-(2**63))
        hashes[copy] = hashes[copy - 280] ^ flips
    clips = pd.DataFrame(
        {
            "clip_id": [f"c{i:03d}" for i in range(300)],
            "video_id": [f"v{i:03d}" for i in range(300)],
            "width": [640] * 280 + [320] * 20,  # the copies are smaller: they rank below
            "height": [360] * 280 + [180] * 20,
            "start_s": 0.0,
            "end_s": 4.0,
        }
    )
    signatures = {f"c{i:03d}": [int(h) for h in hashes[i]] for i in range(300)}
    matches = {m.clip_id: m for m in best_matches(clips, signatures, candidates=4)}
    for copy in range(280, 300):
        found = matches[f"c{copy:03d}"]
        assert found.match == f"c{copy - 280:03d}" and found.similarity == pytest.approx(1 - 3 / 64)
    assert all(matches[f"c{i:03d}"].similarity is None or matches[f"c{i:03d}"].similarity < 0.75 for i in range(20, 280))


def test_a_video_gone_bad_after_split_is_a_row_with_an_error(copies, tmp_path):
    """A file that cannot be read any more when dedup runs: its clips get dedup_error and are
    dropped as dedup_failed; the other video's clips are hashed and the command succeeds."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    for name in ("source.mp4", "other.mp4"):
        shutil.copy(copies / name, videos / name)
    curate("split", videos, "--out", out)
    data = (videos / "source.mp4").read_bytes()
    (videos / "source.mp4").write_bytes(data[: len(data) // 3])  # the index at the end is gone
    curate("dedup", "--out", out)
    clips = _by_file(read_manifests(out)[1])
    bad, good = clips[clips.file == "source.mp4"], clips[clips.file == "other.mp4"]
    assert bad.dedup_error.notna().all() and (bad.drop_reason == "dedup_failed").all()
    assert good.dedup_frames.notna().all() and good.drop_reason.isna().all()


def similarity(a: list[int], b: list[int]) -> float:
    """How alike two clips are, written plainly, one pair at a time: for each frame of the clip
    with fewer, the share of bits its closest frame in the other shares; the median of those."""
    from curate.stages.dedup.signature import BITS, bit_matrix

    if not a or not b:
        return 0.0
    short, other = (a, b) if len(a) <= len(b) else (b, a)
    x, y = bit_matrix(short).astype(np.int16), bit_matrix(other).astype(np.int16)
    distance = (x[:, None, :] != y[None, :, :]).sum(axis=2)  # Hamming distance of every frame pair
    return float(np.median(1 - distance.min(axis=1) / BITS))


def test_signature_table_compares_like_the_pairwise_similarity():
    """The vectorised comparison (thousands of clip pairs at once) gives `similarity`'s value for
    every pair, clips of different lengths and ties included, and -inf where there is no candidate."""
    from curate.stages.dedup.match import Signatures

    rng = np.random.default_rng(11)
    base = rng.integers(-(2**63), 2**63 - 1, size=16, dtype=np.int64)
    signatures = []
    for _ in range(60):  # one footage's frames, a few bits flipped, of 3-16 frames, starting anywhere
        start, length = rng.integers(0, 8), rng.integers(3, 9)
        flips = np.int64(1) << rng.integers(0, 63, size=length).astype(np.int64)
        signatures.append([int(h) for h in base[start : start + length] ^ flips])
    table = Signatures(signatures)
    near = rng.integers(-1, 60, size=(60, 5))
    found = table.similarities(near)
    for row in range(60):
        for column, other in enumerate(near[row]):
            expected = -np.inf if other < 0 else similarity(signatures[row], signatures[other])
            assert found[row, column] == pytest.approx(expected, abs=1e-6)
    assert len({round(float(v), 6) for v in found[near >= 0]}) > 5  # a spread of values, not one


def test_duplicate_of_names_the_kept_clip_the_matches_lead_to_at_any_threshold():
    """Each clip stores its best match ranked above; whatever the thresholds, a dropped duplicate's
    duplicate_of is the kept clip at the end of its chain of matches (here, or in an --against
    folder, then named in duplicate_in), and a kept clip names none."""
    from curate.config import Config
    from curate.filters import drop_reasons, duplicate_originals

    clips = pd.DataFrame(
        {
            "clip_id": ["a", "b", "c", "d", "e", "f"],
            "duplicate_match": ["x", "a", "b", None, "x", "e"],
            "duplicate_match_in": ["/other", None, None, None, "/other", None],
            "duplicate_similarity": [0.5, 0.9, 0.85, None, 0.95, 0.83],
            "semantic_match": [None, None, None, "c", None, None],
            "semantic_match_in": [None] * 6,
            "semantic_similarity": [None, None, None, 0.99, None, None],
        }
    )

    def originals(**thresholds):
        config = Config()
        for name, value in thresholds.items():
            setattr(config.dedup, name, value)
        reasons = drop_reasons(clips, config)
        of, folder = duplicate_originals(clips, reasons, config)
        return dict(zip(clips.clip_id, zip(of, folder, strict=True), strict=True))

    loose = originals(threshold=0.8)  # b, c, e, f are footage duplicates, d a semantic one
    assert loose == {"a": (None, None), "b": ("a", None), "c": ("a", None), "d": ("a", None), "e": ("x", "/other"), "f": ("x", "/other")}
    strict = originals(threshold=0.88, semantic_threshold=1.01)  # c (0.85) and f (0.83) are kept now
    assert strict == {"a": (None, None), "b": ("a", None), "c": (None, None), "d": (None, None), "e": ("x", "/other"), "f": (None, None)}
    semantic = originals(threshold=0.88)  # d's semantic match c is kept now: the chain ends there
    assert semantic["d"] == ("c", None)


def test_a_copy_the_index_misses_is_found_by_a_shared_half_hash(monkeypatch):
    """Beyond the exact search's size, a copy's frames that keep half of their hash whole propose
    its original even where the index proposes nothing; a half-hash that many clips share (a flat
    frame's) proposes no one."""
    from curate.stages.dedup import match, neighbours

    monkeypatch.setattr(neighbours, "EXACT_MAX", 10)
    monkeypatch.setattr(neighbours, "nearest", lambda vectors, k, probes: (np.full((len(vectors), k), -1), np.zeros((len(vectors), k))))
    rng = np.random.default_rng(8)
    hashes = rng.integers(-(2**63), 2**63 - 1, size=(200, 6), dtype=np.int64)
    hashes[:, 0] = 12345  # every clip's first frame alike: shared by more than SHARED_HALF_MAX clips
    hashes[190:] = hashes[:10] ^ np.int64(0b111)  # copies: 3 low bits of every frame flipped, upper halves whole
    clips = pd.DataFrame(
        {"clip_id": [f"c{i:03d}" for i in range(200)], "video_id": [f"v{i:03d}" for i in range(200)], "width": [640] * 190 + [320] * 10}
    ).assign(height=360, start_s=0.0, end_s=4.0)
    signatures = {f"c{i:03d}": [int(h) for h in hashes[i]] for i in range(200)}
    found = {m.clip_id: m for m in match.best_matches(clips, signatures, candidates=4)}
    assert [found[f"c{i:03d}"].match for i in range(190, 200)] == [f"c{i:03d}" for i in range(10)]
    assert all(found[f"c{i:03d}"].match is None for i in range(10, 190))  # the shared flat frame proposed no one
