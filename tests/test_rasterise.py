import numpy as np
import pytest
import torch

from fgsbir.sketch.rasterise import canvas_to_pixels, rasterise, rasterise_reference
from fgsbir.sketch.strokes import Sketch


def brute_force(sketch: Sketch, size: int, line_width: float) -> np.ndarray:
    """Ink by definition: distance from every pixel centre to every segment (or dot)."""
    xy = canvas_to_pixels(sketch, size)
    pen = sketch.points[:, 2] > 0.5
    segments = [(xy[i], xy[i + 1]) for i in range(len(xy) - 1) if not pen[i]]
    segments += [(xy[i], xy[i]) for i in range(len(xy)) if pen[i] and (i == 0 or pen[i - 1])]
    centres = np.stack(np.meshgrid(np.arange(size), np.arange(size))[::-1], -1)[..., ::-1] + 0.5
    nearest = np.full((size, size), np.inf)
    for a, b in segments:
        ab = b - a
        t = np.clip(((centres - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        nearest = np.minimum(nearest, np.linalg.norm(centres - a - t[..., None] * ab, axis=-1))
    return np.clip(line_width / 2 + 0.5 - nearest, 0, 1)


def test_horizontal_line_lights_exactly_the_expected_pixels():
    line = Sketch.from_strokes([[[50.5, 100.5], [150.5, 100.5]]], 224, 224)
    image = rasterise([line], size=224, line_width=2.0)
    assert image.shape == (1, 1, 224, 224) and image.dtype == torch.float32
    ink = image[0, 0].numpy()
    np.testing.assert_allclose(ink[100, 51:151], 1.0)
    np.testing.assert_allclose(ink[[99, 101], 51:151], 0.5)  # anti-aliased edge rows
    assert ink[:99].sum() == 0 and ink[102:].sum() == 0
    np.testing.assert_allclose(ink[100, [49, 151]], 0.5)  # round caps
    assert ink[:, :49].sum() == 0 and ink[:, 152:].sum() == 0
    on_boundary = Sketch.from_strokes([[[50, 100], [150, 100]]], 224, 224)
    ink = rasterise([on_boundary], 224, 2.0)[0, 0].numpy()
    np.testing.assert_allclose(ink[[99, 100], 51:150], 1.0)
    assert ink[[98, 101]].sum() == 0
    thick = rasterise([line], 224, 4.0)[0, 0].numpy()
    np.testing.assert_allclose(thick[99:102, 51:151], 1.0)
    np.testing.assert_allclose(thick[[98, 102], 51:151], 0.5)


def test_matches_the_distance_definition_on_random_sketches():
    rng = np.random.default_rng(0)
    sketches = []
    for n in (30, 5, 60):
        points = np.column_stack([rng.uniform(-10, 110, (n, 2)), rng.random(n) < 0.2])
        sketches.append(Sketch(points, 100, 80))  # points beyond the canvas and the image
    sketches.append(Sketch.from_strokes([[[20, 20]], [[50, 40], [50, 40.2]], [[0, 0], [99, 79]]]))
    for line_width in (1.0, 2.0, 3.5):
        image = rasterise(sketches, size=48, line_width=line_width).numpy()
        for got, sketch in zip(image[:, 0], sketches, strict=True):
            np.testing.assert_allclose(got, brute_force(sketch, 48, line_width), atol=2e-5)


def test_far_away_and_nan_points_are_clipped_cheaply():
    far = Sketch(np.array([[10, 10, 0], [1e9, 5e8, 0], [20, 20, 0], [-1e7, 30, 1], [5e9, 1, 1]]))
    np.testing.assert_allclose(
        rasterise([far], 64)[0, 0].numpy(), brute_force(far, 64, 2.0), atol=2e-5
    )
    broken = Sketch(np.array([[10, 10, 0], [np.nan, 5, 0], [20, 20, 0], [30, 20, 1]]))
    ink = rasterise([broken], 64)[0, 0].numpy()
    line = Sketch.from_strokes([[[20, 20], [30, 20]]])  # the only segment without a NaN end
    np.testing.assert_allclose(ink, rasterise([line], 64)[0, 0].numpy())


def test_batch_is_the_same_as_one_by_one_and_empty_is_blank():
    rng = np.random.default_rng(1)
    short = Sketch(np.column_stack([rng.uniform(0, 256, (80, 2)), rng.random(80) < 0.1]))
    long = Sketch.from_strokes([[[10, 10], [250, 30], [30, 240]]])
    empty = Sketch(np.zeros((0, 3)))
    batch = rasterise([short, empty, long], size=64)
    np.testing.assert_array_equal(batch[0], rasterise([short], size=64)[0])
    np.testing.assert_array_equal(batch[2], rasterise([long], size=64)[0])
    assert batch[1].sum() == 0 and batch[0].sum() > 0
    assert rasterise([empty], size=32).sum() == 0
    assert rasterise([], size=32).shape == (0, 1, 32, 32)
    with pytest.raises(ValueError, match="line_width"):
        rasterise([long], size=32, line_width=0.0)


def test_canvas_is_fitted_with_aspect_kept_and_centred():
    centre = Sketch.from_strokes([[[320, 240]]], 640, 480)
    ink = rasterise([centre], size=224)[0, 0].numpy()
    np.testing.assert_allclose(ink[111:113, 111:113], ink[111, 111])  # symmetric about 112
    assert ink[111, 111] > 0 and ink.sum() == pytest.approx(4 * ink[111, 111], rel=1e-5)
    top = Sketch.from_strokes([[[0, 0], [640, 0]]], 640, 480)  # 224 / 640 scale, 28 px margin
    rows = np.flatnonzero(rasterise([top], size=224)[0, 0].numpy().sum(axis=1))
    assert rows.tolist() == [27, 28]  # the line lies on the boundary between rows 27 and 28


@pytest.mark.parametrize("lines", ["python", "skimage"])
def test_reference_rasteriser_draws_lines_and_dots(lines: str):
    line = Sketch.from_strokes([[[50.5, 100.5], [150.5, 100.5]], [[10.5, 10.5]]], 224, 224)
    ink = rasterise_reference(line, size=224, line_width=2.0, lines=lines)
    assert ink.dtype == np.float32 and ink.shape == (224, 224)
    np.testing.assert_array_equal(ink[99:102, 50:151], 1.0)  # 3 px: disc of radius 1
    assert ink[[98, 102]].sum() == 0
    assert ink[10, 10] == 1 and ink[9:12, 9:12].sum() == 5  # a dot dilated to a plus sign
    assert rasterise_reference(Sketch(np.zeros((0, 3))), lines=lines).sum() == 0


def test_both_reference_line_drawers_draw_the_same_pixels():
    rng = np.random.default_rng(5)
    for _ in range(5):
        points = np.column_stack([rng.uniform(-20, 276, (60, 2)), rng.random(60) < 0.15])
        sketch = Sketch(points, 256, 256)
        np.testing.assert_array_equal(
            rasterise_reference(sketch, 224, 3.0, lines="python"),
            rasterise_reference(sketch, 224, 3.0, lines="skimage"),
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(2)
    sketch = Sketch(np.column_stack([rng.uniform(0, 256, (100, 2)), rng.random(100) < 0.1]))
    torch.testing.assert_close(
        rasterise([sketch], device="cuda").cpu(), rasterise([sketch]), atol=1e-5, rtol=0
    )
