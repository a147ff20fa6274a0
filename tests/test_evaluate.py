from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_helpers import BARS, FakeEmbedder, bar_sketch, make_bar_gallery, make_tiny_run

from fgsbir.data.dataset import SketchRecord, Split, load_dataset
from fgsbir.data.photos import load_photo
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.errors import DataError
from fgsbir.evaluate import evaluate_run, evaluate_split, rank_of_true, retrieval_metrics, top_k
from fgsbir.inference import load_embedder
from fgsbir.viz import CELL_INCHES

# Photos at 0, 1, 2, 3 on a line; three queries.
# q0 = 0.9: distances [0.9, 0.1, 1.1, 2.1], true photo 1 -> rank 1
# q1 = 2.6: distances [2.6, 1.6, 0.6, 0.4], true photo 0 -> rank 4
# q2 = 1.5: distances [1.5, 0.5, 0.5, 1.5], true photo 2 ties with photo 1 -> rank 2 (pessimistic)
PHOTOS = np.array([[0.0], [1.0], [2.0], [3.0]])
QUERIES = np.array([[0.9], [2.6], [1.5]])
TRUE = [1, 0, 2]


def test_rank_of_true_matches_hand_ranking() -> None:
    assert rank_of_true(QUERIES, PHOTOS, TRUE).tolist() == [1, 4, 2]


def test_ranks_use_euclidean_distance_in_several_dimensions() -> None:
    photos = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = np.array([[0.6, 0.8], [-0.6, -0.6]])
    # query 0: squared distances [0.8, 0.4, 3.2] -> photo 1, photo 0, photo 2
    # query 1: squared distances [2.92, 2.92, 0.52] -> photo 2, then photos 0 and 1 tie
    assert rank_of_true(queries, photos, [0, 1]).tolist() == [2, 3]
    assert rank_of_true(queries, photos, [2, 2]).tolist() == [3, 1]


def test_retrieval_metrics_match_hand_computation() -> None:
    metrics = retrieval_metrics(QUERIES, PHOTOS, TRUE, ks=(1, 2, 5))
    assert metrics == pytest.approx(
        {
            "acc@1": 1 / 3,
            "acc@2": 2 / 3,
            "acc@5": 1.0,
            "mean_rank": (1 + 4 + 2) / 3,
            "mrr": (1 + 1 / 4 + 1 / 2) / 3,
            "n_queries": 3,
            "n_gallery": 4,
        }
    )
    assert set(retrieval_metrics(QUERIES, PHOTOS, TRUE)) == {
        "acc@1",
        "acc@5",
        "acc@10",
        "mean_rank",
        "mrr",
        "n_queries",
        "n_gallery",
    }


def test_top_k_orders_nearest_first() -> None:
    assert top_k(QUERIES, PHOTOS, 2).tolist() == [[1, 0], [3, 2], [1, 2]]
    assert top_k(QUERIES, PHOTOS, 10).shape == (3, 4)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one true photo per query"):
        rank_of_true(QUERIES, PHOTOS, [0, 1])
    with pytest.raises(ValueError, match="must lie in"):
        rank_of_true(QUERIES, PHOTOS, [0, 1, 4])
    with pytest.raises(ValueError, match="embeddings"):
        rank_of_true(QUERIES, np.zeros((4, 2)), TRUE)
    with pytest.raises(ValueError, match="no queries"):
        retrieval_metrics(np.zeros((0, 1)), PHOTOS, [])


@pytest.fixture
def bar_split(tmp_path: Path) -> Split:
    """Eight bar photos, a sketch of each, and one sketch filed under the wrong photo."""
    photos = make_bar_gallery(tmp_path / "photos")
    names = list(BARS)
    records = [SketchRecord(bar_sketch(name), i, name) for i, name in enumerate(names)]
    records.append(SketchRecord(bar_sketch("h-top"), names.index("v-right"), "mislabelled"))
    return Split(photos, records)


def test_evaluate_split_embeds_in_batches_and_scores_every_sketch(bar_split: Split) -> None:
    embedder = FakeEmbedder()
    metrics, sketch_emb, photo_emb = evaluate_split(embedder, bar_split, batch_size=3)

    assert embedder.photos_embedded == len(bar_split.photos)
    direct = embedder.embed_photos([load_photo(p) for p in bar_split.photos])
    np.testing.assert_allclose(photo_emb, direct, atol=1e-6)
    assert sketch_emb.shape == (9, direct.shape[1])
    # each bar's sketch finds its own bar first; the mislabelled sketch (a horizontal bar
    # filed under a vertical one) does not
    ranks = rank_of_true(sketch_emb, photo_emb, [r.photo for r in bar_split.sketches])
    assert (ranks[:8] == 1).all() and ranks[8] > 1
    assert metrics["acc@1"] == pytest.approx(8 / 9)
    assert metrics["n_queries"] == 9 and metrics["n_gallery"] == 8


def test_evaluate_split_refuses_sketches_without_photos(bar_split: Split) -> None:
    orphan = Split(bar_split.photos, [SketchRecord(bar_sketch("square"), None, "orphan")])
    with pytest.raises(ValueError, match="needs its photo"):
        evaluate_split(FakeEmbedder(), orphan)


def test_evaluate_run_scores_the_test_split_and_draws_examples(tmp_path: Path) -> None:
    run = make_tiny_run(tmp_path / "run")
    data = ensure_synthetic(tmp_path / "data", n_photos=8, sketches_per_photo=2, test_fraction=0.5)
    test = load_dataset(data).test
    png = tmp_path / "examples.png"

    result = evaluate_run(run, data, batch_size=3, examples_png=png, n_examples=3, k=2)

    assert result["model"] == load_embedder(run).identity
    assert result["data"] == str(data)
    assert result["n_gallery"] == len(test.photos) and result["n_queries"] == len(test.sketches)
    assert 0.0 <= result["acc@1"] <= result["acc@5"] <= result["acc@10"] == 1.0
    assert 1.0 <= result["mean_rank"] <= len(test.photos)
    with Image.open(png) as image:  # one row per example, query + top-2 + true photo
        assert image.size == (round(CELL_INCHES * 4 * 100), round((CELL_INCHES + 0.3) * 3 * 100))


def test_evaluate_run_refuses_data_without_test_sketches(tmp_path: Path) -> None:
    run = make_tiny_run(tmp_path / "run")
    make_bar_gallery(tmp_path / "photos")
    with pytest.raises(DataError, match="has no test sketches"):
        evaluate_run(run, tmp_path / "photos")
