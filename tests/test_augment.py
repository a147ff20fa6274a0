import numpy as np
import pytest

from fgsbir.sketch.augment import affine_jitter, drop_points, drop_strokes
from fgsbir.sketch.strokes import Sketch


@pytest.fixture
def sketch() -> Sketch:
    rng = np.random.default_rng(0)
    strokes = [rng.uniform(0, 200, size=(int(rng.integers(2, 12)), 2)) for _ in range(40)]
    return Sketch.from_strokes(strokes, 200, 100)


def as_set(strokes: list[np.ndarray]) -> set[bytes]:
    return {s.tobytes() for s in strokes}


def test_drop_strokes_keeps_whole_original_strokes(sketch):
    rng = np.random.default_rng(1)
    half = drop_strokes(sketch, 0.5, rng)
    assert as_set(half.strokes) < as_set(sketch.strokes)
    assert 10 <= half.num_strokes <= 30
    assert (half.width, half.height) == (200, 100)
    assert drop_strokes(sketch, 0.0, rng).num_strokes == 40
    for _ in range(5):
        survivor = drop_strokes(sketch, 1.0, rng)  # never drops everything
        assert survivor.num_strokes == 1 and as_set(survivor.strokes) < as_set(sketch.strokes)
    empty = Sketch(np.zeros((0, 3)))
    assert drop_strokes(empty, 0.5, rng).is_empty


def test_drop_strokes_is_reproducible(sketch):
    first = drop_strokes(sketch, 0.3, np.random.default_rng(7))
    again = drop_strokes(sketch, 0.3, np.random.default_rng(7))
    np.testing.assert_array_equal(first.points, again.points)


def test_drop_points_keeps_stroke_ends(sketch):
    thinned = drop_points(sketch, 1.0, np.random.default_rng(2))
    assert thinned.num_strokes == sketch.num_strokes
    for got, original in zip(thinned.strokes, sketch.strokes, strict=True):
        np.testing.assert_array_equal(got, original[[0, -1]])
    some = drop_points(sketch, 0.5, np.random.default_rng(3))
    inner = len(sketch.points) - 2 * sketch.num_strokes
    dropped = len(sketch.points) - len(some.points)
    assert 0.3 * inner < dropped < 0.7 * inner
    assert len(drop_points(sketch, 0.0, np.random.default_rng(3)).points) == len(sketch.points)


def test_affine_jitter_identity_and_rigid_rotation(sketch):
    rng = np.random.default_rng(4)
    same = affine_jitter(sketch, rng, scale=0, rotate=0, shear=0, translate=0)
    np.testing.assert_allclose(same.points, sketch.points, atol=1e-4)
    turned = affine_jitter(sketch, rng, scale=0, rotate=30, shear=0, translate=0)
    centre = np.array([100.0, 50.0])
    np.testing.assert_allclose(  # a rotation about the canvas centre
        np.linalg.norm(turned.points[:, :2] - centre, axis=1),
        np.linalg.norm(sketch.points[:, :2] - centre, axis=1),
        rtol=1e-4,
    )
    assert not np.allclose(turned.points, sketch.points)
    np.testing.assert_array_equal(turned.points[:, 2], sketch.points[:, 2])


def test_affine_jitter_stays_within_its_ranges(sketch):
    rng = np.random.default_rng(5)
    centre = np.array([100.0, 50.0])
    for _ in range(20):
        scaled = affine_jitter(sketch, rng, scale=0.2, rotate=0, shear=0, translate=0)
        ratio = np.linalg.norm(scaled.points[:, :2] - centre, axis=1) / np.linalg.norm(
            sketch.points[:, :2] - centre, axis=1
        )
        assert np.ptp(ratio) < 1e-4 and 0.8 <= ratio[0] <= 1.2
        moved = affine_jitter(sketch, rng, scale=0, rotate=0, shear=0, translate=0.1)
        shift = moved.points[:, :2] - sketch.points[:, :2]
        assert np.ptp(shift, axis=0).max() < 1e-3
        assert abs(shift[0, 0]) <= 20 + 1e-3 and abs(shift[0, 1]) <= 10 + 1e-3
