"""Drop rules, thresholds that the output folder remembers, and how clips are grouped into units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curate.config import Config, load_config
from curate.errors import ConfigError
from curate.filters import drop_reasons
from curate.pipeline import REASONS, UnitSize
from curate.stages.clipstage import clip_units


def clips(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"clip_id": [f"v-{i:06d}-{i + 1:06d}" for i in range(n)]}
    return pd.DataFrame({**base, **columns})


def test_each_rule_names_its_reason():
    table = clips(
        motion_score=[0.0, 0.1, 5.0, 0.1, 0.1, 0.1],
        motion_max_jump=[0.0, 0.0, 0.0, 0.9, 0.0, 0.0],
        motion_error=[None, None, None, None, "cannot decode", None],
        aesthetic_score=[9.0, 9.0, 9.0, 9.0, 9.0, 1.0],
    )
    reasons = drop_reasons(table, Config()).tolist()
    assert reasons[:5] == ["static", None, "extreme_motion", "extreme_motion", "motion_failed"]
    assert reasons[5] == "low_aesthetic"
    assert set(r for r in reasons if r) <= set(REASONS)


def test_a_clip_still_most_of_the_time_is_static():
    table = clips(motion_score=[0.5, 0.5], motion_static_frac=[0.9, 0.1])
    assert drop_reasons(table, Config()).tolist() == ["static", None]


def test_thresholds_are_strict_bounds():
    config = load_config(overrides=["motion.min=0.01", "aesthetic.min=5"])
    table = clips(motion_score=[0.0099, 0.01], aesthetic_score=[5.0, 4.99])
    assert drop_reasons(table, config).tolist() == ["static", "low_aesthetic"]


def test_first_failing_stage_names_the_reason():
    table = clips(motion_score=[0.0], aesthetic_score=[0.0])
    assert drop_reasons(table, Config()).tolist() == ["static"]


def test_missing_scores_drop_nothing():
    """A clip a stage has not scored yet stays kept; a stage that never ran adds no rule."""
    table = clips(motion_score=[np.nan, 0.5])
    assert drop_reasons(table, Config()).isna().all()
    assert drop_reasons(clips(start_frame=[0, 1]), Config()).isna().all()


def test_before_limits_the_rules_to_earlier_stages():
    """What the aesthetic stage scores depends only on the rules of the stages before it."""
    table = clips(motion_score=[0.0, 0.5], aesthetic_score=[9.0, 0.0])
    assert drop_reasons(table, Config(), before="aesthetic").tolist() == ["static", None]
    assert drop_reasons(table, Config(), before="motion").isna().all()


def test_folder_remembers_thresholds_only(tmp_path):
    saved = tmp_path / "config.yaml"
    saved.write_text("split:\n  max_clip_s: 4\nmotion:\n  min: 0.02\n  method: flow\naesthetic:\n  min: 6\n")
    config = load_config(remembered=saved)
    assert (config.motion.min, config.aesthetic.min) == (0.02, 6.0)
    assert config.split.max_clip_s == 10.0 and config.motion.method == "auto"  # not thresholds
    assert load_config(overrides=["motion.min=0.5"], remembered=saved).motion.min == 0.5  # --set wins
    assert load_config(remembered=tmp_path / "missing.yaml") == Config()


def test_thresholds_do_not_change_the_stage_hash():
    """New thresholds must reuse every stored score; new scoring settings must not."""
    base = Config()
    assert load_config(overrides=["motion.min=0.3", "motion.max=2"]).section_hash("motion") == base.section_hash("motion")
    assert load_config(overrides=["motion.method=flow"]).section_hash("motion") != base.section_hash("motion")
    assert load_config(overrides=["aesthetic.min=1"]).section_hash("aesthetic") == base.section_hash("aesthetic")


@pytest.mark.parametrize(
    "item", ["aesthetic.reduce=max", "aesthetic.frame_positions=[]", "aesthetic.frame_positions=[1.5]", "motion.method=x"]
)
def test_bad_clip_stage_settings_are_config_errors(item):
    with pytest.raises(ConfigError):
        load_config(overrides=[item])


def frame(video_ids: list[str]) -> pd.DataFrame:
    rows = []
    for number, video_id in enumerate(video_ids):
        start = 100 * number
        rows.append(
            dict(
                clip_id=f"{video_id}-{start:06d}-{start + 50:06d}",
                video_id=video_id,
                path=f"/{video_id}.mp4",
                start_frame=start,
                end_frame=start + 50,
                start_s=start / 25,
                end_s=(start + 50) / 25,
                num_frames=50,
                fps=25.0,
                width=64,
                height=36,
            )
        )
    return pd.DataFrame(rows)


def test_units_group_clips_by_video_in_time_order():
    table = frame(["b", "a", "b", "a", "c"]).sample(frac=1, random_state=0)
    units = clip_units(table, UnitSize(None, one_video=True))
    assert [[c.video_id for c in u.payload] for u in units] == [["a", "a"], ["b", "b"], ["c"]]
    assert all([c.start_frame for c in u.payload] == sorted(c.start_frame for c in u.payload) for u in units)
    assert len({u.unit_id for u in units}) == 3


def test_one_video_units_are_cut_into_runs():
    """Pack's units: one video's clips, at most so many per unit (a long film spreads over workers)."""
    table = frame(["a"] * 5 + ["b"] * 2)
    units = clip_units(table, UnitSize(2, one_video=True))
    assert [[c.video_id for c in u.payload] for u in units] == [["a", "a"], ["a", "a"], ["a"], ["b", "b"]]


def test_fixed_size_units_are_the_same_after_a_resume():
    """Finished units are whole runs, so cutting the rest again gives the uninterrupted units."""
    table = frame([f"v{i % 7}" for i in range(50)])
    units = clip_units(table, UnitSize(8, one_video=False))
    assert [len(u.payload) for u in units] == [8] * 6 + [2]
    done = {units[1].unit_id, units[4].unit_id}
    done_clips = {c.clip_id for u in units if u.unit_id in done for c in u.payload}
    resumed = clip_units(table[~table.clip_id.isin(done_clips)], UnitSize(8, one_video=False))
    assert [u.unit_id for u in resumed] == [u.unit_id for u in units if u.unit_id not in done]


def test_the_rules_read_a_pyarrow_table_as_they_read_a_dataframe():
    """The split command applies the rules to its pyarrow tables without pandas (`Columns`); the
    reasons must be the ones a DataFrame of the same clips gets, missing values and all."""
    import pyarrow as pa

    from curate.filters import reasons_of
    from curate.pipeline import Columns

    frame = clips(
        width=[640, 20, 640, 640, 640, 640, 640, 640],
        height=[360, 360, 360, 360, 360, 360, 360, 360],
        sharpness=[9.0, 9.0, 0.1, np.nan, 9.0, 9.0, 9.0, 9.0],
        brightness=[0.5, 0.5, 0.5, 0.5, 0.01, 0.5, 0.5, 0.5],
        motion_score=[0.5, 0.5, 0.5, 0.5, 0.5, 0.0, np.nan, 0.5],
        motion_error=[None, None, None, None, None, None, "cannot decode", None],
        text_area=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5],
        text_band_top=[np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 0.1],
    )
    config = load_config(overrides=["text.crop=true"])
    expected = drop_reasons(frame, config).tolist()
    assert expected == [None, "too_small", "blurry", None, "bad_exposure", "static", "motion_failed", "text_overlay"]
    assert reasons_of(Columns(pa.Table.from_pandas(frame, preserve_index=False)), config).tolist() == expected


def test_numbers_missing_as_none_in_a_hand_made_frame():
    """A frame built by hand holds None where a score is missing (an object column when every
    value is None): no rule fires there, and the others still do."""
    table = clips(motion_score=[None, 0.0, None], aesthetic_score=[None, None, None], motion_error=[None, None, "unreadable"])
    assert table.aesthetic_score.dtype == object
    assert drop_reasons(table, Config()).tolist() == [None, "static", "motion_failed"]
