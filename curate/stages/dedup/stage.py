"""Dedup stage: a perceptual signature of each kept clip, then each clip's best match across videos.

Unit: all the kept clips of one video (the file opened once). `score` hashes a few frames of each
clip (`dedup.frames_per_s`, between `min_frames` and `max_frames`, spread over it) and stores the
hashes as the clip's `dedup_signature`. `finish` then looks at every clip at once: for each clip
kept by the stages before, the most alike clip of another video that ranks above it in the keep
rule (`curate.stages.dedup.match`), stored as `duplicate_match` and `duplicate_similarity`. Which
of them are dropped is the `duplicate` rule's call (`dedup.threshold`), so `curate filter` re-tunes
it without decoding anything; each dropped clip's `duplicate_of` names the kept clip its matches
lead to (`curate.filters.duplicate_originals`). No model: it runs the same with `--models tiny`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from curate.config import DedupConfig
from curate.framepool import count_at_rate, decode_frames, frame_indices, uniform_positions
from curate.manifest import ClipRef
from curate.pipeline import STAGES, Columns, stage_spec
from curate.stages.clipstage import ClipStage
from curate.stages.dedup.match import best_matches, semantic_matches
from curate.stages.dedup.signature import HASH_SIDE, frame_hash
from curate.storage import read_parquet, read_parquets


class DedupStage(ClipStage):
    """Perceptual signatures per unit; duplicates across all clips in `finish`."""

    name = "dedup"
    # What a unit's score part holds; `finish` adds the others, over all clips at once.
    hashed = pa.schema([("dedup_frames", pa.int32()), ("dedup_signature", pa.list_(pa.int64()))])
    columns = pa.schema(
        [
            *hashed,
            ("dedup_round", pa.int32()),
            ("duplicate_match", pa.string()),
            ("duplicate_match_in", pa.string()),
            ("duplicate_similarity", pa.float32()),
            ("semantic_match", pa.string()),
            ("semantic_match_in", pa.string()),
            ("semantic_similarity", pa.float32()),
        ]
    )

    def __init__(self, config: DedupConfig):
        self.config = config

    @property
    def schema(self) -> pa.Schema:
        """Score parts hold the hashes alone: storing them leaves the matches of the last `finish`
        (and each clip's `dedup_round`) in clips.parquet for the next one to build on."""
        return pa.schema([("clip_id", pa.string()), ("picture_box", pa.string()), *self.hashed, (self.error_column, pa.string())])

    def frame_count(self, clip: ClipRef) -> int:
        """How many frames of the clip are hashed."""
        return count_at_rate(clip, self.config.frames_per_s, self.config.min_frames, self.config.max_frames)

    def score(self, clips: list[ClipRef]) -> list[dict]:
        wanted = [frame_indices(clip, uniform_positions(self.frame_count(clip))) for clip in clips]
        hashes: list[dict[int, int]] = [{} for _ in clips]
        errors: dict[int, str] = {}
        for event in decode_frames(clips, wanted, _hash, threads=1, queue_size=64):
            if event[0] == "frame":
                hashes[event[1]][event[2]] = event[3]
            else:
                errors.setdefault(event[1], event[2])
        values = []
        for clip_no, indices in enumerate(wanted):
            if clip_no in errors:
                values.append({self.error_column: errors[clip_no]})
            else:
                signature = [hashes[clip_no][i] for i in indices]
                values.append({"dedup_frames": len(signature), "dedup_signature": signature})
        return values

    def finish(self, layout, work_dir, done: set[str], progress: bool) -> tuple[object, pa.Table | None]:
        """Every clip's best match: among the clips the stages before kept, and that have a
        signature (and its closest by CLIP embedding, where those are real), and the kept clips
        of the `dedup.against` folders, which rank above all of them. Returns how many clips the
        rule drops now, and the match columns (`duplicate_of`, the kept clip, follows from them
        and the thresholds: `curate.filters.duplicate_originals`)."""
        clips = read_parquet(layout.clips).to_pandas()
        if "dedup_signature" not in clips:
            return None, None
        candidates, embeddings = self._candidates(layout, clips)
        signatures = {c: [int(h) for h in s] for c, s in zip(candidates.clip_id, candidates.dedup_signature, strict=True)}
        near = {m.clip_id: m for m in best_matches(candidates, signatures, self.config.candidates)}
        semantic = {m.clip_id: m for m in semantic_matches(candidates, embeddings, self.config.candidates)}
        ids = clips.clip_id.tolist()
        rounds = dict(zip(candidates.clip_id, candidates.dedup_round, strict=True))
        old = clips.set_index("clip_id").dedup_round.to_dict() if "dedup_round" in clips else {}
        near_match, near_in = self._matched(near, ids)
        semantic_match, semantic_in = self._matched(semantic, ids)
        table = pa.table(
            {
                "clip_id": pa.array(ids, pa.string()),
                "dedup_round": pa.array([_int_or_none(rounds.get(i, old.get(i))) for i in ids], pa.int32()),
                "duplicate_match": pa.array(near_match, pa.string()),
                "duplicate_match_in": pa.array(near_in, pa.string()),
                "duplicate_similarity": pa.array(_similarities(near, ids), pa.float32()),
                "semantic_match": pa.array(semantic_match, pa.string()),
                "semantic_match_in": pa.array(semantic_in, pa.string()),
                "semantic_similarity": pa.array(_similarities(semantic, ids), pa.float32()),
            }
        )
        return self._summary(table, near), table

    def _candidates(self, layout, clips: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """The clips to match (this folder's, with their dedup_round, after the `dedup.against`
        folders' kept clips) and their real CLIP embeddings (none where any were random)."""
        kept = clips[_kept_before_dedup(clips) & clips.dedup_signature.notna()]
        kept = kept.assign(dedup_round=_rounds(clips, kept))
        embeddings = real_embeddings(layout, set(kept.clip_id))
        for number, folder in enumerate(self.config.against):
            theirs, their_embeddings = _other_folder(folder, number)
            kept = pd.concat([theirs, kept], ignore_index=True)
            embeddings.update(their_embeddings if embeddings else {})  # both real, or no semantic test
        return kept, embeddings

    def _matched(self, found: dict, ids: list[str]) -> tuple[list[str | None], list[str | None]]:
        """For each clip of `ids`: its match's clip_id and the `dedup.against` folder holding it
        (None: this folder)."""
        clip_ids, folders = [], []
        for i in ids:
            match = found[i].match if i in found else None
            number, tab, clip_id = match.partition(_AGAINST) if match else (None, "", None)
            clip_ids.append(clip_id if tab else match)
            folders.append(self.config.against[int(number)] if tab else None)
        return clip_ids, folders

    def _summary(self, table: pa.Table, near: dict) -> DedupSummary:
        """How many of this folder's clips (the rows of `table`) were compared, and how many the
        `duplicate` rule of the stage table drops now."""
        rule = next(r for r in stage_spec("dedup").rules if r.reason == "duplicate")
        dropped = rule.fires(Columns(table), self.config)
        return DedupSummary(compared=sum(i in near for i in table.column("clip_id").to_pylist()), duplicates=int(dropped.sum()))


def _similarities(found: dict, ids: list[str]) -> list[float | None]:
    return [found[i].similarity if i in found else None for i in ids]


class DedupSummary:
    """What `finish` found, for the command's output."""

    def __init__(self, compared: int, duplicates: int):
        self.compared, self.duplicates = compared, duplicates

    def line(self, out: str) -> str:
        """The command's line on what dedup found."""
        return f"dedup: {self.duplicates} of {self.compared} clips duplicate a clip ranked above them"


_AGAINST = "\t"  # joins an --against folder's number and a clip id of it (no clip id holds a tab)


def _other_folder(folder: str, number: int):
    """The kept clips of another output folder that have signatures, as dedup candidates ranked
    above every clip here (round 0; ids and video ids marked with the folder's number, so the same
    video curated in both is compared with itself), and their real CLIP embeddings."""
    from curate.errors import InputError
    from curate.manifest import OutputLayout

    other = OutputLayout(folder)
    if not other.clips.exists():
        raise InputError(f"dedup.against: no clips manifest in {other.manifests}/")
    theirs = read_parquet(other.clips).to_pandas()
    if "dedup_signature" not in theirs:
        raise InputError(f"dedup.against: {folder} has no dedup signatures (run `python -m curate dedup --out {folder}` first)")
    theirs = theirs[theirs.drop_reason.isna() & theirs.dedup_signature.notna()]
    embeddings = real_embeddings(other, set(theirs.clip_id))
    mark = f"{number}{_AGAINST}"
    theirs = theirs.assign(clip_id=mark + theirs.clip_id, video_id=mark + theirs.video_id, dedup_round=0)
    return theirs, {mark + clip_id: vector for clip_id, vector in embeddings.items()}


def _kept_before_dedup(clips):
    """Clips no stage before dedup drops: kept, or dropped by dedup or a stage after it (their
    drop_reason hides no earlier one: the first rule that fires names it)."""
    names = [spec.name for spec in STAGES]
    later = {rule.reason for spec in STAGES[names.index("dedup") :] for rule in spec.rules}
    return clips.drop_reason.isna() | clips.drop_reason.isin(later)


def _rounds(clips, kept):
    """Each kept clip's dedup_round: the one it has, or, for a clip never compared before, the next."""
    current = kept.dedup_round if "dedup_round" in kept else pd.Series(np.nan, index=kept.index)
    latest = clips.dedup_round.max() if "dedup_round" in clips else np.nan
    return current.fillna(1 if pd.isna(latest) else int(latest) + 1).astype(int)


def _int_or_none(value) -> int | None:
    return None if value is None or value != value else int(value)


def real_embeddings(layout, wanted: set[str]) -> dict[str, np.ndarray]:
    """The CLIP embeddings (manifests/embeddings/) of the `wanted` clips, as float32 unit vectors;
    none when the aesthetic stage last ran a random model (`--models tiny`, or no weights), whose
    embeddings would call unrelated clips alike."""
    import yaml

    folder = layout.manifests / "embeddings"
    if not wanted or not layout.config.exists() or not folder.exists():
        return {}
    aesthetic = (yaml.safe_load(layout.config.read_text()) or {}).get("aesthetic", {})
    if aesthetic.get("model", "tiny") == "tiny" or not aesthetic.get("pretrained"):
        return {}
    parts = sorted(folder.glob("*.parquet"))
    if not parts:
        return {}
    table = pa.concat_tables(read_parquets(parts))  # fetched concurrently from an object store
    ids = table.column("clip_id").to_pylist()
    dims = table.schema.field("embedding").type.list_size
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = flat.reshape(-1, dims)
    return {clip_id: vectors[row] for row, clip_id in enumerate(ids) if clip_id in wanted}


def _hash(frame, view) -> int:
    """The frame's 64-bit hash, from its crop box shrunk to HASH_SIDE square."""
    return frame_hash(np.asarray(view.rgb(frame, HASH_SIDE, HASH_SIDE, "AREA")))
