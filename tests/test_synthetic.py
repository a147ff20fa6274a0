"""The built-in synthetic shoe data set: layout, determinism, atomic writes, and that photos and
sketches agree with each other."""

from __future__ import annotations

import itertools
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

from fgsbir.data.synthetic import PICKLE_NAME, ensure_synthetic
from fgsbir.errors import DataError


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return ensure_synthetic(root, n_photos=24, sketches_per_photo=2, test_fraction=0.25, seed=5)


def read_pickle(root: Path) -> dict[str, np.ndarray]:
    return pickle.loads((root / PICKLE_NAME).read_bytes())


def by_photo(root: Path) -> dict[str, list[np.ndarray]]:
    groups: dict[str, list[np.ndarray]] = {}
    for key, points in read_pickle(root).items():
        groups.setdefault(key.split("/")[1].rsplit("_", 1)[0], []).append(points)
    return groups


def test_layout_is_qmul_v2(small: Path) -> None:
    sketches = read_pickle(small)
    assert len(sketches) == 48
    assert all(re.fullmatch(r"(train|test)/shoe_\d{4}_[12]", key) for key in sketches)
    test_ids = {key.split("/")[1].rsplit("_", 1)[0] for key in sketches if key.startswith("test/")}
    assert len(test_ids) == 6
    for points in sketches.values():
        assert points.dtype == np.float64 and points.shape[1] == 3 and points[-1, 2] == 1
        assert points[:, :2].min() >= 0 and points[:, :2].max() <= 255
        assert set(np.unique(points[:, 2])) == {0.0, 1.0}
    photos = sorted((small / "photo").iterdir())
    assert len(photos) == 24
    with Image.open(photos[0]) as image:
        assert (image.size, image.mode) == ((256, 256), "RGB")


def test_same_parameters_same_files_and_no_second_generation(small: Path, tmp_path: Path) -> None:
    stamp = (small / PICKLE_NAME).stat().st_mtime_ns
    assert ensure_synthetic(small, n_photos=24, sketches_per_photo=2, seed=5) == small
    assert (small / PICKLE_NAME).stat().st_mtime_ns == stamp
    twin = ensure_synthetic(tmp_path / "twin", n_photos=24, sketches_per_photo=2, seed=5)
    assert (twin / PICKLE_NAME).read_bytes() == (small / PICKLE_NAME).read_bytes()
    for photo in (small / "photo").iterdir():
        assert (twin / "photo" / photo.name).read_bytes() == photo.read_bytes()
    other = ensure_synthetic(tmp_path / "other", n_photos=24, sketches_per_photo=2, seed=6)
    assert (other / PICKLE_NAME).read_bytes() != (small / PICKLE_NAME).read_bytes()


def test_photos_look_like_product_shots(small: Path) -> None:
    means, widths = [], []
    for path in sorted((small / "photo").iterdir()):
        rgb = np.asarray(Image.open(path), np.float32)
        corners = rgb[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.min() > 200  # light studio background
        shoe = np.abs(rgb - corners.mean(axis=0)).max(axis=2) > 25
        columns = np.flatnonzero(shoe.any(axis=0))
        widths.append((columns[-1] - columns[0]) / 256)
        means.append(rgb[shoe].mean(axis=0))
    assert min(widths) > 0.6 and max(widths) < 0.97
    assert np.std(np.array(means), axis=0).mean() > 20  # varied colours


def test_sketches_are_drawn_on_the_photographed_shoe(small: Path) -> None:
    groups = by_photo(small)
    ids = sorted(groups)
    masks = {}
    for photo_id in ids:
        rgb = np.asarray(Image.open(small / "photo" / f"{photo_id}.png"), np.float32)
        # drawn from memory: allow ~12 px of drift around the shoe
        masks[photo_id] = binary_dilation(np.abs(rgb - rgb[0, 0]).max(axis=2) > 12, iterations=12)

    def on_shoe(points: np.ndarray, photo_id: str) -> float:
        x, y = np.clip(points[:, :2].round().astype(int), 0, 255).T
        return float(masks[photo_id][y, x].mean())

    own = [on_shoe(p, i) for i in ids for p in groups[i]]
    other = [on_shoe(p, ids[k - 1]) for k, i in enumerate(ids) for p in groups[i]]
    assert min(own) > 0.7 and np.mean(own) > 0.9
    assert np.mean(other) < np.mean(own) - 0.1  # another photo's shoe does not fit as well


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    return float(cKDTree(a).query(b)[0].mean() + cKDTree(b).query(a)[0].mean()) / 2


def dense(points: np.ndarray) -> np.ndarray:
    """Points every pixel along the strokes, so distances do not depend on point density."""
    out = []
    for stroke in np.split(points[:, :2], np.flatnonzero(points[:, 2])[:-1] + 1):
        for a, b in itertools.pairwise(stroke):
            n = int(np.ceil(np.linalg.norm(b - a))) + 1
            out.append(a + np.linspace(0, 1, n)[:, None] * (b - a))
    return np.vstack(out)


def test_sketches_vary_yet_are_closer_to_their_own_shoe(small: Path) -> None:
    groups = [[dense(p) for p in sketches] for sketches in by_photo(small).values()]
    same = [chamfer(a, b) for a, b in groups]
    different = [
        chamfer(groups[i][0], groups[j][1])
        for i in range(len(groups))
        for j in range(len(groups))
        if i != j
    ]
    assert min(same) > 0.5  # no two drawings of a shoe are the same
    assert np.median(same) * 2 < np.median(different)
    assert min(different) < np.median(same) * 2  # near-identical shoes exist: fine-grained


def test_an_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = Image.Image.save
    calls = []

    def failing_save(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:  # Ctrl+C while the third photo is written
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path / "data", n_photos=5)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(Image.Image, "save", real_save)
    root = ensure_synthetic(tmp_path / "data", n_photos=5, sketches_per_photo=1)
    assert len(list((root / "photo").iterdir())) == 5


def test_default_folder_is_in_the_cache_and_named_by_the_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FGSBIR_CACHE", str(tmp_path))
    root = ensure_synthetic(n_photos=3, sketches_per_photo=1, seed=2)
    assert root.parent == tmp_path / "synthetic"
    assert "n3" in root.name and "k1" in root.name and "s2" in root.name
    assert len(read_pickle(root)) == 3


def test_refuses_bad_parameters_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_photos"):
        ensure_synthetic(tmp_path / "x", n_photos=1)
    with pytest.raises(ValueError, match="test_fraction"):
        ensure_synthetic(tmp_path / "x", test_fraction=1.0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="mine: folder is not empty"):
        ensure_synthetic(tmp_path / "mine", n_photos=2)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
