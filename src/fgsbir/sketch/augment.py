"""Vector sketch augmentations for training; each draws its randomness from a NumPy ``Generator``.

All return a new :class:`~fgsbir.sketch.strokes.Sketch` on the same canvas and leave the input
alone; an empty sketch comes back unchanged.
"""

from __future__ import annotations

import numpy as np

from fgsbir.sketch.strokes import Sketch


def drop_strokes(sketch: Sketch, p: float, rng: np.random.Generator) -> Sketch:
    """Drop each stroke with probability ``p``; one random stroke survives if all would go."""
    count = sketch.num_strokes
    if count == 0:
        return sketch
    keep = rng.random(count) >= p
    if not keep.any():
        keep[rng.integers(count)] = True
    stroke_of_point = np.searchsorted(sketch.stroke_ends, np.arange(len(sketch.points)))
    return Sketch(sketch.points[keep[stroke_of_point]], sketch.width, sketch.height)


def drop_points(sketch: Sketch, p: float, rng: np.random.Generator) -> Sketch:
    """Drop each inner point of a stroke with probability ``p``; stroke ends always stay."""
    inner = np.ones(len(sketch.points), bool)
    inner[sketch.stroke_starts] = inner[sketch.stroke_ends] = False
    dropped = inner & (rng.random(len(inner)) < p)
    return Sketch(sketch.points[~dropped], sketch.width, sketch.height)


def affine_jitter(
    sketch: Sketch,
    rng: np.random.Generator,
    scale: float = 0.1,
    rotate: float = 10.0,
    shear: float = 0.1,
    translate: float = 0.05,
) -> Sketch:
    """A random affine map about the canvas centre.

    Draws uniformly: an isotropic scale in ``[1 - scale, 1 + scale]``, a rotation in
    ``[-rotate, rotate]`` degrees, a horizontal shear factor in ``[-shear, shear]`` and a shift
    in ``[-translate, translate]`` times the canvas width / height.
    """
    factor = rng.uniform(1.0 - scale, 1.0 + scale)
    angle = np.deg2rad(rng.uniform(-rotate, rotate))
    slant = rng.uniform(-shear, shear)
    size = np.array([sketch.width, sketch.height])
    shift = rng.uniform(-translate, translate, size=2) * size
    cos, sin = np.cos(angle), np.sin(angle)
    linear = factor * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, slant], [0.0, 1.0]])
    centre = size / 2.0
    offset = centre + shift - linear @ centre
    return sketch.transform(np.hstack([linear, offset[:, None]]))
