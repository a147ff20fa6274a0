"""load_dataset: validation carving, labelled fractions, unlabelled pools and bad arguments."""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgsbir.config import DataConfig
from fgsbir.data import dataset as dataset_module
from fgsbir.data.dataset import Split, load_data, load_dataset
from fgsbir.data.layouts import SketchRecord
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.errors import DataError
from fgsbir.sketch.strokes import Sketch


def make_qmul_v2(root: Path, n_train: int = 20, n_test: int = 5, per_photo: int = 2) -> Path:
    """A QMUL-Shoe-V2 style folder; sketch k of photo i starts at x = i (to trace it back)."""
    (root / "photo").mkdir(parents=True)
    data = {}
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / "photo" / f"p_{i}.png")
        for k in range(1, per_photo + 1):
            data[f"{split}/p_{i}_{k}"] = np.array([[i, k, 0], [i + 5, k, 1]], float)
    (root / "Shoe_Coordinate").write_bytes(pickle.dumps(data))
    return root


@pytest.fixture
def shoes(tmp_path: Path) -> Path:
    return make_qmul_v2(tmp_path / "shoes")


def photo_numbers(photos: list[Path]) -> set[int]:
    return {int(p.stem.split("_")[1]) for p in photos}


def test_validation_is_carved_from_training_photos_with_their_sketches(shoes: Path) -> None:
    ds = load_dataset(shoes, val_fraction=0.2, seed=1)
    assert (ds.name, ds.format) == ("shoes", "qmul-v2")
    assert len(ds.val.photos) == 4 and len(ds.train.photos) == 16
    assert photo_numbers(ds.test.photos) == set(range(20, 25))
    assert photo_numbers(ds.train.photos) | photo_numbers(ds.val.photos) == set(range(20))
    assert not photo_numbers(ds.train.photos) & photo_numbers(ds.val.photos)
    assert ds.unlabelled == []
    for split in (ds.train, ds.val, ds.test):
        assert len(split.sketches) == 2 * len(split.photos)
        for i, photo in enumerate(split.photos):
            starts = {int(r.sketch.points[0, 0]) for r in split.sketches_of(i)}
            assert starts == {int(photo.stem.split("_")[1])}
    assert load_dataset(shoes, val_fraction=0.2, seed=1).val.photos == ds.val.photos
    choices = {tuple(load_dataset(shoes, val_fraction=0.2, seed=s).val.photos) for s in range(4)}
    assert len(choices) > 1


def test_labelled_fraction_moves_nested_subsets_to_the_unlabelled_pool(shoes: Path) -> None:
    full = load_dataset(shoes, val_fraction=0.25)
    half = load_dataset(shoes, val_fraction=0.25, labelled_fraction=0.5)
    quarter = load_dataset(shoes, val_fraction=0.25, labelled_fraction=0.25)
    assert full.val.photos == half.val.photos == quarter.val.photos
    assert len(half.train.photos) == 8 and len(half.unlabelled) == 7
    assert len(quarter.train.photos) == 4 and len(quarter.unlabelled) == 11
    assert set(quarter.train.photos) < set(half.train.photos) < set(full.train.photos)
    assert set(half.train.photos) | set(half.unlabelled) == set(full.train.photos)
    assert not set(half.unlabelled) & (set(half.val.photos) | set(half.test.photos))


def test_split_seed_keeps_the_splits_of_another_seed(shoes: Path) -> None:
    def splits(**seeds: int) -> tuple[list[Path], ...]:
        data = load_data(DataConfig(str(shoes), val_fraction=0.25, labelled_fraction=0.5, **seeds))
        return data.train.photos, data.val.photos, data.unlabelled

    assert splits(seed=7, split_seed=1) == splits(seed=1) != splits(seed=7)


def test_unlabelled_folders_join_the_pool_without_held_out_photos(
    shoes: Path, tmp_path: Path
) -> None:
    pool = tmp_path / "pool"
    (pool / "sub").mkdir(parents=True)
    for name in ("x.jpg", "sub/y.png"):
        Image.new("RGB", (8, 8)).save(pool / name)
    ds = load_dataset(shoes, unlabelled=[pool, shoes / "photo"], labelled_fraction=0.5)
    names = [p.name for p in ds.unlabelled]
    assert "x.jpg" in names and "y.png" in names
    assert len(names) == len(set(names))
    held_out = {p.name for p in [*ds.val.photos, *ds.test.photos]}
    assert not held_out & set(names)
    assert {p.name for p in ds.train.photos} <= set(names)  # the shoes' photo folder was added


def test_sketch_only_data_gets_a_validation_split_of_sketches(tmp_path: Path) -> None:
    root = tmp_path / "chairs"
    root.mkdir()
    data = {f"/train/c{i}_1": np.array([[i, 0, 0], [i, 9, 1]], float) for i in range(10)}
    data["/test/c99_1"] = np.array([[1, 1, 0], [2, 2, 1]], float)
    (root / "ChairV2_Coordinate").write_bytes(pickle.dumps(data))
    ds = load_dataset(root, val_fraction=0.2)
    assert len(ds.train.sketches) == 8 and len(ds.val.sketches) == 2
    sources = {r.source for r in [*ds.train.sketches, *ds.val.sketches]}
    assert sources == {f"/train/c{i}_1" for i in range(10)}
    assert all(r.photo is None for r in ds.train.sketches)
    assert [r.source for r in ds.test.sketches] == ["/test/c99_1"]


def test_photo_folder_alone_is_an_unlabelled_pool(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.jpg")
    ds = load_dataset(tmp_path)
    assert ds.format == "photos" and len(ds.unlabelled) == 3
    assert ds.train.sketches == [] and ds.test.photos == []
    assert "unlabelled: 3 photos" in ds.summary()


def test_bad_arguments_and_missing_data(shoes: Path, tmp_path: Path) -> None:
    for bad in ({"labelled_fraction": 0.0}, {"labelled_fraction": 1.5}, {"val_fraction": 1.0}):
        with pytest.raises(ValueError, match="fraction"):
            load_dataset(shoes, **bad)
    with pytest.raises(ValueError, match="unknown data format"):
        load_dataset(shoes, format="qmul-v3")
    with pytest.raises(DataError, match="data folder not found"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(DataError, match="shoes: not a QMUL-Shoe-V1 folder"):
        load_dataset(shoes, format="qmul-v1")
    with pytest.raises(DataError, match=r"photos: missing \(a Sketchy folder"):
        load_dataset(shoes, format="sketchy")


def test_split_helpers() -> None:
    sketch = Sketch(np.array([[0, 0, 0], [1, 1, 1]]))
    split = Split(
        [Path("a"), Path("b"), Path("c")],
        [
            SketchRecord(sketch, 2, "s1"),
            SketchRecord(sketch, 0, "s2"),
            SketchRecord(sketch, 2, "s3"),
        ],
    )
    assert [r.source for r in split.sketches_of(2)] == ["s1", "s3"]
    assert split.sketches_of(1) == []
    sub = split.subset([2, 1])
    assert sub.photos == [Path("c"), Path("b")]
    assert [(r.photo, r.source) for r in sub.sketches] == [(0, "s1"), (0, "s3")]


def test_synthetic_name_loads_the_generated_data_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = partial(ensure_synthetic, tmp_path / "synthetic", n_photos=8, sketches_per_photo=2)
    monkeypatch.setattr(dataset_module, "ensure_synthetic", small)
    ds = load_dataset("synthetic", val_fraction=0.2)
    assert (ds.name, ds.format) == ("synthetic", "qmul-v2")
    assert len(ds.train.photos) + len(ds.val.photos) == 6 and len(ds.test.photos) == 2
    assert len(ds.train.sketches) == 2 * len(ds.train.photos)
    assert all(r.sketch.width == 256 and len(r.sketch.points) > 10 for r in ds.test.sketches)
