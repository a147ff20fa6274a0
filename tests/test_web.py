"""The search web app: page, API results, photo serving, and every kind of bad request."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from search_helpers import BARS, FakeEmbedder, bar_sketch, make_bar_gallery, make_tiny_run

from fgsbir.errors import FgsbirError
from fgsbir.index import GalleryIndex, GalleryIndexError, build_index
from fgsbir.inference import load_embedder, load_gallery_model
from fgsbir.web.app import (
    MAX_BODY_BYTES,
    MAX_POINTS,
    MAX_STROKES,
    SearchRequest,
    SketchBatcher,
    create_app,
)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("web")
    make_bar_gallery(root / "photos")
    build_index(FakeEmbedder(), root / "photos", root / "idx", progress=False)
    return root / "idx"


@pytest.fixture(scope="module")
def client(index_dir: Path) -> TestClient:
    return TestClient(create_app(index_dir, embedder=FakeEmbedder()))


def _body(name: str, k: int = 5, width: float = 256, height: float = 256) -> dict:
    strokes = [s.tolist() for s in bar_sketch(name, width, height).strokes]
    return {"strokes": strokes, "k": k, "width": width, "height": height}


def test_page_and_its_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<canvas id="pad"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    assert "http" not in page.text.replace("http://www.w3.org", "")  # nothing from the network


def test_health(client: TestClient, index_dir: Path) -> None:
    health = client.get("/api/health").json()
    assert health == {
        "status": "ok",
        "photos": len(BARS),
        "kind": "exact",
        "dim": 64,
        "model": "fake-model-a",
    }


def test_search_ranks_the_gallery_like_the_index(client: TestClient, index_dir: Path) -> None:
    index = GalleryIndex.load(index_dir)
    for name, (width, height) in zip(BARS, [(256, 256), (300, 200)] * len(BARS), strict=False):
        answer = client.post("/api/search", json=_body(name, 5, width, height))
        assert answer.status_code == 200
        results = answer.json()["results"]
        sketch = bar_sketch(name, width, height)
        expected = index.search(FakeEmbedder().embed_sketches([sketch])[0], k=5)
        assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
        assert [index.photos[r["photo"]] for r in results] == [e.photo for e in expected]
        np.testing.assert_allclose([r["score"] for r in results], [e.score for e in expected])
        if width == height:  # a wide canvas is fitted into the square, so bars move
            assert results[0]["name"] == f"{name}.jpg"
        photo = client.get(results[0]["url"])
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        assert photo.content == index.photos[results[0]["photo"]].read_bytes()


def test_degenerate_sketches_still_get_answers(client: TestClient) -> None:
    for strokes in ([[[10, 10]]], [[[5, 5], [5, 5], [5, 5]]], [[[0, 0]], [[255, 255]]]):
        answer = client.post("/api/search", json={"strokes": strokes, "k": 3})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["results"]) == 3


def _post_raw(client: TestClient, content: bytes | str) -> tuple[int, dict]:
    answer = client.post(
        "/api/search", content=content, headers={"content-type": "application/json"}
    )
    return answer.status_code, answer.json()


@pytest.mark.parametrize(
    ("content", "status"),
    [
        ("{not json", 400),
        ("", 400),
        ('{"strokes": [[[1, 2]]], "k": 3', 400),
        ('{"strokes": [], "k": 3}', 422),  # no strokes
        ('{"strokes": [[]], "k": 3}', 422),  # a stroke without points
        ('{"k": 3}', 422),
        ('{"strokes": [[[1, 2, 3]]]}', 422),  # points are [x, y]
        ('{"strokes": [[["a", 2]]]}', 422),
        ('{"strokes": [[[1, NaN]]]}', 422),
        ('{"strokes": [[[1, 1e308]]]}', 422),
        ('{"strokes": [[[1, 2]]], "k": 0}', 422),
        ('{"strokes": [[[1, 2]]], "k": 100000}', 422),
        ('{"strokes": [[[1, 2]]], "width": -5}', 422),
        ('{"strokes": [[[1, 2]]], "height": 0}', 422),
        ('{"strokes": [[[1, 2]]], "extra": 1}', 422),
        ('{"strokes": "abc"}', 422),
        ("[1, 2, 3]", 422),
        ("null", 422),
    ],
)
def test_malformed_requests_get_a_clear_4xx(client: TestClient, content: str, status: int) -> None:
    code, answer = _post_raw(client, content)
    assert code == status
    assert isinstance(answer["error"], str) and answer["error"]


def test_limits_on_size_strokes_and_points(client: TestClient) -> None:
    too_many_strokes = {"strokes": [[[1, 1]]] * (MAX_STROKES + 1)}
    code, answer = _post_raw(client, json.dumps(too_many_strokes))
    assert code == 422 and "strokes" in json.dumps(answer["details"])

    long_stroke = [[float(i % 200), 3.0] for i in range(MAX_POINTS + 1)]
    code, answer = _post_raw(client, json.dumps({"strokes": [long_stroke]}))
    assert code == 422 and str(MAX_POINTS) in json.dumps(answer)

    huge = json.dumps({"strokes": [[[1.123456789, 2.123456789]] * 80_000]})
    assert len(huge) > MAX_BODY_BYTES
    code, answer = _post_raw(client, huge)
    assert code == 413 and "bytes" in answer["error"]

    # a streamed (chunked) body has no Content-Length: it is cut off while being read
    chunks = (b" " * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 2))
    answer = client.post(
        "/api/search", content=chunks, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413


@pytest.mark.parametrize(
    "url",
    [
        "/photos/-1",
        "/photos/8",
        "/photos/99999999999999999999999",
        "/photos/abc",
        "/photos/..%2F..%2F..%2Fetc%2Fpasswd",
        "/photos/%2e%2e/%2e%2e/etc/passwd",
        "/photos/0/../../index.json",
        "/static/..%2F..%2Findex.py",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/photos//etc/passwd",
        "/api/../../etc/passwd",
    ],
)
def test_nothing_outside_the_gallery_is_served(client: TestClient, url: str) -> None:
    answer = client.get(url)
    assert 400 <= answer.status_code < 500
    assert "root:" not in answer.text and "def create_app" not in answer.text
    assert "error" in answer.json()


def test_a_photo_deleted_after_indexing_is_a_404(tmp_path: Path) -> None:
    paths = make_bar_gallery(tmp_path / "photos", ["h-top", "v-left"])
    build_index(FakeEmbedder(), tmp_path / "photos", tmp_path / "idx", progress=False)
    client = TestClient(create_app(tmp_path / "idx", embedder=FakeEmbedder()))
    row = GalleryIndex.load(tmp_path / "idx").photos.index(paths[0].resolve())
    paths[0].unlink()
    assert client.get(f"/photos/{row}").status_code == 404
    assert client.get(f"/photos/{1 - row}").status_code == 200


def test_app_refuses_another_model(index_dir: Path) -> None:
    with pytest.raises(GalleryIndexError, match="fake-model-a"):
        create_app(index_dir, embedder=FakeEmbedder("fake-model-b"))


def test_app_embeds_with_the_run_folder_the_index_remembers(tmp_path: Path) -> None:
    run = make_tiny_run(tmp_path / "run")
    make_bar_gallery(tmp_path / "photos")
    build_index(load_embedder(run), tmp_path / "photos", tmp_path / "idx", run_dir=run)
    client = TestClient(create_app(tmp_path / "idx", load_gallery_model(tmp_path / "idx")))
    results = client.post("/api/search", json=_body("square", k=len(BARS))).json()["results"]
    assert sorted(r["photo"] for r in results) == list(range(len(BARS)))
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_concurrent_searches_are_batched_and_each_gets_its_own_answer(index_dir: Path) -> None:
    class Slow(FakeEmbedder):
        """Records batch sizes; refuses sketches on a 123-wide canvas."""

        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def embed_sketches(self, sketches: list, batch_size: int = 32) -> np.ndarray:
            self.batches.append(len(sketches))
            time.sleep(0.05)
            if any(s.width == 123 for s in sketches):
                raise FgsbirError("cannot embed this one")
            return super().embed_sketches(sketches)

    index = GalleryIndex.load(index_dir)
    embedder = Slow()
    batcher = SketchBatcher(index, embedder)
    queries = [
        SearchRequest.model_validate(_body(name, k=1 + i % 4))
        for i, name in enumerate(list(BARS) * 2)
    ]
    bad = SearchRequest.model_validate(_body("square", width=123))
    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(batcher.search, q) for q in [*queries, bad]]
        results = [a.result() for a in answers[:-1]]
        with pytest.raises(FgsbirError, match="cannot embed"):
            answers[-1].result()

    assert max(embedder.batches) > 1  # requests were answered together
    for query, found in zip(queries, results, strict=True):
        alone = index.top(FakeEmbedder().embed_sketches([query.sketch()]), query.k)[0]
        assert [row for row, _ in found] == [row for row, _ in alone]
        np.testing.assert_allclose([s for _, s in found], [s for _, s in alone], atol=1e-5)
