"""Raster line drawing -> vector strokes: binarise the ink, skeletonise, walk the centre lines.

The skeleton is read as a pixel graph with *mixed* adjacency (a diagonal neighbour only counts when
no orthogonal pixel already links the two), so one-pixel-thin lines have exactly two neighbours
per pixel and junctions are real branchings. Each chain of two-neighbour pixels between end points
or junctions becomes a polyline; short dangling spurs are dropped; the polylines are ordered by a
greedy nearest-end walk (reversed where that is shorter), joined into one stroke where one ends
where the next begins, and simplified with Ramer-Douglas-Peucker.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage.morphology import skeletonize

from fgsbir.sketch.strokes import Sketch, simplify

_PAPER_NOISE = 0.05  # darkness below this is paper, whatever the drawing
_ORTHOGONAL = ((-1, 0), (0, 1), (1, 0), (0, -1))
_DIAGONAL = ((-1, -1), (-1, 1), (1, 1), (1, -1))


def ink_darkness(image: np.ndarray | Image.Image) -> np.ndarray:
    """Darkness in ``[0, 1]`` (1 = black ink) of a grey, RGB or RGBA image, composited on white.

    Integer arrays are read as 0..255 (uint8) or 0..65535 (uint16); float arrays as 0..1.
    """
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            image = image.convert("RGBA")
        image = np.asarray(image)
    pixels = np.asarray(image)
    if np.issubdtype(pixels.dtype, np.integer):
        pixels = pixels / float(np.iinfo(pixels.dtype).max)
    pixels = pixels.astype(np.float64)
    if pixels.ndim == 2:
        grey = pixels
    elif pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4):
        channels = pixels.shape[2]
        has_alpha = channels in (2, 4)
        colour = pixels[..., : channels - has_alpha].mean(axis=2)
        alpha = pixels[..., -1] if has_alpha else 1.0
        grey = colour * alpha + (1.0 - alpha)
    else:
        raise ValueError(f"expected a grey, RGB or RGBA image, got shape {pixels.shape}")
    return 1.0 - np.clip(grey, 0.0, 1.0)


def _neighbours(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skeleton pixel coordinates ``(P, 2)`` and their neighbour ids ``(P, 8)`` (-1 = none)."""
    coords = np.argwhere(skeleton)
    ids = np.full((skeleton.shape[0] + 2, skeleton.shape[1] + 2), -1, dtype=np.int64)
    ids[coords[:, 0] + 1, coords[:, 1] + 1] = np.arange(len(coords))
    rows, cols = coords[:, 0] + 1, coords[:, 1] + 1
    neighbours = np.full((len(coords), 8), -1, dtype=np.int64)
    for k, (dr, dc) in enumerate(_ORTHOGONAL):
        neighbours[:, k] = ids[rows + dr, cols + dc]
    for k, (dr, dc) in enumerate(_DIAGONAL):
        linked = (ids[rows + dr, cols] >= 0) | (ids[rows, cols + dc] >= 0)
        neighbours[:, 4 + k] = np.where(linked, -1, ids[rows + dr, cols + dc])
    return coords, neighbours


def _walk_skeleton(neighbours: np.ndarray) -> list[list[int]]:
    """Split the pixel graph into chains of pixel ids between end points / junctions, plus loops."""
    adjacency = [[int(n) for n in row if n >= 0] for row in neighbours]
    degree = np.array([len(a) for a in adjacency])
    seen: set[tuple[int, int]] = set()

    def follow(start: int, step: int) -> list[int]:
        chain, previous, current = [start, step], start, step
        seen.add((min(start, step), max(start, step)))
        while degree[current] == 2:
            following = next(n for n in adjacency[current] if n != previous)
            edge = (min(current, following), max(current, following))
            if edge in seen:
                break
            seen.add(edge)
            chain.append(following)
            previous, current = current, following
        return chain

    chains = []
    for order in (np.flatnonzero(degree != 2), np.flatnonzero(degree == 2)):  # loops come last
        for pixel in order:
            for step in adjacency[pixel]:
                if (min(pixel, step), max(pixel, step)) not in seen:
                    chains.append(follow(int(pixel), step))
    return chains


def _order_and_join(polylines: list[np.ndarray], join_distance: float) -> list[np.ndarray]:
    """Greedy drawing order: start at the top-left-most end, then repeatedly take the polyline
    with the end nearest the pen (reversing it when needed); join it to the current stroke when
    it starts within ``join_distance`` of the pen."""
    remaining = list(polylines)
    strokes: list[np.ndarray] = []
    pen = np.zeros(2)
    while remaining:
        heads = np.array([p[0] for p in remaining])
        tails = np.array([p[-1] for p in remaining])
        to_head = np.linalg.norm(heads - pen, axis=1)
        to_tail = np.linalg.norm(tails - pen, axis=1)
        best = int(np.argmin(np.minimum(to_head, to_tail)))
        polyline = remaining.pop(best)
        if to_tail[best] < to_head[best]:
            polyline = polyline[::-1]
        if strokes and np.linalg.norm(polyline[0] - pen) <= join_distance:
            strokes[-1] = np.vstack([strokes[-1], polyline[1:]])
        else:
            strokes.append(polyline)
        pen = polyline[-1]
    return strokes


def trace_raster(
    image: np.ndarray | Image.Image,
    threshold: float = 0.3,
    min_length: float = 6.0,
    epsilon: float = 1.0,
) -> Sketch:
    """Trace the centre lines of a raster line drawing into a :class:`Sketch` on its pixel canvas.

    Args:
        image: dark ink on light paper: grey, RGB or RGBA (transparent = paper), PIL or NumPy.
        threshold: a pixel is ink when darker than this fraction of the drawing's ink strength
            (the 99th percentile darkness of its marks), so faint pencil drawings trace too.
        min_length: dangling or isolated polylines shorter than this (pixels) are dropped.
        epsilon: Ramer-Douglas-Peucker tolerance in pixels (0 keeps every skeleton pixel).
    """
    darkness = ink_darkness(image)
    height, width = darkness.shape
    marks = darkness[darkness > _PAPER_NOISE]
    strength = float(np.percentile(marks, 99)) if marks.size else 0.0
    ink = darkness > max(threshold * strength, _PAPER_NOISE)
    coords, neighbours = _neighbours(skeletonize(ink))
    degree = (neighbours >= 0).sum(axis=1)
    polylines = []
    for chain in _walk_skeleton(neighbours):
        xy = coords[chain][:, ::-1] + 0.5  # (row, col) -> pixel-centre x, y
        steps = np.diff(xy, axis=0)
        length = np.hypot(steps[:, 0], steps[:, 1]).sum()
        anchored = degree[chain[0]] > 2 and degree[chain[-1]] > 2
        if length >= min_length or (anchored and chain[0] != chain[-1]):
            # Inner points of straight runs add nothing; dropping them speeds up RDP.
            turns = np.r_[True, (steps[1:] != steps[:-1]).any(axis=1), True]
            polylines.append(xy[turns])
    strokes = _order_and_join(polylines, join_distance=1.5)
    return simplify(Sketch.from_strokes(strokes, width, height), epsilon)
