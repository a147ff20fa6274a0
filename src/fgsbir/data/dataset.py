"""The data set API: :func:`load_dataset` returns train / validation / test splits and a pool of
unlabelled photos, whatever the layout on disk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fgsbir.config import DataConfig
from fgsbir.data.layouts import (
    FORMATS,
    SketchRecord,
    Split,
    detect_format,
    load_layout,
    load_photo_folder,
)
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.errors import DataError, OnError

__all__ = ["FORMATS", "Dataset", "SketchRecord", "Split", "load_data", "load_dataset"]


@dataclass
class Dataset:
    """Splits of one data set. ``unlabelled`` photos have no sketches (semi-supervised pool)."""

    name: str
    format: str
    root: Path
    train: Split
    val: Split
    test: Split
    unlabelled: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One line per split: photo and sketch counts."""
        lines = [f"{self.name} ({self.format}, {self.root})"]
        for name in ("train", "val", "test"):
            split: Split = getattr(self, name)
            lines.append(f"  {name}: {len(split.photos)} photos, {len(split.sketches)} sketches")
        lines.append(f"  unlabelled: {len(self.unlabelled)} photos")
        return "\n".join(lines)


def _count(fraction: float, n: int, at_least_one: bool) -> int:
    k = round(fraction * n)
    return max(k, 1) if at_least_one and fraction > 0 and n >= 2 else k


def _carve_sketches(split: Split, fraction: float, rng: np.random.Generator) -> tuple[Split, Split]:
    """Sketch-only data: a seeded ``fraction`` of the sketches becomes the second split."""
    order = rng.permutation(len(split.sketches))
    n = min(_count(fraction, len(order), True), max(len(order) - 1, 0))
    chosen = set(order[:n].tolist())
    keep = [r for i, r in enumerate(split.sketches) if i not in chosen]
    carved = [r for i, r in enumerate(split.sketches) if i in chosen]
    return Split([], keep), Split([], carved)


def load_data(config: DataConfig) -> Dataset:
    """The data set ``config`` describes (see :func:`load_dataset`)."""
    return load_dataset(
        config.path,
        format=config.format,
        labelled_fraction=config.labelled_fraction,
        val_fraction=config.val_fraction,
        seed=config.seed if config.split_seed is None else config.split_seed,
        on_error=config.on_error,
        unlabelled=config.unlabelled,
    )


def load_dataset(
    data: str | Path,
    *,
    format: str | None = None,
    labelled_fraction: float = 1.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    on_error: OnError = "raise",
    unlabelled: Sequence[str | Path] = (),
) -> Dataset:
    """Load a data folder (or ``"synthetic"``, the built-in data set) into splits.

    The validation split is a seeded ``val_fraction`` of the training photos with their sketches
    (never test photos). Of the remaining training photos a seeded ``labelled_fraction`` keeps
    its sketches; the others join ``unlabelled``, as do photos without sketches and the photos
    found in the ``unlabelled`` folders. Smaller labelled fractions give subsets of larger ones,
    and the validation split does not depend on the labelled fraction. For sketch-only data the
    validation split is a fraction of the training sketches.
    """
    if not 0.0 < labelled_fraction <= 1.0:
        raise ValueError(f"labelled_fraction must be in (0, 1], got {labelled_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; known: {', '.join(FORMATS)}")
    if str(data) == "synthetic":
        root, name, format = ensure_synthetic(), "synthetic", "qmul-v2"
    else:
        root = Path(data).expanduser()
        name = root.name
        format = format or detect_format(root)
    splits = load_layout(root, format, on_error=on_error, seed=seed)
    train, test = splits["train"], splits["test"]
    pool = list(splits["unlabelled"].photos)
    val_rng, labelled_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    if not train.photos:  # sketch-only data (or photos only)
        train, val = _carve_sketches(train, val_fraction, val_rng)
    else:
        order = val_rng.permutation(len(train.photos))
        n_val = min(_count(val_fraction, len(order), True), len(order) - 1)
        val = train.subset(sorted(order[:n_val].tolist()))
        rest = order[n_val:]
        rest = rest[labelled_rng.permutation(len(rest))]
        n_labelled = max(_count(labelled_fraction, len(rest), False), 1)
        pool += [train.photos[i] for i in sorted(rest[n_labelled:].tolist())]
        train = train.subset(sorted(rest[:n_labelled].tolist()))
    for folder in unlabelled:
        pool += load_photo_folder(Path(folder).expanduser(), on_error)
    held_out = {p.resolve() for p in [*val.photos, *test.photos]}
    pool = [p for p in dict.fromkeys(pool) if p.resolve() not in held_out]
    if not train.sketches and not pool:
        raise DataError(root, "no usable training sketches or photos")
    return Dataset(name, format, root, train, val, test, pool)
