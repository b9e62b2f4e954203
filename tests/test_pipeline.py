"""The stage table agrees with the code it names, the config and the docs, and output folders made
before it existed still work."""

from __future__ import annotations

import dataclasses
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from curate.cli import build_parser
from curate.config import Config
from curate.pipeline import BY_NAME, CLIP_STAGES, REASONS, STAGES
from curate.stages.clipstage import ClipStage, ModelClipStage

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_has_its_config_section_in_pipeline_order():
    assert [f.name for f in dataclasses.fields(Config)] == [spec.name for spec in STAGES]


@pytest.mark.parametrize("spec", STAGES, ids=lambda spec: spec.name)
def test_each_row_names_its_stage_class(spec):
    cls = spec.load()
    stage = cls(getattr(Config(), spec.name))
    assert stage.name == spec.name
    assert stage.loads_model == spec.loads_model
    assert isinstance(stage, ModelClipStage) == spec.loads_model
    if spec in CLIP_STAGES:
        assert isinstance(stage, ClipStage)
        assert spec.scored_by in stage.columns.names  # the column status and the runner count as scored
        assert set(spec.scores) <= set(stage.columns.names)
        assert stage.error_column == spec.error_column


def test_reasons_are_unique_and_documented():
    reasons = [rule.reason for spec in STAGES for rule in spec.rules]
    assert len(reasons) == len(set(reasons)) == len(REASONS)
    documented = set(re.findall(r"^\| `(\w+)` \|", (ROOT / "manifests" / "README.md").read_text(), flags=re.M))
    assert set(REASONS) <= documented


def test_the_cli_has_a_command_per_stage_and_tiny_models_where_a_stage_loads_one():
    parser = build_parser()
    for spec in STAGES:
        args = ["--out", "x"] if spec.units is not None else ["video.mp4"]
        parsed = parser.parse_args([spec.name, *args])
        assert parsed.stage == spec.name
        assert hasattr(parsed, "models") == spec.loads_model


def test_settings_hashes_change_only_with_the_settings():
    """Work folders are named by these hashes (OUT/manifests/.work/<stage>-<hash>), so a change
    here makes existing folders redo that stage. The clip stages' values are those from before
    the stage table; split's changed with issue 17 (the detector settings, and later the learned
    detectors' doubts, split.transnet_uncertain) and issue 18 (crop box, exposure and sharpness
    columns), on purpose."""
    config = Config()
    expected = {
        "split": "7d1aaa25d9", "motion": "d369db177b", "text": "afd19b1037", "aesthetic": "dd24378de2", "caption": "1a4740f064",
        "dedup": "355742db36", "pack": "117078b9e9",
    }  # fmt: skip
    assert {name: config.section_hash(name) for name in BY_NAME} == expected


FOLDER_MADE_BEFORE = ROOT / "tests" / "fixtures" / "made_before_stage_table"


def test_an_output_folder_made_before_the_stage_table_resumes_without_recomputing(tmp_path):
    """tests/fixtures/made_before_stage_table: `curate run videos --out out --models tiny --set
    aesthetic.min=0 pack.short_side=48` by the code before the stage table (e394ec8). The same
    command now finds every unit of every clip stage done, and the manifests keep their values.
    Split runs again: its settings gained the detector choice since (issue 17) and the crop box,
    exposure and sharpness columns (issue 18); it finds the same clips, with no borders, so nothing
    after it is redone. The text stage (issue 19) is newer than the folder: it looks at the clips
    for the first time, finds no text, and every earlier value stays. So is the dedup stage
    (issue 20): it hashes every clip, and with a single video finds no duplicate."""
    from conftest import curate

    from curate.storage import read_parquet

    folder = tmp_path / "folder"
    shutil.copytree(FOLDER_MADE_BEFORE, folder)
    before = read_parquet(folder / "out" / "manifests" / "clips.parquet").to_pandas()
    settings = ("--models", "tiny", "--set", "aesthetic.min=0", "pack.short_side=48", "--quiet")
    printed = curate("run", folder / "videos", "--out", folder / "out", *settings)
    assert "split: 1 videos processed, 0 already done" in printed
    for spec in CLIP_STAGES:
        done = f"{len(before)} clips" if spec.name in ("text", "dedup") else "0 clips"
        assert f"{spec.name}: {done} {spec.done_word} in" in printed
    after = read_parquet(folder / "out" / "manifests" / "clips.parquet").to_pandas()
    # Split's new columns (issue 18): the video has no black borders, so every stage saw the whole frame.
    measured = ["crop_x", "crop_y", "crop_width", "crop_height", "brightness", "dark_frac", "bright_frac", "sharpness"]
    assert (after[["crop_x", "crop_y", "crop_width", "crop_height"]].to_numpy() == [0, 0, 96, 54]).all()
    assert after[measured].notna().all().all()
    assert (after.text_area == 0).all()
    assert after.dedup_frames.notna().all() and after.duplicate_of.isna().all()  # one video: no other clip to duplicate
    after = after[before.columns]  # the columns the folder had
    assert after.drop(columns="path").equals(before.drop(columns="path"))  # the path is where the video is now
    assert (after.path == str(folder / "videos" / "two_shots.mp4")).all()
    shard = Path("out") / "shards" / "clips-000000.tar"
    with tarfile.open(folder / shard) as now, tarfile.open(FOLDER_MADE_BEFORE / shard) as then:
        names = now.getnames()
        assert names == then.getnames() and any(name.endswith(".mp4") for name in names)
        for name in names:
            if name.endswith((".mp4", ".txt")):  # the .json member holds the clip's row, path included
                assert now.extractfile(name).read() == then.extractfile(name).read()
    assert "units done" in curate("status", "--out", folder / "out")
