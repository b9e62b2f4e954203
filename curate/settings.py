"""Settings as typed dataclasses, read from YAML files and `key=value` overrides.

One loader for both command lines: `curate` keeps a dataclass per stage (`section.key=value`,
see `curate.config`), the trainer one flat dataclass (`key=value`, see `train.config`). A value
takes the type of its field's default, so `--set lr=1e-4` is a float and `--set steps=10` an int,
and every mistake is a ConfigError that names the key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from curate.errors import ConfigError


def read_yaml(path: Path, shape: str = "be a mapping of settings") -> dict[str, Any]:
    """The mapping in a YAML file (empty for an empty file); `shape` is what the error for any
    other content says the file must do."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must {shape}")
    return data


def parse_assignment(item: str, form: str = "key=value") -> tuple[str, Any]:
    """`key=value` as (key, value), the value read as YAML (`8` an int, `[1, 2]` a list); `form`
    is how the error for a malformed item says it should look."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects {form}, got {item!r}")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else raw


def build(cls: type, values: dict[str, Any], prefix: str = "", what: str = "config key"):
    """`cls(**values)`, each value given its field's type; an unknown key is an error naming
    `prefix + key` (e.g. "split.max_clip_s")."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    typed = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown {what} {prefix}{key} (known: {', '.join(known)})")
        typed[key] = coerce(f"{prefix}{key}", value, _default_of(known[key]))
    return cls(**typed)


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def coerce(name: str, value: Any, default: Any) -> Any:
    """Give `value` the type of the field's default, or explain why it cannot have it."""
    kind = type(default)
    if kind in (int, float) and isinstance(value, str):
        try:  # YAML 1.1 reads "1e1" and "5e-2" as strings
            value = float(value)
        except ValueError:
            pass
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is float or float(value).is_integer():
            return kind(value)
    elif kind is str:
        # YAML 1.1 reads an unquoted no/off/false as False (yes/on/true as True): a text setting
        # such as mixed_precision=no means the word.
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)
    elif isinstance(value, kind):
        return value
    raise ConfigError(f"{name} expects a {kind.__name__}, got {value!r}")
