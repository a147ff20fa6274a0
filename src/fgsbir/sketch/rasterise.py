"""Batched anti-aliased sketch rasterisation in PyTorch, plus the usual per-pixel reference.

:func:`rasterise` cuts every line segment of the batch into pieces whose extent along their major
axis (x for flat pieces, y for steep ones) is at most a few pixels, and evaluates each piece only
on a small window of pixels that follows it: a few pixel columns along the major axis, and in each
column the few rows around the line. The ink of a pixel is
``clamp(line_width / 2 + 0.5 - distance to the segment, 0, 1)`` (a one-pixel linear edge, exact
area coverage for axis-aligned lines), and pieces are merged with a scatter-max. The work is
proportional to the ink length, not to ``segments x pixels``, in a few tensor operations for the
whole batch, on any device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from skimage.draw import line as bresenham_line
from skimage.morphology import dilation, disk

from fgsbir.sketch.strokes import Sketch

_MAX_SPAN = 16  # longest major-axis extent of a piece, in pixels
_CHUNK_ELEMENTS = 1 << 20  # bound on (pieces x window pixels) evaluated at once


def _to_pixels(
    xy: np.ndarray, width: float | np.ndarray, height: float | np.ndarray, size: int
) -> np.ndarray:
    """Fit canvases (aspect kept, centred) into ``size x size`` pixels; sizes broadcast over xy."""
    scale = size / np.maximum(width, height)
    offset = np.stack([size - width * scale, size - height * scale], axis=-1) / 2.0
    return xy.astype(np.float64) * np.asarray(scale)[..., None] + offset


def canvas_to_pixels(sketch: Sketch, size: int) -> np.ndarray:
    """The sketch's points in ``size x size`` pixel coordinates (canvas fitted, centred).

    Pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``; returns float64 ``(N, 2)`` ``x, y``.
    """
    return _to_pixels(sketch.points[:, :2], sketch.width, sketch.height, size)


def _clip_to_box(
    a: np.ndarray, delta: np.ndarray, low: float, high: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Liang-Barsky: the parts of segments ``a -> a + delta`` inside ``[low, high]^2``.

    Returns the clipped starts and offsets and which segments are (partly) inside at all.
    """
    enter, leave = np.zeros(len(a)), np.ones(len(a))
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in (0, 1):
            step, start = delta[:, axis], a[:, axis]
            to_low, to_high = (low - start) / step, (high - start) / step
            flat = step == 0  # parallel to this side: inside or not at all
            outside = flat & ((start < low) | (start > high))
            enter = np.where(flat, enter, np.maximum(enter, np.minimum(to_low, to_high)))
            leave = np.where(flat, leave, np.minimum(leave, np.maximum(to_low, to_high)))
            leave[outside] = -1.0
    visible = enter <= leave  # False for NaN coordinates too
    return a + enter[:, None] * delta, (leave - enter)[:, None] * delta, visible


def _pieces(
    sketches: Sequence[Sketch], size: int, margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """All strokes of the batch as pieces: starts and ends ``(M, 2)`` in pixels, sketch ids, and
    the longest major-axis extent ``span`` of any piece.

    Segments are first clipped to the image grown by ``margin`` (no ink can come from beyond it).
    ``span`` follows the data (most segments fit in one piece) but is at most ``_MAX_SPAN``;
    longer segments are cut into equal pieces. A one-point stroke becomes a zero-length piece.
    """
    lengths = [len(s.points) for s in sketches]
    points = np.concatenate([s.points for s in sketches])
    owner = np.repeat(np.arange(len(sketches)), lengths)
    width = np.array([s.width for s in sketches])[owner]
    height = np.array([s.height for s in sketches])[owner]
    xy = _to_pixels(points[:, :2], width, height, size)
    pen = points[:, 2] > 0.5
    # Every sketch's last point has pen = 1, so a segment never joins two sketches.
    first = np.flatnonzero(~pen)
    dots = np.flatnonzero(pen & np.r_[True, pen[:-1]])
    starts = np.concatenate([first, dots])
    ends = np.concatenate([first + 1, dots])
    a, delta, visible = _clip_to_box(xy[starts], xy[ends] - xy[starts], -margin, size + margin)
    a, delta, owner = a[visible], delta[visible], owner[starts[visible]]
    if len(a) == 0:
        return a, a, owner, 1
    extent = np.abs(delta).max(axis=1)
    span = int(np.clip(np.ceil(np.quantile(extent, 0.9)), 1, _MAX_SPAN))
    counts = np.maximum(np.ceil(extent / span), 1).astype(np.int64)
    if (counts == 1).all():  # the common case: no segment needs cutting
        return a, a + delta, owner, span
    which = np.repeat(np.arange(len(counts)), counts)
    k = np.arange(len(which)) - np.repeat(np.cumsum(counts) - counts, counts)
    step = delta[which] / counts[which, None]
    piece_start = a[which] + k[:, None] * step
    return piece_start, piece_start + step, owner[which], span


class _Stamper:
    """Draws pieces whose major-axis extent is at most ``span`` into flat ``size x size`` images.

    In major-axis coordinates ``(u, v)`` a piece inks only pixel centres within
    ``reach = line_width / 2 + 0.5`` of it, hence within ``reach`` of it along ``u`` and, as
    ``|dv / du| <= 1``, within ``reach * sqrt(2)`` of the line's ``v`` at the (clamped) column. A
    run of ``ceil(2 h)`` pixels starting at ``floor(centre - h + 0.5)`` holds every pixel centre
    within ``h`` of ``centre``: that sizes the window's columns and rows.
    """

    def __init__(self, size: int, line_width: float, span: int, device: torch.device) -> None:
        self.size = size
        self.reach = line_width / 2.0 + 0.5
        self.columns = math.ceil(span + 2.0 * self.reach)
        self.rows = math.ceil(2.0 * math.sqrt(2.0) * self.reach)
        self.column_steps = torch.arange(self.columns, device=device)
        self.row_steps = torch.arange(self.rows, device=device)[:, None]

    def stamp(
        self,
        image: torch.Tensor,
        start: torch.Tensor,
        end: torch.Tensor,
        ids: torch.Tensor,
        clip: bool,
    ) -> None:
        """Scatter-max the ink of pieces ``start -> end`` (pixel ``x, y``) into ``image``.

        Without ``clip`` every window must lie inside the image.
        """
        delta = end - start
        steep = delta[:, 1].abs() > delta[:, 0].abs()
        a = torch.where(steep[:, None], start.flip(1), start)  # (u, v): u is the major axis
        b = torch.where(steep[:, None], end.flip(1), end)
        backwards = (b[:, 0] < a[:, 0])[:, None]
        a, b = torch.where(backwards, b, a), torch.where(backwards, a, b)
        d = b - a
        length = d.norm(dim=1, keepdim=True)
        unit = torch.tensor([1.0, 0.0], device=d.device)  # any direction will do for a dot
        direction = torch.where(length > 0, d / length.clamp_min(1e-12), unit)
        slope = d[:, 1:] / d[:, :1].clamp_min(1e-12)
        au, av, bu = a[:, :1], a[:, 1:], b[:, :1]
        eu, ev, half = direction[:, :1], direction[:, 1:], length / 2.0

        # Per (piece, column), shape (M, C): the window's first pixel in that column.
        col0 = torch.floor((au + bu - self.columns + 1.0) / 2.0)
        centre_u = col0 + self.column_steps + 0.5
        on_line = torch.minimum(torch.maximum(centre_u, au), bu)
        row0 = torch.floor(av + slope * (on_line - au) - self.rows / 2.0 + 0.5)
        x, y = centre_u - au, row0 + 0.5 - av

        # Per pixel, shape (R, M * C): window row r is tensor row r, so that every broadcasting
        # operation runs along long contiguous rows.
        def flat(values: torch.Tensor) -> torch.Tensor:
            return values.expand_as(x).reshape(1, -1)

        steps = self.row_steps.to(x.dtype)
        along = torch.addcmul(flat(x * eu + y * ev - half), steps, flat(ev))  # from the middle
        across = torch.addcmul(flat(y * eu - x * ev), steps, flat(eu))
        beyond = along.abs_().sub_(flat(half)).clamp_min_(0.0).square_()
        ink = beyond.add_(across.square_()).sqrt_().neg_().add_(self.reach).clamp_(0.0, 1.0)

        # Integer pixel indices; int32 arithmetic is much faster than int64 on CPUs.
        size = self.size
        dtype = torch.int32 if image.numel() < 2**31 else torch.int64
        u, v = col0.to(dtype) + self.column_steps.to(dtype), row0.to(dtype)
        stride_u = torch.where(steep[:, None], size, 1).to(dtype)
        stride_v = torch.where(steep[:, None], 1, size).to(dtype)
        first = ids[:, None].to(dtype) * (size * size) + u * stride_u + v * stride_v
        steps = self.row_steps.to(dtype)
        index = torch.addcmul(flat(first), steps, flat(stride_v))
        if clip:
            columns, rows = flat(u), flat(v) + steps
            keep = (columns >= 0) & (columns < size) & (rows >= 0) & (rows < size)
            index, ink = torch.where(keep, index, 0), torch.where(keep, ink, 0.0)
        image.scatter_reduce_(0, index.view(-1).long(), ink.view(-1), reduce="amax")


def rasterise(
    sketches: Sequence[Sketch],
    size: int = 224,
    line_width: float = 2.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Render sketches to a ``(B, 1, size, size)`` float32 tensor, 1 = ink, 0 = paper.

    Each canvas is fitted into the square (aspect kept, centred); ``line_width`` is in output
    pixels; edges are anti-aliased over one pixel.
    """
    if size < 1 or not line_width > 0:
        raise ValueError(f"need size >= 1 and line_width > 0, got {size} and {line_width}")
    device = torch.device("cpu") if device is None else torch.device(device)
    image = torch.zeros(len(sketches) * size * size, device=device)
    if any(not s.is_empty for s in sketches):
        start_np, end_np, ids_np, span = _pieces(sketches, size, line_width / 2.0 + 1.0)
        stamper = _Stamper(size, line_width, span, device)
        # Pieces near the border (or beyond it) take the slower path that clips their windows.
        margin = stamper.columns + stamper.rows
        ends = np.hstack([start_np, end_np])
        inside = torch.from_numpy(((ends >= margin) & (ends < size - margin)).all(axis=1))
        start = torch.from_numpy(start_np).float().to(device)
        end = torch.from_numpy(end_np).float().to(device)
        ids = torch.from_numpy(ids_np).to(device)
        chunk = max(1, _CHUNK_ELEMENTS // (stamper.columns * stamper.rows))
        for clip in (False, True):
            group = (inside != clip).to(device)
            group_start, group_end, group_ids = start[group], end[group], ids[group]
            for i in range(0, len(group_ids), chunk):
                part = slice(i, i + chunk)
                stamper.stamp(image, group_start[part], group_end[part], group_ids[part], clip)
    return image.view(len(sketches), 1, size, size)


def _bresenham(x0: int, y0: int, x1: int, y1: int) -> Iterator[tuple[int, int]]:
    """The integer cells of the line ``(x0, y0) -> (x1, y1)``, one at a time (Bresenham)."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x1 > x0 else -1), (1 if y1 > y0 else -1)
    error = dx + dy
    while True:
        yield x0, y0
        if x0 == x1 and y0 == y1:
            return
        twice = 2 * error
        if twice >= dy:
            error, x0 = error + dy, x0 + sx
        if twice <= dx:
            error, y0 = error + dx, y0 + sy


def rasterise_reference(
    sketch: Sketch,
    size: int = 224,
    line_width: float = 2.0,
    lines: Literal["python", "skimage"] = "python",
) -> np.ndarray:
    """The plain per-pixel way: Bresenham lines, then a dilation by a disc of radius
    ``line_width // 2`` (lines ``2 * (line_width // 2) + 1`` pixels wide, no anti-aliasing).

    ``lines="python"`` walks and writes every pixel in Python, as FG-SBIR code bases do (e.g.
    the ``mydrawPNG`` of Bhunia et al.'s code, with the ``bresenham`` package);
    ``lines="skimage"`` draws each line with scikit-image's compiled Bresenham, a stronger
    baseline than the field's code. Both draw the same pixels. Kept only as the baselines of
    ``benchmarks/rasterise.py``; returns float32 ``(size, size)``.
    """
    image = np.zeros((size, size), dtype=bool)
    cells = np.clip(np.floor(canvas_to_pixels(sketch, size)).astype(np.int64), 0, size - 1)
    pen_up = sketch.points[:, 2] > 0.5
    for i in np.flatnonzero(~pen_up):
        (x0, y0), (x1, y1) = cells[i].tolist(), cells[i + 1].tolist()
        if lines == "skimage":
            rows, cols = bresenham_line(y0, x0, y1, x1)
            image[rows, cols] = True
        else:
            for x, y in _bresenham(x0, y0, x1, y1):
                image[y, x] = True
    image[cells[:, 1], cells[:, 0]] = True  # also draws one-point strokes
    radius = int(line_width // 2)
    if radius > 0:
        image = dilation(image, disk(radius))
    return image.astype(np.float32)
