"""Pseudo-sketches traced from photos' edge maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fgsbir.data.edge_sketches import EDGE_SIZE, edge_sketch, edge_sketch_split

BOX = (60, 80, 200, 180)  # left, top, right, bottom of the "product" in the photo


def product_photo(texture: bool = False) -> Image.Image:
    """A dark box on white, optionally with short light dashes on it (texture to be dropped)."""
    photo = Image.new("RGB", (EDGE_SIZE, EDGE_SIZE), "white")
    draw = ImageDraw.Draw(photo)
    draw.rectangle(BOX, fill=(30, 30, 60))
    if texture:
        for x in range(75, 185, 22):
            for y in range(95, 170, 18):
                draw.line([(x, y), (x + 12, y)], fill=(200, 200, 200), width=3)
    return photo


def distance_to_box_border(points: np.ndarray) -> np.ndarray:
    left, top, right, bottom = BOX
    x, y = points[:, 0], points[:, 1]
    inside = (left <= x) & (x <= right) & (top <= y) & (y <= bottom)
    to_edge = np.minimum.reduce([abs(x - left), abs(x - right), abs(y - top), abs(y - bottom)])
    outside = np.hypot(
        np.clip(left - x, 0, None) + np.clip(x - right, 0, None),
        np.clip(top - y, 0, None) + np.clip(y - bottom, 0, None),
    )
    return np.where(inside, to_edge, outside)


def test_edge_sketch_traces_the_outline_of_the_object() -> None:
    sketch = edge_sketch(product_photo())
    assert (sketch.width, sketch.height) == (EDGE_SIZE, EDGE_SIZE)
    assert distance_to_box_border(sketch.points).max() < 3.0
    lo, hi = sketch.points[:, :2].min(0), sketch.points[:, :2].max(0)
    np.testing.assert_allclose([*lo, *hi], BOX, atol=3.0)  # all four sides are drawn


def test_a_long_tracing_loses_its_short_strokes_first() -> None:
    photo = product_photo(texture=True)
    full = edge_sketch(photo, max_points=1000)
    assert full.num_strokes > 10  # the dashes are traced
    short = edge_sketch(photo, max_points=12)
    assert len(short.points) <= 12 < len(full.points)
    lo, hi = short.points[:, :2].min(0), short.points[:, :2].max(0)
    np.testing.assert_allclose([*lo, *hi], BOX, atol=3.0)  # the outline survived


def test_split_pairs_photos_with_their_tracings_and_skips_blank_ones(tmp_path: Path) -> None:
    paths = [tmp_path / name for name in ("a.png", "blank.png", "b.png")]
    product_photo().save(paths[0])
    Image.new("RGB", (100, 100), "white").save(paths[1])
    product_photo(texture=True).save(paths[2])
    split = edge_sketch_split(paths, max_points=40)
    assert split.photos == [paths[0], paths[2]]
    assert [r.photo for r in split.sketches] == [0, 1]
    assert all(4 <= len(r.sketch.points) <= 40 for r in split.sketches)
