"""The search page's "how would a person sketch it" view: its API, and how serve finds a
generator (``--generator``, or a semi-supervised run's own)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from fastapi.testclient import TestClient
from search_helpers import (
    BARS,
    FakeEmbedder,
    FakeGenerator,
    make_bar_gallery,
    make_tiny_generator_run,
    make_tiny_run,
)

from fgsbir.index import build_index
from fgsbir.inference import load_embedder, load_gallery_generator
from fgsbir.web.app import create_app


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sketch-web")
    make_bar_gallery(root / "photos")
    build_index(FakeEmbedder(), root / "photos", root / "idx", progress=False)
    return root / "idx"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A retrieval run with a generator beside its model (as a semi run keeps one), its index,
    a plain retrieval run with its index, and a generator run."""
    root = tmp_path_factory.mktemp("semi-like")
    make_bar_gallery(root / "photos")
    generator = make_tiny_generator_run(root / "generator-run")
    semi = make_tiny_run(root / "semi")
    shutil.copytree(generator, semi / "generator")
    plain = make_tiny_run(root / "plain")
    for name, run in (("semi", semi), ("plain", plain)):
        build_index(
            load_embedder(run), root / "photos", root / f"{name}-idx", run_dir=run, progress=False
        )
    return {
        "generator": generator,
        "semi_index": root / "semi-idx",
        "plain": plain,
        "plain_index": root / "plain-idx",
    }


def test_a_clicked_photo_is_sketched_as_the_generator_draws_it(index_dir: Path) -> None:
    generator = FakeGenerator()
    client = TestClient(create_app(index_dir, FakeEmbedder(), generator))  # type: ignore[arg-type]
    assert client.get("/api/health").json()["generator"] is True
    photo = sorted(BARS).index("square")  # the index holds the photos in name order
    answer = client.get(f"/api/sketch/{photo}")
    assert answer.status_code == 200
    sketch = answer.json()
    assert sketch["photo"] == photo and sketch["width"] == sketch["height"] == 256.0
    x0, y0, x1, y1 = (round(v * 256) for v in BARS["square"])
    np.testing.assert_allclose(
        sketch["strokes"], [[[x0, y0], [x1, y0], [x1, y1]], [[x1, y1], [x0, y1], [x0, y0]]], atol=5
    )
    assert client.get(f"/api/sketch/{photo}").json()["strokes"] == sketch["strokes"]
    assert generator.drawn == 1  # greedy sketches are the same every time: drawn once
    missing = client.get(f"/api/sketch/{len(BARS)}")
    assert missing.status_code == 404 and "no photo" in missing.json()["error"]


def test_without_a_generator_there_is_nothing_to_sketch(index_dir: Path) -> None:
    client = TestClient(create_app(index_dir, FakeEmbedder()))  # type: ignore[arg-type]
    assert client.get("/api/health").json()["generator"] is False
    answer = client.get("/api/sketch/0")
    assert answer.status_code == 404 and "--generator" in answer.json()["error"]


def test_a_semi_runs_generator_sketches_its_gallery(places: dict[str, Path]) -> None:
    """The index's run holds a generator/ folder (a semi run): serve uses it unasked; a named
    generator run comes first; a plain retrieval run has none."""
    index = places["semi_index"]
    found = load_gallery_generator(index)
    assert found is not None and found.model.arch.decoder == "edge_pointer"
    named = load_gallery_generator(places["plain_index"], generator_dir=places["generator"])
    assert named is not None and load_gallery_generator(places["plain_index"]) is None
    client = TestClient(create_app(index, load_embedder(places["plain"]), found))
    sketch = client.get("/api/sketch/3").json()
    points = np.concatenate([np.array(stroke) for stroke in sketch["strokes"]])
    assert len(points) == 12  # its max_points: the tiny generator never ends early
    assert np.isfinite(points).all()


def test_serve_draws_with_the_copy_bias_it_is_given(
    places: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A semi run's own generator and a named one both draw with the bias; an index whose run
    holds no generator refuses a bias in one line rather than ignoring it."""
    own = load_gallery_generator(places["semi_index"], copy_bias=4.0)
    named = load_gallery_generator(
        places["plain_index"], generator_dir=places["generator"], copy_bias=2.0
    )
    assert own is not None and own.copy_bias == 4.0
    assert named is not None and named.copy_bias == 2.0
    assert run_cli(["serve", str(places["plain_index"]), "--copy-bias", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no generator to draw with a copy bias" in err


@pytest.mark.parametrize(
    ("generator", "problem"),
    [
        ("{missing}", "{missing}: no such run folder"),
        ("{plain}", "{plain}: a retrieval run, not a generator run"),
    ],
)
def test_serve_refuses_a_bad_generator_in_one_line(
    places: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    generator: str,
    problem: str,
) -> None:
    names = {"missing": tmp_path / "nothing", "plain": places["plain"]}
    args = ["serve", str(places["plain_index"]), "--generator", generator.format(**names)]
    assert run_cli(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--generator {problem.format(**names)}" in err
