"""Raster line drawing -> vector strokes: binarise the ink, skeletonise, walk the centre lines.

The skeleton is read as a pixel graph with *mixed* adjacency (a diagonal neighbour only counts when
no orthogonal pixel already links the two), so one-pixel-thin lines have exactly two neighbours
per pixel and junctions are real branchings. Each chain of two-neighbour pixels between end points
or junctions becomes a polyline; short dangling spurs are dropped; the polylines are ordered by a
greedy nearest-end walk (reversed where that is shorter), joined into one stroke where one ends
where the next begins, and simplified with Ramer-Douglas-Peucker.

The work is bounded whatever the image: large images are traced shrunk (see
:data:`~fgsbir.limits.MAX_TRACE_SIDE`) and an image with more ink than a line drawing is refused
with :class:`TooMuchInk` before the costly steps.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from fgsbir.limits import MAX_INK_SHARE, MAX_SKETCH_STROKES, MAX_TRACE_INK, MAX_TRACE_SIDE
from fgsbir.sketch.strokes import Sketch, simplify

_PAPER_NOISE = 0.05  # darkness below this is paper, whatever the drawing
_ORTHOGONAL = ((-1, 0), (0, 1), (1, 0), (0, -1))
_DIAGONAL = ((-1, -1), (-1, 1), (1, 1), (1, -1))
_NEAR = 16  # nearest ends looked up at once when ordering polylines


class TooMuchInk(ValueError):
    """The image holds more ink than a line drawing (see :func:`trace_raster`)."""


def _pixels(image: np.ndarray | Image.Image) -> np.ndarray:
    """The pixel array of a grey, grey + alpha, RGB or RGBA image (other PIL modes -> RGBA)."""
    if isinstance(image, Image.Image) and image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA")
    pixels = np.asarray(image)
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4))):
        raise ValueError(f"expected a grey, RGB or RGBA image, got shape {pixels.shape}")
    return pixels


def _white(pixels: np.ndarray) -> float:
    """The value of full intensity: the dtype's maximum for integers, 1 for floats."""
    return float(np.iinfo(pixels.dtype).max) if np.issubdtype(pixels.dtype, np.integer) else 1.0


def _shrunk(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Pixels ``factor`` times smaller a side: the mean of each block (the edges padded with
    opaque white), as floats in ``[0, 1]``. Summing rows, then columns, is several times faster
    than ``skimage.measure.block_reduce`` on colour images."""
    white = _white(pixels)
    height, width = (-(-side // factor) * factor for side in pixels.shape[:2])
    padding = [(0, height - pixels.shape[0]), (0, width - pixels.shape[1])]
    padded = np.pad(pixels, padding + [(0, 0)] * (pixels.ndim - 2), constant_values=white)
    rows = padded.reshape(height // factor, factor, -1).sum(axis=1, dtype=np.float32)
    blocks = rows.reshape(height // factor, width // factor, factor, *pixels.shape[2:]).sum(axis=2)
    return blocks / np.float32(factor * factor * white)


def _darkness(pixels: np.ndarray) -> np.ndarray:
    """Darkness in ``[0, 1]`` of checked pixels (see :func:`ink_darkness`)."""
    pixels = np.clip(pixels.astype(np.float64) / _white(pixels), 0.0, 1.0)
    if pixels.ndim == 2:
        return 1.0 - pixels
    channels = pixels.shape[2]
    has_alpha = channels in (2, 4)
    colour = pixels[..., : channels - has_alpha].mean(axis=2)
    alpha = pixels[..., -1] if has_alpha else 1.0
    return 1.0 - (colour * alpha + (1.0 - alpha))


def ink_darkness(image: np.ndarray | Image.Image) -> np.ndarray:
    """Darkness in ``[0, 1]`` (1 = black ink) of a grey, RGB or RGBA image, composited on white.

    Integer arrays are read as 0..255 (uint8) or 0..65535 (uint16); float arrays as 0..1 (values
    beyond are clipped).
    """
    return _darkness(_pixels(image))


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
    adjacency = [[n for n in row if n >= 0] for row in neighbours.tolist()]
    degree = [len(a) for a in adjacency]
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
    ends_first = sorted(range(len(degree)), key=lambda pixel: degree[pixel] == 2)  # loops last
    for pixel in ends_first:
        for step in adjacency[pixel]:
            if (min(pixel, step), max(pixel, step)) not in seen:
                chains.append(follow(pixel, step))
    return chains


class _FreeEnds:
    """The ends of the polylines not drawn yet, nearest first: end ``2 * i`` is the head of
    polyline ``i`` and ``2 * i + 1`` its tail. Ties go to the first polyline, then to its head,
    as a scan of the list would choose.

    The pen rests on an end, so each end's nearest ends are looked up once for all (in a k-d
    tree); only when those are taken is the tree searched, and it is rebuilt over the free ends
    whenever half of its ends are taken. Ordering ``n`` polylines takes about ``n log n`` steps.
    """

    def __init__(self, ends: np.ndarray) -> None:
        self.ends = ends
        self.free = [True] * (len(ends) // 2)
        self.left = len(self.free)
        self._index(np.arange(len(ends)))
        self.near = self.tree.query(ends, min(_NEAR, len(ends)))  # (distances, ends) per end

    def _index(self, ids: np.ndarray) -> None:
        self.ids, self.tree = ids, cKDTree(self.ends[ids])

    def take(self, polyline: int) -> None:
        self.free[polyline] = False
        self.left -= 1
        if 4 * self.left < self.tree.n:
            self._index(np.flatnonzero(np.repeat(self.free, 2)))

    def _first_free(self, distances: list[float], ends: list[int], complete: bool) -> int | None:
        """The first free end of a nearest-first list, or ``None`` when the list cannot tell
        (no free end, or one as near may lie beyond the list)."""
        best, best_distance = None, math.inf
        for distance, end in zip(distances, ends, strict=True):
            if distance > best_distance:
                return best
            if self.free[end // 2] and (best is None or end < best):
                best, best_distance = end, distance
        return best if complete else None

    def nearest(self, pen: np.ndarray, resting_on: int | None) -> int:
        """The free end nearest ``pen``, which rests on end ``resting_on`` (``None``: on none)."""
        if resting_on is not None:
            distances, ends = (near[resting_on].tolist() for near in self.near)
            found = self._first_free(distances, ends, len(self.ends) <= _NEAR)
            if found is not None:
                return found
        k = _NEAR
        while True:
            k = min(k, self.tree.n)
            distances, found = self.tree.query(pen, np.arange(1, k + 1))
            complete = k == self.tree.n
            end = self._first_free(distances.tolist(), self.ids[found].tolist(), complete)
            if end is not None:
                return end
            k *= 2


def _order_and_join(polylines: list[np.ndarray], join_distance: float) -> list[np.ndarray]:
    """Greedy drawing order: start at the top-left-most end, then repeatedly take the polyline
    with the end nearest the pen (reversing it when needed); join it to the current stroke when
    it starts within ``join_distance`` of the pen."""
    if not polylines:
        return []
    free = _FreeEnds(np.array([p[[0, -1]] for p in polylines]).reshape(-1, 2))
    strokes: list[list[np.ndarray]] = []  # each stroke as its polylines
    pen, resting_on = np.zeros(2), None
    for _ in polylines:
        end = free.nearest(pen, resting_on)
        free.take(end // 2)
        polyline = polylines[end // 2][:: -1 if end % 2 else 1]
        if strokes and math.dist(polyline[0], pen) <= join_distance:
            strokes[-1].append(polyline[1:])
        else:
            strokes.append([polyline])
        pen, resting_on = polyline[-1], end ^ 1
    return [np.concatenate(parts) for parts in strokes]


def _polylines(coords: np.ndarray, neighbours: np.ndarray, min_length: float) -> list[np.ndarray]:
    """The skeleton's chains as polylines of pixel-centre ``x, y``: those at least ``min_length``
    long or linking two junctions, without the inner points of straight runs (they add nothing
    and would slow RDP down). All chains are handled at once, laid end to end."""
    chains = _walk_skeleton(neighbours)
    if not chains:
        return []
    sizes = np.array([len(chain) for chain in chains])
    pixels = np.concatenate(chains)
    chain = np.repeat(np.arange(len(chains)), sizes)
    last = np.cumsum(sizes) - 1
    first = last - sizes + 1
    xy = coords[pixels][:, ::-1] + 0.5  # (row, col) -> x, y
    steps = np.diff(xy, axis=0)  # steps[last[:-1]] cross from one chain to the next
    step_lengths = np.hypot(steps[:, 0], steps[:, 1])
    step_lengths[last[:-1]] = 0.0
    lengths = np.bincount(chain[:-1], weights=step_lengths, minlength=len(chains))
    degree = (neighbours[pixels] >= 0).sum(axis=1)
    linking = (degree[first] > 2) & (degree[last] > 2) & (pixels[first] != pixels[last])
    turns = np.ones(len(pixels), bool)
    turns[1:-1] = (steps[1:] != steps[:-1]).any(axis=1)
    turns[first] = turns[last] = True
    kept = turns & ((lengths >= min_length) | linking)[chain]
    if not kept.any():
        return []
    return np.split(xy[kept], np.flatnonzero(np.diff(chain[kept])) + 1)


def _check_ink(amount: float, limit: float, what: str) -> None:
    """Refuse a drawing with more than ``limit``; ``what`` formats an amount ("{:,} strokes")."""
    if amount > limit:
        raise TooMuchInk(
            f"too much ink for a line drawing: {what.format(amount)} is over the limit of "
            f"{what.format(limit)}"
        )


def _working_size(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """The pixels to trace and the factor they were shrunk by, so that no side is longer than
    :data:`~fgsbir.limits.MAX_TRACE_SIDE`."""
    factor = math.ceil(max(pixels.shape[:2]) / MAX_TRACE_SIDE)
    return (_shrunk(pixels, factor), factor) if factor > 1 else (pixels, 1)


def trace_raster(
    image: np.ndarray | Image.Image,
    threshold: float = 0.3,
    min_length: float = 6.0,
    epsilon: float = 1.0,
) -> Sketch:
    """Trace the centre lines of a raster line drawing into a :class:`Sketch` on its pixel canvas.

    Images with a side over :data:`~fgsbir.limits.MAX_TRACE_SIDE` pixels are traced shrunk to
    that size, so the work is bounded. An image with more ink than a line drawing (over
    :data:`~fgsbir.limits.MAX_INK_SHARE` of its area, over :data:`~fgsbir.limits.MAX_TRACE_INK`
    centre-line pixels, or over :data:`~fgsbir.limits.MAX_SKETCH_STROKES` strokes: noise, a photo,
    light lines on a dark page) raises :class:`TooMuchInk`.

    Args:
        image: dark ink on light paper: grey, RGB or RGBA (transparent = paper), PIL or NumPy.
        threshold: a pixel is ink when darker than this fraction of the drawing's ink strength
            (the 99th percentile darkness of its marks), so faint pencil drawings trace too.
        min_length: dangling or isolated polylines shorter than this (pixels) are dropped.
        epsilon: Ramer-Douglas-Peucker tolerance in pixels (0 keeps every skeleton pixel).
    """
    pixels = _pixels(image)
    height, width = pixels.shape[:2]
    pixels, factor = _working_size(pixels)
    darkness = _darkness(pixels)
    marks = darkness[darkness > _PAPER_NOISE]
    strength = float(np.percentile(marks, 99)) if marks.size else 0.0
    ink = darkness > max(threshold * strength, _PAPER_NOISE)
    _check_ink(np.count_nonzero(ink) / max(ink.size, 1), MAX_INK_SHARE, "{:.1%} ink")
    skeleton = skeletonize(ink)
    _check_ink(np.count_nonzero(skeleton), MAX_TRACE_INK, "{:,} centre-line pixels")
    coords, neighbours = _neighbours(skeleton)
    polylines = _polylines(coords, neighbours, min_length / factor)
    strokes = [s * factor for s in _order_and_join(polylines, join_distance=1.5)]
    _check_ink(len(strokes), MAX_SKETCH_STROKES, "{:,} strokes")
    return simplify(Sketch.from_strokes(strokes, width, height), epsilon)
