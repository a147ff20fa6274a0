"""Search benchmark: sketch-to-top-10 latency at 10k, 100k and 1M photos, approximate-index recall,
indexing throughput on real photos, and 8 concurrent clients against ``fgsbir serve``.

The model is the default architecture and preprocessing of ``fgsbir train`` (EfficientNet-Lite0
up to its stride-16 features on a 4x4 grid, 128 px, photos as edge maps, 256-d embeddings) with
untrained weights: timings do not depend on the weights. Query sketches are real human sketches
(QMUL-Chair-V2) when ``../shared/data`` is present, else synthetic ones. Random unit vectors stand
in for photo embeddings at scale, drawn two ways:

* ``isotropic``: uniform on the sphere. No point has meaningful neighbours (every similarity is
  about 0 +- 1/sqrt(D)), the worst case for an approximate index;
* ``clustered``: families of 100 near-identical products around random centres, with queries near
  one gallery photo -- closer to real embeddings, where a sketch's photo and its look-alikes stand
  out from the rest of the gallery.

PyTorch runs on 2 threads (this machine's cores) and, at 100k, once more on 1 thread; the load
test runs ``fgsbir serve`` with PyTorch's default threads and with ``--threads 1``. The cores are
shared with other work: each operation of a multi-threaded forward pass waits for its slowest
thread, so a busy machine slows 2 threads far more than 1 (the load average is recorded).

Run ``python benchmarks/search.py`` (``--quick`` for a small smoke run that is not recorded).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import SHARED_DATA, record

from fgsbir.config import config_to_dict
from fgsbir.data.synthetic import PICKLE_NAME, ensure_synthetic
from fgsbir.index import GalleryIndex, build_index
from fgsbir.inference import Embedder, load_embedder
from fgsbir.models.embedding import EmbeddingArch, build_embedding_net
from fgsbir.runs import save_model
from fgsbir.sketch.io import read_qmul_pickle
from fgsbir.sketch.strokes import Sketch
from fgsbir.train.supervised import TrainConfig

TRAIN_CONFIG = TrainConfig(model=EmbeddingArch(pretrained=False))
"""The default retrieval model's architecture and preprocessing (``TrainConfig``), untrained."""
MODEL_CONFIG = {"kind": "embedding", **config_to_dict(TRAIN_CONFIG)}  # its run's config.json
K = 10


def _ms(seconds: list[float]) -> dict[str, float]:
    values = 1000 * np.asarray(seconds)
    return {
        "median_ms": round(float(np.median(values)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
    }


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def isotropic(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    return _unit(rng.standard_normal((n, dim), dtype=np.float32))


def clustered(n: int, dim: int, rng: np.random.Generator, family: int = 100) -> np.ndarray:
    """Families of ``family`` vectors with cosine ~0.5 to each other, ~0 to other families."""
    centres = isotropic(max(1, n // family), dim, rng)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # in chunks, to bound the temporary memory
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) / np.sqrt(dim)
        out[start:stop] = centres[rng.integers(0, len(centres), stop - start)] + noise
    return _unit(out)


def near(gallery: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Queries close to random gallery vectors (a sketch near its photo, cosine ~0.7)."""
    picks = gallery[rng.integers(0, len(gallery), count)]
    noise = rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(gallery.shape[1])
    return _unit(picks + noise)


def exact_top(gallery: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    tops = []
    for chunk in np.array_split(queries, max(1, len(queries) // 50)):
        scores = chunk @ gallery.T
        tops.append(np.argpartition(-scores, k - 1, axis=1)[:, :k])
    return np.concatenate(tops)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)) / truth.shape[1], 4)


def make_index(embeddings: np.ndarray, identity: str, kind: str) -> tuple[GalleryIndex, float]:
    """An index over ``embeddings`` (fake photo paths), with its search structure built."""
    index = GalleryIndex(embeddings.shape[1], identity, kind)  # type: ignore[arg-type]
    index.add(embeddings, [f"photo_{i}.jpg" for i in range(len(embeddings))])
    start = time.perf_counter()
    index.prepare()
    return index, time.perf_counter() - start


def query_latency(
    embedder: Embedder, index: GalleryIndex, sketches: list[Sketch]
) -> dict[str, Any]:
    """Sketch in, top 10 out: embedding plus search, one query at a time."""
    for sketch in sketches[:5]:  # warm-up
        index.search(embedder.embed_sketches([sketch])[0], K)
    total, embed, search = [], [], []
    for sketch in sketches:
        t0 = time.perf_counter()
        query = embedder.embed_sketches([sketch])[0]
        t1 = time.perf_counter()
        index.search(query, K)
        t2 = time.perf_counter()
        total.append(t2 - t0)
        embed.append(t1 - t0)
        search.append(t2 - t1)
    return {
        **_ms(total),
        "embed_median_ms": _ms(embed)["median_ms"],
        "search_median_ms": _ms(search)["median_ms"],
        "queries": len(sketches),
    }


def search_latency(index: GalleryIndex, queries: np.ndarray) -> float:
    """Median milliseconds of one search (no embedding)."""
    times = []
    for query in queries:
        start = time.perf_counter()
        index.search_ids(query, K)
        times.append(time.perf_counter() - start)
    return _ms(times)["median_ms"]


def approximate(
    kind: str,
    n: int,
    dim: int,
    embedder: Embedder,
    sketches: list[Sketch],
    settings: list[int],
    rng: np.random.Generator,
    distributions: tuple[str, ...] = ("clustered", "isotropic"),
) -> dict[str, Any]:
    """Build time, and recall@10 against exact search with its latency for each setting; the
    sketch-to-top-10 latency with the first setting reaching 0.95 recall on clustered vectors."""
    param = "ivf_nprobe" if kind == "ivf" else "hnsw_ef_search"
    out: dict[str, Any] = {}
    for name in distributions:
        draw = clustered if name == "clustered" else isotropic
        gallery = draw(n, dim, rng)
        queries = near(gallery, 500, rng) if name == "clustered" else isotropic(500, dim, rng)
        truth = exact_top(gallery, queries)
        index, build_s = make_index(gallery, embedder.identity, kind)
        rows = []
        for value in settings:
            index.params[param] = value
            found = index.search_ids(queries, K)[1]
            rows.append(
                {
                    param: value,
                    "recall_at_10": recall(found, truth),
                    "search_median_ms": search_latency(index, queries[:100]),
                }
            )
        out[name] = {"build_s": round(build_s, 1), "settings": rows}
        if name == "clustered":
            index.params[param] = next(
                (r[param] for r in rows if r["recall_at_10"] >= 0.95), settings[-1]
            )
            out[name]["chosen"] = {
                param: index.params[param],
                "sketch_to_top10": query_latency(embedder, index, sketches),
            }
        del index, gallery
    return out


def indexing_throughput(
    embedder: Embedder, run_dir: Path, out: Path, limit: int | None = None
) -> dict[str, Any]:
    """Index ``shoev2-photos`` (its first ``limit`` photos, linked into a folder, if given)."""
    photos = SHARED_DATA / "shoev2-photos"
    if not photos.is_dir():
        return {"skipped": f"{photos} not found"}
    if limit is not None:
        subset = out.parent / "photo-subset"
        subset.mkdir()
        for photo in sorted(photos.iterdir())[:limit]:
            (subset / photo.name).symlink_to(photo)
        photos = subset
    start = time.perf_counter()
    index = build_index(embedder, photos, out, batch_size=32, run_dir=run_dir, progress=False)
    seconds = time.perf_counter() - start
    return {
        "photos": len(index),
        "seconds": round(seconds, 1),
        "photos_per_s": round(len(index) / seconds, 1),
        "batch_size": 32,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_test(
    index_dir: Path, sketches: list[Sketch], requests: int, clients: int, threads: int | None
) -> dict[str, Any]:
    """``clients`` threads send ``requests`` searches in all to ``fgsbir serve`` on loopback."""
    port = _free_port()
    command = [sys.executable, "-m", "fgsbir", "serve", str(index_dir), "--port", str(port)]
    server = subprocess.Popen(
        command + (["--threads", str(threads)] if threads else []), stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("fgsbir serve did not start")
        bodies = [
            {
                "strokes": [s.tolist() for s in sk.strokes],
                "k": K,
                "width": sk.width,
                "height": sk.height,
            }
            for sk in sketches
        ]
        latencies: list[float] = []
        errors: list[str] = []
        counter = iter(range(requests))
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    start = time.perf_counter()
                    try:
                        answer = http.post("/api/search", json=bodies[i % len(bodies)])
                        ok = answer.status_code == 200 and len(answer.json()["results"]) == K
                        problem = None if ok else f"HTTP {answer.status_code}"
                    except httpx.HTTPError as err:
                        problem = repr(err)
                    with lock:
                        latencies.append(time.perf_counter() - start)
                        if problem:
                            errors.append(problem)

        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "requests": requests,
        "clients": clients,
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        **_ms(latencies),
        "throughput_per_s": round(requests / wall, 1),
    }


def query_sketches(count: int, tmp: Path) -> tuple[list[Sketch], str]:
    chairs = SHARED_DATA / "chairv2-sketches" / "ChairV2_Coordinate"
    if chairs.exists():
        found = read_qmul_pickle(chairs)
        source = "QMUL-Chair-V2 human sketches"
    else:
        found = read_qmul_pickle(ensure_synthetic(tmp / "synthetic") / PICKLE_NAME)
        source = "synthetic sketches"
    keys = sorted(found)
    picks = np.random.default_rng(0).choice(len(keys), count, replace=len(keys) < count)
    return [found[keys[i]] for i in picks], source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, nothing recorded")
    args = parser.parse_args()
    torch.set_num_threads(2)
    sizes = [2_000, 20_000] if args.quick else [10_000, 100_000, 1_000_000]
    rng = np.random.default_rng(0)
    dim = TRAIN_CONFIG.model.embedding_dim
    began = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = build_embedding_net(TRAIN_CONFIG.model)
        save_model(tmp / "run", model, MODEL_CONFIG, None, "timing")
        embedder = load_embedder(tmp / "run", "cpu")
        sketches, source = query_sketches(100, tmp)
        results: dict[str, Any] = {
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "model": "fgsbir train's default architecture (untrained weights), CPU",
            "model_config": {**MODEL_CONFIG["model"], **MODEL_CONFIG["prep"]},
            "query_sketches": source,
            "exact": {},
        }
        for n in sizes:
            index, _ = make_index(isotropic(n, dim, rng), embedder.identity, "exact")
            results["exact"][str(n)] = query_latency(embedder, index, sketches)
            print(n, results["exact"][str(n)], flush=True)
            if n == sizes[1]:  # the same with one thread, the robust choice on busy cores
                torch.set_num_threads(1)
                results["exact_one_thread"] = {str(n): query_latency(embedder, index, sketches)}
                torch.set_num_threads(2)
                print(results["exact_one_thread"], flush=True)
            del index
        results["ivf"] = {
            str(sizes[-1]): approximate(
                "ivf", sizes[-1], dim, embedder, sketches, [8, 16, 32, 64, 128], rng
            )
        }
        print(results["ivf"], flush=True)
        results["hnsw"] = {
            str(sizes[1]): approximate(
                "hnsw", sizes[1], dim, embedder, sketches, [32, 64, 128], rng, ("clustered",)
            )
        }
        print(results["hnsw"], flush=True)
        results["indexing"] = indexing_throughput(
            embedder, tmp / "run", tmp / "shoes", limit=64 if args.quick else None
        )
        print(results["indexing"], flush=True)
        if (tmp / "shoes").is_dir():
            count = 100 if args.quick else 1000
            results["load"] = {"gallery": "shoev2-photos"}
            for name, threads in (("default_threads", None), ("threads_1", 1)):
                results["load"][name] = load_test(tmp / "shoes", sketches, count, 8, threads)
                print(name, results["load"][name], flush=True)
    results["total_s"] = round(time.perf_counter() - began, 1)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.quick:
        record("search", results)
    print(results)


if __name__ == "__main__":
    main()
