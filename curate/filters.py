"""Which clips are dropped, and why: rules over stored scores and the configured thresholds.

Every decision is made here, from columns already in clips.parquet, so `curate filter` can
re-apply new thresholds in seconds. Rules run in pipeline order and the first that fires names
the `drop_reason`. A score that is missing (the stage has not scored that clip yet) fires no rule:
the clip stays kept until the stage has looked at it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas loads when the first DataFrame is made (see curate.runner)
    import pandas as pd

from curate.config import AestheticConfig, CaptionConfig, Config, MotionConfig, PackConfig, SplitConfig

# The clip stages in pipeline order: a stage scores only clips no earlier stage dropped.
CLIP_STAGES = ("motion", "aesthetic", "caption", "pack")
# The column that says a stage has scored a clip.
SCORE_COLUMNS = {"motion": "motion_score", "aesthetic": "aesthetic_score", "caption": "caption", "pack": "key"}

Rule = Callable[["pd.DataFrame", object], list[tuple[str, "pd.Series"]]]


def _column(clips: pd.DataFrame, name: str, dtype=float) -> pd.Series:
    """A column, or an all-missing one when the stage has not run."""
    if name in clips:
        return clips[name]
    import pandas as pd  # loaded already: `clips` is a DataFrame

    return pd.Series(np.nan if dtype is float else None, index=clips.index, dtype=dtype if dtype is float else object)


def _split_rules(clips: pd.DataFrame, config: SplitConfig) -> list[tuple[str, pd.Series]]:
    smaller_side = np.minimum(_column(clips, "width"), _column(clips, "height"))
    return [("too_small", smaller_side < config.min_side)]


def _motion_rules(clips: pd.DataFrame, config: MotionConfig) -> list[tuple[str, pd.Series]]:
    score = _column(clips, "motion_score")
    jump = _column(clips, "motion_max_jump")
    still = _column(clips, "motion_static_frac")
    return [
        ("motion_failed", _column(clips, "motion_error", object).notna()),
        ("static", (score < config.min) | (still > config.max_static_frac)),
        ("extreme_motion", (score > config.max) | (jump > config.max_jump)),
    ]


def _aesthetic_rules(clips: pd.DataFrame, config: AestheticConfig) -> list[tuple[str, pd.Series]]:
    return [
        ("aesthetic_failed", _column(clips, "aesthetic_error", object).notna()),
        ("low_aesthetic", _column(clips, "aesthetic_score") < config.min),
    ]


def _caption_rules(clips: pd.DataFrame, config: CaptionConfig) -> list[tuple[str, pd.Series]]:
    return [("caption_failed", _column(clips, "caption_error", object).notna())]


def _pack_rules(clips: pd.DataFrame, config: PackConfig) -> list[tuple[str, pd.Series]]:
    return [("pack_failed", _column(clips, "pack_error", object).notna())]


_RULES: dict[str, Rule] = {
    "split": _split_rules,
    "motion": _motion_rules,
    "aesthetic": _aesthetic_rules,
    "caption": _caption_rules,
    "pack": _pack_rules,
}

# Every reason a rule can give, for docs and status output.
REASONS = {
    "too_small": "the picture, as shown, is narrower or lower than split.min_side pixels",
    "motion_failed": "the motion stage could not read the clip's frames",
    "static": "motion_score < motion.min or motion_static_frac > motion.max_static_frac",
    "extreme_motion": "motion_score > motion.max or motion_max_jump > motion.max_jump",
    "aesthetic_failed": "the aesthetic stage could not read the clip's frames",
    "low_aesthetic": "aesthetic_score < aesthetic.min",
    "caption_failed": "no usable caption: frames unreadable, or empty, truncated or looping twice (see caption_error, caption_raw)",
    "pack_failed": "the clip's frames could not all be decoded for re-encoding (see pack_error)",
}


def drop_reasons(clips: pd.DataFrame, config: Config, before: str | None = None) -> pd.Series:
    """The drop_reason of every clip (None = kept), from the rules of every clip stage, or only
    of the stages before `before` (what decides which clips that stage scores)."""
    reasons = np.full(len(clips), None, dtype=object)
    for stage in ("split", *CLIP_STAGES):
        if stage == before:
            break
        for reason, fires in _RULES[stage](clips, getattr(config, stage)):
            reasons[(reasons == None) & fires.fillna(False).to_numpy(bool)] = reason  # noqa: E711 (elementwise)
    import pandas as pd  # loaded already: `clips` is a DataFrame

    return pd.Series(reasons, index=clips.index, dtype=object)
