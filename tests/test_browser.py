"""The drawing page in a real headless Chromium: draw with the mouse, see ranked photos update.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``) and the Playwright Python
package; Playwright never downloads a browser here, it drives ``/usr/bin/chromium``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from search_helpers import FakeEmbedder, FakeGenerator

from fgsbir.data.synthetic import PICKLE_NAME, ensure_synthetic
from fgsbir.index import GalleryIndex, build_index
from fgsbir.sketch.io import read_qmul_pickle
from fgsbir.sketch.strokes import Sketch
from fgsbir.web.app import MAX_STROKES, create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# FGSBIR_SAVE_SCREENSHOT=1 refreshes the README's screenshot; CI leaves the checkout untouched.
SCREENSHOT_COPY = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
K = 12

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's browser with `apt-get install -y chromium`",
        allow_module_level=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shoes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Sketch, str]:
    """An index of synthetic shoe photos and a sketch whose own photo the fake model ranks first."""
    root = ensure_synthetic(tmp_path_factory.mktemp("shoes") / "data", n_photos=24)
    embedder = FakeEmbedder()
    index = build_index(embedder, root / "photo", root.parent / "idx", progress=False)
    for key, sketch in sorted(read_qmul_pickle(root / PICKLE_NAME).items()):
        photo = key.split("/")[-1].rsplit("_", 1)[0]
        if index.search(embedder.embed_sketches([sketch])[0], k=1)[0].photo.stem == photo:
            return root.parent / "idx", sketch, photo
    pytest.fail("no synthetic sketch is ranked first by the fake embedder")


@contextlib.contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """The URL of ``app`` served on a free loopback port, until the block ends."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            pytest.fail("the server did not start")
        threading.Event().wait(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(shoes: tuple[Path, Sketch, str]) -> Iterator[str]:
    with _serving(create_app(shoes[0], embedder=FakeEmbedder())) as url:
        yield url


@pytest.fixture(scope="module")
def sketching_server(shoes: tuple[Path, Sketch, str]) -> Iterator[str]:
    """The same gallery, served with a generator that sketches its photos."""
    app = create_app(shoes[0], FakeEmbedder(), FakeGenerator())  # type: ignore[arg-type]
    with _serving(app) as url:
        yield url


@contextlib.contextmanager
def _browsing(url: str) -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(url)
        yield page
        browser.close()


@pytest.fixture
def page(server: str) -> Iterator[sync_api.Page]:
    with _browsing(server) as page:
        yield page


def _stroke(page: sync_api.Page, stroke: np.ndarray, sketch: Sketch) -> None:
    """Draw one stroke of ``sketch`` on the page with the mouse."""
    box = page.locator("#pad").bounding_box()
    assert box is not None
    xy = stroke / [sketch.width, sketch.height] * [box["width"], box["height"]]
    xy += [box["x"], box["y"]]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y)
    page.mouse.up()


def _draw(page: sync_api.Page, stroke: np.ndarray, sketch: Sketch) -> dict:
    """Draw one stroke; return the search request it triggered and its answer."""
    with page.expect_response("**/api/search") as response:
        _stroke(page, stroke, sketch)
    return {"request": response.value.request.post_data_json, "answer": response.value.json()}


def _shown(page: sync_api.Page) -> list[tuple[int, int]]:
    cards = page.locator("#results .card")
    return [
        (
            int(cards.nth(i).get_attribute("data-rank")),
            int(cards.nth(i).get_attribute("data-photo")),
        )
        for i in range(cards.count())
    ]


def test_drawing_on_the_page_ranks_the_gallery_after_every_stroke(
    page: sync_api.Page, shoes: tuple[Path, Sketch, str], tmp_path: Path
) -> None:
    index_dir, sketch, photo = shoes
    index = GalleryIndex.load(index_dir)
    sync_api.expect(page.locator("#gallery-info")).to_contain_text(f"{len(index)} photos")
    assert page.locator("#results .card").count() == 0

    exchanges = []
    for n, stroke in enumerate(sketch.strokes, start=1):
        exchanges.append(_draw(page, stroke, sketch))
        assert len(exchanges[-1]["request"]["strokes"]) == n  # one search per stroke, whole sketch
        expected = [(r["rank"], r["photo"]) for r in exchanges[-1]["answer"]["results"]]
        page.wait_for_function(
            "n => document.querySelectorAll('#results .card').length === n", arg=len(expected)
        )
        assert _shown(page) == expected

    # what the page shows is the index's ranking of the strokes the page sent
    last = exchanges[-1]["request"]
    sent = Sketch.from_strokes(
        [np.array(s) for s in last["strokes"]], last["width"], last["height"]
    )
    truth = index.search(FakeEmbedder().embed_sketches([sent])[0], k=K)
    shown = _shown(page)
    assert [rank for rank, _ in shown] == list(range(1, K + 1))
    assert [index.photos[i] for _, i in shown] == [r.photo for r in truth]
    assert index.photos[shown[0][1]].stem == photo  # the drawn shoe comes first
    page.wait_for_function(
        "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)"
    )
    sync_api.expect(page.locator("#status")).to_contain_text(f"{len(sketch.strokes)} strokes")

    page.screenshot(path=tmp_path / "search.png", full_page=True)
    if os.environ.get("FGSBIR_SAVE_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "search.png", SCREENSHOT_COPY)

    with page.expect_response("**/api/search") as response:
        page.click("#undo")
    assert len(response.value.request.post_data_json["strokes"]) == len(sketch.strokes) - 1
    page.click("#clear")
    sync_api.expect(page.locator("#results .card")).to_have_count(0)
    sync_api.expect(page.locator("#empty")).to_be_visible()
    assert page.locator("#undo").is_disabled()


def _too_many_strokes(route: sync_api.Route) -> None:
    body = route.request.post_data_json
    route.continue_(post_data=json.dumps({**body, "strokes": body["strokes"] * (MAX_STROKES + 1)}))


ROUTES = {  # what happens to the page's search request -> the message the page shows
    "too-many-strokes": (
        _too_many_strokes,
        f"invalid search request: too many strokes: {MAX_STROKES + 1} > {MAX_STROKES}",
    ),
    "server-down": (
        lambda route: route.abort(),
        "server unreachable: is fgsbir serve still running?",
    ),
    "proxy-error-page": (
        lambda route: route.fulfill(status=502, content_type="text/html", body="<h1>Bad</h1>"),
        "search failed: HTTP 502",
    ),
}


@pytest.mark.parametrize("case", list(ROUTES))
def test_a_failed_search_says_what_went_wrong(
    page: sync_api.Page, shoes: tuple[Path, Sketch, str], case: str
) -> None:
    handler, message = ROUTES[case]
    page.route("**/api/search", handler)
    sketch = shoes[1]
    _stroke(page, sketch.strokes[0], sketch)
    sync_api.expect(page.locator("#error")).to_have_text(message)
    sync_api.expect(page.locator("#busy")).to_be_hidden()
    assert page.locator("#results .card").count() == 0
    page.click("#undo")  # an empty canvas has nothing to be wrong about
    sync_api.expect(page.locator("#error")).to_be_hidden()


_INK = """() => {
    const canvas = document.querySelector("#sketch-canvas");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let ink = 0;
    for (let i = 3; i < data.length; i += 4) ink += data[i] > 0;
    return ink;
}"""
_WATCH_DRAWING = """() => {
    window.drawnSeen = [];
    const canvas = document.querySelector("#sketch-canvas");
    new MutationObserver(() => window.drawnSeen.push(Number(canvas.dataset.drawn)))
        .observe(canvas, {attributes: true, attributeFilter: ["data-drawn"]});
}"""


def test_a_clicked_photo_is_sketched_stroke_by_stroke(
    sketching_server: str, shoes: tuple[Path, Sketch, str]
) -> None:
    sketch = shoes[1]
    with _browsing(sketching_server) as page:
        sync_api.expect(page.locator("#gallery-info")).to_contain_text("click a photo")
        _draw(page, sketch.strokes[0], sketch)
        card = page.locator("#results .card.sketchable").nth(1)
        page.evaluate(_WATCH_DRAWING)
        with page.expect_response("**/api/sketch/*") as response:
            card.click()
        answer = response.value.json()
        assert answer["photo"] == int(card.get_attribute("data-photo"))
        points = sum(len(stroke) for stroke in answer["strokes"])
        sync_api.expect(page.locator("#sketch-view")).to_be_visible()
        assert page.locator("#sketch-photo").get_attribute("src") == f"/photos/{answer['photo']}"
        page.wait_for_function(
            "n => Number(document.querySelector('#sketch-canvas').dataset.drawn) === n", arg=points
        )
        seen = page.evaluate("() => window.drawnSeen")
        assert seen[0] < points and seen == sorted(seen)  # point by point, never backwards
        assert page.evaluate(_INK) > 0
        sync_api.expect(page.locator("#sketch-status")).to_contain_text(
            f"{len(answer['strokes'])} strokes, {points} points"
        )
        before = len(seen)
        page.click("#sketch-replay")
        page.wait_for_function(
            "([n, total]) => window.drawnSeen.length > n && window.drawnSeen.at(-1) === total",
            arg=[before, points],
        )
        replay = page.evaluate("n => window.drawnSeen.slice(n)", before)
        assert replay[0] < points and replay == sorted(replay)  # drawn again from the start
        page.keyboard.press("Escape")
        sync_api.expect(page.locator("#sketch-view")).to_be_hidden()


def test_without_a_generator_photos_are_not_sketched(
    page: sync_api.Page, shoes: tuple[Path, Sketch, str]
) -> None:
    sketch = shoes[1]
    _draw(page, sketch.strokes[0], sketch)
    sync_api.expect(page.locator("#results .card").first).to_be_visible()
    assert page.locator("#results .card.sketchable").count() == 0
    page.locator("#results .card").first.click()
    sync_api.expect(page.locator("#sketch-view")).to_be_hidden()


def test_api_docs_render_offline(page: sync_api.Page, server: str) -> None:
    page.goto("about:blank")  # the search page's own requests end here, before listening
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(f"{server}/api/docs")
    sync_api.expect(page.locator(".opblock-summary-path").first).to_be_visible()
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/api/search", "/api/health"} <= {p.strip() for p in paths}
    assert len(requested) >= 4 and not failed
    assert [url for url in requested if not url.startswith(f"{server}/")] == []
