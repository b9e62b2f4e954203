"""Which clips are dropped, and why: the stages' rules over stored scores and the thresholds.

Every decision is made here, from columns already in clips.parquet, so `curate filter` can
re-apply new thresholds in seconds. Rules run in pipeline order (`curate.pipeline.STAGES`) and
the first that fires names the `drop_reason`. A score that is missing (the stage has not scored
that clip yet) fires no rule: the clip stays kept until the stage has looked at it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curate.config import Config
from curate.pipeline import STAGES, Columns, text_croppable

if TYPE_CHECKING:  # pandas loads when the first DataFrame is made (see curate.runner)
    import numpy as np
    import pandas as pd
    import pyarrow as pa


def drop_reasons(clips: pd.DataFrame, config: Config, before: str | None = None) -> pd.Series:
    """The drop_reason of every clip (None = kept), from the rules of every stage, or only of the
    stages before `before` (what decides which clips that stage scores)."""
    import pandas as pd  # loaded already: `clips` is a DataFrame

    return pd.Series(reasons_of(Columns(clips), config, before), index=clips.index, dtype=object)


def reasons_of(clips: Columns, config: Config, before: str | None = None) -> np.ndarray:
    """`drop_reasons` as a numpy array of objects, from any `Columns` (a pyarrow Table's too,
    without pandas)."""
    import numpy as np

    reasons = np.full(clips.num_rows, None, dtype=object)
    for spec in STAGES:
        if spec.name == before:
            break
        for rule in spec.rules:
            fires = rule.fires(clips, getattr(config, spec.name))
            reasons[(reasons == None) & fires] = rule.reason  # noqa: E711 (elementwise)
    return reasons


def picture_boxes(clips: pd.DataFrame, config: Config, before: str) -> pd.DataFrame:
    """The clips with the crop box the stage `before` sees: split's box (inside black borders),
    less the top and bottom bands of overlay text when `text.crop` is on, the text stage has run
    before that stage, and cropping leaves enough of the picture (see the `text_overlay` rule).
    Band edges round outwards to even rows, so no text row stays in the picture."""
    import numpy as np

    order = [spec.name for spec in STAGES]
    text = config.text
    after_text = "text" in order and order.index(before) > order.index("text")
    if not (text.crop and after_text and "text_band_top" in clips and "crop_height" in clips):
        return clips
    top, bottom = clips.text_band_top.fillna(0.0), clips.text_band_bottom.fillna(0.0)
    croppable = ((top > 0) | (bottom > 0)) & clips.crop_height.notna() & text_croppable(Columns(clips), text)
    if not croppable.any():
        return clips
    height = clips.crop_height.where(croppable, 0).astype(float)
    cut_top = (np.ceil(top * height / 2) * 2).where(croppable, 0).astype("int64")
    cut_bottom = (np.ceil(bottom * height / 2) * 2).where(croppable, 0).astype("int64")
    return clips.assign(
        crop_y=clips.crop_y.where(~croppable, clips.crop_y + cut_top),
        crop_height=clips.crop_height.where(~croppable, clips.crop_height - cut_top - cut_bottom),
    )


def derived_columns(clips: pa.Table, reasons: np.ndarray, config: Config) -> dict[str, list]:
    """Columns that follow from the drop reasons, recomputed with them (every `curate filter`
    too): for now the dedup stage's `duplicate_of` and `duplicate_in`, once it has run."""
    if "duplicate_match" not in clips.column_names:
        return {}
    duplicate_of, duplicate_in = duplicate_originals(clips.to_pandas(), reasons, config)
    return {"duplicate_of": duplicate_of, "duplicate_in": duplicate_in}


def duplicate_originals(clips: pd.DataFrame, reasons: np.ndarray | pd.Series, config: Config) -> tuple[list, list]:
    """For each clip dropped as `duplicate`: the kept clip it duplicates (`duplicate_of`) and, when
    that clip is in a `dedup.against` folder, the folder (`duplicate_in`); None for the others.

    The dedup stage stores each clip's best match ranked above it (`duplicate_match`, by frame
    hashes; `semantic_match`, by CLIP embedding). Under the current thresholds a duplicate's match
    may be a duplicate too; its own match ranks higher still, so following the matches ends at a
    clip the rule keeps, wherever the thresholds are set."""
    footage = (clips.duplicate_similarity >= config.dedup.threshold).fillna(False)
    # Each clip's match under the thresholds (by frame hashes where they decide, else by
    # embedding), with pandas' missing values (NaN) as None.
    match = _or_none(clips.duplicate_match.where(footage, clips.semantic_match))
    folder = _or_none(clips.duplicate_match_in.where(footage, clips.semantic_match_in))
    row_of = {clip_id: row for row, clip_id in enumerate(clips.clip_id)}
    dropped = (reasons == "duplicate").tolist()
    original: dict[int, tuple] = {}  # row -> (clip_id, folder) its chain of matches ends at
    for row in (r for r, d in enumerate(dropped) if d):
        chain, at = [], row
        while at not in original:
            chain.append(at)
            above = row_of.get(match[at]) if folder[at] is None else None
            if above is None or not dropped[above] or above in chain:  # kept (here or there): the end
                original[at] = (match[at], folder[at])
                break
            at = above
        for step in chain:
            original[step] = original[at]
    ends = [original.get(row, (None, None)) for row in range(len(clips))]
    return [clip_id for clip_id, _ in ends], [folder for _, folder in ends]


def _or_none(values: pd.Series) -> list:
    return values.astype(object).where(values.notna(), None).tolist()
