"""Pictures of runs: training curves, retrieval grids and sketch-beside-photo grids.

Everything is drawn off-screen into PNG files with matplotlib's object-oriented API (a bare
``Figure`` renders through the Agg canvas; pyplot and its global state are never touched, so this
is safe in servers and threads). Sketches are rasterised with
:func:`fgsbir.sketch.rasterise.rasterise` and shown as black ink on white.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from fgsbir.data.photos import load_photo
from fgsbir.errors import DataError
from fgsbir.runs import read_metrics
from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch

PhotoLike = Path | str | Image.Image

CELL_PX = 160
"""Side of one picture cell in the grids, in pixels (sketches are rasterised at this size)."""
CELL_INCHES = 1.6
TRUE_COLOUR = "#2ca02c"
FRAME_COLOUR = "#cccccc"

# Panels of the training-curve figure: title, y label, which metric keys it plots.
CURVE_PANELS: list[tuple[str, str, Callable[[str], bool]]] = [
    # "nll": the generator's per-point NLL, the validation score its epochs are chosen by
    ("Loss", "loss", lambda key: "loss" in key or key == "nll"),
    ("Retrieval", "accuracy / MRR", lambda key: key.startswith("acc@") or key == "mrr"),
    ("Mean rank of the true photo", "mean rank", lambda key: key == "mean_rank"),
    ("Reward", "reward", lambda key: "reward" in key),
]


def _x_axis(records: list[dict[str, Any]]) -> tuple[str, list[float]]:
    """The x values: ``step`` when every record has one, else ``epoch``, else the line number."""
    for key in ("step", "epoch"):
        if all(isinstance(r.get(key), int | float) for r in records):
            return key, [float(r[key]) for r in records]
    return "record", [float(i) for i in range(len(records))]


def plot_training_curves(metrics_jsonl: Path, out_png: Path) -> None:
    """Plot losses and validation metrics of a ``metrics.jsonl`` against step (or epoch).

    Each line is a JSON object, e.g. ``{"epoch": 1, "step": 40, "split": "val", "acc@1": 0.3}``.
    Numeric keys are grouped into panels (losses, acc@K and MRR, mean rank, rewards), one curve
    per ``split`` (``"train"`` when absent) and key; panels without data are left out, and keys
    a record lacks are simply not plotted for it.
    """
    metrics_jsonl = Path(metrics_jsonl)
    try:
        records = read_metrics(metrics_jsonl)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(metrics_jsonl, f"not a JSON-lines metrics file ({exc})") from exc
    records = [r for r in records if isinstance(r, dict)]
    if not records:
        raise DataError(metrics_jsonl, "no metrics records to plot")
    x_label, xs = _x_axis(records)

    panels = []
    for title, y_label, wanted in CURVE_PANELS:
        curves: dict[str, tuple[list[float], list[float]]] = {}
        for x, record in zip(xs, records, strict=True):
            split = str(record.get("split", "train"))
            for key, value in record.items():
                if wanted(key) and isinstance(value, int | float) and not isinstance(value, bool):
                    curve = curves.setdefault(f"{split} {key}", ([], []))
                    curve[0].append(x)
                    curve[1].append(float(value))
        if curves:
            panels.append((title, y_label, curves))
    if not panels:
        raise DataError(metrics_jsonl, "nothing to plot: no loss, retrieval or reward values")

    fig = Figure(figsize=(5.0 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, y_label, curves) in zip(axes[0], panels, strict=True):
        for name, (x, y) in sorted(curves.items()):
            ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, out_png)


def _save(fig: Figure, out_png: Path) -> None:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100, facecolor="white")


def _sketch_images(sketches: Sequence[Sketch]) -> list[np.ndarray]:
    """Rasterise sketches as ``(S, S)`` grey images: 0 = black ink, 1 = white paper."""
    if not sketches:
        return []
    raster = rasterise(list(sketches), CELL_PX, 2.0)
    return list(1.0 - raster[:, 0].detach().cpu().numpy())


def _same_photo(a: PhotoLike, b: PhotoLike) -> bool:
    if isinstance(a, Image.Image) or isinstance(b, Image.Image):
        return a is b
    return Path(a) == Path(b)


def _photo_image(photo: PhotoLike) -> Image.Image:
    image = photo if isinstance(photo, Image.Image) else load_photo(Path(photo))
    return ImageOps.pad(image.convert("RGB"), (CELL_PX, CELL_PX), color="white")


def _show(
    ax: Axes,
    image: np.ndarray | Image.Image | None,
    title: str = "",
    frame: str = FRAME_COLOUR,
    frame_width: float = 1.0,
) -> None:
    """Draw one grid cell: the picture (or nothing), a frame and a small title."""
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None:
        ax.set_axis_off()
        return
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    for spine in ax.spines.values():
        spine.set_edgecolor(frame)
        spine.set_linewidth(frame_width)
    if title:
        ax.set_title(title, fontsize=9)


def _grid(n_rows: int, n_cols: int) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(CELL_INCHES * n_cols, (CELL_INCHES + 0.3) * n_rows), layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def retrieval_grid(
    queries: Sequence[Sketch],
    ranked_photos: Sequence[Sequence[PhotoLike]],
    true_photos: Sequence[PhotoLike],
    out_png: Path,
    k: int = 5,
) -> None:
    """One row per query: the sketch, its top-``k`` photos and, last, its true photo.

    The true photo is framed in green wherever it appears, so a row whose top-``k`` holds no
    green frame is a miss. Photos are paths (loaded with ``load_photo``) or PIL images; a ranked
    photo is the true one when it is the same path or the very same image object.
    """
    if not (len(queries) == len(ranked_photos) == len(true_photos)) or not queries:
        raise ValueError("need one ranked list and one true photo per query, and >= 1 query")
    fig, axes = _grid(len(queries), k + 2)
    for row, sketch_image, ranked, true in zip(
        axes, _sketch_images(queries), ranked_photos, true_photos, strict=True
    ):
        _show(row[0], sketch_image, "query")
        for rank, ax in enumerate(row[1 : k + 1], start=1):
            if rank > len(ranked):
                _show(ax, None)
                continue
            hit = _same_photo(ranked[rank - 1], true)
            _show(
                ax,
                _photo_image(ranked[rank - 1]),
                f"#{rank}" + (" (true)" if hit else ""),
                frame=TRUE_COLOUR if hit else FRAME_COLOUR,
                frame_width=5.0 if hit else 1.0,
            )
        _show(row[-1], _photo_image(true), "true photo", frame=TRUE_COLOUR, frame_width=5.0)
    _save(fig, out_png)


def sketch_photo_grid(
    rows: Sequence[tuple[PhotoLike, Sequence[Sketch], Sketch | None, Sequence[str] | None]],
    out_png: Path,
) -> None:
    """One row per photo: the photo, its generated sketch(es), and its real sketch if it has one.

    Each row is ``(photo, generated, real, captions)``; ``captions`` (one per generated sketch,
    e.g. discriminator weights) are shown above the generated sketches.
    """
    if not rows:
        raise ValueError("need at least one row")
    n_generated = max(len(generated) for _, generated, _, _ in rows)
    has_real = any(real is not None for _, _, real, _ in rows)
    fig, axes = _grid(len(rows), 1 + n_generated + int(has_real))
    for ax_row, (photo, generated, real, captions) in zip(axes, rows, strict=True):
        if captions is not None and len(captions) != len(generated):
            raise ValueError("need one caption per generated sketch")
        _show(ax_row[0], _photo_image(photo), "photo")
        images = _sketch_images(generated)
        for i, ax in enumerate(ax_row[1 : 1 + n_generated]):
            caption = captions[i] if captions is not None and i < len(captions) else "generated"
            _show(ax, images[i] if i < len(images) else None, caption)
        if has_real:
            real_image = _sketch_images([real])[0] if real is not None else None
            _show(ax_row[-1], real_image, "real sketch")
    _save(fig, out_png)
