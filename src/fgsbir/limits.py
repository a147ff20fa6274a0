"""Input limits, each stated once, and the checks that apply them before anything is decoded.

The limits are generous for real data (QMUL and Sketchy sketches have at most a few thousand
points and a few hundred strokes; product photos a few megapixels) and keep a hostile or broken
file from hanging the tool or filling its memory. Every check raises a
:class:`~fgsbir.errors.DataError` naming the file and the limit.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from fgsbir.errors import DataError

MAX_IMAGE_PIXELS = 40_000_000  # width x height of a photo or raster sketch
MAX_IMAGE_BYTES = 200_000_000  # file size of a photo or raster sketch
MAX_SKETCH_BYTES = 10_000_000  # file size of one vector sketch (SVG, stroke JSON)
MAX_SVG_ELEMENTS = 5_000  # elements of one SVG, each <use> counted as a copy of what it shows
MAX_SVG_DEPTH = 50  # how deeply the elements of an SVG may nest
MAX_COLLECTION_BYTES = 1_000_000_000  # a file of many sketches (QMUL pickle, .npz), unpacked
MAX_SKETCH_POINTS = 30_000  # points of one sketch, however it was read
MAX_SKETCH_STROKES = 1_000  # strokes of one sketch
MAX_COORDINATE = 1e9  # absolute value of a sketch coordinate (or stroke-3 offset) in a file
MAX_TRACE_SIDE = 512  # larger raster sketches are shrunk to this many pixels a side to be traced
MAX_INK_SHARE = 0.5  # of a raster sketch's area that may be ink (dark) when it is traced
MAX_TRACE_INK = 20_000  # centre-line pixels of one traced drawing (at the size it is traced)

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow's decompression-bomb check uses the same limit


def check_file_size(path: Path, limit: int) -> None:
    """Refuse a file larger than ``limit`` bytes (a missing file is left to its reader)."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size > limit:
        raise DataError(path, f"file of {size:,} bytes is over the limit of {limit:,} bytes")


def check_sketch_size(path: Path, points: int, strokes: int, where: str = "") -> None:
    """Refuse a sketch with more than :data:`MAX_SKETCH_POINTS` points or
    :data:`MAX_SKETCH_STROKES` strokes; ``where`` prefixes the message (e.g. a pickle key)."""
    for count, limit, what in (
        (points, MAX_SKETCH_POINTS, "points"),
        (strokes, MAX_SKETCH_STROKES, "strokes"),
    ):
        if count > limit:
            raise DataError(path, f"{where}{count:,} {what} is over the limit of {limit:,} {what}")


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """Open an image file (reading its header only) within the file-size and pixel limits."""
    check_file_size(path, MAX_IMAGE_BYTES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        problem = f"image over the limit of {MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)"
        raise DataError(path, problem) from err
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:  # Pillow's own limit may have been changed
            raise DataError(
                path,
                f"image of {width} x {height} pixels is over the limit of "
                f"{MAX_IMAGE_PIXELS:,} pixels",
            )
        yield image
