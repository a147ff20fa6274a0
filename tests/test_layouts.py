"""Format detection and the per-layout loaders, on small data sets written in tmp_path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fgsbir.data import layouts
from fgsbir.data.layouts import (
    cached_sketch,
    detect_format,
    load_photo_folder,
    load_qmul_v1,
    load_qmul_v2,
    load_sketchy,
)
from fgsbir.data.photos import check_photo, load_photo
from fgsbir.errors import DataError, DataWarning
from fgsbir.sketch.io import read_png_sketch


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FGSBIR_CACHE", str(tmp_path / "cache"))


def write_photo(path: Path, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).rectangle((6, 10, 26, 22), fill=colour)
    image.save(path)
    return path


def write_drawing(path: Path, lines: list[list[tuple[int, int]]]) -> Path:
    """A black-on-white raster line drawing, as the QMUL-Shoe-V1 sketches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("L", (64, 64), 255)
    draw = ImageDraw.Draw(image)
    for line in lines:
        draw.line(line, fill=0, width=2)
    image.save(path)
    return path


def write_svg(path: Path, d: str = "M 10 10 L 100 40 L 200 90") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<svg width="640" height="480" xmlns="http://www.w3.org/2000/svg">'
        f'<g><path d="{d}" fill="none" stroke="#000"/></g></svg>'
    )
    return path


def points(n: int, offset: float = 0.0) -> np.ndarray:
    pts = np.zeros((n, 3))
    pts[:, 0] = np.linspace(10, 200, n) + offset
    pts[:, 1] = np.linspace(30, 90, n)
    pts[n // 2 - 1, 2] = pts[-1, 2] = 1
    return pts


def write_pickle(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return path


@pytest.fixture
def qmul_v2(tmp_path: Path) -> Path:
    root = tmp_path / "shoev2"
    write_pickle(
        root / "ShoeV2_Coordinate",
        {
            "train/2429245009_white_1": points(6),
            "/train/2429245009_white_2": points(8, 3.0),
            "train/b_1": points(4),
            "test/c_1": points(5),
        },
    )
    write_photo(root / "photo" / "2429245009_white.png")
    write_photo(root / "photo" / "b.jpg", (0, 0, 255))
    write_photo(root / "photo" / "c.png")
    write_photo(root / "photo" / "spare.png")
    return root


def test_qmul_v2_pairs_sketches_with_photos_splitting_ids_on_the_last_underscore(
    qmul_v2: Path,
) -> None:
    assert detect_format(qmul_v2) == "qmul-v2"
    splits = load_qmul_v2(qmul_v2)
    train = splits["train"]
    assert [p.name for p in train.photos] == ["2429245009_white.png", "b.jpg"]
    by_photo = {
        train.photos[i].name: sorted(r.source for r in train.sketches_of(i)) for i in (0, 1)
    }
    assert by_photo == {
        "2429245009_white.png": ["/train/2429245009_white_2", "train/2429245009_white_1"],
        "b.jpg": ["train/b_1"],
    }
    record = train.sketches_of(0)[0]
    assert record.sketch.width == 256 and len(record.sketch.points) in (6, 8)
    assert [p.name for p in splits["test"].photos] == ["c.png"]
    assert [r.photo for r in splits["test"].sketches] == [0]
    assert [p.name for p in splits["unlabelled"].photos] == ["spare.png"]


def test_qmul_v2_without_photo_folder_loads_sketches_only(tmp_path: Path) -> None:
    root = tmp_path / "chairs"
    write_pickle(root / "ChairV2_Coordinate", {"/train/x_1": points(4), "/test/y_z_2": points(5)})
    splits = load_qmul_v2(root)
    assert splits["train"].photos == [] and splits["test"].photos == []
    assert [(r.photo, r.source) for r in splits["train"].sketches] == [(None, "/train/x_1")]
    assert [r.source for r in splits["test"].sketches] == ["/test/y_z_2"]


def test_qmul_v2_sketch_without_photo_is_reported_or_skipped(qmul_v2: Path) -> None:
    (qmul_v2 / "photo" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"ShoeV2_Coordinate: key 'train/b_1': no photo b "):
        load_qmul_v2(qmul_v2)
    with pytest.warns(DataWarning, match="no photo b"):
        splits = load_qmul_v2(qmul_v2, on_error="warn")
    assert [p.name for p in splits["train"].photos] == ["2429245009_white.png"]
    assert len(splits["train"].sketches) == 2


def test_qmul_v2_bad_key_corrupt_photo_bad_pickle_and_empty_sketch(qmul_v2: Path) -> None:
    coordinate = qmul_v2 / "ShoeV2_Coordinate"
    good = pickle.loads(coordinate.read_bytes())
    write_pickle(coordinate, {**good, "validation/d_1": points(4)})
    with pytest.raises(DataError, match="key 'validation/d_1': expected train/"):
        load_qmul_v2(qmul_v2)

    write_pickle(coordinate, good)
    (qmul_v2 / "photo" / "c.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"c\.png: not a readable image"):
        load_qmul_v2(qmul_v2)
    with pytest.warns(DataWarning, match=r"c\.png"):
        splits = load_qmul_v2(qmul_v2, on_error="warn")
    assert splits["test"].photos == [] and splits["test"].sketches == []

    coordinate.write_bytes(b"\x80\x04 garbage")
    with pytest.raises(DataError, match="ShoeV2_Coordinate"):
        load_qmul_v2(qmul_v2)
    write_pickle(coordinate, {**good, "train/b_2": np.zeros((0, 3))})
    with pytest.raises(DataError, match="empty sketch"):
        load_qmul_v2(qmul_v2)


@pytest.fixture
def qmul_v1(tmp_path: Path) -> Path:
    root = tmp_path / "shoev1"
    for split, numbers in (("train", (1, 2, 10)), ("test", (3,))):
        for n in numbers:
            write_photo(root / split / "images" / f"{n}.jpg", (10 * n, 0, 0))
            write_drawing(
                root / split / "sketches" / f"{n}.png",
                [[(5, 5 + n), (50, 5 + n)], [(10, 40), (30, 60 - n)]],
            )
    return root


def test_qmul_v1_traces_each_sketch_and_pairs_by_number(qmul_v1: Path) -> None:
    assert detect_format(qmul_v1) == "qmul-v1"
    splits = load_qmul_v1(qmul_v1)
    train = splits["train"]
    assert [p.name for p in train.photos] == ["1.jpg", "2.jpg", "10.jpg"]
    for i, photo in enumerate(train.photos):
        (record,) = train.sketches_of(i)
        assert record.source == str(qmul_v1 / "train" / "sketches" / f"{photo.stem}.png")
        assert record.sketch.num_strokes >= 2
        ys = record.sketch.points[:, 1]
        assert ys.min() == pytest.approx(5 + int(photo.stem), abs=2.0)  # the top line
    assert [p.name for p in splits["test"].photos] == ["3.jpg"]


def test_qmul_v1_unpaired_files_and_blank_sketches(qmul_v1: Path) -> None:
    write_photo(qmul_v1 / "train" / "images" / "7.jpg")
    with pytest.raises(DataError, match=r"7\.jpg: no sketch 7\.\*"):
        load_qmul_v1(qmul_v1)
    (qmul_v1 / "train" / "images" / "7.jpg").unlink()
    write_drawing(qmul_v1 / "test" / "sketches" / "8.png", [[(1, 1), (9, 9)]])
    with pytest.raises(DataError, match=r"8\.png: no photo 8\.\*"):
        load_qmul_v1(qmul_v1)
    (qmul_v1 / "test" / "sketches" / "8.png").unlink()
    write_drawing(qmul_v1 / "test" / "sketches" / "3.png", [])  # no ink
    with pytest.raises(DataError, match=r"3\.png: no ink"):
        load_qmul_v1(qmul_v1)
    with pytest.warns(DataWarning, match=r"3\.png"):
        splits = load_qmul_v1(qmul_v1, on_error="warn")
    assert splits["test"].photos == [] and len(splits["train"].photos) == 3


def test_cached_sketch_reads_once_per_file_version(tmp_path: Path) -> None:
    drawing = write_drawing(tmp_path / "s.png", [[(5, 5), (50, 30)]])
    calls = []

    def read_png_sketch_counted(path: Path):  # the reader's name is part of the cache key
        calls.append(path)
        return read_png_sketch(path)

    first = cached_sketch(drawing, read_png_sketch_counted)
    again = cached_sketch(drawing, read_png_sketch_counted)
    assert len(calls) == 1
    np.testing.assert_allclose(again.points, first.points, atol=1e-3)
    assert list((tmp_path / "cache" / "sketches").glob("*.json"))
    write_drawing(drawing, [[(5, 5), (50, 30)], [(5, 50), (60, 50)]])  # the file changes
    changed = cached_sketch(drawing, read_png_sketch_counted)
    assert len(calls) == 2 and changed.num_strokes > first.num_strokes


@pytest.fixture
def sketchy(tmp_path: Path) -> Path:
    root = tmp_path / "sketchy"
    for animal in ("cat", "dog"):
        for i in range(5):
            write_photo(root / "photos" / animal / f"n0{i}_{animal}.jpg")
            for k in range(1, 1 + i % 2 + 1):
                write_svg(root / "sketch" / animal / f"n0{i}_{animal}-{k}.svg", f"M {i} 5 L 90 {k}")
    write_photo(root / "photos" / "dog" / "lonely.jpg")  # a photo nobody sketched
    return root


def test_sketchy_splits_each_class_by_photo_with_a_seed(sketchy: Path) -> None:
    assert detect_format(sketchy) == "sketchy"
    splits = load_sketchy(sketchy, seed=3)
    train, test = splits["train"], splits["test"]
    assert len(test.photos) == 2 and len(train.photos) == 8
    assert {p.parent.name for p in test.photos} == {"cat", "dog"}
    assert not set(train.photos) & set(test.photos)
    for split in (train, test):
        for record in split.sketches:
            assert Path(record.source).stem.rsplit("-", 1)[0] == split.photos[record.photo].stem
            assert (record.sketch.width, record.sketch.height) == (640, 480)
    assert len(train.sketches) + len(test.sketches) == len(list(sketchy.rglob("*.svg")))
    assert [p.name for p in splits["unlabelled"].photos] == ["lonely.jpg"]
    assert load_sketchy(sketchy, seed=3)["test"].photos == test.photos
    test_sets = {tuple(load_sketchy(sketchy, seed=s)["test"].photos) for s in range(6)}
    assert len(test_sets) > 1


def test_sketchy_bad_svg_and_svg_without_photo(sketchy: Path) -> None:
    bad = sketchy / "sketch" / "cat" / "n00_cat-1.svg"
    bad.write_text("<svg><path d='M 1 1 L")
    with pytest.raises(DataError, match=r"n00_cat-1\.svg"):
        load_sketchy(sketchy)
    write_svg(bad)
    write_svg(sketchy / "sketch" / "cat" / "ghost-1.svg")
    with pytest.raises(DataError, match=r"ghost-1\.svg: no photo ghost"):
        load_sketchy(sketchy)
    with pytest.warns(DataWarning, match="ghost"):
        splits = load_sketchy(sketchy, on_error="warn")
    drawn = len(list(sketchy.rglob("*.svg"))) - 1
    assert len(splits["train"].sketches) + len(splits["test"].sketches) == drawn


def test_photo_folder_is_searched_recursively(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    write_photo(root / "a.jpg")
    write_photo(root / "deeper" / "b.webp")
    write_photo(root / ".hidden.png")
    (root / "notes.txt").write_text("not a photo")
    assert detect_format(root) == "photos"
    assert [p.relative_to(root).as_posix() for p in load_photo_folder(root)] == [
        "a.jpg",
        "deeper/b.webp",
    ]
    (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        load_photo_folder(root)
    with pytest.warns(DataWarning):
        assert len(load_photo_folder(root, on_error="warn")) == 2


def test_detect_format_names_the_folder_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        detect_format(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no data set found: expected a <Name>_Coordinate"):
        detect_format(tmp_path / "empty")


def test_load_layout_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown data format 'quickdraw'"):
        layouts.load_layout(tmp_path, "quickdraw")


def test_load_photo_converts_to_rgb_on_white_and_names_bad_files(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    rgba.save(tmp_path / "t.png")
    photo = load_photo(tmp_path / "t.png")
    assert photo.mode == "RGB"
    assert photo.getpixel((0, 0)) == (255, 255, 255) and photo.getpixel((1, 1)) == (0, 0, 255)
    with pytest.raises(DataError, match=r"gone\.jpg: missing"):
        load_photo(tmp_path / "gone.jpg")
    full = write_photo(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes(full.read_bytes()[:60])
    check_photo(full)
    with pytest.raises(DataError, match=r"cut\.png: not a readable image"):
        load_photo(tmp_path / "cut.png")
