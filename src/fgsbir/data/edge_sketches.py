"""Pseudo-sketches of photos that have none: the photo's edge map, traced into strokes.

A product photo on a plain background has strong edges where a person would draw lines (the
outline, the sole, the opening, laces and straps), so its Sobel edge map (the same one the
networks see with ``photo_input="sobel"``) traced by :func:`~fgsbir.sketch.trace.trace_raster`
is a rough but *faithful* vector drawing of that very photo. The generator can pre-train on
such pairs from any folder of unlabelled photos before it learns the human style from real pairs.
Where the traced drawing is too long (textured photos), its shortest strokes go first, so the
outline survives. The same tracing, as a table of points (:func:`edge_points`), is what the
edge-pointer generator (:mod:`fgsbir.models.edge_pointer`) anchors its drawing on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fgsbir.data.layouts import SketchRecord, Split, cached_sketch
from fgsbir.data.photos import load_photo
from fgsbir.data.transforms import denormalise, edge_pixels, photo_pixels
from fgsbir.sketch.strokes import Sketch
from fgsbir.sketch.trace import TooMuchInk, trace_raster

EDGE_SIZE = 256  # side of the square edge map that is traced, in pixels
MIN_POINTS = 4  # photos whose traced edges have fewer points give no pseudo-sketch
EDGE_POINT_FIELDS = 4  # per point of an :func:`edge_points` table: x, y, stroke end, present


def trace_edges(
    edges: np.ndarray,
    max_points: int = 80,
    threshold: float = 0.5,
    min_length: float = 10.0,
    epsilon: float = 3.0,
) -> Sketch:
    """The traced edge map ``edges`` (dark edges on white, :func:`edge_pixels`' output) on its
    pixel canvas; raises :class:`~fgsbir.sketch.trace.TooMuchInk` for an all-texture map.

    Args:
        max_points: longest result; longer tracings lose their shortest strokes first.
        threshold: an edge pixel is ink when stronger than this fraction of the strong edges.
        min_length: traced lines shorter than this (pixels) are dropped as texture.
        epsilon: Ramer-Douglas-Peucker tolerance in pixels.
    """
    traced = trace_raster(edges, threshold, min_length, epsilon)
    strokes = traced.strokes
    if len(traced.points) > max_points:
        lengths = [float(np.hypot(*np.diff(s, axis=0).T).sum()) for s in strokes]
        kept, budget = set(), max_points
        for i in np.argsort(lengths)[::-1]:
            if len(strokes[i]) <= budget:
                kept.add(int(i))
                budget -= len(strokes[i])
        strokes = [s for i, s in enumerate(strokes) if i in kept]  # drawing order kept
    return Sketch.from_strokes(strokes, traced.width, traced.height)


def edge_sketch(photo: Image.Image, max_points: int = 80, **trace: float) -> Sketch:
    """The traced edge map of ``photo`` on an ``EDGE_SIZE`` square canvas (``max_points`` and
    ``trace``: see :func:`trace_edges`)."""
    edges = edge_pixels(photo_pixels(photo, EDGE_SIZE))[0].numpy()
    return trace_edges(edges, max_points, **trace)


def edge_points(inputs: torch.Tensor, photo_input: str, count: int) -> torch.Tensor:
    """The traced edges of network inputs as a ``(B, count, EDGE_POINT_FIELDS)`` table.

    ``inputs`` are normalised ``(B, 3, S, S)`` images of photos (their edge maps already when
    ``photo_input`` is ``"sobel"``, see :class:`~fgsbir.data.transforms.Preprocessing`). Row
    ``j`` of an image is its ``j``-th traced point in drawing order: ``x, y`` as fractions of the
    side (pixel centres), 1 on the last point of a stroke, and 1 for a point (0 for padding).
    An image with no usable edges (too much texture) has no points. Tracing takes about 10 ms a
    224-pixel image, so callers compute this once per photo (see
    :class:`~fgsbir.models.edge_pointer.EdgePointerSketcher`).
    """
    pixels = (denormalise(inputs.detach().float().cpu()) * 255.0).round().to(torch.uint8)
    table = torch.zeros(len(inputs), count, EDGE_POINT_FIELDS)
    for i, image in enumerate(pixels):
        edges = image if photo_input == "sobel" else edge_pixels(image)
        try:
            traced = trace_edges(edges[0].numpy(), count)
        except TooMuchInk:
            continue
        points = torch.from_numpy(traced.points)
        n = len(points)
        table[i, :n, :2] = (points[:, :2] + 0.5) / image.shape[-1]
        table[i, :n, 2] = points[:, 2]
        table[i, :n, 3] = 1.0
    return table


def _edge_reader(max_points: int, **trace: float) -> Callable[[Path], Sketch]:
    """:func:`edge_sketch` of a photo file, named by its settings (the cache key)."""

    def read(path: Path) -> Sketch:
        try:
            return edge_sketch(load_photo(path), max_points, **trace)
        except TooMuchInk:  # all texture: no drawing to learn from, like a photo without edges
            return Sketch(np.zeros((0, 3), np.float32), EDGE_SIZE, EDGE_SIZE)

    settings = sorted({"max_points": max_points, **trace}.items())
    read.__name__ = "edge_sketch_" + "_".join(f"{key}={value}" for key, value in settings)
    return read


def edge_sketch_split(photos: Sequence[Path], max_points: int = 80, **trace: float) -> Split:
    """A split pairing each photo with its :func:`edge_sketch` (photos with almost no edges,
    e.g. a white object on white, are left out). ``trace`` goes to :func:`edge_sketch`.
    Tracings are cached on disk, like traced raster sketches (``layouts.cached_sketch``)."""
    records, kept = [], []
    read = _edge_reader(max_points, **trace)
    for path in tqdm(photos, desc="tracing photo edges", unit="photo", leave=False):
        sketch = cached_sketch(Path(path), read)
        if len(sketch.points) >= MIN_POINTS:
            records.append(SketchRecord(sketch, len(kept), f"{path}#edges"))
            kept.append(Path(path))
    return Split(kept, records)
