"""Input limits: each is applied before anything is decoded or parsed, quickly, with a DataError
naming the file and the limit; tracing stays fast on any image."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fgsbir.data.layouts import load_qmul_v1
from fgsbir.data.photos import check_photo, load_photo
from fgsbir.errors import DataError, DataWarning
from fgsbir.limits import (
    MAX_COLLECTION_BYTES,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_INK_SHARE,
    MAX_SKETCH_BYTES,
    MAX_SKETCH_POINTS,
    MAX_SKETCH_STROKES,
    MAX_SVG_DEPTH,
    MAX_SVG_ELEMENTS,
    MAX_TRACE_INK,
)
from fgsbir.sketch.io import (
    load_sketch,
    read_png_sketch,
    read_qmul_pickle,
    read_sketchrnn_npz,
    read_stroke_json,
    read_svg,
)
from fgsbir.sketch.trace import TooMuchInk, trace_raster

FAST = 1.0  # seconds: refusing a file, or tracing any image, takes less than this
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256">{}</svg>'


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FGSBIR_CACHE", str(tmp_path / "cache"))


def refused(read: Callable[[Path], object], path: Path, message: str) -> DataError:
    """``read(path)`` raises, within :data:`FAST` seconds, a DataError naming the file and
    matching ``message``."""
    start = time.perf_counter()
    with pytest.raises(DataError, match=message) as info:
        read(path)
    assert time.perf_counter() - start < FAST
    assert info.value.path == str(path)
    return info.value


def over(limit: int, what: str) -> str:
    """The message for one more than ``limit``."""
    return rf"{limit + 1:,} {what} is over the limit of {limit:,} {what}"


TOO_MANY_POINTS = over(MAX_SKETCH_POINTS, "points")
TOO_MANY_STROKES = over(MAX_SKETCH_STROKES, "strokes")


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels: a decompression bomb."""
    stream = io.BytesIO()
    Image.new("1", (1, 1)).save(stream, format="PNG")
    data = bytearray(stream.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # in the IHDR chunk, after the signature
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


IMAGE_READERS = [check_photo, load_photo, read_png_sketch, load_sketch]


@pytest.mark.parametrize("side", [6400, 10_000, 1_000_000])  # just over, over twice, far over
@pytest.mark.parametrize("read", IMAGE_READERS)
def test_decompression_bombs_are_refused_before_decoding(tmp_path, read, side):
    path = bomb_png(tmp_path / "bomb.png", side, side)
    refused(read, path, rf"bomb\.png: image .*over the limit of {MAX_IMAGE_PIXELS:,} pixels")


def test_an_image_at_the_pixel_limit_is_not_refused_for_its_size(tmp_path):
    path = bomb_png(tmp_path / "exact.png", MAX_IMAGE_PIXELS // 5000, 5000)
    error = refused(check_photo, path, "not a readable image")  # its data is missing, no more
    assert "limit" not in str(error)


def test_the_pixel_limit_holds_when_pillows_own_is_lifted(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = bomb_png(tmp_path / "big.png", 7000, 7000)
    refused(load_photo, path, r"big\.png: image of 7000 x 7000 pixels is over the limit")


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no room on disk."""
    with path.open("wb") as stream:
        stream.truncate(size)
    return path


@pytest.mark.parametrize(
    ("read", "name", "limit"),
    [
        (load_photo, "photo.jpg", MAX_IMAGE_BYTES),
        (check_photo, "photo.png", MAX_IMAGE_BYTES),
        (read_png_sketch, "sketch.png", MAX_IMAGE_BYTES),
        (read_stroke_json, "sketch.json", MAX_SKETCH_BYTES),
        (read_svg, "sketch.svg", MAX_SKETCH_BYTES),
        (read_qmul_pickle, "ShoeV2_Coordinate", MAX_COLLECTION_BYTES),
        (read_sketchrnn_npz, "cat.npz", MAX_COLLECTION_BYTES),
    ],
)
def test_files_over_the_size_limits_are_refused_unread(tmp_path, read, name, limit):
    path = sparse_file(tmp_path / name, limit + 1)
    refused(read, path, rf"{name}: file of {limit + 1:,} bytes is over the limit of {limit:,}")


def test_a_huge_svg_is_refused_unread(tmp_path):
    """The case from the issue: 1.7 million paths in 36 MB once took two minutes and 5 GB."""
    path = tmp_path / "huge.svg"
    path.write_text(SVG.format('<path d="M0 0 L1 1"/>' * 1_700_000))
    refused(load_sketch, path, r"huge\.svg: file of [\d,]+ bytes is over the limit")


def polyline(n: int) -> str:
    return " ".join(f"{i % 200},{i % 97}" for i in range(n))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f'<path d="M{polyline(MAX_SKETCH_POINTS + 1)}"/>', TOO_MANY_POINTS),
        (f'<polyline points="{polyline(MAX_SKETCH_POINTS + 1)}"/>', TOO_MANY_POINTS),
        ('<path d="M0 0 L1 1"/>' * (MAX_SKETCH_STROKES + 1), TOO_MANY_STROKES),
        ('<path d="' + "M0 0 L1 1 " * (MAX_SKETCH_STROKES + 1) + '"/>', TOO_MANY_STROKES),
        ("<rect/>" * MAX_SVG_ELEMENTS, f"more elements than the limit of {MAX_SVG_ELEMENTS:,}"),
        (
            "<g>" * MAX_SVG_DEPTH + "</g>" * MAX_SVG_DEPTH,
            f"nested deeper than the limit of {MAX_SVG_DEPTH}",
        ),
    ],
    ids=["path points", "polyline points", "paths", "subpaths", "elements", "depth"],
)
def test_svgs_over_the_limits_are_refused_before_parsing(tmp_path, body, message):
    path = tmp_path / "big.svg"
    path.write_text(SVG.format(body))
    refused(read_svg, path, rf"big\.svg: .*{message}")


def test_an_svg_of_many_elements_is_refused_at_once(tmp_path):
    """Parsing 300,000 rectangles (8 MB, within the file-size limit) would take 10 s."""
    path = tmp_path / "rects.svg"
    path.write_text(SVG.format('<rect width="1" height="1"/>' * 300_000))
    start = time.perf_counter()
    refused(read_svg, path, r"rects\.svg: more elements than the limit")
    assert time.perf_counter() - start < 0.2  # stopped reading at the limit


def test_an_svg_whose_use_elements_multiply_is_refused_before_parsing(tmp_path):
    """Six levels of ten ``<use>`` each: a 1 kB file that would draw a million paths."""
    levels = ['<path id="l0" d="M0 0 L9 9"/>']
    for level in range(1, 7):
        uses = f'<use href="#l{level - 1}"/>' * 10
        levels.append(f'<g id="l{level}">{uses}</g>')
    path = tmp_path / "bomb.svg"
    path.write_text(SVG.format(f"<defs>{''.join(levels)}</defs><use href='#l6'/>"))
    refused(read_svg, path, r"bomb\.svg: [\d,]+ elements \(with <use> copies\) is over the limit")


def test_a_cyclic_svg_is_refused(tmp_path):
    path = tmp_path / "cycle.svg"
    path.write_text(SVG.format('<g id="a"><path d="M0 0 L1 1"/><use href="#a"/></g>'))
    refused(read_svg, path, r"cycle\.svg: .*<use> elements refer back to themselves")


@pytest.mark.parametrize(
    ("strokes", "message"),
    [
        ([[[i % 50, i % 7] for i in range(MAX_SKETCH_POINTS + 1)]], TOO_MANY_POINTS),
        ([[[1, 2], [3, 4]]] * (MAX_SKETCH_STROKES + 1), TOO_MANY_STROKES),
    ],
)
def test_stroke_json_over_the_point_and_stroke_limits(tmp_path, strokes, message):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(strokes))
    refused(read_stroke_json, path, rf"big\.json: {message}")


def long_points(n: int, every: int) -> np.ndarray:
    """``n`` QMUL points, a stroke ending every ``every`` points."""
    points = np.column_stack([np.arange(n) % 256, np.arange(n) % 100, np.zeros(n)])
    points[every - 1 :: every, 2] = 1
    return points


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (long_points(MAX_SKETCH_POINTS + 1, 100), TOO_MANY_POINTS),
        (long_points(2 * MAX_SKETCH_STROKES + 2, 2), TOO_MANY_STROKES),
    ],
)
def test_qmul_pickle_sketches_over_the_limits_name_their_key(tmp_path, points, message):
    path = tmp_path / "ShoeV2_Coordinate"
    path.write_bytes(pickle.dumps({"/train/1_1": points[:60], "/train/2_1": points}))
    refused(read_qmul_pickle, path, rf"Coordinate: key '/train/2_1': {message}")


def npz_bytes(**arrays: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()


def test_sketchrnn_npz_over_the_limits(tmp_path):
    stroke3 = np.zeros((MAX_SKETCH_POINTS + 1, 3), np.int16)
    sketches = np.empty(1, dtype=object)
    sketches[0] = stroke3
    path = tmp_path / "long.npz"
    path.write_bytes(npz_bytes(train=sketches))
    refused(read_sketchrnn_npz, path, rf"long\.npz: key 'train\[0\]': {TOO_MANY_POINTS}")
    # An archive whose member claims to unpack to 4 GB (a zip bomb) is refused unread.
    data = bytearray(npz_bytes(train=np.zeros((2, 3), np.int16)))
    directory = data.index(b"PK\x01\x02")
    data[directory + 24 : directory + 28] = struct.pack("<I", 0xF000_0000)
    path = tmp_path / "bomb.npz"
    path.write_bytes(bytes(data))
    refused(read_sketchrnn_npz, path, r"bomb\.npz: unpacks to [\d,]+ bytes, over the limit")


def noise(side: int, channels: int, seed: int = 0) -> np.ndarray:
    shape = (side, side) if channels == 1 else (side, side, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_drawings_with_more_ink_than_a_line_drawing_are_refused(tmp_path):
    too_much = r"\.png: too much ink for a line drawing: "
    Image.fromarray(noise(500, 1)).save(tmp_path / "noise.png")
    share = rf"7\d\.\d% ink is over the limit of {MAX_INK_SHARE:.1%} ink"
    refused(load_sketch, tmp_path / "noise.png", rf"noise{too_much}{share}")
    inverted = Image.new("L", (300, 300), 0)  # light lines on a dark page
    ImageDraw.Draw(inverted).line([(10, 10), (290, 290)], fill=255, width=3)
    inverted.save(tmp_path / "inverted.png")
    refused(load_sketch, tmp_path / "inverted.png", rf"inverted{too_much}[\d.]+% ink is over")
    mesh = np.full((512, 512), 255, np.uint8)
    mesh[::8] = mesh[:, ::8] = 0  # a fine grid: a quarter of the page, but lines everywhere
    Image.fromarray(mesh).save(tmp_path / "mesh.png")
    pixels = rf"[\d,]+ centre-line pixels is over the limit of {MAX_TRACE_INK:,} centre-line pixels"
    refused(load_sketch, tmp_path / "mesh.png", rf"mesh{too_much}{pixels}")
    page = Image.new("L", (400, 400), 255)
    draw = ImageDraw.Draw(page)
    for i in range(MAX_SKETCH_STROKES + 100):  # as many separate dashes, 12 pixels apart
        x, y = 12 * (i % 33), 12 * (i // 33)
        draw.line([(x + 2, y + 5), (x + 10, y + 5)], fill=0)
    page.save(tmp_path / "dashes.png")
    refused(load_sketch, tmp_path / "dashes.png", rf"dashes{too_much}[\d,]+ strokes is over")


def best_of_two(work: Callable[[], object]) -> float:
    """The shorter of two timings of ``work`` (the machine may be busy once)."""
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        work()
        timings.append(time.perf_counter() - start)
    return min(timings)


def trace_or_refuse(pixels: np.ndarray) -> None:
    with contextlib.suppress(TooMuchInk):
        trace_raster(pixels)


@pytest.mark.parametrize(
    ("side", "channels"),
    [(500, 1), (500, 4), (2000, 3), (int(MAX_IMAGE_PIXELS**0.5), 3)],  # the last: 40 Mpx
)
def test_tracing_noise_takes_under_a_second(side, channels):
    pixels = noise(side, channels)
    assert best_of_two(lambda: trace_or_refuse(pixels)) < FAST


@pytest.mark.parametrize(("side", "density"), [(190, 0.45), (200, 0.4)])
def test_tracing_noise_within_the_ink_limits_takes_under_a_second(side, density):
    """Noise that passes the ink limits is the costliest kind of drawing the tracer accepts."""
    rng = np.random.default_rng(1)
    pixels = np.where(rng.random((side, side)) < density, 0, 255).astype(np.uint8)
    assert best_of_two(lambda: trace_raster(pixels)) < FAST


@pytest.mark.parametrize("suffix", [".png", ".jpg"])  # JPEGs are decoded shrunk, too
def test_large_drawings_are_traced_shrunk_on_their_own_canvas(tmp_path, suffix):
    page = Image.new("L", (3000, 2000), 255)
    ImageDraw.Draw(page).rectangle((500, 400, 2500, 1600), outline=0, width=16)
    page.save(tmp_path / f"large{suffix}")
    sketch = read_png_sketch(tmp_path / f"large{suffix}")
    assert (sketch.width, sketch.height) == (3000, 2000)
    assert sketch.num_strokes == 1
    xy = sketch.points[:, :2]
    np.testing.assert_allclose(xy.min(axis=0), [508, 408], atol=8)  # the line's centre
    np.testing.assert_allclose(xy.max(axis=0), [2492, 1592], atol=8)


def test_xml_that_is_not_svg_is_a_data_error(tmp_path):
    path = tmp_path / "page.svg"
    path.write_text(
        '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body/></html>'
    )
    for read in (read_svg, load_sketch):
        refused(read, path, r"page\.svg: not an SVG file: the root element is <html>")


def write_photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def test_a_truncated_jpeg_is_found_when_the_data_set_loads(tmp_path):
    root = tmp_path / "shoev1"
    for n in (1, 2):
        write_photo(root / "train" / "images" / f"{n}.jpg")
        drawing = Image.new("L", (64, 64), 255)
        ImageDraw.Draw(drawing).line([(5, 5), (50, 40)], fill=0, width=2)
        (root / "train" / "sketches").mkdir(parents=True, exist_ok=True)
        drawing.save(root / "train" / "sketches" / f"{n}.png")
    cut = root / "train" / "images" / "2.jpg"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])  # the header is intact
    assert Image.open(cut).size == (64, 64)
    refused(check_photo, cut, r"2\.jpg: not a readable image: image file is truncated")
    with pytest.raises(DataError, match=r"2\.jpg: not a readable image"):
        load_qmul_v1(root)
    with pytest.warns(DataWarning, match=r"2\.jpg"):
        splits = load_qmul_v1(root, on_error="warn")
    assert [p.name for p in splits["train"].photos] == ["1.jpg"]
