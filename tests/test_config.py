"""Config: defaults, YAML files, `--set key=value` overrides, coercion and validation."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from curate.cli import main
from curate.config import Config, SplitConfig, describe, load_config
from curate.errors import ConfigError


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults():
    config = load_config()
    assert config == Config()
    assert config.split == SplitConfig()
    assert config.split.min_clip_s == 2.0 and config.split.max_clip_s == 10.0


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("split.max_clip_s=4", "max_clip_s", 4.0),
        ("split.max_clip_s=4.5", "max_clip_s", 4.5),
        ("split.margin_s=0", "margin_s", 0.0),
        (" split.max_clip_s = 6 ", "max_clip_s", 6.0),
        ("split.analysis_width=32", "analysis_width", 32),
        ("split.analysis_width=32.0", "analysis_width", 32),
        ("split.cut_threshold=1.5e+1", "cut_threshold", 15.0),
    ],
)
def test_override_parses_and_coerces(override, key, expected):
    value = getattr(load_config(overrides=[override]).split, key)
    assert value == expected
    assert type(value) is type(getattr(SplitConfig(), key))


@pytest.mark.parametrize(
    "override, words",
    [
        ("split.max_clip_s=abc", ["split.max_clip_s", "float"]),
        ("split.max_clip_s=true", ["split.max_clip_s", "float"]),
        ("split.max_clip_s=[1, 2]", ["split.max_clip_s"]),
        ("split.max_clip_s=", ["split.max_clip_s"]),
        ("split.analysis_width=32.5", ["split.analysis_width", "int"]),
        ("max_clip_s=4", ["section.key=value"]),
        ("split.max_clip_s", ["section.key=value"]),
        ("split.=4", ["section.key=value"]),
        ("split.nope=1", ["unknown config key split.nope"]),
        ("nope.max_clip_s=1", ["unknown config section 'nope'"]),
    ],
)
def test_bad_override_is_a_config_error(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("override, expected", [("split.cut_threshold=1e1", 10.0), ("split.margin_s=5e-2", 0.05)])
def test_override_accepts_exponent_notation(override, expected):
    key = override.split("=")[0].split(".")[1]
    assert getattr(load_config(overrides=[override]).split, key) == pytest.approx(expected)


def test_unknown_key_lists_the_known_keys():
    with pytest.raises(ConfigError, match="max_clip_s"):
        load_config(overrides=["split.max_clip=4"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("split.min_clip_s=0", "split.min_clip_s"),
        ("split.min_clip_s=-1", "split.min_clip_s"),
        ("split.max_clip_s=1", "split.max_clip_s"),  # under the default min_clip_s of 2
        ("split.margin_s=-0.1", "split.margin_s"),
        ("split.cut_threshold=1", "split.cut_threshold"),
        ("split.gradual_max_residual=0", "split.gradual_max_residual"),
        ("split.gradual_max_residual=1", "split.gradual_max_residual"),
        ("split.max_transition_s=0", "split.max_transition_s"),
        ("split.analysis_width=4", "split.analysis_width"),
        ("split.analysis_height=1024", "split.analysis_height"),
    ],
)
def test_validation_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_validation_happens_in_the_dataclass():
    with pytest.raises(ConfigError):
        SplitConfig(min_clip_s=5, max_clip_s=4)


def test_later_override_wins_and_overrides_combine():
    config = load_config(overrides=["split.max_clip_s=4", "split.min_clip_s=1", "split.max_clip_s=6"])
    assert (config.split.min_clip_s, config.split.max_clip_s) == (1.0, 6.0)


def test_overrides_are_validated_together():
    """Raising min above the default max is fine when max is raised in the same command."""
    config = load_config(overrides=["split.min_clip_s=12", "split.max_clip_s=20"])
    assert (config.split.min_clip_s, config.split.max_clip_s) == (12.0, 20.0)


def test_yaml_file(tmp_path):
    path = write(tmp_path, "split:\n  max_clip_s: 6\n  min_clip_s: 1.5\n  analysis_width: 48\n")
    config = load_config(path)
    assert (config.split.max_clip_s, config.split.min_clip_s, config.split.analysis_width) == (6.0, 1.5, 48)
    assert config.split.margin_s == SplitConfig().margin_s  # untouched keys keep their defaults


def test_set_overrides_the_yaml_file(tmp_path):
    path = write(tmp_path, "split:\n  max_clip_s: 6\n  min_clip_s: 1.5\n")
    config = load_config(path, ["split.max_clip_s=8"])
    assert (config.split.max_clip_s, config.split.min_clip_s) == (8.0, 1.5)


def test_empty_yaml_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "# nothing\n", "comments.yaml")) == Config()


@pytest.mark.parametrize(
    "text, words",
    [
        ("split: [1, 2\n", ["not valid YAML"]),
        ("- split\n- other\n", ["must map section names"]),
        ("split: 3\n", ["must map section names"]),
        ("split:\n  nope: 1\n", ["unknown config key split.nope"]),
        ("nosuch:\n  min: 1\n", ["unknown config section 'nosuch'"]),
        ("split:\n  max_clip_s: ten\n", ["split.max_clip_s", "float"]),
        ("split:\n  min_clip_s: 0\n", ["split.min_clip_s"]),
    ],
)
def test_bad_yaml_file_is_a_config_error(tmp_path, text, words):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_section_hash_tracks_values():
    base = load_config()
    assert base.section_hash("split") == Config().section_hash("split")
    # Spelling out a default changes nothing; changing a value changes the hash.
    assert load_config(overrides=["split.max_clip_s=10"]).section_hash("split") == base.section_hash("split")
    assert load_config(overrides=["split.max_clip_s=4"]).section_hash("split") != base.section_hash("split")


def test_describe_is_a_loadable_config_with_help(tmp_path):
    config = load_config(overrides=["split.max_clip_s=7", "split.analysis_width=48"])
    text = describe(config)
    for field in dataclasses.fields(SplitConfig):
        assert f"  {field.name}: " in text
        assert field.metadata["help"] in text
    assert load_config(write(tmp_path, text)) == config
    assert yaml.safe_load(text) == config.to_dict()


def test_config_command_prints_the_resolved_config(capsys):
    assert main(["config", "--set", "split.max_clip_s=7"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["split"]["max_clip_s"] == 7.0


def test_config_command_bad_key(capsys):
    assert main(["config", "--set", "split.nope=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "split.nope" in err[0]


def test_a_yaml_boolean_word_given_to_a_text_setting_is_the_word():
    """YAML 1.1 reads an unquoted `no` as False: `--set mixed_precision=no` is the setting "no"."""
    from train.config import resolve

    assert resolve("tiny", None, ["mixed_precision=no"], None, None).mixed_precision == "no"
    assert resolve("tiny", None, ["mixed_precision=auto"], None, None).mixed_precision == "auto"
