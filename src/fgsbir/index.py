"""Photo gallery index: the embeddings of a folder of photos, searched with a sketch's embedding.

An index folder holds

* ``manifest.json``: format version, the model's identity, the run folder it came from, the index
  kind (``exact``, ``hnsw`` or ``ivf``), the embedding size, the photo count and faiss parameters;
* ``embeddings.npy``: ``(N, D)`` float32, L2-normalised, row ``i`` is photo ``i``;
* ``photos.json``: the ``N`` absolute photo paths;
* ``ann.faiss``: the approximate faiss index, for the ``hnsw`` and ``ivf`` kinds.

Every file is replaced atomically and the manifest is written last, so an interrupted build leaves
the last consistent index; rows beyond the manifest's count are ignored. Building again with the
same output folder embeds only the photos not indexed yet, which also resumes an interrupted build.

Scores are inner products of unit vectors (cosine similarity). Exact search is a matrix-vector
product over all embeddings; the approximate kinds trade a little recall for speed on large
galleries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple

import faiss
import numpy as np
from PIL import Image
from tqdm import tqdm

from fgsbir.data.layouts import load_photo_folder
from fgsbir.data.photos import PHOTO_SUFFIXES, load_photo
from fgsbir.errors import DataError, FgsbirError, OnError, report
from fgsbir.inference import Embedder
from fgsbir.runs import atomic_write

IndexKind = Literal["exact", "hnsw", "ivf"]
INDEX_KINDS: tuple[IndexKind, ...] = ("exact", "hnsw", "ivf")
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
EMBEDDINGS_FILE = "embeddings.npy"
PHOTOS_FILE = "photos.json"
ANN_FILE = "ann.faiss"
INDEX_FILES = frozenset({MANIFEST_FILE, EMBEDDINGS_FILE, PHOTOS_FILE, ANN_FILE})
DEFAULT_PARAMS: dict[str, int] = {
    "hnsw_m": 32,  # graph degree
    "hnsw_ef_construction": 80,
    "hnsw_ef_search": 128,  # candidates visited per query: higher = better recall, slower
    "ivf_nprobe": 32,  # clusters visited per query
}


class GalleryIndexError(FgsbirError):
    """An index folder that is missing, corrupt, or made by another model."""


class SearchResult(NamedTuple):
    rank: int  # 1 = best
    photo: Path
    score: float  # cosine similarity


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:  # np.save given a name would append ".npy" to the temporary name
        np.save(f, array)


def _ivf_lists(count: int) -> int:
    """Number of IVF clusters: about 4 sqrt(N), with at least 39 training points per cluster."""
    return int(max(1, min(4 * np.sqrt(count), count // 39)))


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the index folder ``directory`` (what the index is, not its embeddings)."""
    manifest_path = directory / MANIFEST_FILE
    if not directory.is_dir():
        problem = "not a folder" if directory.exists() else "no such folder"
        raise GalleryIndexError(f"{directory}: {problem} (an index folder is needed)")
    if not manifest_path.is_file():
        raise GalleryIndexError(f"{directory}: not an index folder (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported format {manifest.get('format')!r}")
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise GalleryIndexError(f"{directory}: damaged index folder ({err})") from err
    return manifest


class GalleryIndex:
    """Photo embeddings with their paths, the model that made them, and a search structure.

    ``kind="exact"`` searches by brute force (NumPy); ``"hnsw"`` and ``"ivf"`` build the faiss
    structure of that name, on the first search or save, and extend it as photos are added.
    """

    def __init__(
        self,
        dim: int,
        model_identity: str,
        kind: IndexKind = "exact",
        run_dir: str | Path | None = None,
        params: dict[str, int] | None = None,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise GalleryIndexError(
                f"unknown index kind {kind!r} (known: {', '.join(INDEX_KINDS)})"
            )
        self.dim = int(dim)
        self.model_identity = model_identity
        self.kind: IndexKind = kind
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else None
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self._embeddings = np.zeros((0, self.dim), np.float32)
        self._added: list[np.ndarray] = []  # joined on first use: appending stays linear-time
        self.photos: list[Path] = []
        self._ann: faiss.Index | None = None
        self._ann_trained_on = 0  # gallery size an IVF index was trained on

    def __len__(self) -> int:
        return len(self.photos)

    def check_model(self, embedder: Embedder) -> None:
        """Refuse a model other than the one that embedded the gallery."""
        if embedder.identity != self.model_identity:
            raise GalleryIndexError(
                f"this index was built with model {self.model_identity}, but the model given is "
                f"{embedder.identity}; its embeddings are not comparable -- index the photos "
                "again with this model into a new folder"
            )

    @property
    def embeddings(self) -> np.ndarray:
        """``(N, D)`` float32: row ``i`` is the embedding of ``photos[i]``."""
        if self._added:
            self._embeddings = np.concatenate([self._embeddings, *self._added])
            self._added = []
        return self._embeddings

    def add(self, embeddings: np.ndarray, photos: Sequence[str | Path]) -> None:
        """Append photos with their (L2-normalised) embeddings."""
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        if len(embeddings) != len(photos):
            raise ValueError(f"{len(embeddings)} embeddings for {len(photos)} photos")
        self._added.append(embeddings)
        self.photos.extend(Path(p) for p in photos)

    # -- search -------------------------------------------------------------------------------

    def _approximate(self) -> faiss.Index:
        """The faiss structure, brought up to date with the embeddings."""
        count = len(self)
        stale_ivf = self.kind == "ivf" and count > 4 * max(self._ann_trained_on, 1)
        if self._ann is None or stale_ivf:
            self._ann = self._new_ann()
        if self._ann.ntotal < count:
            self._ann.add(self.embeddings[self._ann.ntotal :])
        self._tune(self._ann)
        return self._ann

    def _new_ann(self) -> faiss.Index:
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.params["hnsw_ef_construction"]
            return index
        nlist = _ivf_lists(len(self))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).permutation(len(self))[: 64 * nlist]
        index.train(self.embeddings[np.sort(sample)])
        self._ann_trained_on = len(self)
        return index

    def _tune(self, index: faiss.Index) -> None:
        if self.kind == "hnsw":
            index.hnsw.efSearch = self.params["hnsw_ef_search"]
        else:
            index.nprobe = self.params["ivf_nprobe"]

    def prepare(self) -> None:
        """Build or extend the faiss structure now rather than on the next search (after this,
        searching changes nothing, so threads may search at the same time)."""
        if self.kind != "exact" and len(self):
            self._approximate()

    def search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows for each query: ``(scores, ids)``, both ``(M, min(k, N))``, best first.

        An approximate index may find fewer than ``k``; missing ids are -1.
        """
        queries = np.asarray(queries, dtype=np.float32)
        queries = queries.reshape(1, -1) if queries.ndim == 1 else queries
        if queries.shape[1] != self.dim:
            raise GalleryIndexError(
                f"query embedding has size {queries.shape[1]}, the index holds size {self.dim}"
            )
        k = min(int(k), len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.kind != "exact":
            scores, ids = self._approximate().search(queries, k)
            return scores, ids
        all_scores = queries @ self.embeddings.T
        top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(all_scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top_scores, order, 1), np.take_along_axis(top, order, 1)

    def top(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[int, float]]]:
        """For each query embedding, ``(row, score)`` of the ``k`` closest photos, best first."""
        scores, ids = self.search_ids(queries, k)
        return [
            [(i, s) for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
            for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True)
        ]

    def search(self, query: np.ndarray, k: int = 10) -> list[SearchResult]:
        """The ``k`` photos closest to one query embedding, best first."""
        found = self.top(query, k)[0]
        return [SearchResult(r, self.photos[i], s) for r, (i, s) in enumerate(found, start=1)]

    # -- storage ------------------------------------------------------------------------------

    def save(self, directory: str | Path, *, with_ann: bool = True) -> None:
        """Write the index folder; ``with_ann=False`` skips the faiss structure (checkpoints)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / EMBEDDINGS_FILE, lambda p: _save_npy(p, self.embeddings))
        photos = json.dumps([str(p) for p in self.photos])
        atomic_write(directory / PHOTOS_FILE, lambda p: p.write_text(photos))
        if with_ann and self.kind != "exact":
            ann = self._approximate()
            atomic_write(directory / ANN_FILE, lambda p: faiss.write_index(ann, str(p)))
        manifest = {
            "format": FORMAT_VERSION,
            "model": self.model_identity,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "kind": self.kind,
            "dim": self.dim,
            "count": len(self),
            "params": self.params,
            "ivf_trained_on": self._ann_trained_on,
        }
        text = json.dumps(manifest, indent=2) + "\n"
        atomic_write(directory / MANIFEST_FILE, lambda p: p.write_text(text))

    @classmethod
    def load(cls, directory: str | Path) -> GalleryIndex:
        """Open an index folder written by :meth:`save`."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        try:
            index = cls(
                manifest["dim"],
                manifest["model"],
                manifest["kind"],
                manifest["run_dir"],
                manifest["params"],
            )
            count = int(manifest["count"])
            embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r")
            photos = json.loads((directory / PHOTOS_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise GalleryIndexError(f"{directory}: damaged index folder ({err})") from err
        if embeddings.ndim != 2 or embeddings.shape[1] != index.dim:
            raise GalleryIndexError(f"{directory}: embeddings do not have size {index.dim}")
        if len(embeddings) < count or len(photos) < count:
            raise GalleryIndexError(
                f"{directory}: damaged index folder (fewer than {count} photos)"
            )
        index._embeddings = np.array(embeddings[:count])
        index.photos = [Path(p) for p in photos[:count]]
        ann_path = directory / ANN_FILE
        if index.kind != "exact" and ann_path.is_file():
            ann = faiss.read_index(str(ann_path))
            if ann.ntotal <= count:  # else written by an interrupted save: rebuilt when needed
                index._ann = ann
                index._ann_trained_on = int(manifest.get("ivf_trained_on", count))
        return index


def _load_batch(paths: list[Path], on_error: OnError) -> tuple[list[Path], list[Image.Image]]:
    """Decode a batch of photos, dropping (with a warning) bad ones when ``on_error="warn"``."""
    kept: list[Path] = []
    images: list[Image.Image] = []
    for path in paths:
        try:
            images.append(load_photo(path))
        except DataError as err:
            report(err, on_error)
            continue
        kept.append(path)
    return kept, images


def _photo_batches(
    paths: list[Path], batch_size: int, on_error: OnError
) -> Iterator[tuple[int, list[Path], list[Image.Image]]]:
    """``(batch size, paths kept, photos)``; the next batch is decoded while one is embedded."""
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_load_batch, chunks[0], on_error) if chunks else None
        for i, chunk in enumerate(chunks):
            kept, images = future.result()
            if i + 1 < len(chunks):
                future = pool.submit(_load_batch, chunks[i + 1], on_error)
            yield len(chunk), kept, images


def build_index(
    embedder: Embedder,
    photo_dir: str | Path,
    out_dir: str | Path,
    kind: IndexKind | None = None,
    batch_size: int = 32,
    *,
    run_dir: str | Path | None = None,
    on_error: OnError = "raise",
    checkpoint_seconds: float = 120.0,
    progress: bool = True,
) -> GalleryIndex:
    """Embed the photos of ``photo_dir`` (recursively) into the index folder ``out_dir``.

    If ``out_dir`` already holds an index, only photos not in it are embedded and appended; it must
    have been made by the same model. ``kind`` ``None`` keeps the existing index's kind (``exact``
    for a new index); another kind rebuilds the search structure from the stored embeddings.
    ``run_dir`` is recorded so that sketches can later be embedded with the same model. Progress
    is saved every ``checkpoint_seconds``, so running again after an interruption carries on
    where it stopped. The folders and arguments are checked before any photo is embedded.
    """
    if batch_size < 1:
        raise FgsbirError(f"batch_size must be at least 1, not {batch_size}")
    out_dir = Path(out_dir)
    index = _existing_index(out_dir)
    if index is not None:
        index.check_model(embedder)
        if kind is not None and kind != index.kind:
            index.kind, index._ann = kind, None
        if run_dir is not None:
            index.run_dir = Path(run_dir).resolve()
    listed = [p.resolve() for p in load_photo_folder(Path(photo_dir), on_error)]
    if not listed:
        raise DataError(photo_dir, f"no photos here ({', '.join(sorted(PHOTO_SUFFIXES))})")
    known = {str(p) for p in index.photos} if index else set()
    new = [p for p in listed if str(p) not in known]

    last_save = time.monotonic()
    with tqdm(
        total=len(new), desc="embedding photos", unit="photo", disable=not (progress and new)
    ) as bar:
        for done, paths, images in _photo_batches(new, batch_size, on_error):
            if images:
                embeddings = embedder.embed_photos(images, batch_size=batch_size)
                if index is None:
                    index = GalleryIndex(
                        embeddings.shape[1], embedder.identity, kind or "exact", run_dir
                    )
                index.add(embeddings, paths)
            bar.update(done)
            if time.monotonic() - last_save > checkpoint_seconds:
                index.save(out_dir, with_ann=False)
                last_save = time.monotonic()
    if index is None:
        raise DataError(photo_dir, "none of the photos could be read")
    index.save(out_dir)
    return index


def _existing_index(out_dir: Path) -> GalleryIndex | None:
    """The index in ``out_dir``, ``None`` if the folder is new (or holds only the files of an
    interrupted first build); refused if it is a file or a folder of other things."""
    if (out_dir / MANIFEST_FILE).exists():
        return GalleryIndex.load(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GalleryIndexError(f"{out_dir}: not a folder (an index is a folder)")
    if out_dir.is_dir():
        others = sorted(
            p.name
            for p in out_dir.iterdir()
            if p.name not in INDEX_FILES and not p.name.startswith(".")  # e.g. a killed write's
        )
        if others:
            raise GalleryIndexError(
                f"{out_dir}: not an index folder (it holds {others[0]}); choose a new --out"
            )
    return None


def open_index(index_dir: str | Path, embedder: Embedder) -> GalleryIndex:
    """The index of ``index_dir``, refused unless ``embedder`` is the model that built it."""
    index = GalleryIndex.load(index_dir)
    index.check_model(embedder)
    return index


def index_info(index: GalleryIndex) -> dict[str, Any]:
    """A short JSON-able description (for ``/api/health`` and the CLI)."""
    return {
        "photos": len(index),
        "kind": index.kind,
        "dim": index.dim,
        "model": index.model_identity,
        "run_dir": str(index.run_dir) if index.run_dir else None,
    }
