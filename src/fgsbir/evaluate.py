"""FG-SBIR evaluation: every test sketch queries all test photos.

``acc@K`` is the fraction of queries whose true photo is among the ``K`` nearest photos,
``mean_rank`` the mean 1-based rank of the true photo and ``mrr`` the mean of its reciprocal.
Photos are ranked by Euclidean distance (for L2-normalised embeddings the same order as cosine
similarity); a photo at exactly the true photo's distance counts as ranked before it (ties are
pessimistic).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgsbir.data.dataset import Split, load_dataset
from fgsbir.data.photos import load_photo
from fgsbir.errors import DataError
from fgsbir.inference import Embedder, load_embedder
from fgsbir.losses.metric import pairwise_distances
from fgsbir.viz import retrieval_grid


def distances(sketch_emb: np.ndarray, photo_emb: np.ndarray) -> np.ndarray:
    """``(Q, G)`` Euclidean distances, computed in float64 so near-ties are not noise."""
    queries = torch.as_tensor(np.asarray(sketch_emb), dtype=torch.float64)
    gallery = torch.as_tensor(np.asarray(photo_emb), dtype=torch.float64)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"expected (Q, D) and (G, D) embeddings, got {tuple(queries.shape)} "
            f"and {tuple(gallery.shape)}"
        )
    return pairwise_distances(queries, gallery).numpy()


def top_k(sketch_emb: np.ndarray, photo_emb: np.ndarray, k: int) -> np.ndarray:
    """``(Q, min(k, G))`` indices of each query's nearest photos, nearest first."""
    return np.argsort(distances(sketch_emb, photo_emb), axis=1, kind="stable")[:, :k]


def rank_of_true(
    sketch_emb: np.ndarray, photo_emb: np.ndarray, true_photo: Sequence[int] | np.ndarray
) -> np.ndarray:
    """1-based rank of each query's true photo among all photos (ties counted pessimistically)."""
    dist = distances(sketch_emb, photo_emb)
    true_photo = np.asarray(true_photo, dtype=np.int64)
    if true_photo.shape != (dist.shape[0],):
        raise ValueError(f"need one true photo per query: {dist.shape[0]}, got {true_photo.shape}")
    if true_photo.size and (true_photo.min() < 0 or true_photo.max() >= dist.shape[1]):
        raise ValueError(f"true photo indices must lie in [0, {dist.shape[1]})")
    true_dist = dist[np.arange(len(true_photo)), true_photo]
    # the true photo itself is counted, so the count is the rank
    return (dist <= true_dist[:, None]).sum(axis=1)


def retrieval_metrics(
    sketch_emb: np.ndarray,
    photo_emb: np.ndarray,
    true_photo: Sequence[int] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float | int]:
    """The FG-SBIR metrics of the module docstring (``acc@K`` as fractions in [0, 1]).

    Keys: ``acc@K`` for each of ``ks``, ``mean_rank``, ``mrr``, ``n_queries``, ``n_gallery``.
    """
    ranks = rank_of_true(sketch_emb, photo_emb, true_photo)
    if ranks.size == 0:
        raise ValueError("no queries to evaluate")
    metrics: dict[str, float | int] = {f"acc@{k}": float(np.mean(ranks <= k)) for k in ks}
    metrics["mean_rank"] = float(ranks.mean())
    metrics["mrr"] = float(np.mean(1.0 / ranks))
    metrics["n_queries"] = int(ranks.size)
    metrics["n_gallery"] = int(np.asarray(photo_emb).shape[0])
    return metrics


def evaluate_split(
    embedder: Embedder, split: Split, batch_size: int = 32
) -> tuple[dict[str, float | int], np.ndarray, np.ndarray]:
    """Embed a split's photos and sketches, score retrieval: ``(metrics, sketch_emb, photo_emb)``.

    Photos are read ``batch_size`` at a time, so a large gallery is never in memory at once.
    """
    if not split.photos or not split.sketches:
        raise ValueError("the split needs at least one photo and one sketch")
    if any(record.photo is None for record in split.sketches):
        raise ValueError("every sketch needs its photo to evaluate retrieval (sketch-only data?)")
    photo_emb = np.concatenate(
        [
            embedder.embed_photos([load_photo(p) for p in split.photos[i : i + batch_size]])
            for i in range(0, len(split.photos), batch_size)
        ]
    )
    sketch_emb = embedder.embed_sketches([record.sketch for record in split.sketches])
    true_photo = [record.photo for record in split.sketches]
    return retrieval_metrics(sketch_emb, photo_emb, true_photo), sketch_emb, photo_emb


def write_retrieval_grid(
    split: Split,
    sketch_emb: np.ndarray,
    photo_emb: np.ndarray,
    out_png: Path,
    n_queries: int,
    k: int = 5,
) -> None:
    """A retrieval grid of ``n_queries`` sketches spread evenly over an embedded ``split``, each
    with its top-``k`` photos."""
    picked = np.unique(np.linspace(0, len(split.sketches) - 1, n_queries).round().astype(int))
    ranked = top_k(sketch_emb[picked], photo_emb, k)
    records = [split.sketches[i] for i in picked]
    retrieval_grid(
        [record.sketch for record in records],
        [[split.photos[j] for j in row] for row in ranked],
        [split.photos[record.photo] for record in records],
        out_png,
        k=k,
    )


def check_test_split(test: Split, data: str | Path) -> None:
    """Refuse a test split that cannot be evaluated: no sketches, or sketches without photos."""
    if not test.sketches:
        raise DataError(data, "has no test sketches to evaluate with (a folder of photos only?)")
    if any(record.photo is None for record in test.sketches):
        raise DataError(data, "its test sketches have no photos (sketches only?)")


def evaluate_run(
    run_dir: str | Path,
    data: str | Path,
    batch_size: int = 32,
    examples_png: Path | None = None,
    n_examples: int = 8,
    k: int = 5,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate a trained run on the test split of a data set.

    Returns the metrics of :func:`retrieval_metrics` plus ``model`` (the run's identity) and
    ``data``. With ``examples_png``, also draws a retrieval grid of ``n_examples`` queries spread
    evenly over the test split, with their top-``k`` photos.
    """
    embedder = load_embedder(run_dir, device)
    test = load_dataset(data).test
    check_test_split(test, data)
    metrics, sketch_emb, photo_emb = evaluate_split(embedder, test, batch_size)
    if examples_png is not None:
        write_retrieval_grid(test, sketch_emb, photo_emb, examples_png, n_examples, k)
    return {"model": embedder.identity, "data": str(data), **metrics}
