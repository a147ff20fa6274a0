"""Sketch readers and writers: QMUL stroke pickles, sketch-rnn ``.npz``, SVG, stroke JSON and PNG.

Every reader returns :class:`~fgsbir.sketch.strokes.Sketch` objects and raises
:class:`~fgsbir.errors.DataError` naming the file (and key) for anything missing, unreadable,
malformed or empty. Pickles (QMUL files, sketch-rnn object arrays) are unpickled with an allow-list
of NumPy array constructors only, so a hostile file cannot run code.
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from xml.etree import ElementTree

import numpy as np
import svgelements
from PIL import Image, UnidentifiedImageError

from fgsbir.errors import DataError
from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch, stroke3_to_points
from fgsbir.sketch.trace import trace_raster

QMUL_CANVAS = 256.0
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Vector elements read from SVGs; filled shapes (rect, circle, ...) are backgrounds, not strokes.
_SVG_STROKE_ELEMENTS = (svgelements.Path, svgelements.Polyline, svgelements.SimpleLine)
_SVG_CURVE_STEP = 2.0  # canvas units between samples along a curve segment
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only constructs NumPy arrays, dtypes and scalars (plus plain containers)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays allowed)")
        return super().find_class(module, name)


def _load_arrays_pickle(stream: IO[bytes]) -> Any:
    return _ArrayUnpickler(stream, encoding="latin1").load()


@contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn the errors a broken or missing file produces into a DataError naming the file."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(path, "file not found") from err
    except (OSError, EOFError, ValueError, TypeError, KeyError, pickle.UnpicklingError) as err:
        raise DataError(path, f"cannot read {what}: {err}") from err
    except (ElementTree.ParseError, UnidentifiedImageError, zipfile.BadZipFile) as err:
        raise DataError(path, f"not a valid {what}: {err}") from err


def _check_points(path: Path, key: str, value: Any) -> np.ndarray:
    """Validate a QMUL points array: numeric, ``(N, 3)``, non-empty, finite, pen flags 0/1."""
    where = f"key {key!r}: "
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(path, f"{where}not a numeric array ({err})") from err
    if points.ndim != 2 or points.shape[1] != 3:
        raise DataError(path, f"{where}expected an (N, 3) array, got shape {points.shape}")
    if len(points) == 0:
        raise DataError(path, f"{where}empty sketch")
    if not np.isfinite(points).all():
        raise DataError(path, f"{where}contains NaN or infinite values")
    if not np.isin(points[:, 2], (0.0, 1.0)).all():
        raise DataError(path, f"{where}pen flags (third column) must be 0 or 1")
    return points


def read_qmul_pickle(path: str | Path) -> dict[str, Sketch]:
    """Read a QMUL-Shoe/Chair-V2 coordinate pickle: ``{key: (N, 3) points on a 256 canvas}``."""
    path = Path(path)
    with _reading(path, "QMUL coordinate pickle"), path.open("rb") as stream:
        data = _load_arrays_pickle(stream)
    if not isinstance(data, dict):
        raise DataError(path, f"expected a dict of sketches, got {type(data).__name__}")
    if not data:
        raise DataError(path, "no sketches in file")
    return {
        str(key): Sketch(_check_points(path, str(key), value), QMUL_CANVAS, QMUL_CANVAS)
        for key, value in data.items()
    }


_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``; object arrays are unpickled with the array-only unpickler."""
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as stream:
                version = np.lib.format.read_magic(stream)
                if version not in _NPY_HEADER_READERS:
                    raise ValueError(f"member {name}: unsupported .npy version {version}")
                _, _, dtype = _NPY_HEADER_READERS[version](stream)
                if dtype.hasobject:
                    arrays[name.removesuffix(".npy")] = _load_arrays_pickle(stream)
                else:
                    with archive.open(name) as again:
                        arrays[name.removesuffix(".npy")] = np.lib.format.read_array(again)
    return arrays


def _centred_canvas(points: np.ndarray, margin: float = 0.05) -> Sketch:
    """Place points of unknown canvas in the middle of a square canvas with a relative margin."""
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    side = max(float((high - low).max()) * (1.0 + 2.0 * margin), 1.0)
    shifted = points.copy()
    shifted[:, :2] += side / 2.0 - (low + high) / 2.0
    return Sketch(shifted, side, side)


def read_sketchrnn_npz(path: str | Path) -> dict[str, list[Sketch]]:
    """Read a sketch-rnn / QuickDraw ``.npz`` of stroke-3 arrays (``train``, ``valid``, ``test``).

    The offsets have no canvas, so each sketch is centred on a square canvas just larger than it.
    """
    path = Path(path)
    with _reading(path, "sketch-rnn .npz"):
        arrays = _npz_arrays(path)
    if not arrays:
        raise DataError(path, "no arrays in file")
    result: dict[str, list[Sketch]] = {}
    for split, sketches in arrays.items():
        result[split] = []
        for i, stroke3 in enumerate(sketches):
            points = stroke3_to_points(_check_points(path, f"{split}[{i}]", stroke3))
            result[split].append(_centred_canvas(points))
    return result


def _sample_segment(segment: svgelements.PathSegment) -> np.ndarray:
    """Points along one SVG path segment, excluding its start: the end of a line, or samples
    about ``_SVG_CURVE_STEP`` apart along a curve."""
    if isinstance(segment, svgelements.Move):
        return np.array([[segment.end.x, segment.end.y]])
    if isinstance(segment, (svgelements.Line, svgelements.Close)):
        return np.array([[segment.end.x, segment.end.y]])
    coarse = np.asarray(segment.npoint(np.linspace(0.0, 1.0, 9)), dtype=np.float64)
    length = float(np.linalg.norm(np.diff(coarse, axis=0), axis=1).sum())
    count = min(max(math.ceil(length / _SVG_CURVE_STEP), 1), 64)
    t = np.linspace(0.0, 1.0, count + 1)[1:]
    return np.asarray(segment.npoint(t), dtype=np.float64)


def _svg_strokes(element: svgelements.Shape) -> list[np.ndarray]:
    path = element if isinstance(element, svgelements.Path) else svgelements.Path(element)
    strokes = []
    for subpath in path.as_subpaths():
        samples = [_sample_segment(seg) for seg in subpath if seg.end is not None]
        if samples:
            strokes.append(np.concatenate(samples))
    return strokes


def read_svg(path: str | Path) -> Sketch:
    """Read every path, polyline and line of an SVG (transforms applied) as strokes.

    The canvas is the SVG's ``width x height`` (or its viewBox size); with neither, the canvas
    reaches from the origin to the drawing's far corner.
    """
    path = Path(path)
    with _reading(path, "SVG file"):
        svg = svgelements.SVG.parse(str(path))
        strokes = [
            stroke
            for element in svg.elements()
            if isinstance(element, _SVG_STROKE_ELEMENTS)
            for stroke in _svg_strokes(element)
        ]
    if not strokes:
        raise DataError(path, "no strokes (path, polyline or line elements) in SVG")
    xy = np.concatenate(strokes)
    if not np.isfinite(xy).all():
        raise DataError(path, "SVG coordinates are not finite")
    width, height = svg.width, svg.height
    if all(svg.values.get(key) is None for key in ("width", "height", "viewBox")):
        width, height = (math.ceil(v) for v in np.maximum(xy.max(axis=0), 1.0))
    if not (0 < width < math.inf and 0 < height < math.inf):
        raise DataError(path, f"canvas must be positive and finite, got {width} x {height}")
    return Sketch.from_strokes(strokes, width, height)


def read_stroke_json(path: str | Path) -> Sketch:
    """Read strokes from JSON: ``[[[x, y], ...], ...]`` or ``{"width", "height", "strokes"}``.

    The list form is on a 256 x 256 canvas; extra per-point values (e.g. time) are ignored.
    """
    path = Path(path)
    with _reading(path, "stroke JSON"):
        data = json.loads(path.read_text(encoding="utf-8"))
    width = height = QMUL_CANVAS
    if isinstance(data, dict):
        if "strokes" not in data:
            raise DataError(path, 'JSON object has no "strokes" list')
        try:
            width, height = float(data.get("width", width)), float(data.get("height", height))
        except (TypeError, ValueError) as err:
            raise DataError(path, f"width/height must be numbers ({err})") from err
        if not (width > 0 and height > 0 and math.isfinite(width * height)):
            raise DataError(path, f"canvas must be positive and finite, got {width} x {height}")
        data = data["strokes"]
    if not isinstance(data, list):
        raise DataError(path, "expected a list of strokes")
    strokes = []
    for i, stroke in enumerate(data):
        try:
            xy = np.asarray(stroke, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DataError(path, f"stroke {i}: not a list of [x, y] points ({err})") from err
        if xy.size == 0:
            continue
        if xy.ndim != 2 or xy.shape[1] < 2 or not np.isfinite(xy[:, :2]).all():
            raise DataError(path, f"stroke {i}: not a list of finite [x, y] points")
        strokes.append(xy[:, :2])
    sketch = Sketch.from_strokes(strokes, width, height)
    if sketch.is_empty:
        raise DataError(path, "no points in any stroke")
    return sketch


def read_png_sketch(path: str | Path, **trace_options: Any) -> Sketch:
    """Read a raster line drawing (dark ink on light paper) and trace it into strokes.

    ``trace_options`` go to :func:`fgsbir.sketch.trace.trace_raster`.
    """
    path = Path(path)
    with _reading(path, "image"), Image.open(path) as image:
        image.load()
        sketch = trace_raster(image, **trace_options)
    if sketch.is_empty:
        raise DataError(path, "no ink found in image")
    return sketch


_READERS: dict[str, Callable[[Path], Sketch]] = {
    ".svg": read_svg,
    ".json": read_stroke_json,
    **dict.fromkeys(RASTER_SUFFIXES, read_png_sketch),
}


def load_sketch(path: str | Path) -> Sketch:
    """Read one sketch, choosing the reader by file suffix (SVG, stroke JSON or a raster image)."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        known = ", ".join(sorted(_READERS))
        raise DataError(path, f"unsupported sketch file type {path.suffix!r} (known: {known})")
    return reader(path)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise DataError(path, f"cannot write: {err}") from err


def write_svg(sketch: Sketch, path: str | Path, line_width: float = 2.0) -> None:
    """Write one ``<path>`` per stroke on a canvas of the sketch's size."""
    path = Path(path)
    root = ElementTree.Element(
        "svg",
        xmlns="http://www.w3.org/2000/svg",
        width=f"{sketch.width:g}",
        height=f"{sketch.height:g}",
        viewBox=f"0 0 {sketch.width:g} {sketch.height:g}",
    )
    style = {
        "fill": "none",
        "stroke": "#000",
        "stroke-width": f"{line_width:g}",
        "stroke-linecap": "round",
        "stroke-linejoin": "round",
    }
    for stroke in sketch.strokes:
        coords = [f"{x:.3f},{y:.3f}" for x, y in stroke]
        ElementTree.SubElement(root, "path", d="M" + " L".join(coords), **style)
    with _writing(path):
        ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_png(sketch: Sketch, path: str | Path, size: int = 256, line_width: float = 2.0) -> None:
    """Rasterise to a ``size x size`` greyscale PNG, black ink on white."""
    path = Path(path)
    ink = rasterise([sketch], size=size, line_width=line_width)[0, 0].numpy()
    grey = np.round(255.0 * (1.0 - ink)).astype(np.uint8)
    with _writing(path):
        Image.fromarray(grey, mode="L").save(path)


def write_stroke_json(sketch: Sketch, path: str | Path) -> None:
    """Write the object form ``{"width", "height", "strokes"}`` (coordinates to 1/1000 unit)."""
    path = Path(path)
    data = {
        "width": sketch.width,
        "height": sketch.height,
        "strokes": [np.round(stroke.astype(np.float64), 3).tolist() for stroke in sketch.strokes],
    }
    with _writing(path):
        path.write_text(json.dumps(data), encoding="utf-8")
