"""``fgsbir demo``: train a small model on the built-in data set, index its test photos, serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgsbir.data.dataset import load_dataset
from fgsbir.index import build_index
from fgsbir.inference import load_embedder
from fgsbir.train.supervised import demo_config, train


def gallery_of_test_photos(data: str, folder: Path) -> Path:
    """A folder of links to the test photos of ``data`` (the gallery people search in the demo)."""
    folder.mkdir(parents=True, exist_ok=True)
    for photo in load_dataset(data).test.photos:
        link = folder / photo.name
        if not link.exists():
            link.symlink_to(photo.resolve())
    return folder


def run_demo(out: str | Path) -> tuple[dict[str, Any], Path]:
    """Train (or resume) the demo model in ``out`` and index the synthetic test photos.

    Returns the training result and the index folder, ready for :func:`fgsbir.web.app.serve`.
    """
    out = Path(out)
    config = demo_config(out)
    result = train(config)
    gallery = gallery_of_test_photos(config.data.path, out / "gallery")
    index_dir = out / "index"
    build_index(load_embedder(out), gallery, index_dir, run_dir=out)
    return result, index_dir
