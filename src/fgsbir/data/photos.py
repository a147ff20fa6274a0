"""Reading photos, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from fgsbir.errors import DataError

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def is_photo_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with an image suffix."""
    return path.suffix.lower() in PHOTO_SUFFIXES and not path.name.startswith(".")


def check_photo(path: str | Path) -> None:
    """Cheaply check that ``path`` exists and has a valid image header (nothing is decoded)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing")
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:  # PIL raises many types for broken files
        raise DataError(path, f"not a readable image: {err}") from err


def load_photo(path: str | Path) -> Image.Image:
    """Decode a photo to RGB; transparent pixels are composited on white."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing")
    try:
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("RGB")
            return image.convert("RGB")
    except Exception as err:  # PIL raises many types for broken or truncated files
        raise DataError(path, f"not a readable image: {err}") from err
