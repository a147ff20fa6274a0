"""The photo gallery index: build, incremental add, model check, search, storage, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_helpers import BARS, FakeEmbedder, bar_sketch, make_bar_gallery, make_tiny_run

from fgsbir.cli import main
from fgsbir.errors import DataError, DataWarning, FgsbirError
from fgsbir.index import (
    ANN_FILE,
    MANIFEST_FILE,
    GalleryIndex,
    GalleryIndexError,
    build_index,
    open_index,
)
from fgsbir.inference import load_embedder, load_gallery_model
from fgsbir.sketch.io import load_sketch, write_png, write_stroke_json, write_svg

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 20 random centres: structure an approximate index can exploit."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((20, dim)))
    return _unit(centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim)))


def _brute_force(embeddings: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(embeddings @ query), kind="stable")[:k]


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    make_bar_gallery(tmp_path / "photos")
    return tmp_path / "photos"


def test_build_index_stores_embeddings_paths_and_model(gallery: Path, tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    index = build_index(embedder, gallery, tmp_path / "idx", batch_size=3, progress=False)

    assert len(index) == len(BARS) == embedder.photos_embedded
    assert {p.stem for p in index.photos} == set(BARS)
    assert all(p.is_absolute() for p in index.photos)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    assert manifest["model"] == "fake-model-a" and manifest["count"] == len(BARS)

    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.photos == index.photos
    np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
    # the stored embedding of each photo is what the model gives for it
    again = FakeEmbedder().embed_photos([Image.open(loaded.photos[0])])
    np.testing.assert_allclose(loaded.embeddings[0], again[0], atol=1e-6)


def test_sketch_finds_its_bar(gallery: Path, tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    index = build_index(embedder, gallery, tmp_path / "idx", progress=False)
    for name in BARS:
        results = index.search(embedder.embed_sketches([bar_sketch(name)])[0], k=3)
        assert results[0].photo.stem == name
        assert [r.rank for r in results] == [1, 2, 3]
        assert results[0].score >= results[1].score >= results[2].score


def test_adding_photos_embeds_only_the_new_ones(gallery: Path, tmp_path: Path) -> None:
    names = list(BARS)
    shutil.rmtree(gallery)
    make_bar_gallery(gallery, names[:5])
    build_index(FakeEmbedder(), gallery, tmp_path / "idx", progress=False)
    before = GalleryIndex.load(tmp_path / "idx")

    make_bar_gallery(gallery, names[5:])
    embedder = FakeEmbedder()
    after = build_index(embedder, gallery, tmp_path / "idx", progress=False)

    assert embedder.photos_embedded == len(names) - 5
    assert len(after) == len(names)
    assert after.photos[:5] == before.photos
    np.testing.assert_array_equal(after.embeddings[:5], before.embeddings)
    assert len(GalleryIndex.load(tmp_path / "idx")) == len(names)


def test_refuses_an_index_made_by_another_model(gallery: Path, tmp_path: Path) -> None:
    build_index(FakeEmbedder("model-a"), gallery, tmp_path / "idx", progress=False)
    other = FakeEmbedder("model-b")
    with pytest.raises(GalleryIndexError, match=r"model-a.*model-b"):
        build_index(other, gallery, tmp_path / "idx", progress=False)
    with pytest.raises(GalleryIndexError, match=r"model-a.*model-b"):
        open_index(tmp_path / "idx", embedder=other)
    assert other.photos_embedded == 0


def test_bad_photo_is_skipped_with_a_warning_or_stops_the_build(
    gallery: Path, tmp_path: Path
) -> None:
    (gallery / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        build_index(FakeEmbedder(), gallery, tmp_path / "a", progress=False)
    with pytest.warns(DataWarning, match=r"broken\.jpg"):
        index = build_index(
            FakeEmbedder(), gallery, tmp_path / "b", on_error="warn", progress=False
        )
    assert len(index) == len(BARS)


def test_interrupted_build_resumes_where_it_stopped(gallery: Path, tmp_path: Path) -> None:
    class Crashing(FakeEmbedder):
        def embed_photos(self, images: list, batch_size: int = 32) -> np.ndarray:
            if self.photos_embedded >= 4:
                raise KeyboardInterrupt
            return super().embed_photos(images, batch_size)

    with pytest.raises(KeyboardInterrupt):
        build_index(
            Crashing(),
            gallery,
            tmp_path / "idx",
            batch_size=2,
            checkpoint_seconds=0,
            progress=False,
        )
    assert len(GalleryIndex.load(tmp_path / "idx")) == 4

    embedder = FakeEmbedder()
    index = build_index(embedder, gallery, tmp_path / "idx", progress=False)
    assert embedder.photos_embedded == len(BARS) - 4 and len(index) == len(BARS)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_search_matches_brute_force(kind: str, tmp_path: Path) -> None:
    embeddings = _clustered(3000, 24, seed=0)
    queries = _clustered(30, 24, seed=1)
    index = GalleryIndex(24, "m", kind)
    index.add(embeddings, [f"p{i}.jpg" for i in range(len(embeddings))])
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert (tmp_path / "idx" / ANN_FILE).exists() == (kind != "exact")

    recalls = []
    for query in queries:
        truth = _brute_force(embeddings, query, 10)
        results = loaded.search(query, k=10)
        ids = [int(r.photo.stem[1:]) for r in results]
        recalls.append(len(set(ids) & set(truth.tolist())) / 10)
        np.testing.assert_allclose([r.score for r in results], embeddings[ids] @ query, atol=1e-5)
        if kind == "exact":
            assert ids == truth.tolist()
    assert np.mean(recalls) >= (1.0 if kind == "exact" else 0.9)


def test_approximate_index_grows_and_can_change_kind(gallery: Path, tmp_path: Path) -> None:
    embeddings = _clustered(500, 16, seed=2)
    index = GalleryIndex(16, "m", "hnsw")
    index.add(embeddings[:300], [f"p{i}" for i in range(300)])
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    loaded.add(embeddings[300:], [f"p{i}" for i in range(300, 500)])
    # a photo added after the faiss structure was built is found
    assert loaded.search(embeddings[450], k=1)[0].photo.name == "p450"

    build_index(FakeEmbedder(), gallery, tmp_path / "bars", progress=False)
    embedder = FakeEmbedder()
    ivf = build_index(embedder, gallery, tmp_path / "bars", kind="ivf", progress=False)
    assert embedder.photos_embedded == 0 and ivf.kind == "ivf"
    assert GalleryIndex.load(tmp_path / "bars").kind == "ivf"
    kept = build_index(FakeEmbedder(), gallery, tmp_path / "bars", progress=False)
    assert kept.kind == "ivf"  # no kind: the existing index's


def test_build_checks_its_folders_before_embedding(gallery: Path, tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no photos"):
        build_index(embedder, tmp_path / "empty", tmp_path / "idx", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GalleryIndexError, match="not a folder"):
        build_index(embedder, gallery, tmp_path / "file", progress=False)
    with pytest.raises(GalleryIndexError, match=r"not an index folder \(it holds corner.jpg\)"):
        build_index(embedder, gallery, gallery, progress=False)
    with pytest.raises(FgsbirError, match="batch_size"):
        build_index(embedder, gallery, tmp_path / "idx", batch_size=0, progress=False)
    assert embedder.photos_embedded == 0 and not (tmp_path / "idx").exists()


def test_damaged_or_missing_index_folder(gallery: Path, tmp_path: Path) -> None:
    with pytest.raises(GalleryIndexError, match="not an index folder"):
        GalleryIndex.load(tmp_path)
    build_index(FakeEmbedder(), gallery, tmp_path / "idx", progress=False)
    (tmp_path / "idx" / "photos.json").write_text("[")
    with pytest.raises(GalleryIndexError, match="damaged"):
        GalleryIndex.load(tmp_path / "idx")


def test_query_of_the_wrong_size_is_refused() -> None:
    index = GalleryIndex(8, "m")
    index.add(_unit(np.ones((2, 8))), ["a", "b"])
    with pytest.raises(GalleryIndexError, match="size 5"):
        index.search(np.ones(5, np.float32))
    assert len(index.search(_unit(np.ones(8)), k=10)) == 2  # k larger than the gallery


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("run") / "run")


@pytest.mark.parametrize("fmt", ["svg", "json", "png"])
def test_cli_index_and_search_each_sketch_format(
    fmt: str, tiny_run: Path, gallery: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", str(tiny_run), str(gallery), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    sketch = bar_sketch("h-middle")
    path = tmp_path / f"query.{fmt}"
    {"svg": write_svg, "json": write_stroke_json, "png": write_png}[fmt](sketch, path)

    assert main(["search", str(tmp_path / "idx"), str(path), "-k", "5", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]

    embedder = load_gallery_model(tmp_path / "idx")  # the run folder the index remembers
    index = open_index(tmp_path / "idx", embedder)
    query = embedder.embed_sketches([load_sketch(path)])[0]
    truth = _brute_force(index.embeddings, query, 5)
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert [r["photo"] for r in results] == [str(index.photos[i]) for i in truth]
    np.testing.assert_allclose(
        [r["score"] for r in results], index.embeddings[truth] @ query, atol=1e-4
    )


def test_cli_reports_a_wrong_model_as_one_line(
    tiny_run: Path, gallery: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_index(FakeEmbedder(), gallery, tmp_path / "idx", progress=False)
    assert main(["index", str(tiny_run), str(gallery), "--out", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert "fake-model-a" in err and load_embedder(tiny_run).identity in err


def test_gallery_model_is_the_named_run_or_the_one_the_index_remembers(
    tiny_run: Path, gallery: Path, tmp_path: Path
) -> None:
    build_index(FakeEmbedder(), gallery, tmp_path / "fake", progress=False)
    with pytest.raises(GalleryIndexError, match="does not record the run folder"):
        load_gallery_model(tmp_path / "fake")
    named = load_gallery_model(tmp_path / "fake", tiny_run, device="cpu")
    assert named.identity == load_embedder(tiny_run).identity
    with pytest.raises(GalleryIndexError, match="fake-model-a"):
        open_index(tmp_path / "fake", named)

    build_index(named, gallery, tmp_path / "real", run_dir=tiny_run, progress=False)
    remembered = load_gallery_model(tmp_path / "real", device="cpu")
    assert open_index(tmp_path / "real", remembered).run_dir == tiny_run.resolve()


@pytest.mark.realdata
def test_index_real_shoe_photos_and_search_with_a_real_sketch(
    tiny_run: Path, tmp_path: Path
) -> None:
    photos, sketches = SHARED_DATA / "shoev2-photos", SHARED_DATA / "qmul-shoe-v1" / "test"
    if not photos.is_dir() or not sketches.is_dir():
        pytest.skip(f"real data not found under {SHARED_DATA}")
    gallery = tmp_path / "photos"
    gallery.mkdir()
    for photo in sorted(photos.glob("*.jpg"))[:12]:
        (gallery / photo.name).symlink_to(photo)
    embedder = load_embedder(tiny_run)
    index = build_index(embedder, gallery, tmp_path / "idx", run_dir=tiny_run, progress=False)
    assert len(index) == 12

    query = embedder.embed_sketches([load_sketch(sorted((sketches / "sketches").glob("*.png"))[0])])
    results = index.search(query[0], k=12)
    assert sorted(r.photo.name for r in results) == sorted(p.name for p in gallery.iterdir())
    assert [r.photo for r in results] == [
        index.photos[i] for i in _brute_force(index.embeddings, query[0], 12)
    ]
