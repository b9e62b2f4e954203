"""Which clips are dropped, and why: the stages' rules over stored scores and the thresholds.

Every decision is made here, from columns already in clips.parquet, so `curate filter` can
re-apply new thresholds in seconds. Rules run in pipeline order (`curate.pipeline.STAGES`) and
the first that fires names the `drop_reason`. A score that is missing (the stage has not scored
that clip yet) fires no rule: the clip stays kept until the stage has looked at it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curate.config import Config
from curate.pipeline import STAGES

if TYPE_CHECKING:  # pandas loads when the first DataFrame is made (see curate.runner)
    import pandas as pd


def drop_reasons(clips: pd.DataFrame, config: Config, before: str | None = None) -> pd.Series:
    """The drop_reason of every clip (None = kept), from the rules of every stage, or only of the
    stages before `before` (what decides which clips that stage scores)."""
    import numpy as np
    import pandas as pd  # loaded already: `clips` is a DataFrame

    reasons = np.full(len(clips), None, dtype=object)
    for spec in STAGES:
        if spec.name == before:
            break
        for rule in spec.rules:
            fires = rule.fires(clips, getattr(config, spec.name))
            reasons[(reasons == None) & fires.fillna(False).to_numpy(bool)] = rule.reason  # noqa: E711 (elementwise)
    return pd.Series(reasons, index=clips.index, dtype=object)
