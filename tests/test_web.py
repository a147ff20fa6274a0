"""The search web app: page, API results, photo serving, and every kind of bad request."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from search_helpers import BARS, FakeEmbedder, bar_sketch, make_bar_gallery, make_tiny_run

from fgsbir.errors import FgsbirError
from fgsbir.index import GalleryIndex, GalleryIndexError, build_index
from fgsbir.inference import load_embedder, load_gallery_model
from fgsbir.limits import MAX_SKETCH_POINTS
from fgsbir.web.app import (
    MAX_BODY_BYTES,
    MAX_STROKES,
    SearchRequest,
    SketchBatcher,
    create_app,
    serve,
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


@pytest.fixture(scope="module")
def run_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index made by a tiny real run, which :func:`load_gallery_model` finds on its own."""
    root = tmp_path_factory.mktemp("run-index")
    run = make_tiny_run(root / "run")
    make_bar_gallery(root / "photos")
    build_index(load_embedder(run), root / "photos", root / "idx", run_dir=run, progress=False)
    return root / "idx"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port that another socket listens on for the test's duration."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


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


def test_favicon_is_served_and_linked_from_the_page(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.text.lstrip().startswith("<svg") and "<path" in icon.text
    linked = re.search(
        r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', client.get("/").text
    )
    assert linked and client.get(linked[1]).content == icon.content


def _references(html: str) -> list[str]:
    """Every URL an HTML page loads: ``src``/``href`` attributes and Swagger UI's quoted URLs."""
    return re.findall(r"""(?:src|href)=["']([^"']+)["']|url: *["']([^"']+)["']""", html)


def test_api_docs_work_offline(client: TestClient) -> None:
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and "SwaggerUIBundle" in docs.text
    urls = [a or b for a, b in _references(docs.text)]
    assert not [u for u in urls if not u.startswith("/")], urls  # nothing from another host
    assert not re.search(r"https?://", docs.text)
    assert len(urls) >= 4  # stylesheet, icon, script, the OpenAPI document
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert '"validatorUrl": null' in docs.text  # Swagger UI's default sends the spec to swagger.io
    schema = client.get("/api/openapi.json").json()
    assert "/api/search" in schema["paths"]
    assert client.get("/redoc").status_code == 404  # FastAPI's default page loads from a CDN


def test_health(client: TestClient, index_dir: Path) -> None:
    health = client.get("/api/health").json()
    assert health == {
        "status": "ok",
        "photos": len(BARS),
        "kind": "exact",
        "dim": 64,
        "model": "fake-model-a",
        "generator": False,
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
    ("content", "status", "says"),
    [
        ("{not json", 400, "request body is not valid JSON"),
        ("", 400, "request body is not valid JSON"),
        ('{"strokes": [[[1, 2]]], "k": 3', 400, "request body is not valid JSON"),
        ('{"strokes": [], "k": 3}', 422, "strokes: List should have at least 1 item"),
        ('{"strokes": [[]], "k": 3}', 422, "strokes[0]: List should have at least 1 item"),
        ('{"k": 3}', 422, "strokes: Field required"),
        ('{"strokes": [[[1, 2, 3]]]}', 422, "strokes[0][0]: Tuple should have at most 2 items"),
        ('{"strokes": [[["a", 2]]]}', 422, "strokes[0][0][0]: Input should be a valid number"),
        ('{"strokes": [[[1, NaN]]]}', 422, "strokes[0][0][1]: Input should be a finite number"),
        ('{"strokes": [[[1, 1e308]]]}', 422, "strokes[0][0][1]: Input should be less than or"),
        ('{"strokes": [[[1, 2]]], "k": 0}', 422, "k: Input should be greater than or equal to 1"),
        ('{"strokes": [[[1, 2]]], "k": 100000}', 422, "k: Input should be less than or equal"),
        ('{"strokes": [[[1, 2]]], "width": -5}', 422, "width: Input should be greater than 0"),
        ('{"strokes": [[[1, 2]]], "height": 0}', 422, "height: Input should be greater than 0"),
        ('{"strokes": [[[1, 2]]], "extra": 1}', 422, "extra: Extra inputs are not permitted"),
        ('{"strokes": "abc"}', 422, "strokes: Input should be a valid array"),
        ("[1, 2, 3]", 422, "Input should be an object"),
        ("null", 422, "Input should be an object"),
    ],
)
def test_malformed_requests_get_a_4xx_that_says_what_is_wrong(
    client: TestClient, content: str, status: int, says: str
) -> None:
    code, answer = _post_raw(client, content)
    assert code == status
    assert says in answer["error"], answer["error"]
    if status == 422:
        assert answer["error"].startswith("invalid search request: ")


def test_many_problems_are_counted_and_all_listed_in_details(client: TestClient) -> None:
    code, answer = _post_raw(client, json.dumps({"strokes": [[["a", "b"], ["c", "d"]]], "k": 0}))
    assert code == 422
    assert answer["error"] == (
        "invalid search request: strokes[0][0][0]: Input should be a valid number, unable to "
        "parse string as a number; strokes[0][0][1]: Input should be a valid number, unable to "
        "parse string as a number; strokes[0][1][0]: Input should be a valid number, unable to "
        "parse string as a number; 2 more"
    )
    assert [d["loc"] for d in answer["details"]][-2:] == [["strokes", 0, 1, 1], ["k"]]


def test_limits_on_size_strokes_and_points(client: TestClient) -> None:
    too_many_strokes = {"strokes": [[[1, 1]]] * (MAX_STROKES + 12)}
    code, answer = _post_raw(client, json.dumps(too_many_strokes))
    message = f"too many strokes: {MAX_STROKES + 12} > {MAX_STROKES}"
    assert code == 422 and answer["error"] == f"invalid search request: {message}"
    assert answer["details"] == [{"loc": [], "msg": message}]

    long_strokes = [[[float(i % 200), 3.0]] * 1000 for i in range(MAX_SKETCH_POINTS // 1000)] + [
        [[1, 1]]
    ]
    code, answer = _post_raw(client, json.dumps({"strokes": long_strokes}))
    message = f"too many points: {MAX_SKETCH_POINTS + 1} > {MAX_SKETCH_POINTS}"
    assert code == 422 and answer["error"] == f"invalid search request: {message}"
    assert client.post("/api/search", json={"strokes": long_strokes[:-1]}).status_code == 200

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


def test_a_photo_id_that_is_not_a_number_is_named(client: TestClient) -> None:
    answer = client.get("/photos/abc")
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("invalid request: path.photo_id: Input should be")


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


def test_app_embeds_with_the_run_folder_the_index_remembers(run_index: Path) -> None:
    client = TestClient(create_app(run_index, load_gallery_model(run_index)))
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


@pytest.mark.parametrize(
    ("port", "threads", "says"),
    [
        (0, None, "--port must be between 1 and 65535, not 0"),
        (-1, None, "--port must be between 1 and 65535, not -1"),
        (99999, None, "--port must be between 1 and 65535, not 99999"),
        (8000, 0, "--threads must be at least 1, not 0"),
    ],
)
def test_serve_refuses_bad_options_before_loading_anything(
    port: int, threads: int | None, says: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(FgsbirError) as raised:
        serve(tmp_path / "no-index", port=port, threads=threads)
    assert str(raised.value) == says
    assert capsys.readouterr().out == ""


def test_serve_refuses_a_busy_port_before_saying_it_serves(
    run_index: Path, busy_port: int, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(FgsbirError) as raised:
        serve(run_index, host="127.0.0.1", port=busy_port)
    assert str(raised.value) == (
        f"port {busy_port} on 127.0.0.1 is in use; choose another with --port"
    )
    assert capsys.readouterr().out == ""


def test_serve_refuses_a_host_that_is_not_this_machine(run_index: Path) -> None:
    with pytest.raises(FgsbirError) as raised:
        serve(run_index, host="192.0.2.1", port=_free_port())  # TEST-NET-1: never local
    assert str(raised.value) == "--host 192.0.2.1 is not an address of this machine"


def test_fgsbir_serve_answers_on_its_port_and_stops_on_ctrl_c(run_index: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "fgsbir", "serve", str(run_index), "--port", str(port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        watchdog = threading.Timer(120, p.kill)  # a hung server fails the test, not the suite
        watchdog.start()
        try:
            line = p.stdout.readline()  # printed once the port is bound
            url = f"http://127.0.0.1:{port}/"
            assert line == f"fgsbir: serving {len(BARS)} photos at {url} (Ctrl+C to stop)\n"
            with urllib.request.urlopen(url + "api/health", timeout=30) as answer:
                assert json.load(answer)["photos"] == len(BARS)
            p.send_signal(signal.SIGINT)
            assert p.wait(timeout=30) == 0
            assert p.stderr.read() == ""
        finally:
            watchdog.cancel()
            p.kill()
