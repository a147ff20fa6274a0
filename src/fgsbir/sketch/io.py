"""Sketch readers and writers: QMUL stroke pickles, sketch-rnn ``.npz``, SVG, stroke JSON and PNG.

Every reader returns :class:`~fgsbir.sketch.strokes.Sketch` objects and raises
:class:`~fgsbir.errors.DataError` naming the file (and key) for anything missing, unreadable,
malformed or empty. Pickles (QMUL files, sketch-rnn object arrays) are unpickled with an allow-list
of NumPy array constructors only, so a hostile file cannot run code. Files beyond the limits of
:mod:`fgsbir.limits` (size, pixels, elements, points, strokes) are refused before they are decoded
or parsed, so no file can hang the reader or fill the memory.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any
from xml.etree import ElementTree

import numpy as np
import svgelements
from PIL import Image, UnidentifiedImageError

from fgsbir.errors import DataError
from fgsbir.limits import (
    MAX_COLLECTION_BYTES,
    MAX_COORDINATE,
    MAX_SKETCH_BYTES,
    MAX_SVG_DEPTH,
    MAX_SVG_ELEMENTS,
    MAX_TRACE_SIDE,
    check_file_size,
    check_sketch_size,
    open_image,
)
from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch, stroke3_to_points
from fgsbir.sketch.trace import TooMuchInk, trace_raster

QMUL_CANVAS = 256.0
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Vector elements read from SVGs; filled shapes (rect, circle, ...) are backgrounds, not strokes.
_SVG_STROKE_ELEMENTS = (svgelements.Path, svgelements.Polyline, svgelements.SimpleLine)
_SVG_CURVE_STEP = 2.0  # canvas units between samples along a curve segment
_SVG_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
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


@contextmanager
def _damaged(what: str) -> Iterator[None]:
    """Readers of untrusted bytes (the unpickler, zipfile, Pillow) raise almost any type for damaged
    data, even SyntaxError or RuntimeError: make those a ValueError saying ``what`` is damaged.
    DataErrors, OSErrors and refusals to unpickle pass unchanged."""
    try:
        yield
    except (DataError, OSError, pickle.UnpicklingError):
        raise
    except Exception as err:
        raise ValueError(f"damaged {what} ({type(err).__name__}: {err})") from err


def _load_arrays_pickle(stream: IO[bytes]) -> Any:
    with _damaged("pickle"):
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
    except RecursionError as err:
        raise DataError(path, f"cannot read {what}: nested too deeply") from err
    except (OSError, EOFError, ValueError, TypeError, KeyError, pickle.UnpicklingError) as err:
        raise DataError(path, f"cannot read {what}: {err}") from err
    except (ElementTree.ParseError, UnidentifiedImageError, zipfile.BadZipFile) as err:
        raise DataError(path, f"not a valid {what}: {err}") from err


def _in_range(values: np.ndarray) -> bool:
    """Whether every value is a number within :data:`~fgsbir.limits.MAX_COORDINATE` (not NaN)."""
    return bool((np.abs(values) <= MAX_COORDINATE).all())


def _check_points(path: Path, key: str, value: Any) -> np.ndarray:
    """Validate a QMUL points array: numeric, ``(N, 3)``, non-empty, finite, pen flags 0/1, within
    the sketch limits."""
    where = f"key {key!r}: "
    with suppress(TypeError):  # not a sequence: refused below
        check_sketch_size(path, len(value), 0, where)  # before a costly conversion
    try:
        points = np.asarray(value)
        if points.dtype.kind not in "biufO":  # not bool, integer, real or (convertible) object
            raise TypeError(f"values of type {points.dtype}")
        points = points.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(path, f"{where}not a numeric array ({err})") from err
    if points.ndim != 2 or points.shape[1] != 3:
        raise DataError(path, f"{where}expected an (N, 3) array, got shape {points.shape}")
    if len(points) == 0:
        raise DataError(path, f"{where}empty sketch")
    if not _in_range(points):
        raise DataError(path, f"{where}contains NaN, infinite or too large values")
    if not np.isin(points[:, 2], (0.0, 1.0)).all():
        raise DataError(path, f"{where}pen flags (third column) must be 0 or 1")
    check_sketch_size(path, len(points), int(points[:, 2].sum()), where)
    return points


def read_qmul_pickle(path: str | Path) -> dict[str, Sketch]:
    """Read a QMUL-Shoe/Chair-V2 coordinate pickle: ``{key: (N, 3) points on a 256 canvas}``."""
    path = Path(path)
    check_file_size(path, MAX_COLLECTION_BYTES)
    with _reading(path, "QMUL coordinate pickle"):
        data = _load_arrays_pickle(io.BytesIO(path.read_bytes()))
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
    with _damaged("archive"), zipfile.ZipFile(path) as archive:
        unpacked = sum(member.file_size for member in archive.infolist())
        if unpacked > MAX_COLLECTION_BYTES:
            raise DataError(
                path, f"unpacks to {unpacked:,} bytes, over the limit of {MAX_COLLECTION_BYTES:,}"
            )
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
    check_file_size(path, MAX_COLLECTION_BYTES)
    with _reading(path, "sketch-rnn .npz"):
        arrays = _npz_arrays(path)
    if not arrays:
        raise DataError(path, "no arrays in file")
    result: dict[str, list[Sketch]] = {}
    for split, sketches in arrays.items():
        if not isinstance(sketches, list | tuple | np.ndarray) or getattr(sketches, "ndim", 1) == 0:
            raise DataError(path, f"{split!r}: expected an array of sketches")
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


def _svg_element_size(element: ElementTree.Element, tag: str) -> tuple[int, int, int]:
    """One SVG element's size, not counting its children: ``(1, strokes, points)``, the points
    being the coordinate pairs of a path, polyline or line."""
    if tag == "line":
        return 1, 1, 2
    if tag not in ("path", "polyline"):
        return 1, 0, 0
    data = element.get("d" if tag == "path" else "points", "")
    points = len(_SVG_NUMBER.findall(data)) // 2
    return 1, (data.count("M") + data.count("m") if tag == "path" else 1), points


def _svg_size(root: ElementTree.Element) -> tuple[int, int, int]:
    """The elements, strokes and points of an SVG, each ``<use>`` counted as a copy of what it
    references: an upper bound of what parsing would build, found cheaply."""
    by_id = {element.get("id"): element for element in root.iter() if element.get("id")}
    sizes: dict[int, tuple[int, ...] | None] = {}  # None: being counted

    def size(element: ElementTree.Element) -> tuple[int, ...]:
        key = id(element)
        if key in sizes:
            known = sizes[key]
            if known is None:
                raise ValueError("<use> elements refer back to themselves")
            return known
        sizes[key] = None
        tag = _svg_tag(element)
        parts = list(element)
        if tag == "use":
            href = element.get("href") or element.get(_XLINK_HREF) or ""
            parts += [by_id[href[1:]]] if href[1:] in by_id else []
        counts = [_svg_element_size(element, tag), *map(size, parts)]
        total = sizes[key] = tuple(map(sum, zip(*counts, strict=True)))
        return total

    elements, strokes, points = size(root)
    return elements, strokes, points


def _svg_tag(element: ElementTree.Element) -> str:
    """An element's tag without its namespace."""
    return str(element.tag).rsplit("}", 1)[-1]


def _svg_root(path: Path) -> ElementTree.Element:
    """The parsed XML of an SVG, refused as soon as its root is not ``<svg>`` or it has more
    elements or deeper nesting than the limits."""
    with path.open("rb") as stream:
        parsed = ElementTree.iterparse(stream, events=("start", "end"))
        _, root = next(parsed)
        if _svg_tag(root) != "svg":
            raise DataError(path, f"not an SVG file: the root element is <{_svg_tag(root)}>")
        elements = depth = 1
        for event, _ in parsed:
            depth += 1 if event == "start" else -1
            elements += event == "start"
            if elements > MAX_SVG_ELEMENTS:
                raise DataError(path, f"more elements than the limit of {MAX_SVG_ELEMENTS:,}")
            if depth > MAX_SVG_DEPTH:
                raise DataError(path, f"elements nested deeper than the limit of {MAX_SVG_DEPTH}")
    return root


def _check_svg(path: Path) -> None:
    """Refuse, before parsing it as SVG, a file that is too large, not SVG, or would draw too
    much (its ``<use>`` elements copied)."""
    check_file_size(path, MAX_SKETCH_BYTES)
    elements, strokes, points = _svg_size(_svg_root(path))
    if elements > MAX_SVG_ELEMENTS:
        raise DataError(
            path,
            f"{elements:,} elements (with <use> copies) is over the limit of "
            f"{MAX_SVG_ELEMENTS:,} elements",
        )
    check_sketch_size(path, points, strokes)


def read_svg(path: str | Path) -> Sketch:
    """Read every path, polyline and line of an SVG (transforms applied) as strokes.

    The canvas is the SVG's ``width x height`` (or its viewBox size); with neither, the canvas
    reaches from the origin to the drawing's far corner. Files over the size limits
    (:mod:`fgsbir.limits`) are refused before they are parsed.
    """
    path = Path(path)
    with _reading(path, "SVG file"):
        _check_svg(path)
    try:
        svg = svgelements.SVG.parse(str(path))
        strokes = [
            stroke
            for element in svg.elements()
            if isinstance(element, _SVG_STROKE_ELEMENTS)
            for stroke in _svg_strokes(element)
        ]
    except Exception as err:  # svgelements raises many types for malformed documents
        raise DataError(path, f"not a valid SVG file: {type(err).__name__}: {err}") from err
    if not strokes:
        raise DataError(path, "no strokes (path, polyline or line elements) in SVG")
    xy = np.concatenate(strokes)
    check_sketch_size(path, len(xy), len(strokes))
    if not _in_range(xy):
        raise DataError(path, f"SVG coordinates are not finite or beyond ±{MAX_COORDINATE:g}")
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
    check_file_size(path, MAX_SKETCH_BYTES)
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
    points = sum(len(stroke) for stroke in data if isinstance(stroke, list))
    check_sketch_size(path, points, len(data))  # before any conversion
    strokes = []
    for i, stroke in enumerate(data):
        try:
            xy = np.asarray(stroke, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DataError(path, f"stroke {i}: not a list of [x, y] points ({err})") from err
        if xy.size == 0:
            continue
        if xy.ndim != 2 or xy.shape[1] < 2 or not _in_range(xy[:, :2]):
            raise DataError(
                path, f"stroke {i}: not a list of [x, y] points within ±{MAX_COORDINATE:g}"
            )
        strokes.append(xy[:, :2])
    sketch = Sketch.from_strokes(strokes, width, height)
    if sketch.is_empty:
        raise DataError(path, "no points in any stroke")
    return sketch


def read_png_sketch(path: str | Path, **trace_options: Any) -> Sketch:
    """Read a raster line drawing (dark ink on light paper) and trace it into strokes.

    Images over the size limits (:mod:`fgsbir.limits`) are refused before they are decoded; JPEGs
    are decoded at about the size they are traced at. ``trace_options`` go to
    :func:`fgsbir.sketch.trace.trace_raster`.
    """
    path = Path(path)
    with _reading(path, "image"), open_image(path) as image:
        width, height = image.size
        with _damaged("image"):  # Pillow raises many types for broken files, even SyntaxError
            image.draft(None, (MAX_TRACE_SIDE, MAX_TRACE_SIDE))
            image.load()
        try:
            sketch = trace_raster(image, **trace_options)
        except TooMuchInk as err:
            raise DataError(path, str(err)) from err
        if image.size != (width, height):  # drafted: back to the file's pixel canvas
            sketch = sketch.scale(width / image.width, height / image.height)
    if sketch.is_empty:
        raise DataError(path, "no ink found in image")
    check_sketch_size(path, len(sketch.points), sketch.num_strokes)
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
