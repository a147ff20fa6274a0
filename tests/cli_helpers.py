"""Shared by the command-line tests: running the CLI, and the trained things commands need."""

from __future__ import annotations

from pathlib import Path

from search_helpers import make_bar_gallery, make_tiny_run

from fgsbir.cli import main
from fgsbir.data.synthetic import ensure_synthetic

TINY_GENERATOR = [
    "model.image_size=64", "model.hidden=16", "model.z_dim=4", "model.feature_dim=8",
    "model.attention_dim=8", "model.components=2", "model.max_points=16", "pretrained=false",
    "grid_rows=1",
]  # fmt: skip


def sets(settings: list[str]) -> list[str]:
    """``--set`` arguments for ``key=value`` settings."""
    return [arg for setting in settings for arg in ("--set", setting)]


def run_cli(args: list[str]) -> int:
    """The exit code, whether :func:`main` returns it or argparse exits with it."""
    try:
        return main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def trained_places(root: Path) -> dict[str, Path]:
    """Under ``root``: a tiny data set, a retrieval run, a gallery with its index and a
    generator run, all made through the CLI's own commands."""
    data = ensure_synthetic(root / "data", n_photos=12, sketches_per_photo=1, test_fraction=0.25)
    run = make_tiny_run(root / "run")
    gallery = root / "gallery"
    make_bar_gallery(gallery)
    index = root / "index"
    assert main(["index", str(run), str(gallery), "--out", str(index)]) == 0
    gen = root / "gen"
    args = ["train-generator", "--data", str(data), "--out", str(gen), "--epochs", "1"]
    assert main([*args, "--threads", "1", *sets(TINY_GENERATOR)]) == 0
    return {"data": data, "run": run, "gallery": gallery, "index": index, "gen": gen}
