"""Dataclass configurations: defaults in code, then a YAML file, then ``--set key=value`` overrides.

Nested dataclasses are addressed with dots (``--set optim.lr=3e-4``); override values are parsed
as YAML scalars, so ``true``, ``1e-4`` and ``[1, 2]`` get their natural types.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fgsbir.errors import FgsbirError

T = TypeVar("T")


class ConfigError(FgsbirError):
    """An unknown key or a value of the wrong type in a configuration."""


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dictionary of a (nested) dataclass configuration; paths become strings."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a parsed YAML value to the field's annotated type where that is unambiguous."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key!r}: {value!r} does not fit {annotation}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return _from_mapping(annotation, value, prefix=f"{key}.")
    if annotation is Path:
        return Path(value)
    if annotation is float and not isinstance(value, bool):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            pass
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str | int | float):
        return str(value)
    if origin in (tuple, list) and isinstance(value, list | tuple):
        return origin(value)
    if annotation is Any or (origin is typing.Literal and value in args):
        return value
    raise ConfigError(f"config key {key!r}: {value!r} is not a valid {annotation}")


def _from_mapping(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - fields
    if unknown:
        names = ", ".join(prefix + k for k in sorted(unknown))
        raise ConfigError(f"unknown config key(s): {names}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"config key {dotted!r}: {part!r} is not a section")
    tree[leaf] = value


def load_config(
    cls: type[T],
    yaml_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    **values: Any,
) -> T:
    """Build ``cls`` from its defaults, a YAML file, ``key=value`` overrides, then keywords."""
    tree: dict[str, Any] = {}
    if yaml_path is not None:
        try:
            loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{yaml_path}: cannot read config: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: a config file must hold a mapping")
        tree.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    for key, value in values.items():
        if value is not None:
            _set_dotted(tree, key, value)
    defaults = config_to_dict(cls())  # nested sections start from their defaults
    return _from_mapping(cls, _merge(defaults, tree))


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
