"""Reading photos, with errors that name the file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from fgsbir.errors import DataError
from fgsbir.limits import open_image

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_CHECK_SIZE = (1, 1)  # JPEGs are checked decoded as small as they can be (1/8 a side)


def is_photo_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with an image suffix."""
    return path.suffix.lower() in PHOTO_SUFFIXES and not path.name.startswith(".")


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """The photo at ``path``, opened within the limits; any error reading it is a DataError."""
    if not path.is_file():
        raise DataError(path, "missing")
    try:
        with open_image(path) as image:
            yield image
    except DataError:
        raise
    except Exception as err:  # PIL raises many types for broken or truncated files
        raise DataError(path, f"not a readable image: {err}") from err


def check_photo(path: str | Path) -> None:
    """Check that ``path`` is a readable photo within the limits: the whole file is decoded
    (JPEGs at a reduced size, which is cheap) so that truncated or corrupt data is found now."""
    with _opened(Path(path)) as image:
        image.draft(None, _CHECK_SIZE)
        image.load()


def load_photo(path: str | Path) -> Image.Image:
    """Decode a photo to RGB; transparent pixels are composited on white."""
    with _opened(Path(path)) as image:
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
