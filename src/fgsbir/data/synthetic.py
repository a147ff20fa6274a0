"""The built-in data set: procedurally generated fine-grained shoes in the QMUL-Shoe-V2 layout.

Every shoe is a parametric side view (toe box, vamp, collar or boot shaft, sole, heel) with
optional details: laces and eyelets, toe cap, straps with buckles, stripes, stitching, apron seam,
zipper, pull tab, bow, brogue holes, tread. Shoes come in families of near variants that share
their shape and differ in a detail or two, so retrieval is fine-grained. Photos are rendered in
colour with texture, shading and a floor shadow at twice the resolution and downsampled; sketches
are drawn from the same geometry by a simulated sketcher who omits details, splits and re-orders
strokes, over-shoots their ends and wobbles, so they are aligned with the photographed shoe.

Shapes are built in a canonical frame: the shoe is one unit long from toe (x = 0) to heel
(x = 1), y points up from the floor (y = 0).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.interpolate import make_interp_spline

from fgsbir.data.layouts import cache_dir
from fgsbir.errors import DataError
from fgsbir.sketch.strokes import Sketch, simplify

CANVAS = 256
PICKLE_NAME = "Synthetic_Coordinate"
MARKER = "synthetic.json"
GENERATOR_VERSION = 3  # bump whenever the output changes, so caches are regenerated
_SUPERSAMPLE = 2
_STYLES = ("sneaker", "oxford", "loafer", "pump", "mary_jane", "boot", "wedge")
_STYLE_WEIGHTS = (0.2, 0.15, 0.13, 0.15, 0.1, 0.17, 0.1)

# Optional details and how often each style has them; a variant of a design flips one or two.
_FEATURES: dict[str, dict[str, float]] = {
    "sneaker": {
        "toe_cap": 0.5,
        "stripes": 0.7,
        "midsole": 0.8,
        "stitching": 0.4,
        "heel_counter": 0.6,
        "pull_tab": 0.4,
        "quarter_seam": 0.5,
        "tread": 0.7,
    },
    "oxford": {"toe_cap": 0.6, "brogue": 0.3, "stitching": 0.7, "quarter_seam": 0.8},
    "loafer": {"apron": 0.8, "strap": 0.5, "buckle": 0.3, "stitching": 0.6, "heel_counter": 0.3},
    "pump": {"bow": 0.25, "strap": 0.35, "buckle": 0.8, "toe_cap": 0.15, "stitching": 0.1},
    "mary_jane": {"buckle": 0.8, "toe_cap": 0.3, "stitching": 0.4, "heel_counter": 0.4},
    "boot": {
        "laces": 0.35,
        "zipper": 0.4,
        "strap": 0.4,
        "buckle": 0.7,
        "pull_tab": 0.5,
        "toe_cap": 0.3,
        "stitching": 0.5,
    },
    "wedge": {"strap": 0.5, "buckle": 0.7, "toe_cap": 0.2, "stitching": 0.3, "bow": 0.2},
}
_ALWAYS = {"sneaker": {"laces"}, "oxford": {"laces"}, "mary_jane": {"strap"}}


@dataclass(frozen=True)
class _Design:
    """The shape parameters of one shoe (canonical units: the shoe is 1 long)."""

    style: str
    features: frozenset[str]
    toe_h: float  # toe-box height above the sole
    pointy: float  # 0 round toe .. 1 pointed toe
    toe_spring: float  # how far the toe curls up off the floor
    x_ball: float  # where the forefoot touches the floor
    x_seat: float  # where the heel seat starts
    sole_t: float  # sole thickness
    heel: str  # flat | block | stiletto | wedge
    heel_h: float  # heel-seat height (for flat soles: the heel-to-toe drop)
    heel_len: float  # heel length along the top
    heel_foot: float  # heel length on the floor, as a fraction of heel_len
    throat_x: float  # where the vamp meets the collar opening
    instep_h: float  # upper height at the throat
    back_h: float  # collar height at the back (shaft height for boots)
    collar_dip: float
    lean: float  # boot-shaft lean
    lining_h: float  # how much of the inside shows above the collar
    eyelets: int
    lace_len: float
    cap_x: float
    stripes: int
    stripe_x: float
    stripe_slant: float
    strap_x: float
    strap_w: float


def _sample_design(rng: np.random.Generator) -> _Design:
    style = str(rng.choice(_STYLES, p=_STYLE_WEIGHTS))
    u = rng.uniform
    features = {name for name, p in _FEATURES[style].items() if rng.random() < p}
    features |= _ALWAYS.get(style, set())
    heel, heel_h, sole_t = "flat", u(0.01, 0.03), u(0.03, 0.05)
    throat_x, instep, back_h, pointy = u(0.45, 0.55), u(0.1, 0.15), u(0.2, 0.27), u(0.0, 0.5)
    toe_h = u(0.11, 0.16)
    if style == "sneaker":  # proportions of each style, from product photos
        sole_t, heel_h, toe_h, pointy = u(0.06, 0.1), u(0.01, 0.04), u(0.14, 0.2), u(0.0, 0.2)
        throat_x, instep, back_h = u(0.5, 0.6), u(0.18, 0.24), u(0.3, 0.37)
    elif style == "oxford":
        heel, heel_h, sole_t = "block", u(0.04, 0.07), u(0.025, 0.04)
        throat_x, instep, back_h = u(0.5, 0.58), u(0.14, 0.19), u(0.27, 0.33)
        toe_h, pointy = u(0.13, 0.18), u(0.2, 0.7)
    elif style == "loafer":
        heel, heel_h, sole_t = str(rng.choice(["flat", "block"])), u(0.02, 0.06), u(0.02, 0.035)
        toe_h, instep, back_h = u(0.13, 0.18), u(0.1, 0.14), u(0.23, 0.29)
    elif style == "pump":
        heel = "stiletto" if rng.random() < 0.7 else "block"
        heel_h, sole_t, toe_h = u(0.2, 0.33), u(0.012, 0.02), u(0.1, 0.13)
        throat_x, instep, back_h, pointy = u(0.3, 0.42), u(0.0, 0.04), u(0.17, 0.23), u(0.5, 1.0)
    elif style == "mary_jane":
        heel = "block"
        heel_h, sole_t, pointy, toe_h = u(0.03, 0.2), u(0.02, 0.035), u(0.0, 0.3), u(0.12, 0.17)
        throat_x, instep, back_h = u(0.32, 0.42), u(0.03, 0.06), u(0.2, 0.26)
    elif style == "boot":
        heel, heel_h, sole_t = "block", u(0.04, 0.26), u(0.03, 0.06)
        throat_x, instep, back_h, toe_h = u(0.5, 0.58), u(0.14, 0.19), u(0.4, 0.8), u(0.13, 0.17)
    else:  # wedge
        heel, heel_h, sole_t = "wedge", u(0.14, 0.32), u(0.02, 0.05)
        throat_x, instep, back_h = u(0.33, 0.45), u(0.02, 0.06), u(0.19, 0.26)
    return _Design(
        style=style,
        features=frozenset(features),
        toe_h=toe_h,
        pointy=pointy,
        toe_spring=u(0.01, 0.06 if style == "sneaker" else 0.035),
        x_ball=u(0.25, 0.32),
        x_seat=u(0.68, 0.74),
        sole_t=sole_t,
        heel=heel,
        heel_h=heel_h,
        heel_len=u(0.2, 0.27),
        heel_foot=u(0.1, 0.2) if heel == "stiletto" else u(0.6, 0.95),
        throat_x=throat_x,
        instep_h=toe_h + instep,
        back_h=back_h,
        collar_dip=u(0.0, 0.05),
        lean=u(-0.02, 0.06),
        lining_h=u(0.015, 0.05),
        eyelets=int(rng.integers(3, 8)),
        lace_len=u(0.14, 0.24),
        cap_x=u(0.14, 0.26),
        stripes=int(rng.integers(1, 4)),
        stripe_x=u(0.52, 0.68),
        stripe_slant=u(0.05, 0.14),
        strap_x=u(0.0, 1.0),
        strap_w=u(0.025, 0.045),
    )


def _variant(design: _Design, rng: np.random.Generator) -> _Design:
    """A near copy: every proportion nudged by a few percent and one or two details flipped."""
    changes: dict[str, float | int | frozenset[str]] = {}
    for name in (
        "toe_h",
        "pointy",
        "toe_spring",
        "sole_t",
        "heel_h",
        "heel_len",
        "throat_x",
        "instep_h",
        "back_h",
        "collar_dip",
        "lining_h",
        "lace_len",
        "cap_x",
        "stripe_x",
        "strap_x",
    ):
        changes[name] = float(getattr(design, name) * (1.0 + rng.normal(0.0, 0.03)))
    optional = sorted(_FEATURES[design.style])
    flipped = set(design.features) ^ set(
        rng.choice(optional, size=rng.integers(1, 3), replace=False)
    )
    changes["features"] = frozenset(flipped | _ALWAYS.get(design.style, set()))
    if rng.random() < 0.3:
        changes["eyelets"] = int(np.clip(design.eyelets + rng.choice([-1, 1]), 2, 8))
    if rng.random() < 0.3:
        changes["stripes"] = int(np.clip(design.stripes + rng.choice([-1, 1]), 1, 4))
    return replace(design, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Geometry


def _v(x: float, y: float) -> np.ndarray:
    """A 2-D vector (for offsets added to points)."""
    return np.array([x, y])


def _spline(points: list[tuple[float, float]] | np.ndarray, n: int = 48) -> np.ndarray:
    """A smooth curve through ``points`` (chord-length parameterised cubic), ``n`` samples."""
    pts = np.asarray(points, dtype=np.float64)
    chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
    curve = make_interp_spline(chord, pts, k=min(3, len(pts) - 1))
    return curve(np.linspace(0.0, chord[-1], n))


def _bezier(p0: np.ndarray, control: np.ndarray, p1: np.ndarray, n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * control + t**2 * p1


def _ellipse(centre: np.ndarray, rx: float, ry: float, n: int = 16) -> np.ndarray:
    a = np.linspace(0.0, 2 * np.pi, n)
    return np.c_[centre[0] + rx * np.cos(a), centre[1] + ry * np.sin(a)]


def _arc(line: np.ndarray) -> np.ndarray:
    """Cumulative length along a polyline, from 0 at its first point."""
    step = np.diff(line, axis=0)
    arc = np.zeros(len(line))
    np.cumsum(np.hypot(step[:, 0], step[:, 1]), out=arc[1:])
    return arc


def _at_arc(line: np.ndarray, arc: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(s, arc, line[:, 0]), np.interp(s, arc, line[:, 1])], axis=1)


def _resample(line: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` along a polyline (ends kept)."""
    arc = _arc(line)
    if arc[-1] <= step:
        return line[[0, -1]]
    return _at_arc(line, arc, np.linspace(0.0, arc[-1], int(np.ceil(arc[-1] / step)) + 1))


def _offset(line: np.ndarray, distance: float | np.ndarray) -> np.ndarray:
    """Shift a polyline sideways by a distance (or one per point); positive is to the right
    of its direction when y points up."""
    tangent = np.gradient(line, axis=0)
    tangent /= np.hypot(tangent[:, 0], tangent[:, 1])[:, None] + 1e-12
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    return line + np.reshape(distance, (-1, 1)) * normal


def _along(line: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Points at the given fractions of a polyline's length."""
    arc = _arc(line)
    return _at_arc(line, arc, np.asarray(fractions) * arc[-1])


def _piece(line: np.ndarray, start: float, stop: float) -> np.ndarray:
    """The part of a polyline between two fractions of its length."""
    return _along(line, np.linspace(start, stop, max(4, int(len(line) * abs(stop - start)) + 2)))


def _y_at(line: np.ndarray, x: float) -> float:
    """Height of a polyline over ``x``, along its stretch where x increases."""
    keep = np.r_[True, np.diff(line[:, 0]) > 0]
    return float(np.interp(x, line[keep, 0], line[keep, 1]))


def _x_at(line: np.ndarray, y: float) -> float:
    """Where a polyline crosses height ``y`` (the crossing nearest its start)."""
    above = line[:, 1] >= y
    i = int(np.flatnonzero(above[:-1] != above[1:])[0])
    (x0, y0), (x1, y1) = line[i], line[i + 1]
    return float(x0 + (x1 - x0) * (y - y0) / (y1 - y0))


@dataclass
class _Region:
    """A filled area of the photo, painted with one of the shoe's materials."""

    name: str
    polygon: np.ndarray
    material: str
    clip: bool = False  # keep it inside the upper


@dataclass
class _Part:
    """Lines a sketcher may draw; ``paint`` says how they show on the photo."""

    lines: list[np.ndarray]
    salience: float  # probability that an average sketcher draws it
    outline: bool = False  # part of the silhouette: always drawn, first
    paint: str = "none"  # none | seam | stitch | lace | metal | dark
    merge: float = 0.0  # probability of drawing all lines as one stroke (zigzag, dashes -> line)


@dataclass
class _Shoe:
    regions: list[_Region] = field(default_factory=list)
    parts: list[_Part] = field(default_factory=list)


def _build(d: _Design) -> _Shoe:
    """Regions (for the photo) and lines (for the sketches) of one design."""

    def sole_top(x: np.ndarray | float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        spring = d.toe_spring * np.clip((d.x_ball - x) / d.x_ball, 0.0, 1.0) ** 2
        t = np.clip((x - d.x_ball) / (d.x_seat - d.x_ball), 0.0, 1.0)
        return d.sole_t + spring + d.heel_h * t * t * (3.0 - 2.0 * t)

    def at(x: float, above: float = 0.0) -> np.ndarray:
        return np.array([x, float(sole_top(x)) + above])

    shoe = _Shoe()
    f = d.features
    boot = d.style == "boot"
    tip = at(0.0, (0.5 - 0.3 * d.pointy) * d.toe_h)
    box = at(0.09 + 0.1 * d.pointy, d.toe_h)
    throat = at(d.throat_x, d.instep_h)
    front_pts = [at(0.035), tip, box, (box + throat) / 2 + _v(0.0, 0.012), throat]
    if boot:
        top_y = float(sole_top(d.x_seat)) + d.back_h
        shaft_front = np.array([d.throat_x + 0.04 + d.lean, top_y])
        shaft_back = np.array([0.98 + d.lean, top_y + 0.02])
        front_pts += [(throat + shaft_front) / 2 + _v(0.015, 0.0), shaft_front]
        front = _spline(front_pts, 64)
        opening = _spline(
            [shaft_front, (shaft_front + shaft_back) / 2 + _v(0, -0.01), shaft_back], 16
        )
        ankle = at(0.96, 0.22) + _v(0.5 * d.lean, 0.0)
        back = _spline(
            [shaft_back, (shaft_back + ankle) / 2 + _v(0.01, 0.0), ankle, at(1.0, 0.07), at(0.985)],
            40,
        )
    else:
        front = _spline(front_pts, 48)
        back_top = at(0.955, d.back_h)
        dip = (throat + back_top) / 2 - _v(0.0, d.collar_dip)
        opening = _spline([throat, dip, back_top], 24)
        back = _spline([back_top, at(1.0, 0.45 * d.back_h), at(0.985)], 20)
    xs = np.linspace(0.985, 0.035, 40)
    sole_line = np.c_[xs, sole_top(xs)]
    top_line = np.vstack([front, opening[1:], back[1:]])
    shoe.regions.append(_Region("upper", np.vstack([top_line, sole_line]), "upper"))
    shoe.parts.append(_Part([top_line], 1.0, outline=True))

    # The inside of the shoe, seen over the near side of the collar.
    rise = d.lining_h * np.sin(np.linspace(0.0, np.pi, len(opening)))[:, None] * [0.0, 1.0]
    far = opening + rise * (1.6 if boot else 1.0)
    shoe.regions.append(_Region("lining", np.vstack([opening, far[::-1]]), "lining"))
    shoe.parts.append(_Part([far], 0.6))

    # Sole and heel.
    xs = np.linspace(-0.012, 0.99, 60)
    bottom = sole_top(xs) - d.sole_t
    if d.heel == "flat":
        bottom = np.where(xs < d.x_ball, bottom, 0.0) + np.clip(xs - 0.95, 0, None) * 0.8
    tip_sole = np.array([-0.02, float(sole_top(0.0)) - 0.45 * d.sole_t])
    sole_outline = np.vstack([[xs[0], sole_top(xs[0])], tip_sole, np.c_[xs, bottom]])
    sole_outline = np.vstack([sole_outline, [0.99, float(sole_top(0.99))]])
    shoe.regions.append(
        _Region("sole", np.vstack([sole_outline, np.c_[xs[::-1], sole_top(xs[::-1])]]), "sole")
    )
    shoe.parts.append(_Part([sole_outline], 1.0, outline=True))
    shoe.parts.append(_Part([np.c_[xs[1:-1], sole_top(xs[1:-1])]], 0.9))
    if d.heel != "flat":
        seat_x = 1.0 - d.heel_len if d.heel != "wedge" else d.x_ball + 0.05
        hx = np.linspace(seat_x, 0.985, 20)
        under = np.c_[hx, sole_top(hx) - d.sole_t]
        back_foot = np.array([0.985 - (0.04 if d.heel == "stiletto" else 0.01), 0.0])
        if d.heel == "wedge":
            front_foot = np.array([d.x_ball + 0.12, 0.0])
        else:
            front_foot = back_foot - _v(d.heel_len * d.heel_foot, 0.0)
        bulge = 0.05 if d.heel == "stiletto" else 0.015
        front_edge = _bezier(front_foot, (front_foot + under[0]) / 2 + _v(bulge, 0.0), under[0])
        outline = np.vstack([front_edge, under[1:], back_foot, front_foot])
        material = "wedge" if d.heel == "wedge" else "heel"
        shoe.regions.insert(0, _Region("heel", outline, material))
        shoe.parts.append(_Part([np.vstack([under[-1], back_foot, front_foot, front_edge])], 1.0))
        if d.heel != "wedge":
            lift = np.array([[back_foot[0] - 0.004, 0.015], [front_foot[0] + 0.004, 0.015]])
            shoe.parts.append(_Part([lift], 0.25, paint="seam"))

    def clip_area(line: np.ndarray, toward: np.ndarray) -> np.ndarray:
        """A polygon: ``line`` plus a far-away point on one side, for clipping to the upper."""
        return np.vstack([line, line[-1] + toward, line[0] + toward])

    if "toe_cap" in f:
        x_top = d.cap_x - 0.05
        cap = _bezier(
            at(d.cap_x),
            np.array([d.cap_x + 0.02, _y_at(front, x_top) - 0.03]),
            np.array([x_top, _y_at(front, x_top)]),
        )
        shoe.regions.append(_Region("cap", clip_area(cap, np.array([-0.5, 0.0])), "accent", True))
        shoe.parts.append(_Part([cap], 0.75, paint="seam"))
        if "brogue" in f:
            holes = _along(_offset(cap, -0.018), np.linspace(0.1, 0.9, 8))
            shoe.parts.append(
                _Part([_ellipse(h, 0.005, 0.005, 6) for h in holes], 0.2, paint="dark", merge=0.5)
            )
    if "laces" in f:
        if boot:
            lacing = _piece(front, 0.62, 0.97)
        else:
            start = np.searchsorted(front[:, 0], d.throat_x - d.lace_len) / len(front)
            lacing = _piece(front, start, 1.0)
        eyes = _along(_offset(lacing, 0.025), np.linspace(0.08, 0.95, d.eyelets))
        stay = _offset(lacing, 0.05)
        shoe.parts.append(_Part([stay], 0.65, paint="seam"))
        rims = [_ellipse(e, 0.009, 0.009, 8) for e in eyes]
        shoe.parts.append(_Part(rims, 0.2, paint="metal"))
        over = _along(_offset(lacing, -0.012), np.linspace(0.08, 0.95, d.eyelets))
        bars = [np.vstack([eyes[i], over[i + 1]]) for i in range(d.eyelets - 1)]
        bars += [np.vstack([eyes[i + 1], over[i]]) for i in range(d.eyelets - 1)]
        shoe.parts.append(_Part(bars, 0.7, paint="lace", merge=0.4))
        if not boot:
            tongue = _spline(
                [
                    throat - _v(0.01, 0),
                    throat + _v(0.01, 0.03),
                    throat + _v(0.06, 0.035),
                    opening[6],
                ],
                16,
            )
            shoe.regions.insert(1, _Region("tongue", np.vstack([tongue, throat]), "upper"))
            shoe.parts.append(_Part([tongue], 0.8))
    if "stripes" in f:
        for i in range(d.stripes):
            x0 = d.stripe_x + 0.045 * i
            foot = np.array([x0, float(sole_top(x0)) + 0.01])
            head = foot + _v(-d.stripe_slant, d.instep_h * 0.9)
            band = np.vstack([foot, head, head + _v(0.022, 0), foot + _v(0.022, 0)])
            shoe.regions.append(_Region(f"stripe{i}", band, "accent", clip=True))
            shoe.parts.append(_Part([band[:2], band[2:]], 0.75))
    if "midsole" in f:
        xs = np.linspace(0.0, 0.97, 30)
        mid = np.c_[xs, np.where(xs < d.x_ball, sole_top(xs) - d.sole_t, 0.0) + 0.45 * d.sole_t]
        low = np.vstack([mid, [0.99, 0.0], [0.0, sole_top(0.0) - d.sole_t]])
        shoe.regions.append(_Region("outsole", low, "sole2"))
        shoe.parts.append(_Part([mid], 0.6))
    if "tread" in f:
        ticks = [np.array([[x, 0.0], [x, 0.3 * d.sole_t]]) for x in np.arange(d.x_ball, 0.95, 0.05)]
        shoe.parts.append(_Part(ticks, 0.2, paint="seam", merge=0.3))
    if "stitching" in f:
        xs = np.linspace(0.06, 0.95, 40)
        seam = np.c_[xs, sole_top(xs) + 0.018]
        dashes = [seam[i : i + 2] for i in range(0, len(seam) - 1, 2)]
        shoe.parts.append(_Part(dashes, 0.3, paint="stitch", merge=0.6))
    if "heel_counter" in f:
        upper_end = back[np.argmin(np.abs(back[:, 1] - (sole_top(0.9) + 0.6 * d.back_h)))]
        counter = _bezier(at(0.74), np.array([0.8, sole_top(0.8) + 0.55 * d.back_h]), upper_end)
        shoe.regions.append(
            _Region("counter", clip_area(counter, np.array([0.5, 0.0])), "accent", True)
        )
        shoe.parts.append(_Part([counter], 0.5, paint="seam"))
    if "quarter_seam" in f:
        seam = _bezier(throat, throat + _v(0.02, -0.05), at(d.throat_x + 0.07))
        shoe.parts.append(_Part([seam], 0.5, paint="seam"))
    if "apron" in f:
        start = np.searchsorted(front[:, 0], 0.12) / len(front)
        apron = _offset(_piece(front, start, 0.97), 0.035)
        shoe.parts.append(_Part([apron], 0.7, paint="seam"))
    if "zipper" in f:
        zx = 0.86 + d.lean
        zip_line = np.array([[zx, float(sole_top(0.86)) + 0.08], [zx + 0.01, top_y - 0.01]])
        shoe.parts.append(_Part([zip_line], 0.55, paint="metal"))
    if "pull_tab" in f:
        base = back[0] if not boot else shaft_back
        loop = np.vstack(
            [
                base + _v(-0.035, -0.01),
                base + _v(-0.03, 0.045),
                base + _v(0.005, 0.05),
                base + _v(0.012, -0.02),
            ]
        )
        shoe.regions.insert(0, _Region("tab", loop, "accent"))
        shoe.parts.append(_Part([loop], 0.5))
    if "bow" in f:
        knot = throat + _v(-0.045, 0.0) if d.instep_h - d.toe_h < 0.05 else box + _v(0.05, -0.005)
        wing = [
            np.vstack([knot, knot + _v(-0.05, 0.03), knot + _v(-0.05, -0.02), knot]),
            np.vstack([knot, knot + _v(0.045, 0.03), knot + _v(0.045, -0.02), knot]),
        ]
        for i, w in enumerate(wing):
            shoe.regions.append(_Region(f"bow{i}", w, "accent"))
        shoe.parts.append(_Part(wing, 0.7))
    if "strap" in f:
        _strap(shoe, d, front, opening, back, at, boot)
    return shoe


def _strap(
    shoe: _Shoe,
    d: _Design,
    front: np.ndarray,
    opening: np.ndarray,
    back: np.ndarray,
    at: Callable[[float, float], np.ndarray],
    boot: bool,
) -> None:
    """A strap of the style's kind (instep, ankle, penny or shaft strap), with a buckle."""
    w = d.strap_w
    if boot:
        y = at(d.x_seat, 0.0)[1] + d.back_h * (0.45 + 0.4 * d.strap_x)
        x0, x1 = _x_at(front, y), _x_at(back, y + 0.02)
        centre = np.array([[x0, y], [x1, y + 0.02]])
        band = np.vstack([centre + _v(0, w / 2), centre[::-1] - _v(0, w / 2)])
        buckle_at = centre[0] + _v(0.3 * (x1 - x0), 0.3 * 0.02)
    elif d.style == "loafer":
        x0 = d.throat_x - 0.14 - 0.05 * d.strap_x
        top0, top1 = np.array([x0, _y_at(front, x0) + 0.01]), np.array([x0 + 0.1, 0.0])
        top1[1] = _y_at(front, top1[0]) + 0.01
        low = [top1 + _v(0.005, -0.6 * d.instep_h), top0 + _v(0.02, -0.55 * d.instep_h)]
        band = np.vstack([top0, top1, *low])
        buckle_at = (band[0] + band[1] + band[2] + band[3]) / 4
    else:  # an instep strap over the opening (mary janes) or an ankle strap from the back
        if d.style == "mary_jane":
            start = opening[int(len(opening) * (0.25 + 0.25 * d.strap_x))]
            end, lift = start + _v(0.12, 0.05), _v(-0.01, 0.16)
        else:
            start = back[0] + _v(-0.01, -0.015)
            end, lift = start + _v(-0.24, 0.07), _v(0.0, 0.05)
        centre = _bezier(start, (start + end) / 2 + lift, end, 16)
        band = np.vstack([_offset(centre, -w / 2), _offset(centre, w / 2)[::-1]])
        buckle_at = centre[-3] if d.style != "mary_jane" else centre[2]
    shoe.regions.append(_Region("strap", band, "strap", clip=d.style == "loafer"))
    edges = [band[: len(band) // 2], band[len(band) // 2 :]]
    shoe.parts.append(_Part(edges if len(band) > 4 else [band], 0.8))
    if "buckle" in d.features:
        r = 0.6 * w + 0.008
        frame = np.vstack(
            [
                buckle_at + _v(-r, -r),
                buckle_at + _v(r, -r),
                buckle_at + _v(r, r),
                buckle_at + _v(-r, r),
                buckle_at + _v(-r, -r),
            ]
        )
        shoe.parts.append(_Part([frame], 0.55, paint="metal"))


# ---------------------------------------------------------------------------------------------
# Photo rendering

_COLOURS = {
    "black": (0.07, 0.07, 0.08),
    "brown": (0.3, 0.17, 0.09),
    "tan": (0.72, 0.5, 0.3),
    "cognac": (0.58, 0.28, 0.11),
    "burgundy": (0.42, 0.07, 0.11),
    "navy": (0.1, 0.13, 0.3),
    "grey": (0.5, 0.5, 0.52),
    "white": (0.94, 0.93, 0.91),
    "red": (0.78, 0.1, 0.1),
    "pink": (0.94, 0.68, 0.72),
    "beige": (0.85, 0.77, 0.64),
    "olive": (0.38, 0.4, 0.22),
    "blue": (0.2, 0.4, 0.75),
    "nude": (0.87, 0.68, 0.57),
}
_TEXTURES = {
    "sneaker": ("canvas", "knit", "smooth", "suede"),
    "oxford": ("smooth", "smooth", "patent"),
    "loafer": ("suede", "smooth"),
    "pump": ("patent", "smooth", "suede"),
    "mary_jane": ("patent", "smooth"),
    "boot": ("smooth", "suede"),
    "wedge": ("smooth", "suede", "canvas"),
}


@dataclass
class _Material:
    colour: np.ndarray
    texture: str  # smooth | patent | suede | canvas | knit | rubber | jute
    gloss: float


def _palette(style: str, rng: np.random.Generator) -> dict[str, _Material]:
    def colour(*names: str) -> np.ndarray:
        base = np.array(_COLOURS[str(rng.choice(names))])
        return np.clip(base * rng.uniform(0.9, 1.1, 3), 0.0, 1.0)

    names = tuple(_COLOURS)
    texture = str(rng.choice(_TEXTURES[style]))
    gloss = {"patent": 0.45, "smooth": 0.15}.get(texture, 0.03)
    upper = _Material(colour(*names), texture, gloss)
    accent_colour = colour(*names) if rng.random() < 0.5 else upper.colour * rng.uniform(0.6, 0.85)
    sole_names = (
        ("white", "white", "black", "beige", "tan")
        if style == "sneaker"
        else ("black", "brown", "tan", "black")
    )
    sole = _Material(colour(*sole_names), "rubber", 0.08)
    heel = (
        upper if rng.random() < 0.5 else _Material(colour("black", "brown", "tan"), "smooth", 0.3)
    )
    return {
        "upper": upper,
        "accent": _Material(accent_colour, texture if rng.random() < 0.6 else "smooth", gloss),
        "strap": upper if rng.random() < 0.7 else _Material(colour(*names), "smooth", 0.2),
        "lining": _Material(colour("beige", "tan", "grey", "black", "nude"), "smooth", 0.0),
        "sole": sole,
        "sole2": _Material(colour("black", "tan", "grey", "brown"), "rubber", 0.05),
        "heel": heel,
        "wedge": _Material(colour("beige", "tan"), "jute", 0.0) if rng.random() < 0.6 else heel,
        "lace": _Material(
            colour("white", "black", "beige") if rng.random() < 0.7 else upper.colour, "smooth", 0.0
        ),
        "metal": _Material(colour("grey", "beige") * 1.4, "smooth", 0.6),
    }


_TEXTURES_FX: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    # (grain, cloud, x pixels, y pixels) -> brightness factor
    "smooth": lambda g, c, x, y: 1 + 0.02 * g + 0.03 * c,
    "patent": lambda g, c, x, y: 1 + 0.01 * g,
    "suede": lambda g, c, x, y: 1 + 0.07 * g + 0.04 * c,
    "canvas": lambda g, c, x, y: 1 + 0.08 * np.sin(x * 2.2) * np.sin(y * 2.2) + 0.04 * g,
    "knit": lambda g, c, x, y: 1 + 0.1 * np.sin((x + y) * 1.4) + 0.04 * g,
    "rubber": lambda g, c, x, y: 1 + 0.015 * g,
    "jute": lambda g, c, x, y: 1 + 0.16 * np.sin(y * 1.3 + 2 * c) + 0.08 * g,
}


class _Noise:
    """Grain and cloud noise shared by all photos; each photo takes a random window of it."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.grain = rng.normal(0.0, 1.0, (2 * size, 2 * size)).astype(np.float32)
        small = Image.fromarray(rng.normal(0.0, 1.0, (96, 96)).astype(np.float32))
        big = small.resize((2 * size, 2 * size), Image.Resampling.BICUBIC)
        self.cloud = np.asarray(big, np.float32)


class _Canvas:
    """A supersampled RGB float image; every layer is drawn in the bounding box it covers."""

    def __init__(
        self, size: int, matrix: np.ndarray, noise: _Noise, rng: np.random.Generator
    ) -> None:
        self.size = size
        self.matrix = matrix
        shade = rng.uniform(0.93, 1.0) if rng.random() < 0.3 else 1.0
        self.rgb = np.full((size, size, 3), shade, dtype=np.float32)
        oy, ox = rng.integers(0, size, 2)
        self.grain = noise.grain[oy : oy + size, ox : ox + size]
        self.cloud = noise.cloud[oy : oy + size, ox : ox + size]
        self.upper: np.ndarray | None = None  # full-size mask of the upper, for clipping

    def px(self, line: np.ndarray) -> np.ndarray:
        return line @ self.matrix[:, :2].T + self.matrix[:, 2]

    def layer(
        self, shapes: list[np.ndarray], width: float = 0.0, pad: int = 14
    ) -> tuple[np.ndarray, tuple[slice, slice]]:
        """Coverage of filled polygons (``width == 0``) or of lines ``width`` pixels wide, in
        the window ``(rows, cols)`` of the canvas that they touch (plus ``pad``)."""
        pts = [self.px(shape) for shape in shapes]
        lo = np.floor(np.min([p.min(axis=0) for p in pts], axis=0)).astype(int) - pad
        hi = np.ceil(np.max([p.max(axis=0) for p in pts], axis=0)).astype(int) + pad
        lo, hi = np.clip(lo, 0, self.size), np.clip(hi, 0, self.size)
        image = Image.new("L", (max(hi[0] - lo[0], 1), max(hi[1] - lo[1], 1)), 0)
        draw = ImageDraw.Draw(image)
        for p in pts:
            xy = [(float(x), float(y)) for x, y in p - lo]
            if width:
                draw.line(xy, fill=255, width=max(1, round(width)), joint="curve")
            else:
                draw.polygon(xy, fill=255)
        window = (slice(lo[1], lo[1] + image.height), slice(lo[0], lo[0] + image.width))
        return np.asarray(image, np.float32) / 255.0, window

    def paint(
        self, mask: np.ndarray, window: tuple[slice, slice], material: _Material, relief: bool
    ) -> None:
        """Fill ``mask`` with a textured material, shaded darker towards its edges and bottom
        and with a specular band for glossy materials."""
        rows_hit = (mask > 0).any(axis=1)
        if not rows_hit.any():
            return
        rows, cols = window
        y = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None]
        x = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :]
        ys = y[rows_hit]
        top = (y - ys.min()) / max(float(ys.max() - ys.min()), 1.0)
        shade = _TEXTURES_FX[material.texture](self.grain[window], self.cloud[window], x, y)
        soft = mask
        if relief:
            blurred = Image.fromarray((mask * 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(0.014 * self.size)
            )
            soft = np.asarray(blurred, np.float32) / 255.0
            shade = shade * (0.6 + 0.4 * np.sqrt(soft)) * (1.12 - 0.3 * top)
        colour = material.colour.astype(np.float32) * shade[..., None]
        if material.gloss:
            band = material.gloss * np.exp(-(((top - 0.25) / 0.12) ** 2)) * soft**2
            colour += band[..., None] * (1.0 - colour)
        np.clip(colour, 0.0, 1.0, out=colour)
        region = self.rgb[window]
        region += (colour - region) * mask[..., None]

    def darken(self, mask: np.ndarray, window: tuple[slice, slice], amount: float) -> None:
        self.rgb[window] *= 1.0 - amount * mask[..., None]

    def shadow(self, shapes: list[np.ndarray], strength: float) -> None:
        """A soft elliptic floor shadow under the lowest points of ``shapes``."""
        pts = np.vstack([self.px(s) for s in shapes])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        centre = np.array([(lo[0] + hi[0]) / 2, hi[1] - 0.01 * self.size])
        radius = np.array([(hi[0] - lo[0]) / 2, 0.03 * self.size])
        r0 = int(np.clip(centre[1] - 3 * radius[1], 0, self.size))
        r1 = int(np.clip(centre[1] + 3 * radius[1], r0, self.size))
        y = (np.arange(r0, r1, dtype=np.float32)[:, None] - centre[1]) / radius[1]
        x = (np.arange(self.size, dtype=np.float32)[None, :] - centre[0]) / radius[0]
        fall = np.exp(-(y**2)) * np.clip(1.3 - np.abs(x) ** 4, 0.0, 1.0)
        self.rgb[r0:r1] *= 1.0 - strength * fall[..., None]

    def image(self) -> Image.Image:
        rgb = (np.clip(self.rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(rgb).reduce(self.size // CANVAS)


def _render_photo(
    shoe: _Shoe, style: str, matrix: np.ndarray, noise: _Noise, rng: np.random.Generator
) -> Image.Image:
    """A product photo of ``shoe`` placed by ``matrix`` (canonical -> canvas pixels)."""
    palette = _palette(style, rng)
    canvas = _Canvas(CANVAS * _SUPERSAMPLE, matrix * _SUPERSAMPLE, noise, rng)
    canvas.shadow([r.polygon for r in shoe.regions if not r.clip], rng.uniform(0.25, 0.45))
    for region in shoe.regions:
        mask, window = canvas.layer([region.polygon])
        if region.name == "upper":
            canvas.upper = np.zeros((canvas.size, canvas.size), np.float32)
            canvas.upper[window] = mask
        elif region.clip and canvas.upper is not None:
            mask = mask * canvas.upper[window]
        canvas.paint(mask, window, palette[region.material], relief=region.name != "lining")
    width = _SUPERSAMPLE * rng.uniform(0.8, 1.3)
    thread = _Material(np.clip(palette["upper"].colour + 0.35, 0.0, 1.0), "smooth", 0.0)
    for part in shoe.parts:
        if part.paint == "lace":
            canvas.paint(*canvas.layer(part.lines, 2.2 * width), palette["lace"], relief=False)
        elif part.paint == "metal":
            canvas.paint(*canvas.layer(part.lines, 1.5 * width), palette["metal"], relief=False)
        elif part.paint == "stitch":
            canvas.paint(*canvas.layer(part.lines, 0.8 * width), thread, relief=False)
        elif part.paint in ("seam", "dark"):
            line_width = width if part.paint == "seam" else 2 * width
            canvas.darken(*canvas.layer(part.lines, line_width), 0.45)
    return canvas.image()


def _placement(shoe: _Shoe, rng: np.random.Generator) -> np.ndarray:
    """A ``(2, 3)`` canonical -> canvas matrix: varied scale, position, slight tilt, toe left
    or (less often) right."""
    pts = np.vstack([r.polygon for r in shoe.regions if not r.clip])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = hi - lo
    scale = CANVAS * min(rng.uniform(0.78, 0.92) / size[0], 0.9 / size[1])
    angle = np.deg2rad(rng.normal(0.0, 2.0))
    flip = -1.0 if rng.random() < 0.2 else 1.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = rotation @ np.diag([flip * scale, -scale])
    room = np.maximum((CANVAS - scale * size) / 2 - 4.0, 0.0)
    centre = CANVAS / 2 + rng.uniform(-1.0, 1.0, 2) * np.minimum(room, 10.0)
    return np.c_[linear, centre - linear @ ((lo + hi) / 2)]


# ---------------------------------------------------------------------------------------------
# Sketching


@dataclass(frozen=True)
class _Hand:
    """One sketcher's habits for one drawing."""

    jitter: float  # amplitude of slow wobble, pixels
    detail: float  # scales the probability of drawing each detail
    epsilon: float  # simplification tolerance, pixels
    overshoot: float  # probability of running past a stroke end
    pieces: float  # pixels of outline per extra stroke break


def _wobble(line: np.ndarray, hand: _Hand, rng: np.random.Generator) -> np.ndarray:
    """Resample a pixel polyline and displace it sideways by a slow random wave plus tremor."""
    dense = _resample(line, 4.0)
    arc = _arc(dense)
    wave = np.zeros(len(dense))
    for _ in range(3):
        wavelength = rng.uniform(40.0, 160.0)
        wave += np.sin(2 * np.pi * arc / wavelength + rng.uniform(0, 2 * np.pi))
    tremor = np.convolve(rng.normal(0.0, 0.35, len(dense)), np.ones(3) / 3, mode="same")
    return _offset(dense, hand.jitter * wave / 2 + tremor) if len(dense) > 2 else dense


def _human_strokes(
    line: np.ndarray, hand: _Hand, rng: np.random.Generator, outline: bool
) -> list[np.ndarray]:
    """How a person draws one polyline: maybe in several pieces with gaps or overlaps, each
    piece shifted a little, sometimes backwards, sometimes over-shooting its ends."""
    length = float(_arc(line)[-1])
    cuts = int(rng.poisson(length / hand.pieces)) if length > 40 else 0
    bounds = np.sort(np.r_[0.0, rng.uniform(0.15, 0.85, cuts), 1.0])
    strokes = []
    for a, b in itertools.pairwise(bounds):
        overlap = rng.uniform(-3.0, 5.0) / max(length, 1.0)
        piece = _piece(line, max(a - overlap * (a > 0), 0.0), min(b + overlap * (b < 1), 1.0))
        piece = piece + rng.normal(0.0, 0.8, 2)
        for end in (0, -1):
            if rng.random() < hand.overshoot:
                direction = piece[end] - piece[1 if end == 0 else -2]
                norm = np.linalg.norm(direction)
                if norm > 1e-6:
                    extra = piece[end] + direction / norm * rng.uniform(1.5, 6.0)
                    piece = np.vstack([extra, piece] if end == 0 else [piece, extra])
        if rng.random() < (0.15 if outline else 0.4):
            piece = piece[::-1]
        strokes.append(_wobble(piece, hand, rng))
    return strokes


def _to_canvas(matrix: np.ndarray, line: np.ndarray) -> np.ndarray:
    return line @ matrix[:, :2].T + matrix[:, 2]


def _from_memory(strokes: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Distort a drawing as drawing from memory does (the QMUL protocol shows the photo, then
    hides it): proportions, tilt and placement drift, and a smooth warp bends the shapes."""
    centre = np.vstack(strokes).mean(axis=0)
    angle = np.deg2rad(rng.normal(0.0, 2.5))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    stretch = np.eye(2) + rng.normal(0.0, 0.04, (2, 2))
    linear = rotation @ stretch
    shift = centre + rng.normal(0.0, 4.0, 2)
    waves = [
        (rng.uniform(0.0, 6.0), rng.normal(size=2), rng.uniform(150.0, 300.0), rng.uniform(0, 7))
        for _ in range(2)
    ]
    warped = []
    for stroke in strokes:
        moved = (stroke - centre) @ linear.T + shift
        for axis, (amplitude, direction, wavelength, phase) in enumerate(waves):
            along = moved @ (direction / np.linalg.norm(direction))
            moved[:, axis] += amplitude * np.sin(2 * np.pi * along / wavelength + phase)
        warped.append(moved)
    return warped


def _draw_sketch(shoe: _Shoe, matrix: np.ndarray, rng: np.random.Generator) -> Sketch:
    """A quick human-like vector sketch of ``shoe``, aligned with its photo."""
    hand = _Hand(
        jitter=rng.uniform(0.4, 2.2),
        detail=rng.uniform(0.6, 1.3),
        epsilon=rng.uniform(0.4, 1.4),
        overshoot=rng.uniform(0.1, 0.6),
        pieces=rng.uniform(150.0, 400.0),
    )
    drawn: list[tuple[float, list[np.ndarray]]] = []
    for part in shoe.parts:
        if not part.outline and rng.random() > part.salience * hand.detail:
            continue
        lines = [_to_canvas(matrix, line) for line in part.lines]
        if rng.random() < part.merge:
            lines = [np.vstack(lines)]
        strokes = [s for line in lines for s in _human_strokes(line, hand, rng, part.outline)]
        priority = 2.0 + rng.random() if part.outline else part.salience + rng.normal(0.0, 0.3)
        drawn.append((priority, strokes))
    drawn.sort(key=lambda item: -item[0])
    strokes = _from_memory([s for _, group in drawn for s in group], rng)
    strokes = [np.clip(s, 0.0, CANVAS - 1.0) for s in strokes]
    return simplify(Sketch.from_strokes(strokes, CANVAS, CANVAS), hand.epsilon)


# ---------------------------------------------------------------------------------------------
# The data set on disk


def _designs(n: int, rng: np.random.Generator) -> list[_Design]:
    """``n`` designs in families of 2-5 near variants, in random order."""
    designs: list[_Design] = []
    while len(designs) < n:
        base = _sample_design(rng)
        designs += [base, *(_variant(base, rng) for _ in range(int(rng.integers(1, 5))))]
    return [designs[i] for i in rng.permutation(len(designs))[:n]]


def _generate(folder: Path, params: dict[str, float | int]) -> None:
    """Write photos, the sketch pickle and the marker into an empty ``folder``."""
    rng = np.random.default_rng(int(params["seed"]))
    n = int(params["n_photos"])
    n_test = max(1, round(float(params["test_fraction"]) * n))
    test = set(rng.permutation(n)[:n_test].tolist())
    noise = _Noise(CANVAS * _SUPERSAMPLE, rng)
    (folder / "photo").mkdir()
    sketches: dict[str, np.ndarray] = {}
    for i, design in enumerate(_designs(n, rng)):
        photo_id = f"shoe_{i:04d}"
        shoe = _build(design)
        matrix = _placement(shoe, rng)
        photo = _render_photo(shoe, design.style, matrix, noise, rng)
        photo.save(folder / "photo" / f"{photo_id}.png", compress_level=1)
        split = "test" if i in test else "train"
        for k in range(1, int(params["sketches_per_photo"]) + 1):
            sketch = _draw_sketch(shoe, matrix, rng)
            sketches[f"{split}/{photo_id}_{k}"] = sketch.points.astype(np.float64)
    with (folder / PICKLE_NAME).open("wb") as stream:
        pickle.dump(sketches, stream, protocol=4)
    (folder / MARKER).write_text(json.dumps(params, indent=1), encoding="utf-8")


def _complete(root: Path, params: dict[str, float | int]) -> bool:
    try:
        return json.loads((root / MARKER).read_text(encoding="utf-8")) == params
    except (OSError, ValueError):
        return False


def ensure_synthetic(
    root: Path | None = None,
    *,
    n_photos: int = 200,
    sketches_per_photo: int = 3,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> Path:
    """The folder of the built-in synthetic data set (QMUL-Shoe-V2 layout), generated if needed.

    Without ``root`` it lives in the cache folder under a name made of the parameters. A data set
    is written to a temporary sibling folder and renamed into place when complete, so an
    interrupted run never leaves half of one. Same parameters, same files.
    """
    if n_photos < 2 or sketches_per_photo < 1 or not 0.0 < test_fraction < 1.0:
        raise ValueError(
            "need n_photos >= 2, sketches_per_photo >= 1 and 0 < test_fraction < 1, got "
            f"{n_photos}, {sketches_per_photo}, {test_fraction}"
        )
    params: dict[str, float | int] = {
        "generator_version": GENERATOR_VERSION,
        "n_photos": n_photos,
        "sketches_per_photo": sketches_per_photo,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    if root is None:
        name = f"v{GENERATOR_VERSION}-n{n_photos}-k{sketches_per_photo}-t{test_fraction:g}-s{seed}"
        root = cache_dir() / "synthetic" / name
    root = Path(root)
    if _complete(root, params):
        return root
    if root.exists() and any(root.iterdir()):
        raise DataError(
            root,
            "folder is not empty and holds no synthetic data set made with these "
            "parameters; choose an empty or new folder",
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _generate(staging, params)
        os.replace(staging, root)  # atomic; replaces an empty folder
    except OSError:
        if not _complete(root, params):  # unless another process finished it first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
