"""The pipeline's stages, in order: one row each, read by everything that needs to know a stage.

The runner, `curate filter`, `curate status`, the report and the command line take from here
what a stage is called, how it groups clips into units, which column says it has looked at a
clip, which rules drop clips on its scores (and how to explain them), and where its code is.
Nothing here imports a stage's code, which may need torch: `class_path` names it and the runner
imports it only to run the stage, so `curate filter` and `curate status` never load a model.

Adding a stage takes three things: its module under `curate/stages/`, its config class (a section
of `curate.config.Config`, named like the stage), and its row below, in pipeline order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np


class UnitSize(NamedTuple):
    """How a clip stage groups clips into units."""

    max_clips: int | None  # clips per unit at most (None: no limit)
    one_video: bool  # True: a unit holds clips of one video only (the file opened once per unit)


# The module that runs every stage's units in pool workers (first in each stage's preload list).
EXECUTOR = "curate.executor"


@dataclass(frozen=True)
class DropRule:
    """Drop a clip for `reason` where `fires(clips, section)` is true; `clips` is a `Columns`,
    `section` the stage's config section. A rule reads only stored columns, so new thresholds
    apply in seconds."""

    reason: str
    description: str  # what fired, in the thresholds' words (status, report, manifests/README.md)
    fires: Callable[[Columns, Any], np.ndarray]  # one bool per clip


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name is its command, its config section, its work folders' prefix, and the
    prefix of its `<name>_error` column."""

    name: str
    class_path: str  # "module:Class", imported only when the stage runs
    help: str  # one line, in `python -m curate --help`
    description: str  # the command's own --help
    example: str  # `--set` example for the command's --help
    units: UnitSize | None = None  # clip stages: how clips group into units (None: split, a video per unit)
    scored_by: str | None = None  # the column that says the stage has scored a clip
    scores: dict[str, str] = field(default_factory=dict)  # numeric columns worth a histogram: how to read them
    rules: tuple[DropRule, ...] = ()  # in order: the first that fires names the drop_reason
    done_word: str = "scored"  # what the stage did to a clip: "12 clips scored"
    loads_model: bool = False  # True: `--models tiny` applies; one local worker per GPU; Ray actors
    # Modules only its workers import (in setup or process), which the command's own process does
    # not need: the fork server imports them once, before forking the workers (see `preload`).
    worker_modules: tuple[str, ...] = ()

    @property
    def error_column(self) -> str:
        """Set on a clip the stage could not look at, with why (a clip stage's `failed` rule fires on it)."""
        return f"{self.name}_error"

    @property
    def module(self) -> str:
        """The module that defines the stage's class."""
        return self.class_path.partition(":")[0]

    @property
    def preload(self) -> tuple[str, ...]:
        """What the fork server imports before forking this stage's workers."""
        return (EXECUTOR, self.module, *self.worker_modules)

    def load(self) -> type:
        """The stage's class (imports its module: torch, for a model stage)."""
        return getattr(importlib.import_module(self.module), self.class_path.partition(":")[2])


class Columns:
    """The clips' stored columns as numpy arrays, what the rules read: numbers as float64 with NaN
    where missing, anything else as Python objects with None. Made from a pyarrow Table without
    loading pandas (the split command never needs it: `curate.arrow`), or from a DataFrame."""

    def __init__(self, clips):
        self._clips = clips
        self._is_table = hasattr(clips, "column_names")  # a pyarrow Table; a DataFrame has `columns`
        self.names = list(clips.column_names if self._is_table else clips.columns)
        self.num_rows = len(clips)
        self._read: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            self._read[name] = self._as_numpy(name)
        return self._read[name]

    def _as_numpy(self, name: str) -> np.ndarray:
        if self._is_table:
            from curate.arrow import to_numpy

            return to_numpy(self._clips.column(name))
        import numpy as np
        from pandas.api.types import infer_dtype  # loaded already: a DataFrame

        series = self._clips[name]
        # Numbers, with None or NaN where missing (an object column too, as a hand-made frame has).
        if infer_dtype(series, skipna=True) in ("integer", "floating", "mixed-integer-float", "empty"):
            return series.to_numpy(dtype=np.float64, na_value=np.nan)
        return series.to_numpy(dtype=object)


def column(clips: Columns, name: str) -> np.ndarray:
    """A stored column, or an all-missing one where the stage has not run (no rule fires on it:
    every comparison with NaN is false, and NaN is not `present`, whatever the column holds)."""
    if name in clips:
        return clips[name]
    import numpy as np

    return np.full(clips.num_rows, np.nan)


def present(values: np.ndarray) -> np.ndarray:
    """Where a column holds a value (not None, not NaN)."""
    import numpy as np

    if values.dtype != object:
        return ~np.isnan(values)
    return np.fromiter((value is not None and value == value for value in values), bool, len(values))  # NaN != NaN


def _or_zero(values: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.where(np.isnan(values), 0.0, values)


def _cropped(clips: Columns) -> np.ndarray:
    """Clips whose crop box leaves black borders out (a whole-frame box, or none, is not cropped)."""
    return (column(clips, "crop_width") < column(clips, "width")) | (column(clips, "crop_height") < column(clips, "height"))


def _failed(stage: str, description: str) -> DropRule:
    """The rule of a clip the stage could not look at: its error column is set."""
    return DropRule(f"{stage}_failed", description, lambda clips, _: present(column(clips, f"{stage}_error")))


def text_croppable(clips: Columns, text: Any) -> np.ndarray:
    """Clips whose overlay text sits only in the top and bottom bands, and whose picture keeps
    text.min_keep_share of its height without them (what text.crop cuts off instead of dropping)."""
    kept_share = 1 - _or_zero(column(clips, "text_band_top")) - _or_zero(column(clips, "text_band_bottom"))
    return (column(clips, "text_mid_area") <= 0) & (kept_share >= text.min_keep_share)


def _text_overlay(clips: Columns, text: Any) -> np.ndarray:
    """Overlay text over text.max_area; with text.crop, not where cropping its bands away would do."""
    over = column(clips, "text_area") > text.max_area
    return over & ~text_croppable(clips, text) if text.crop else over


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "split",
        "curate.stages.split.stage:SplitStage",
        help="find shot boundaries (cuts, dissolves, fades, wipes) and cut every video into clips",
        description=(
            "Decode each input once, detect hard cuts and gradual transitions, and write one row per "
            "input to OUT/manifests/videos.parquet and one row per clip to OUT/manifests/clips.parquet. "
            "Unreadable inputs become rows with status='error'. Interrupted runs resume where they "
            "stopped when the same command is run again."
        ),
        example="split.max_clip_s=8 split.min_clip_s=3",
        # PyAV, numpy, the detectors, and OpenCV (0.16 CPU-s to import) for the frame-quality samples.
        worker_modules=("curate.stages.split.video",),
        rules=(
            DropRule(
                "too_small",
                "the picture, as shown, is narrower or lower than split.min_side pixels",
                lambda clips, split: (column(clips, "width") < split.min_side) | (column(clips, "height") < split.min_side),
            ),
            DropRule(
                "small_picture",
                "black borders cut off, the picture (crop_width x crop_height) is narrower or lower than split.min_picture_side",
                lambda clips, split: (
                    _cropped(clips)
                    & ((column(clips, "crop_width") < split.min_picture_side) | (column(clips, "crop_height") < split.min_picture_side))
                ),
            ),
            DropRule(
                "bad_exposure",
                "brightness < split.min_brightness or > split.max_brightness, dark_frac > split.max_dark_frac "
                "or bright_frac > split.max_bright_frac",
                lambda clips, split: (
                    (column(clips, "brightness") < split.min_brightness)
                    | (column(clips, "brightness") > split.max_brightness)
                    | (column(clips, "dark_frac") > split.max_dark_frac)
                    | (column(clips, "bright_frac") > split.max_bright_frac)
                ),
            ),
            DropRule("blurry", "sharpness < split.min_sharpness", lambda clips, split: column(clips, "sharpness") < split.min_sharpness),
        ),
        scores={
            "brightness": "mean brightness (0-1)",
            "dark_frac": "share of black pixels",
            "bright_frac": "share of white pixels",
            "sharpness": "sharpness (RMS Laplacian)",
        },
    ),
    StageSpec(
        "motion",
        "curate.stages.motion.stage:MotionStage",
        help="score each kept clip's motion; drop static clips and broken extreme motion",
        description=(
            "Read only the frames of each kept clip, measure its motion from the codec's motion "
            "vectors (optical flow for streams without them), and add motion_score and its "
            "statistics to OUT/manifests/clips.parquet. Static clips get drop_reason='static', "
            "flashes and garbage 'extreme_motion'. Interrupted runs resume."
        ),
        example="motion.min=0.01",
        units=UnitSize(None, one_video=True),  # all of a video's clips in one pass over it
        scored_by="motion_score",
        scores={
            "motion_score": "motion (frame widths / s)",
            "motion_max_jump": "largest luma jump (0-1)",
            "motion_static_frac": "share of static windows",
        },
        rules=(
            _failed("motion", "the motion stage could not read the clip's frames"),
            DropRule(
                "static",
                "motion_score < motion.min or motion_static_frac > motion.max_static_frac",
                lambda clips, motion: (
                    (column(clips, "motion_score") < motion.min) | (column(clips, "motion_static_frac") > motion.max_static_frac)
                ),
            ),
            DropRule(
                "extreme_motion",
                "motion_score > motion.max or motion_max_jump > motion.max_jump",
                lambda clips, motion: (column(clips, "motion_score") > motion.max) | (column(clips, "motion_max_jump") > motion.max_jump),
            ),
        ),
    ),
    StageSpec(
        "text",
        "curate.stages.text.stage:TextStage",
        help="find burned-in text (subtitles, titles, tickers, logos) in each kept clip; drop clips with overlay text",
        description=(
            "Run PP-OCRv4's text detector (ONNX, shipped in rapidocr-onnxruntime; the same real model "
            "everywhere, offline) on a few frames of each kept clip, tell overlay text (still while the "
            "camera moves, or in the top/bottom bands and corners) from scene text (moving with the "
            "scene), and add text_area, text_scene_area and the overlay boxes to OUT/manifests/clips.parquet. "
            "Clips whose overlay text covers more than text.max_area get drop_reason='text_overlay'. "
            "Interrupted runs resume."
        ),
        example="text.max_area=0.01 text.frames=6",
        units=UnitSize(32, one_video=False),  # a few frames per clip: batches across videos keep the detector fed
        scored_by="text_area",
        scores={"text_area": "overlay text (share of the picture)", "text_scene_area": "scene text (share of the picture)"},
        rules=(
            _failed("text", "the text stage could not read the clip's frames"),
            DropRule(
                "text_overlay",
                "text_area > text.max_area (with text.crop: unless the overlay sits only in top/bottom bands that leave "
                "text.min_keep_share of the height)",
                _text_overlay,
            ),
        ),
        # The detector is real everywhere (--models tiny leaves it alone), loads in a fraction of a
        # second, and runs on one core per worker: a worker per core, like motion, not per GPU.
        loads_model=False,
    ),
    StageSpec(
        "aesthetic",
        "curate.stages.aesthetic:AestheticStage",
        help="score each kept clip with CLIP and an aesthetic head; save the CLIP embeddings",
        description=(
            "Embed a few frames of each kept clip with open_clip, score them with the LAION "
            "aesthetic head (0-10), add aesthetic_score to OUT/manifests/clips.parquet, drop clips "
            "under aesthetic.min as 'low_aesthetic', and save the clip embeddings under "
            "OUT/manifests/embeddings/. Interrupted runs resume."
        ),
        example="aesthetic.min=5 aesthetic.frame_positions=[0.2,0.8]",
        units=UnitSize(64, one_video=False),  # model stages want big batches, across videos
        scored_by="aesthetic_score",
        scores={"aesthetic_score": "aesthetic score (0-10)"},
        rules=(
            _failed("aesthetic", "the aesthetic stage could not read the clip's frames"),
            DropRule(
                "low_aesthetic",
                "aesthetic_score < aesthetic.min",
                lambda clips, aesthetic: column(clips, "aesthetic_score") < aesthetic.min,
            ),
        ),
        loads_model=True,
    ),
    StageSpec(
        "dedup",
        "curate.stages.dedup.stage:DedupStage",
        help="find clips that duplicate footage of another video (copies, re-encodes, resizes, crops, excerpts); drop all but one",
        description=(
            "Hash a few frames of each kept clip (a 64-bit DCT hash of a small grey picture each; no model), "
            "store them as dedup_signature, then give every clip its most alike clip of another video that "
            "ranks above it (a larger picture, then a higher aesthetic_score, then a longer clip) as "
            "duplicate_match and duplicate_similarity in OUT/manifests/clips.parquet, and, where the aesthetic stage "
            "ran real CLIP weights, the closest by embedding as semantic_match and semantic_similarity. Clips "
            "whose similarity reaches dedup.threshold (or dedup.semantic_threshold) get drop_reason='duplicate', "
            "and duplicate_of names the kept clip they duplicate. "
            "Interrupted runs resume."
        ),
        example="dedup.threshold=0.9",
        units=UnitSize(None, one_video=True),  # each file opened once for all its clips
        scored_by="dedup_frames",
        scores={
            "duplicate_similarity": "similarity to the best match ranked above (0-1)",
            "semantic_similarity": "CLIP cosine with the closest clip ranked above",
        },
        rules=(
            _failed("dedup", "the dedup stage could not read the clip's frames"),
            DropRule(
                "duplicate",
                "duplicate_similarity >= dedup.threshold (the clip in duplicate_match, ranked above it, holds the same footage) or "
                "semantic_similarity >= dedup.semantic_threshold (the clip in semantic_match shows the same thing)",
                lambda clips, dedup: (
                    (column(clips, "duplicate_similarity") >= dedup.threshold)
                    | (column(clips, "semantic_similarity") >= dedup.semantic_threshold)
                ),
            ),
        ),
        done_word="hashed",
    ),
    StageSpec(
        "caption",
        "curate.stages.caption.stage:CaptionStage",
        help="caption each kept clip with a video vision-language model",
        description=(
            "Give a few frames of each kept clip, spread over it, to a vision-language model as one "
            "video (default SmolVLM2-256M-Video-Instruct; see README for GPU presets) and add caption, "
            "caption_model and caption_prompt_id to OUT/manifests/clips.parquet. Empty, truncated or "
            "looping captions are retried once with other decoding settings; what still fails gets "
            "drop_reason='caption_failed' with the raw answer in caption_raw. Interrupted runs resume."
        ),
        example="caption.num_frames=16 caption.max_new_tokens=200",
        units=UnitSize(32, one_video=False),
        scored_by="caption",
        rules=(
            _failed(
                "caption",
                "no usable caption: frames unreadable, or empty, truncated or looping twice (see caption_error, caption_raw)",
            ),
        ),
        done_word="captioned",
        loads_model=True,
    ),
    StageSpec(
        "pack",
        "curate.stages.pack.stage:PackStage",
        help="re-encode the kept clips into WebDataset tar shards (mp4 + caption + metadata)",
        description=(
            "Decode each video once, re-encode every kept clip frame-accurately to H.264 at pack.short_side "
            "(or a pack.crop_width x pack.crop_height centre crop) and pack.fps, and write samples "
            "<key>.mp4, <key>.txt (caption) and <key>.json (the clip's manifest row) into "
            "OUT/shards/<prefix>-000000.tar, ... with a wids index OUT/shards/index.json; clips.parquet "
            "gets shard and key. The same manifests give the same bytes; interrupted runs resume."
        ),
        example="pack.short_side=256 pack.fps=16 pack.max_shard_bytes=500000000",
        # Runs of 32 clips of one video: the encoded bytes a unit holds stay small, and a long
        # film spreads over the workers.
        units=UnitSize(32, one_video=True),
        scored_by="key",
        rules=(_failed("pack", "the clip's frames could not all be decoded for re-encoding (see pack_error)"),),
        done_word="encoded",
    ),
)

BY_NAME: dict[str, StageSpec] = {spec.name: spec for spec in STAGES}
CLIP_STAGES: tuple[StageSpec, ...] = tuple(spec for spec in STAGES if spec.units is not None)

# Every reason a rule can give, with what it means (status output, the report, the docs).
REASONS: dict[str, str] = {rule.reason: rule.description for spec in STAGES for rule in spec.rules}


def stage_spec(name: str) -> StageSpec:
    """The row of the stage called `name`."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r} (known: {', '.join(BY_NAME)})") from None
