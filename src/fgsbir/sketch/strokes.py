"""The vector-sketch representation, defined once and used everywhere.

Formats (all ``float32`` NumPy arrays):

* **points** ``(N, 3)``: absolute ``x, y`` on the canvas (y down) and a pen flag that is 1 on the
  last point of each stroke -- the layout of the QMUL-Shoe/Chair-V2 stroke pickles.
* **stroke-3** ``(N, 3)``: ``(dx, dy, lift)``, offsets from the previous point; the first row is the
  offset from the canvas origin, so the absolute position survives a round trip; ``lift`` = 1 on
  the last point of a stroke (sketch-rnn's storage format).
* **stroke-5** ``(L, 5)``: ``(dx, dy, p_down, p_up, p_end)``, sketch-rnn's training format; exactly
  one pen state is hot per row, and rows after the sketch's end are ``[0, 0, 0, 0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Sketch:
    """A vector sketch: ``points`` in the points format on a ``width x height`` canvas.

    On construction ``points`` is copied to a float32 ``(N, 3)`` array and the pen flag of the last
    point is set to 1, so every stroke -- including the last -- is closed. The canvas must have a
    positive, finite size.
    """

    points: np.ndarray
    width: float = 256.0
    height: float = 256.0

    def __post_init__(self) -> None:
        points = np.array(self.points, dtype=np.float32).reshape(-1, 3)
        if len(points):
            points[-1, 2] = 1.0
        self.points = points
        self.width = float(self.width)
        self.height = float(self.height)
        if not (0 < self.width < math.inf and 0 < self.height < math.inf):
            raise ValueError(
                f"canvas must be positive and finite, got {self.width} x {self.height}"
            )

    @classmethod
    def from_strokes(
        cls, strokes: Sequence[np.ndarray], width: float = 256.0, height: float = 256.0
    ) -> Sketch:
        """Build a sketch from polylines, each an ``(n, 2)`` array of absolute ``x, y``.

        Empty strokes are skipped.
        """
        parts = []
        for stroke in strokes:
            xy = np.asarray(stroke, dtype=np.float32).reshape(-1, 2)
            if len(xy):
                pen = np.zeros((len(xy), 1), np.float32)
                pen[-1] = 1.0
                parts.append(np.hstack([xy, pen]))
        points = np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)
        return cls(points, width, height)

    @classmethod
    def from_stroke3(
        cls, stroke3: np.ndarray, width: float = 256.0, height: float = 256.0
    ) -> Sketch:
        """Build a sketch from a stroke-3 array whose first row is the offset from the origin."""
        return cls(stroke3_to_points(stroke3), width, height)

    @property
    def strokes(self) -> list[np.ndarray]:
        """The strokes as a list of ``(n, 2)`` arrays of absolute ``x, y`` (views, not copies)."""
        if self.is_empty:
            return []
        return np.split(self.points[:, :2], self.stroke_ends[:-1] + 1)

    @property
    def stroke_ends(self) -> np.ndarray:
        """The index of each stroke's last point (pen flag 1), in order."""
        return np.flatnonzero(self.points[:, 2] > 0.5)

    @property
    def stroke_starts(self) -> np.ndarray:
        """The index of each stroke's first point, in order."""
        ends = self.stroke_ends
        return np.r_[0, ends[:-1] + 1] if len(ends) else ends

    @property
    def num_strokes(self) -> int:
        return len(self.stroke_ends)

    @property
    def is_empty(self) -> bool:
        return len(self.points) == 0

    def to_stroke3(self) -> np.ndarray:
        return points_to_stroke3(self.points)

    def transform(self, matrix: np.ndarray) -> Sketch:
        """Apply a 2-D affine map, a ``(2, 3)`` or ``(3, 3)`` matrix acting on ``(x, y, 1)``.

        The canvas size is kept; points may end up outside it.
        """
        m = np.asarray(matrix, dtype=np.float64)[:2]
        points = self.points.copy()
        points[:, :2] = self.points[:, :2] @ m[:, :2].T + m[:, 2]
        return Sketch(points, self.width, self.height)

    def translate(self, dx: float, dy: float) -> Sketch:
        return self.transform(np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]))

    def scale(self, sx: float, sy: float | None = None) -> Sketch:
        """Scale coordinates *and* canvas (``sy`` defaults to ``sx``), e.g. to resize a canvas."""
        sy = sx if sy is None else sy
        scaled = self.transform(np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0]]))
        return Sketch(scaled.points, self.width * sx, self.height * sy)


def points_to_stroke3(points: np.ndarray) -> np.ndarray:
    """Absolute points ``(N, 3)`` -> stroke-3 ``(N, 3)``; the first offset is from the origin."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    stroke3 = points.copy()
    stroke3[1:, :2] = np.diff(points[:, :2], axis=0)
    return stroke3


def stroke3_to_points(stroke3: np.ndarray) -> np.ndarray:
    """Stroke-3 ``(N, 3)`` -> absolute points ``(N, 3)`` (cumulative sum of the offsets)."""
    stroke3 = np.asarray(stroke3, dtype=np.float32).reshape(-1, 3)
    points = stroke3.copy()
    points[:, :2] = np.cumsum(stroke3[:, :2], axis=0, dtype=np.float64)
    return points


def stroke3_to_stroke5(stroke3: np.ndarray, max_len: int) -> np.ndarray:
    """Stroke-3 -> stroke-5 ``(max_len, 5)`` as sketch-rnn's ``to_big_strokes``.

    Real rows get ``p_down = 1 - lift`` and ``p_up = lift``; rows past the end are
    ``[0, 0, 0, 0, 1]``. Input longer than ``max_len`` is truncated.
    """
    stroke3 = np.asarray(stroke3, dtype=np.float32).reshape(-1, 3)[:max_len]
    n = len(stroke3)
    stroke5 = np.zeros((max_len, 5), np.float32)
    stroke5[:n, :2] = stroke3[:, :2]
    stroke5[:n, 3] = stroke3[:, 2]
    stroke5[:n, 2] = 1.0 - stroke3[:, 2]
    stroke5[n:, 4] = 1.0
    return stroke5


def stroke5_to_stroke3(stroke5: np.ndarray) -> np.ndarray:
    """Stroke-5 -> stroke-3, stopping before the first row whose pen state is ``p_end``.

    The pen state of a row is its largest pen entry, so soft (probability) rows work as well as
    one-hot ones.
    """
    stroke5 = np.asarray(stroke5, dtype=np.float32).reshape(-1, 5)
    state = np.argmax(stroke5[:, 2:], axis=1)
    ended = np.flatnonzero(state == 2)
    n = int(ended[0]) if len(ended) else len(stroke5)
    stroke3 = np.empty((n, 3), np.float32)
    stroke3[:, :2] = stroke5[:n, :2]
    stroke3[:, 2] = state[:n] == 1
    return stroke3


def scale_factor(stroke3s: Sequence[np.ndarray]) -> float:
    """One data-set-wide normalising scale: the std of all x and y pen offsets, as sketch-rnn.

    The first row of each sketch (the offset from the canvas origin, not a pen movement) is left
    out. Divide stroke-3 offsets by this factor before training a sequence model.
    """
    offsets = [np.asarray(s, dtype=np.float64).reshape(-1, 3)[1:, :2].ravel() for s in stroke3s]
    values = np.concatenate(offsets) if offsets else np.zeros(0)
    if len(values) == 0:
        raise ValueError("scale_factor needs at least one sketch with two or more points")
    return float(np.std(values))


def simplify(sketch: Sketch, epsilon: float) -> Sketch:
    """Ramer-Douglas-Peucker simplification of each stroke, tolerance ``epsilon`` in canvas units.

    Stroke ends are always kept; ``epsilon <= 0`` returns an unchanged copy. The points kept are
    those of ``skimage.measure.approximate_polygon`` run on each stroke, but all strokes are
    simplified at once: its per-stroke Python loop took half the time of tracing a drawing.
    """
    if epsilon <= 0 or sketch.is_empty:
        return Sketch(sketch.points, sketch.width, sketch.height)
    xy = sketch.points[:, :2].astype(np.float64)
    starts, ends = sketch.stroke_starts, sketch.stroke_ends
    kept = np.zeros(len(xy), bool)
    kept[starts] = kept[ends] = True
    while len(starts):
        starts, ends = _rdp_splits(xy, starts, ends, epsilon, kept)
    return Sketch(sketch.points[kept], sketch.width, sketch.height)


def _rdp_splits(
    xy: np.ndarray, starts: np.ndarray, ends: np.ndarray, epsilon: float, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One RDP round over the segments ``starts[i]..ends[i]`` of ``xy``: keep (mark in ``kept``)
    the inner point farthest from each segment when it lies over ``epsilon`` away, and return the
    two halves of each segment so split. Distances are computed as ``approximate_polygon`` does
    (to the line where the point projects inside the segment, else to the nearer end), so the
    same points are kept."""
    inner = ends - starts - 1
    starts, ends, inner = starts[inner > 0], ends[inner > 0], inner[inner > 0]
    if not len(starts):
        return starts, ends
    segment = np.repeat(np.arange(len(starts)), inner)
    offsets = np.cumsum(inner) - inner
    point = starts[segment] + 1 + np.arange(len(segment)) - offsets[segment]
    r0, c0 = xy[starts, 0], xy[starts, 1]
    r1, c1 = xy[ends, 0], xy[ends, 1]
    dr, dc = r1 - r0, c1 - c0
    angle = -np.arctan2(dr, dc)
    sin, cos = np.sin(angle), np.cos(angle)
    line = c0 * sin + r0 * cos
    r, c = xy[point, 0], xy[point, 1]
    dr0, dc0 = r - r0[segment], c - c0[segment]
    dr1, dc1 = r - r1[segment], c - c1[segment]
    dr_, dc_ = dr[segment], dc[segment]
    perpendicular = (dr0 * dr_ + dc0 * dc_ > 0) & (-dr1 * dr_ - dc1 * dc_ > 0)
    distance = np.where(
        perpendicular,
        np.abs(r * cos[segment] + c * sin[segment] - line[segment]),
        np.minimum(np.sqrt(dc0**2 + dr0**2), np.sqrt(dc1**2 + dr1**2)),
    )
    farthest = np.maximum.reduceat(distance, offsets)
    split = farthest > epsilon
    at_max = np.flatnonzero(distance == farthest[segment])
    first_at_max = at_max[np.unique(segment[at_max], return_index=True)[1]]
    chosen = point[first_at_max][split]
    kept[chosen] = True
    return (
        np.concatenate([starts[split], chosen]),
        np.concatenate([chosen, ends[split]]),
    )


def limit_length(sketch: Sketch, max_points: int, start_epsilon: float = 0.5) -> Sketch:
    """Shorten a sketch to at most ``max_points`` points.

    Simplifies with a growing RDP tolerance (doubling from ``start_epsilon`` up to the canvas size)
    until the sketch fits; if even that is too long, the tail is cut off.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be positive, got {max_points}")
    result = sketch
    epsilon = start_epsilon
    limit = max(sketch.width, sketch.height)
    while len(result.points) > max_points and epsilon <= limit:
        result = simplify(sketch, epsilon)
        epsilon *= 2.0
    if len(result.points) > max_points:
        result = Sketch(result.points[:max_points], sketch.width, sketch.height)
    return result
