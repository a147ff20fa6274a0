import numpy as np
import pytest
from skimage.measure import approximate_polygon

from fgsbir.sketch.strokes import (
    Sketch,
    limit_length,
    points_to_stroke3,
    scale_factor,
    simplify,
    stroke3_to_points,
    stroke3_to_stroke5,
    stroke5_to_stroke3,
)


def random_points(rng: np.random.Generator, n: int = 40, strokes: int = 4) -> np.ndarray:
    points = np.zeros((n, 3), np.float32)
    points[:, :2] = rng.uniform(0, 256, size=(n, 2))
    points[np.sort(rng.choice(n - 1, strokes - 1, replace=False)), 2] = 1
    points[-1, 2] = 1
    return points


def test_points_stroke3_round_trip_keeps_absolute_position():
    points = random_points(np.random.default_rng(0))
    stroke3 = points_to_stroke3(points)
    np.testing.assert_array_equal(stroke3[0], points[0])  # offset from the origin
    np.testing.assert_allclose(stroke3[1:, :2], points[1:, :2] - points[:-1, :2], atol=1e-4)
    np.testing.assert_allclose(stroke3_to_points(stroke3), points, atol=1e-3)


def test_stroke5_round_trip_pads_and_marks_pen_states():
    stroke3 = points_to_stroke3(random_points(np.random.default_rng(1), n=30))
    stroke5 = stroke3_to_stroke5(stroke3, max_len=50)
    assert stroke5.shape == (50, 5)
    np.testing.assert_array_equal(stroke5[:30, 3], stroke3[:, 2])
    np.testing.assert_array_equal(stroke5[:30, 2], 1 - stroke3[:, 2])
    np.testing.assert_array_equal(stroke5[30:], np.tile([0, 0, 0, 0, 1], (20, 1)))
    np.testing.assert_array_equal(stroke5_to_stroke3(stroke5), stroke3)


def test_stroke5_truncates_and_stops_at_first_end_row():
    stroke3 = points_to_stroke3(random_points(np.random.default_rng(2), n=30))
    assert len(stroke5_to_stroke3(stroke3_to_stroke5(stroke3, max_len=10))) == 10
    stroke5 = stroke3_to_stroke5(stroke3, max_len=40)
    stroke5[35] = [5, 5, 1, 0, 0]  # data after the end row is ignored
    assert len(stroke5_to_stroke3(stroke5)) == 30
    soft = stroke5.copy()
    soft[:30, 2:] = soft[:30, 2:] * 0.8 + 0.05  # probabilities instead of one-hot
    np.testing.assert_array_equal(stroke5_to_stroke3(soft)[:, 2], stroke3[:, 2])


def test_sketch_strokes_round_trip_and_normalises_points():
    strokes = [np.array([[1, 2], [3, 4], [5, 6]]), np.zeros((0, 2)), np.array([[7, 8]])]
    sketch = Sketch.from_strokes(strokes, width=100, height=50)
    assert sketch.points.dtype == np.float32 and sketch.points.shape == (4, 3)
    assert sketch.num_strokes == 2 and not sketch.is_empty
    got = sketch.strokes
    assert len(got) == 2
    np.testing.assert_array_equal(got[0], strokes[0])
    np.testing.assert_array_equal(got[1], strokes[2])
    open_end = Sketch(np.array([[0, 0, 0], [1, 1, 0]]))
    assert open_end.points[-1, 2] == 1 and open_end.num_strokes == 1
    empty = Sketch(np.zeros((0, 3)))
    assert empty.is_empty and empty.strokes == [] and empty.num_strokes == 0
    for width, height in ((0, 10), (10, -1), (np.inf, 10), (10, np.nan)):
        with pytest.raises(ValueError, match="canvas"):
            Sketch(np.zeros((0, 3)), width, height)
    again = Sketch.from_stroke3(sketch.to_stroke3(), sketch.width, sketch.height)
    np.testing.assert_allclose(again.points, sketch.points, atol=1e-5)


def test_stroke_bounds_index_first_and_last_points_one_point_strokes_included():
    sketch = Sketch.from_strokes([[[0, 0], [1, 1], [2, 2]], [[5, 5]], [[7, 7], [8, 8]]])
    assert sketch.stroke_starts.tolist() == [0, 3, 4]
    assert sketch.stroke_ends.tolist() == [2, 3, 5]
    assert Sketch(np.zeros((0, 3))).stroke_starts.tolist() == []


def test_transform_translate_and_scale():
    sketch = Sketch.from_strokes([np.array([[10.0, 0.0], [20.0, 10.0]])], 100, 80)
    moved = sketch.translate(5, -1)
    np.testing.assert_allclose(moved.strokes[0], [[15, -1], [25, 9]])
    rotated = sketch.transform(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]))  # 90 degrees
    np.testing.assert_allclose(rotated.strokes[0], [[0, 10], [-10, 20]])
    doubled = sketch.scale(2.0, 0.5)
    assert (doubled.width, doubled.height) == (200, 40)
    np.testing.assert_allclose(doubled.strokes[0], [[20, 0], [40, 5]])
    np.testing.assert_array_equal(doubled.points[:, 2], sketch.points[:, 2])


def test_scale_factor_is_offset_std_and_ignores_origin_offset():
    rng = np.random.default_rng(3)
    sketches = [points_to_stroke3(random_points(rng)) for _ in range(5)]
    factor = scale_factor(sketches)
    normalised = [s.copy() for s in sketches]
    for s in normalised:
        s[:, :2] /= factor
    assert scale_factor(normalised) == pytest.approx(1.0, rel=1e-5)
    shifted = [s.copy() for s in sketches]
    shifted[0][0, :2] += 1000.0  # moving a sketch on the canvas changes only its first row
    assert scale_factor(shifted) == pytest.approx(factor, rel=1e-6)
    with pytest.raises(ValueError):
        scale_factor([np.zeros((1, 3))])


def test_simplify_removes_collinear_points_and_keeps_corners():
    t = np.linspace(0, 1, 50)[:, None]
    line = np.hstack([t * 100, t * 50])
    corner = np.array([[0, 0], [50, 0], [50, 50]], float)
    sketch = Sketch.from_strokes([line, corner])
    simple = simplify(sketch, epsilon=0.5)
    assert [len(s) for s in simple.strokes] == [2, 3]
    np.testing.assert_allclose(simple.strokes[0], line[[0, -1]], atol=1e-4)
    np.testing.assert_allclose(simple.strokes[1], corner)
    assert len(simplify(sketch, 0.0).points) == len(sketch.points)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 3.0])
def test_simplify_keeps_the_points_scikit_image_keeps(epsilon):
    """All strokes are simplified at once; each must come out as skimage's RDP makes it, ties
    (pixel-grid points exactly ``epsilon`` off a line) included."""
    rng = np.random.default_rng(7)
    strokes = [np.array([[3.0, 4.0]]), np.array([[0.0, 0.0], [9.0, 9.0]])]
    for n in rng.integers(3, 80, size=60):
        walk = rng.integers(-1, 2, size=(n, 2)) if n % 2 else rng.normal(0, 4, size=(n, 2))
        strokes.append(np.cumsum(walk, axis=0) + 100.5)
    sketch = Sketch.from_strokes(strokes)
    expected = [approximate_polygon(s.astype(np.float64), epsilon) for s in sketch.strokes]
    simple = simplify(sketch, epsilon)
    assert [len(s) for s in simple.strokes] == [len(s) for s in expected]
    for got, want in zip(simple.strokes, expected, strict=True):
        np.testing.assert_array_equal(got, want.astype(np.float32))


def test_limit_length_simplifies_before_truncating():
    angle = np.linspace(0, 2 * np.pi, 500)
    circle = np.stack([128 + 100 * np.cos(angle), 128 + 100 * np.sin(angle)], 1)
    limited = limit_length(Sketch.from_strokes([circle]), 60)
    assert 3 <= len(limited.points) <= 60 and limited.num_strokes == 1
    radii = np.linalg.norm(limited.points[:, :2] - 128, axis=1)
    np.testing.assert_allclose(radii, 100, atol=1e-3)  # still the whole circle
    dots = Sketch.from_strokes([np.array([[i, i]]) for i in range(40)])
    cut = limit_length(dots, 10)  # single points cannot be simplified: the tail goes
    np.testing.assert_array_equal(cut.points, dots.points[:10])
    assert cut.points[-1, 2] == 1
    with pytest.raises(ValueError):
        limit_length(dots, 0)
