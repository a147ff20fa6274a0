"""Data-set layouts on disk: format detection and one loader per layout.

* ``qmul-v2``: a ``<Name>_Coordinate`` stroke pickle (QMUL-Shoe-V2 / Chair-V2) with keys
  ``[/]train/<photo_id>_<n>`` or ``[/]test/...``, beside ``photo/<photo_id>.png|.jpg``. Without a
  ``photo/`` folder the sketches load on their own (``SketchRecord.photo is None``), e.g. for
  generator pre-training.
* ``qmul-v1``: ``{train,test}/images/N.jpg`` paired with raster ``{train,test}/sketches/N.png``,
  traced to strokes once and cached (as are parsed SVGs).
* ``sketchy``: ``photos/<class>/<id>.jpg`` with ``sketch/<class>/<id>-<k>.svg``; no split is
  given, so a seeded fifth of each class's photos (with their sketches) is the test split.
* ``photos``: any folder of photos, searched recursively: an unlabelled pool.

Every loader returns ``{"train": Split, "test": Split, "unlabelled": Split}`` (the last holds
photos without sketches). Bad files raise :class:`DataError` or, with ``on_error="warn"``, are
skipped with a warning.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from fgsbir import limits
from fgsbir.data.photos import check_photo, is_photo_file
from fgsbir.errors import DataError, OnError, report
from fgsbir.sketch import io as sketch_io
from fgsbir.sketch.io import (
    read_png_sketch,
    read_qmul_pickle,
    read_stroke_json,
    read_svg,
    write_stroke_json,
)
from fgsbir.sketch.strokes import Sketch

FORMATS = ("qmul-v2", "qmul-v1", "sketchy", "photos")
SKETCHY_TEST_FRACTION = 0.2


def cache_dir() -> Path:
    """The cache folder: ``$FGSBIR_CACHE``, else ``~/.cache/fgsbir``."""
    return Path(os.environ.get("FGSBIR_CACHE") or Path.home() / ".cache" / "fgsbir")


@dataclass
class SketchRecord:
    """One sketch, the index of its photo in the split's photo list (``None`` for sketch-only
    data) and where it came from (file, or pickle key) for messages."""

    sketch: Sketch
    photo: int | None
    source: str


@dataclass
class Split:
    """Photos and the sketches that point into them. Build it once; do not mutate it after
    :meth:`sketches_of` was called (its index is cached)."""

    photos: list[Path] = field(default_factory=list)
    sketches: list[SketchRecord] = field(default_factory=list)

    @cached_property
    def _by_photo(self) -> dict[int | None, list[SketchRecord]]:
        index: dict[int | None, list[SketchRecord]] = defaultdict(list)
        for record in self.sketches:
            index[record.photo].append(record)
        return index

    def sketches_of(self, photo: int) -> list[SketchRecord]:
        """The sketches of photo number ``photo``."""
        return list(self._by_photo.get(photo, []))

    def subset(self, photos: Sequence[int]) -> Split:
        """A split with only the given photos (in that order) and their sketches."""
        new_index = {old: new for new, old in enumerate(photos)}
        return Split(
            [self.photos[i] for i in photos],
            [replace(r, photo=new_index[r.photo]) for r in self.sketches if r.photo in new_index],
        )


Splits = dict[str, Split]


def _image_files(folder: Path) -> Iterable[Path]:
    return (p for p in folder.rglob("*") if is_photo_file(p) and p.is_file())


def _coordinate_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file()
        and p.name.removesuffix(p.suffix if p.suffix in (".pkl", ".pickle") else "").endswith(
            "_Coordinate"
        )
    )


def detect_format(root: Path) -> str:
    """The layout of the data folder ``root``, one of :data:`FORMATS`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "data folder not found" if not root.exists() else "not a folder")
    if _coordinate_files(root):
        return "qmul-v2"
    if any((root / split / "images").is_dir() for split in ("train", "test")):
        return "qmul-v1"
    if (root / "photos").is_dir() and (root / "sketch").is_dir():
        return "sketchy"
    if next(iter(_image_files(root)), None) is not None:
        return "photos"
    raise DataError(
        root,
        "no data set found: expected a <Name>_Coordinate stroke pickle (QMUL-Shoe/Chair-V2), "
        "train/images + train/sketches (QMUL-Shoe-V1), photos/ + sketch/ (Sketchy) or photos",
    )


def _valid_photos(paths: Iterable[Path], on_error: OnError) -> set[Path]:
    """The paths whose photo decodes within the limits (:func:`check_photo`: truncated or
    corrupt files are found now, not an epoch into training); the others are reported."""
    good = set()
    for path in paths:
        try:
            check_photo(path)
        except DataError as err:
            report(err, on_error)
        else:
            good.add(path)
    return good


def _photo_key(path: Path) -> tuple[int, int | str]:
    """Sort photo stems numerically where they are numbers (QMUL-Shoe-V1: 1, 2, ..., 10)."""
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def _split_from_pairs(
    pairs: dict[Path, list[tuple[Sketch, str]]], order: Callable[[Path], object] = str
) -> Split:
    """A split from ``{photo: [(sketch, source), ...]}``."""
    photos = sorted(pairs, key=order)
    records = [SketchRecord(s, i, src) for i, p in enumerate(photos) for s, src in pairs[p]]
    return Split(photos, records)


def load_qmul_v2(root: Path, on_error: OnError = "raise") -> Splits:
    """Load a QMUL-Shoe/Chair-V2 style folder (see the module docstring)."""
    root = Path(root)
    pickles = _coordinate_files(root)
    if len(pickles) != 1:
        found = ", ".join(p.name for p in pickles) or "none"
        raise DataError(root, f"expected one <Name>_Coordinate stroke pickle, found {found}")
    pickle_path = pickles[0]
    sketches = read_qmul_pickle(pickle_path)
    photo_dir = root / "photo"
    photo_files = (
        {p.stem: p for p in sorted(photo_dir.iterdir()) if is_photo_file(p)}
        if photo_dir.is_dir()
        else None
    )
    pairs: dict[str, dict[Path, list[tuple[Sketch, str]]]] = {"train": {}, "test": {}}
    sketch_only: dict[str, list[SketchRecord]] = {"train": [], "test": []}
    for key, sketch in sketches.items():
        match = re.fullmatch(r"/?(train|test)/(.+)_([^_/]+)", key)
        if match is None:
            report(
                DataError(pickle_path, f"key {key!r}: expected train/<photo_id>_<n> or test/..."),
                on_error,
            )
            continue
        split, photo_id = match.group(1), match.group(2)
        if photo_files is None:
            sketch_only[split].append(SketchRecord(sketch, None, key))
        elif photo_id in photo_files:
            pairs[split].setdefault(photo_files[photo_id], []).append((sketch, key))
        else:
            report(
                DataError(pickle_path, f"key {key!r}: no photo {photo_id} in {photo_dir}"), on_error
            )
    if photo_files is None:
        return {name: Split([], records) for name, records in sketch_only.items()} | {
            "unlabelled": Split()
        }
    good = _valid_photos([*pairs["train"], *pairs["test"]], on_error)
    splits = {
        name: _split_from_pairs({p: s for p, s in split.items() if p in good})
        for name, split in pairs.items()
    }
    used = set(pairs["train"]) | set(pairs["test"])
    spare = [p for p in photo_files.values() if p not in used]
    splits["unlabelled"] = Split(sorted(_valid_photos(spare, on_error)))
    return splits


@cache
def _reader_digest() -> str:
    """Digest of the sketch-reading code, so cached sketches are redone when it changes."""
    digest = hashlib.sha1()
    sketch_dir = Path(sketch_io.__file__).parent
    for source in (*(sketch_dir / n for n in ("io.py", "trace.py", "strokes.py")), limits.__file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()


def cached_sketch(path: Path, reader: Callable[[Path], Sketch]) -> Sketch:
    """``reader(path)``, cached as stroke JSON in ``cache_dir()/sketches``.

    Tracing a raster sketch or parsing a long SVG path takes 20-150 ms; the cache entry is keyed
    by the file's path, size and modification time, the reader and the sketch-reading code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing")
    stat = path.stat()
    key = "|".join([str(path.resolve()), str(stat.st_size), str(stat.st_mtime_ns), reader.__name__])
    digest = hashlib.sha1(f"{key}|{_reader_digest()}".encode()).hexdigest()
    cached = cache_dir() / "sketches" / f"{digest}.json"
    if cached.is_file():
        try:
            return read_stroke_json(cached)
        except DataError:
            pass  # a damaged cache entry: read again and overwrite it
    sketch = reader(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp")
        write_stroke_json(sketch, partial)
        os.replace(partial, cached)
    except (OSError, DataError):
        pass  # no writable cache: still correct, only slower next time
    return sketch


def load_qmul_v1(root: Path, on_error: OnError = "raise") -> Splits:
    """Load a QMUL-Shoe-V1 style folder of photo / raster-sketch pairs."""
    root = Path(root)
    if not any((root / name / "images").is_dir() for name in ("train", "test")):
        raise DataError(root, "not a QMUL-Shoe-V1 folder: no train/images or test/images")
    splits: Splits = {"unlabelled": Split()}
    for name in ("train", "test"):
        images, drawings = root / name / "images", root / name / "sketches"
        if not images.is_dir() and not drawings.is_dir():
            splits[name] = Split()
            continue
        for folder in (images, drawings):
            if not folder.is_dir():
                raise DataError(folder, "missing (QMUL-Shoe-V1 needs images/ and sketches/)")
        photos = {p.stem: p for p in images.iterdir() if is_photo_file(p)}
        sketch_files = {p.stem: p for p in drawings.iterdir() if is_photo_file(p)}
        for stem in sorted(photos.keys() - sketch_files.keys()):
            report(DataError(photos[stem], f"no sketch {stem}.* in {drawings}"), on_error)
        for stem in sorted(sketch_files.keys() - photos.keys()):
            report(DataError(sketch_files[stem], f"no photo {stem}.* in {images}"), on_error)
        good = _valid_photos([photos[s] for s in photos.keys() & sketch_files.keys()], on_error)
        pairs: dict[Path, list[tuple[Sketch, str]]] = {}
        for photo in good:
            source = sketch_files[photo.stem]
            try:
                pairs[photo] = [(cached_sketch(source, read_png_sketch), str(source))]
            except DataError as err:
                report(err, on_error)
        splits[name] = _split_from_pairs(pairs, order=_photo_key)
    return splits


def load_sketchy(
    root: Path,
    on_error: OnError = "raise",
    seed: int = 0,
    test_fraction: float = SKETCHY_TEST_FRACTION,
) -> Splits:
    """Load a Sketchy style folder; the test split is a seeded ``test_fraction`` of each
    class's photos (at least one when a class has two or more)."""
    root = Path(root)
    for folder in (root / "photos", root / "sketch"):
        if not folder.is_dir():
            raise DataError(folder, "missing (a Sketchy folder has photos/ and sketch/)")
    pairs: dict[str, dict[Path, list[tuple[Sketch, str]]]] = {"train": {}, "test": {}}
    spare: list[Path] = []
    for class_dir in sorted(p for p in (root / "photos").iterdir() if p.is_dir()):
        photos = {p.stem: p for p in class_dir.iterdir() if is_photo_file(p)}
        drawn: dict[Path, list[tuple[Sketch, str]]] = defaultdict(list)
        sketch_dir = root / "sketch" / class_dir.name
        svgs = sorted(sketch_dir.glob("*.svg")) if sketch_dir.is_dir() else []
        for svg in svgs:
            photo_id = svg.stem.rsplit("-", 1)[0]
            try:
                if photo_id not in photos:
                    raise DataError(svg, f"no photo {photo_id}.* in {class_dir}")
                drawn[photos[photo_id]].append((cached_sketch(svg, read_svg), str(svg)))
            except DataError as err:
                report(err, on_error)
        good = _valid_photos(photos.values(), on_error)
        spare += sorted(p for p in good if p not in drawn)
        labelled = sorted(p for p in drawn if p in good)
        rng = np.random.default_rng([seed, zlib.crc32(class_dir.name.encode())])
        n_test = round(test_fraction * len(labelled))
        n_test = max(n_test, 1) if len(labelled) >= 2 and test_fraction > 0 else n_test
        test = {labelled[i] for i in rng.permutation(len(labelled))[:n_test]}
        for photo in labelled:
            pairs["test" if photo in test else "train"][photo] = drawn[photo]
    splits = {name: _split_from_pairs(split) for name, split in pairs.items()}
    splits["unlabelled"] = Split(spare)
    return splits


def load_photo_folder(root: Path, on_error: OnError = "raise") -> list[Path]:
    """Every readable photo under ``root`` (recursively), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "photo folder not found" if not root.exists() else "not a folder")
    return sorted(_valid_photos(_image_files(root), on_error))


def load_layout(root: Path, format: str, on_error: OnError = "raise", seed: int = 0) -> Splits:
    """Load ``root`` as ``format`` (see :data:`FORMATS`)."""
    if format == "qmul-v2":
        return load_qmul_v2(root, on_error)
    if format == "qmul-v1":
        return load_qmul_v1(root, on_error)
    if format == "sketchy":
        return load_sketchy(root, on_error, seed=seed)
    if format == "photos":
        return {
            "train": Split(),
            "test": Split(),
            "unlabelled": Split(load_photo_folder(root, on_error)),
        }
    raise ValueError(f"unknown data format {format!r}; known: {', '.join(FORMATS)}")
