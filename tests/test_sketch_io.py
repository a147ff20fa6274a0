import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import distance_transform_edt

from fgsbir.errors import DataError
from fgsbir.sketch.io import (
    load_sketch,
    read_png_sketch,
    read_qmul_pickle,
    read_sketchrnn_npz,
    read_stroke_json,
    read_svg,
    write_png,
    write_stroke_json,
    write_svg,
)
from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch, points_to_stroke3

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture
def sketch() -> Sketch:
    square = np.array([[20, 20], [120, 20], [120, 120], [20, 120], [20, 20]], float)
    return Sketch.from_strokes([square, np.array([[40, 200], [200, 60]]), [[180, 180]]], 256, 256)


def qmul_points(n: int = 5) -> np.ndarray:
    points = np.column_stack([np.linspace(10, 200, n), np.linspace(30, 90, n), np.zeros(n)])
    points[[2, -1], 2] = 1
    return points


def dump(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_read_qmul_pickle(tmp_path):
    path = dump(tmp_path / "coords", {"/train/a_1": qmul_points(), "/test/b_1": qmul_points(3)})
    sketches = read_qmul_pickle(path)
    assert sorted(sketches) == ["/test/b_1", "/train/a_1"]
    first = sketches["/train/a_1"]
    assert (first.width, first.height) == (256, 256)
    np.testing.assert_allclose(first.points, qmul_points(), atol=1e-5)
    assert first.num_strokes == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([qmul_points()], "expected a dict"),
        ({}, "no sketches"),
        ({"k": qmul_points()[:, :2]}, "key 'k'"),
        ({"k": np.zeros((0, 3))}, "empty sketch"),
        ({"k": np.where(np.eye(5, 3) > 0, np.nan, qmul_points())}, "NaN"),
        ({"k": qmul_points() * [1, 1, 3]}, "pen flags"),
        ({"k": "not numbers"}, "key 'k'"),
    ],
)
def test_read_qmul_pickle_rejects_malformed_content(tmp_path, content, message):
    path = dump(tmp_path / "coords", content)
    with pytest.raises(DataError, match=message) as info:
        read_qmul_pickle(path)
    assert info.value.path == str(path)


class Hostile:
    def __reduce__(self):
        return (os.mkdir, (str(Path(os.environ["HOSTILE_DIR"]) / "pwned"),))


def test_read_qmul_pickle_refuses_code_and_garbage(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTILE_DIR", str(tmp_path))
    with pytest.raises(DataError, match="refusing"):
        read_qmul_pickle(dump(tmp_path / "evil", {"k": Hostile()}))
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "garbage").write_bytes(b"\x00 not a pickle")
    with pytest.raises(DataError):
        read_qmul_pickle(tmp_path / "garbage")
    with pytest.raises(DataError, match="not found"):
        read_qmul_pickle(tmp_path / "missing")


@pytest.mark.realdata
def test_read_real_chair_v2_pickle():
    sketches = read_qmul_pickle(needs(DATA / "chairv2-sketches" / "ChairV2_Coordinate"))
    assert len(sketches) == 1275
    assert sum(k.startswith("/train/") for k in sketches) == 952
    for s in list(sketches.values())[:50]:
        assert s.num_strokes >= 1 and (s.points[:, :2] >= 0).all()
        assert (s.points[:, :2] <= 256).all()


def test_svg_round_trip(tmp_path, sketch):
    write_svg(sketch, tmp_path / "s.svg")
    back = read_svg(tmp_path / "s.svg")
    assert (back.width, back.height) == (256, 256)
    assert len(back.strokes) == 3
    for got, want in zip(back.strokes, sketch.strokes, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_read_svg_applies_transforms_viewbox_and_samples_curves(tmp_path):
    (tmp_path / "t.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 100 50">'
        '<rect width="100" height="50" fill="white"/>'
        '<g transform="translate(10 5)"><path d="M0 0 L10 0 M0 10 C0 30 40 30 40 10"/></g>'
        '<polyline points="1,1 3,1" fill="none" stroke="black"/></svg>'
    )
    sketch = read_svg(tmp_path / "t.svg")
    assert (sketch.width, sketch.height) == (200, 100)
    line, curve, polyline = sketch.strokes  # the background rect is not a stroke
    np.testing.assert_allclose(line, [[20, 10], [40, 10]], atol=1e-6)
    np.testing.assert_allclose(curve[[0, -1]], [[20, 30], [100, 30]], atol=1e-6)
    assert len(curve) > 10  # sampled along the curve, about 2 canvas units apart
    assert curve[:, 1].max() == pytest.approx(30 + 2 * 15, abs=0.5)  # apex of the Bezier
    np.testing.assert_allclose(polyline, [[2, 2], [6, 2]], atol=1e-6)


def test_read_svg_without_size_uses_drawing_extent(tmp_path):
    (tmp_path / "n.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0 L30.5 12"/></svg>'
    )
    sketch = read_svg(tmp_path / "n.svg")
    assert (sketch.width, sketch.height) == (31, 12)


@pytest.mark.parametrize(
    "text",
    [
        '<svg xmlns="http://www.w3.org/2000/svg"><rect width="5" height="5"/></svg>',
        '<svg xmlns="http://www.w3.org/2000/svg" width="0"><path d="M0 0 L1 1"/></svg>',
        '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0 L1e999 1"/></svg>',
        "<svg><path",
    ],
)
def test_read_svg_rejects_empty_or_broken(tmp_path, text):
    (tmp_path / "bad.svg").write_text(text)
    with pytest.raises(DataError, match=r"bad\.svg"):
        read_svg(tmp_path / "bad.svg")


@pytest.mark.realdata
def test_read_real_sketchy_svgs():
    paths = sorted((needs(DATA / "sketchy-subset" / "sketch")).glob("*/*.svg"))[:5]
    for path in paths:
        sketch = read_svg(path)
        assert (sketch.width, sketch.height) == (640, 480)
        assert sketch.num_strokes > 3
        assert (sketch.points[:, :2] > -5).all() and (sketch.points[:, 0] < 645).all()


def test_stroke_json_round_trip_and_list_form(tmp_path, sketch):
    write_stroke_json(sketch, tmp_path / "s.json")
    back = read_stroke_json(tmp_path / "s.json")
    np.testing.assert_allclose(back.points, sketch.points, atol=1e-3)
    (tmp_path / "list.json").write_text(json.dumps([[[1, 2, 0.5], [3, 4, 0.7]], [[5, 6, 1.0]]]))
    listed = read_stroke_json(tmp_path / "list.json")
    assert (listed.width, listed.height) == (256, 256)
    np.testing.assert_allclose(listed.strokes[0], [[1, 2], [3, 4]])  # extra values ignored


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"width": 10}', 'no "strokes"'),
        ('{"strokes": [[[1, 2]]], "width": -3}', "positive"),
        ('{"strokes": [[[1, 2]]], "width": "wide"}', "numbers"),
        ('"strokes"', "list of strokes"),
        ("[[[1, 2]], [1, 2]]", "stroke 1"),
        ('[[["a", "b"]]]', "stroke 0"),
        ("[[], []]", "no points"),
        ("[[[1, 2]", "cannot read"),
    ],
)
def test_read_stroke_json_rejects_malformed(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(DataError, match=message):
        read_stroke_json(tmp_path / "bad.json")


def test_png_round_trip_traces_the_drawing(tmp_path, sketch):
    write_png(sketch, tmp_path / "s.png", size=256, line_width=3.0)
    image = np.asarray(Image.open(tmp_path / "s.png"))
    assert image.shape == (256, 256) and image.dtype == np.uint8
    assert image[20, 70] < 50 and image[70, 70] == 255  # on the square's edge / inside it
    traced = read_png_sketch(tmp_path / "s.png")
    assert (traced.width, traced.height) == (256, 256)
    assert traced.num_strokes == 2  # the square and the diagonal; the dot is too small to keep
    away = distance_transform_edt(rasterise([sketch], 256, 1.0)[0, 0].numpy() == 0)
    x, y = traced.points[:, :2].astype(int).T
    assert away[y, x].max() <= 1.5  # every traced point lies on the drawn lines
    length = sum(np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in traced.strokes)
    assert length == pytest.approx(400 + np.hypot(160, 140), rel=0.05)


def test_read_png_sketch_errors(tmp_path):
    Image.new("L", (32, 32), 255).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="no ink"):
        read_png_sketch(tmp_path / "blank.png")
    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"fake\.png"):
        read_png_sketch(tmp_path / "fake.png")


def write_npz(path: Path, splits: dict[str, list[np.ndarray]]) -> None:
    arrays = {}
    for name, sketches in splits.items():
        arrays[name] = np.empty(len(sketches), dtype=object)
        arrays[name][:] = sketches
    np.savez(path, **arrays)


def test_read_sketchrnn_npz(tmp_path):
    rng = np.random.default_rng(0)
    stroke3 = [
        np.column_stack([rng.integers(-20, 20, (n, 2)), (rng.random(n) < 0.2)]).astype(np.int16)
        for n in (12, 30, 7)
    ]
    for s in stroke3:
        s[-1, 2] = 1
    write_npz(tmp_path / "cat.npz", {"train": stroke3[:2], "valid": stroke3[2:], "test": []})
    data = read_sketchrnn_npz(tmp_path / "cat.npz")
    assert [len(data[k]) for k in ("train", "valid", "test")] == [2, 1, 0]
    for got, want in zip(data["train"] + data["valid"], stroke3, strict=True):
        np.testing.assert_allclose(points_to_stroke3(got.points)[1:], want[1:], atol=1e-4)
        assert got.width == got.height
        assert (got.points[:, :2] > 0).all() and (got.points[:, :2] < got.width).all()


def test_read_sketchrnn_npz_rejects_bad_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTILE_DIR", str(tmp_path))
    write_npz(tmp_path / "nan.npz", {"train": [np.array([[1.0, np.nan, 1.0]])]})
    with pytest.raises(DataError, match=r"train\[0\].*NaN"):
        read_sketchrnn_npz(tmp_path / "nan.npz")
    write_npz(tmp_path / "evil.npz", {"train": [Hostile()]})
    with pytest.raises(DataError, match="refusing"):
        read_sketchrnn_npz(tmp_path / "evil.npz")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"junk\.npz"):
        read_sketchrnn_npz(tmp_path / "junk.npz")


def test_load_sketch_dispatches_on_suffix(tmp_path, sketch):
    write_svg(sketch, tmp_path / "a.svg")
    write_stroke_json(sketch, tmp_path / "a.json")
    write_png(sketch, tmp_path / "a.PNG")
    assert load_sketch(tmp_path / "a.svg").num_strokes == 3
    assert load_sketch(tmp_path / "a.json").num_strokes == 3
    assert load_sketch(tmp_path / "a.PNG").num_strokes == 2  # traced: the dot is dropped
    with pytest.raises(DataError, match="unsupported"):
        load_sketch(tmp_path / "a.xyz")
