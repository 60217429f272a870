"""Loading the typed config (`cvae.config`): YAML files, presets, `--set section.key=value`
overrides and the checks of each value's type, every problem one ConfigError naming the key.

Resolution order (later wins): dataclass defaults -> the preset's values -> the YAML file ->
layers a launcher adds (a sweep space's constants) -> command-line shortcuts (--data, --epochs,
...) -> `--set section.key=value`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cvae.config import PRESETS, Config, all_keys, sections, validate
from cvae.errors import ConfigError


def _unknown(key: str, source: str) -> ConfigError:
    hint = difflib.get_close_matches(key, all_keys(), n=1)
    more = f" (did you mean '{hint[0]}'?)" if hint else ""
    return ConfigError(f"{source}: unknown key '{key}'{more}")


def _coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    """Check `value` against a field's type; ints are accepted for floats, nothing else is."""
    bad = ConfigError(f"{source}: {key} = {value!r}: expected {_type_name(annotation)}")
    if annotation is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads 3e-4 (no dot) as a string; it is a number to any user.
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if annotation is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad
        return str(value)
    if typing.get_origin(annotation) is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(key, v, item_type, source) for v in value]
    raise bad  # pragma: no cover - every field type is handled above


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is list:
        return f"a list of {typing.get_args(annotation)[0].__name__}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, str(annotation)
    )


def field_types(section: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(section))
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


def _bf16(value: Any, source: str) -> tuple[str, str]:
    """train.bf16, a bool until bf16 became the default on GPUs (train.precision): true ->
    bf16 everywhere, false -> fp32, as it ran."""
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: train.bf16 = {value!r}: expected true or false (or set "
                          "train.precision: auto, bf16 or fp32)")
    return "train.precision", "bf16" if value else "fp32"


# Keys older configs and checkpoints hold, read as the key that replaced them.
LEGACY_KEYS = {"train.bf16": _bf16}


def set_key(cfg: Config, key: str, value: Any, source: str = "--set") -> None:
    """Set `section.key` to `value` after checking that the key exists and the type fits."""
    if key in LEGACY_KEYS:
        key, value = LEGACY_KEYS[key](value, source)
    section_name, _, name = key.partition(".")
    parts = sections(cfg)
    if section_name not in parts or not name:
        raise _unknown(key, source)
    section = parts[section_name]
    types_ = field_types(section)
    if name not in types_:
        raise _unknown(key, source)
    setattr(section, name, _coerce(key, value, types_[name], source))


def apply_nested(cfg: Config, values: Any, source: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(values).__name__}")
    for section_name, section_values in values.items():
        if section_name not in sections(cfg):
            raise _unknown(str(section_name), source)
        if section_values is None:
            continue
        if not isinstance(section_values, dict):
            raise ConfigError(f"{source}: section '{section_name}' must be a mapping")
        for name, value in section_values.items():
            set_key(cfg, f"{section_name}.{name}", value, source)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `section.key=value`; the value is read as YAML (so 3, 0.5, true, [2, 5] work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def read_yaml_file(path: Path, what: str, loader: type = yaml.SafeLoader) -> Any:
    """A YAML file's contents (safe loading only); a missing, non-UTF-8 or malformed file is
    one ConfigError naming it (`what`: "config", "search space")."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text (a {what} is a YAML file)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_yaml_file(path, "config") or {}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
    shortcuts: dict[str, Any] | None = None,
    layers: Sequence[tuple[str, dict[str, Any]]] = (),
) -> Config:
    """Load a config: defaults -> preset -> YAML -> `layers` (each a source name and its dotted
    keys, e.g. a sweep space's constants) -> shortcuts -> overrides, then validate."""
    file_values: Any = _read_yaml(Path(path)) if path else {}
    source = str(path) if path else "config"
    if not isinstance(file_values, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, "
                          f"got {type(file_values).__name__}")
    parsed = [parse_override(text) for text in overrides]
    # The preset is chosen first (flag > last --set > file) because it supplies defaults the
    # file and the flags may override.
    set_presets = [value for key, value in parsed if key == "model.preset"]
    chosen = preset if preset is not None else (set_presets[-1] if set_presets else None)
    if chosen is None and isinstance(file_values.get("model"), dict):
        chosen = file_values["model"].get("preset")
    cfg = Config()
    if chosen is not None:
        if not isinstance(chosen, str) or chosen not in PRESETS:
            raise ConfigError(f"model.preset = {chosen!r}: must be one of {sorted(PRESETS)}")
        for key, value in PRESETS[chosen].items():
            set_key(cfg, key, value, "preset")
    apply_nested(cfg, file_values, source)
    if chosen is not None:
        cfg.model.preset = chosen
    for layer_source, values in layers:
        for key, value in values.items():
            set_key(cfg, key, value, layer_source)
    for key, value in (shortcuts or {}).items():
        if value is not None:
            set_key(cfg, key, value, "command line")
    for key, value in parsed:
        if key != "model.preset":
            set_key(cfg, key, value, "--set")
    validate(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


