"""Typed run settings: dataclasses with their defaults, a YAML file, then ``--set key=value``.

Every training method's configuration is a dataclass made of the shared parts below
(:class:`DataConfig`, :class:`RunOptions`) and its own architecture, preprocessing and recipe
dataclasses; each default is stated once, in its dataclass. Nested fields are addressed with dots
(``--set data.labelled_fraction=0.5``, ``--set model.embedding_dim=128``); override values are
parsed as YAML scalars, so ``true``, ``1e-4`` and ``[1, 2]`` get their natural types. pydantic
checks every value against its annotation and range (``Annotated[float, Field(gt=0)]``); a bad
one is a :class:`ConfigError` naming the key, whether it came from the CLI or from Python
(:func:`check_config`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from fgsbir.errors import FgsbirError

T = TypeVar("T")

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Count = Annotated[int, Field(ge=1)]
Natural = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]


class ConfigError(FgsbirError):
    """An unknown key or a bad value in a configuration."""


@dataclass
class DataConfig:
    """What a run learns from; shared by every training method (and its start runs)."""

    path: str = "synthetic"  # a data-set folder, or "synthetic" for the built-in data set
    format: Literal["qmul-v2", "qmul-v1", "sketchy", "photos"] | None = None  # else detected
    labelled_fraction: Fraction = 1.0  # training photos that keep their sketches (seeded)
    val_fraction: Rate = 0.1  # carved from training photos
    unlabelled: list[str] = field(default_factory=list)  # extra folders of unlabelled photos
    seed: Natural = 0  # the splits, the initial weights and every random stream of training
    split_seed: Natural | None = None  # the splits' seed where not ``seed`` (ensemble members)
    on_error: Literal["raise", "warn"] = "raise"  # a bad data file stops the run, or is skipped


DATA_SETTINGS_ADDED_LATER = {"split_seed": None}
""":class:`DataConfig` settings added after runs were saved, at the values those runs trained
with: :meth:`fgsbir.train.loop.Task.upgraded` adds them to a stopped run's recorded settings."""


@dataclass
class RunOptions:
    """Where and how long a run trains: the only settings a resumed run may change."""

    out: str = "runs/run"
    epochs: Count = 20
    time_budget_s: Positive | None = None  # stop before an epoch that would overrun it
    device: str | None = None  # default: CUDA when available
    threads: Count | None = None  # torch CPU threads (None: torch's choice)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dictionary of a (nested) dataclass configuration; paths become strings."""
    adapter: TypeAdapter[Any] = TypeAdapter(type(config))
    return adapter.dump_python(config, mode="json")


def with_section_defaults(
    tree: dict[str, Any], section: str, added: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of the settings ``tree`` with ``added`` under every ``section`` mapping (at any
    depth) that lacks them: settings added after a run was saved, at the values it used."""
    upgraded: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = with_section_defaults(value, section, added)
            if key == section:
                value = {**added, **value}
        upgraded[key] = value
    return upgraded


def config_from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls`` built from a (nested) mapping, every value checked; a bad one is a ConfigError."""
    _check_keys(cls, values, "")
    try:
        return TypeAdapter(cls).validate_python(dict(values))
    except ValidationError as exc:
        raise ConfigError(_describe(cls, exc)) from None


def _check_keys(cls: type, values: Mapping[str, Any], prefix: str) -> None:
    """Refuse keys that are not fields of the (nested) dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            _check_keys(hints[key], value, f"{prefix}{key}.")


def check_config(config: T) -> T:
    """``config`` with every value checked against its type and range (see the module doc)."""
    return config_from_dict(type(config), config_to_dict(config))


def _describe(cls: type, exc: ValidationError) -> str:
    """One line naming the first bad key (as a dotted path) and what is wrong with it."""
    error = exc.errors(include_url=False)[0]
    names: list[str] = []
    current: Any = cls
    for part in error["loc"]:  # the path ends where it leaves the dataclasses (union members)
        if not (isinstance(current, type) and dataclasses.is_dataclass(current)):
            break
        names.append(str(part))
        current = typing.get_type_hints(current).get(str(part))
    key = ".".join(names)
    if error["type"] == "unexpected_keyword_argument":
        return f"unknown config key: {key}"
    return f"config key {key!r}: {error['msg']} (got {error['input']!r})"


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
    """Build ``cls`` from its defaults, a YAML file, ``key=value`` overrides, then keywords.

    Keywords are dotted keys too (``**{"data.path": "synthetic"}``); ``None`` leaves a setting
    alone.
    """
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
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            parsed = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
        _set_dotted(tree, key.strip(), parsed)
    for key, value in values.items():
        if value is not None:
            _set_dotted(tree, key, value)
    return config_from_dict(cls, _merge(config_to_dict(cls()), tree))


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
