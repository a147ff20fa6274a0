"""Every folder of ../shared/data loads with the counts its README states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fgsbir.config import DataConfig
from fgsbir.data.dataset import load_data, load_dataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.realdata


def readme_numbers(pattern: str) -> tuple[int, ...]:
    """The numbers a README phrase states, e.g. ``(\\d+) train pairs``."""
    readme = DATA / "README.md"
    if not readme.is_file():
        pytest.skip(f"real data not available: {readme} is missing")
    match = re.search(pattern, readme.read_text(encoding="utf-8"))
    assert match, f"README.md no longer says {pattern!r}"
    return tuple(int(n) for n in match.groups())


def folder(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is missing")
    return path


def test_qmul_shoe_v1_pairs() -> None:
    n_train, n_test = readme_numbers(r"(\d+) train pairs, (\d+) test pairs")
    ds = load_dataset(folder("qmul-shoe-v1"), val_fraction=0.0)
    assert ds.format == "qmul-v1"
    assert (len(ds.train.photos), len(ds.train.sketches)) == (n_train, n_train)
    assert (len(ds.test.photos), len(ds.test.sketches)) == (n_test, n_test)
    for split in (ds.train, ds.test):
        for record in split.sketches:
            assert Path(record.source).stem == split.photos[record.photo].stem
            assert record.sketch.width == 256 and record.sketch.num_strokes >= 1


def test_shoe_v2_photo_pool() -> None:
    (n_photos,) = readme_numbers(r"\| (\d+) photos, 400x400")
    ds = load_dataset(folder("shoev2-photos"))
    assert ds.format == "photos" and len(ds.unlabelled) == n_photos


def test_chair_v2_sketches_without_photos() -> None:
    total, n_chairs, n_train, n_test = readme_numbers(
        r"(\d+) sketches of (\d+) chairs \((\d+) train, (\d+) test\)"
    )
    ds = load_dataset(folder("chairv2-sketches"), val_fraction=0.0)
    assert ds.format == "qmul-v2"
    assert (len(ds.train.sketches), len(ds.test.sketches)) == (n_train, n_test)
    records = ds.train.sketches + ds.test.sketches
    assert len(records) == total and all(r.photo is None for r in records)
    assert len({r.source.split("/")[-1].rsplit("_", 1)[0] for r in records}) == n_chairs
    assert all(r.sketch.width == 256 for r in records)


def test_sketchy_subset_split_by_photo() -> None:
    total, elephants, pigs = readme_numbers(r"(\d+) pairs \(elephant (\d+), pig (\d+)\)")
    ds = load_dataset(folder("sketchy-subset"), val_fraction=0.0)
    assert ds.format == "sketchy"
    photos = ds.train.photos + ds.test.photos
    assert len(photos) == len(ds.train.sketches) + len(ds.test.sketches) == total
    classes = [p.parent.name for p in photos]
    assert (classes.count("elephant"), classes.count("pig")) == (elephants, pigs)
    test_classes = [p.parent.name for p in ds.test.photos]
    assert test_classes.count("elephant") == round(0.2 * elephants)
    assert test_classes.count("pig") == round(0.2 * pigs)
    assert all((r.sketch.width, r.sketch.height) == (640, 480) for r in ds.test.sketches)


def test_shoe_v1_with_the_v2_photos_as_unlabelled_pool() -> None:
    (n_pool,) = readme_numbers(r"\| (\d+) photos, 400x400")
    (n_train,) = readme_numbers(r"(\d+) train pairs")
    config = DataConfig(
        path=str(folder("qmul-shoe-v1")),
        labelled_fraction=0.5,
        unlabelled=[str(folder("shoev2-photos"))],
    )
    ds = load_data(config)  # what a training run loads
    n_val = round(0.1 * n_train)
    assert len(ds.val.photos) == n_val
    assert len(ds.train.photos) == round(0.5 * (n_train - n_val))
    assert len(ds.unlabelled) == n_pool + (n_train - n_val - len(ds.train.photos))
