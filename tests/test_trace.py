from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import distance_transform_edt

from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch
from fgsbir.sketch.trace import ink_darkness, trace_raster

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = 128


def figure() -> Sketch:
    """A square, an X (one junction) and a circle (a loop without ends)."""
    angle = np.linspace(0, 2 * np.pi, 60)
    circle = np.stack([95 + 20 * np.cos(angle), 95 + 20 * np.sin(angle)], 1)
    return Sketch.from_strokes(
        [
            [[10, 10], [50, 10], [50, 50], [10, 50], [10, 10]],
            [[70, 10], [110, 50]],
            [[110, 10], [70, 50]],
            circle,
        ],
        SIZE,
        SIZE,
    )


def centre_lines(sketch: Sketch) -> np.ndarray:
    """One-pixel lines on the sketch's own (square) canvas."""
    return rasterise([sketch], round(sketch.width), 1.0)[0, 0].numpy() >= 0.5


def line_distances(a: Sketch, b: Sketch) -> np.ndarray:
    """Distance from every centre-line pixel of ``a`` to the nearest of ``b``."""
    return distance_transform_edt(~centre_lines(b))[centre_lines(a)]


def drawing(sketch: Sketch, grey: float = 0.0, line_width: float = 3.0) -> np.ndarray:
    ink = rasterise([sketch], SIZE, line_width)[0, 0].numpy()
    return np.round(255 * (1 - ink * (1 - grey))).astype(np.uint8)


def test_traces_lines_junctions_and_loops():
    original = figure()
    traced = trace_raster(drawing(original))
    assert (traced.width, traced.height) == (SIZE, SIZE)
    assert line_distances(traced, original).max() <= 1.5  # nothing invented
    assert np.mean(line_distances(original, traced)) < 0.5  # and nothing lost
    assert 3 <= traced.num_strokes <= 8
    loop = min(traced.strokes, key=lambda s: np.linalg.norm(s.mean(0) - [95, 95]))
    np.testing.assert_allclose(loop[0], loop[-1], atol=1.5)  # the circle closes on itself
    assert len(traced.points) < 60  # simplified, not one point per skeleton pixel


def test_faint_and_transparent_drawings_trace_like_black_ones():
    original = figure()
    black = trace_raster(drawing(original))
    faint = trace_raster(drawing(original, grey=0.6))
    np.testing.assert_allclose(faint.points, black.points)
    alpha = 255 - drawing(original)  # black ink whose opacity is the ink
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 3] = alpha
    from_rgba = trace_raster(Image.fromarray(rgba, mode="RGBA"))
    np.testing.assert_allclose(from_rgba.points, black.points)
    as_float = trace_raster(drawing(original).astype(np.float64) / 255.0)
    np.testing.assert_allclose(as_float.points, black.points)


def test_specks_are_dropped_and_blank_pages_are_empty():
    page = np.full((SIZE, SIZE), 255, np.uint8)
    assert trace_raster(page).is_empty
    page[60:62, 60:62] = 0
    assert trace_raster(page).is_empty  # shorter than min_length
    assert not trace_raster(page, min_length=0.0).is_empty


def test_ink_darkness_reads_grey_rgb_and_alpha():
    np.testing.assert_allclose(ink_darkness(np.array([[0, 255]], np.uint8)), [[1, 0]])
    rgb = np.array([[[255, 0, 0], [255, 255, 255]]], np.uint8)
    np.testing.assert_allclose(ink_darkness(rgb), [[2 / 3, 0]])
    grey_alpha = np.array([[[0, 0], [0, 255]]], np.uint8)  # transparent black, opaque black
    np.testing.assert_allclose(ink_darkness(grey_alpha), [[0, 1]])
    with pytest.raises(ValueError, match="shape"):
        ink_darkness(np.zeros((4, 4, 5)))


@pytest.mark.realdata
def test_traces_real_shoe_v1_sketches_closely():
    paths = sorted((DATA / "qmul-shoe-v1" / "test" / "sketches").glob("*.png"))[:10]
    if not paths:
        pytest.skip(f"QMUL-Shoe-V1 sketches not found under {DATA}")
    for path in paths:
        image = np.asarray(Image.open(path))
        traced = trace_raster(image)
        darkness = ink_darkness(image)
        ink = darkness > 0.3 * np.percentile(darkness[darkness > 0.05], 99)
        on_ink = distance_transform_edt(~ink)[centre_lines(traced)]
        assert on_ink.mean() < 0.2, path  # traced lines run inside the drawn ink
        covered = distance_transform_edt(~centre_lines(traced))[ink]
        assert np.mean(covered < 2.0) > 0.95, path  # and almost all ink is traced
