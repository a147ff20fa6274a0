import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_helpers import bar_sketch, make_bar_gallery

from fgsbir.errors import DataError
from fgsbir.viz import (
    CELL_INCHES,
    CURVE_PANELS,
    plot_training_curves,
    retrieval_grid,
    sketch_photo_grid,
)

DPI = 100  # the resolution the figures are saved at
GREEN = np.array([0x2C, 0xA0, 0x2C])


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def size_of(png: Path) -> tuple[int, int]:
    with Image.open(png) as image:
        return image.size


def green_pixels(png: Path) -> int:
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - GREEN).sum(axis=2) < 30).sum())


def test_training_curves_get_one_panel_per_kind_of_value(tmp_path: Path) -> None:
    records = [
        {"epoch": e, "step": 10 * e, "split": "train", "loss": 1.0 / e, "time": 5.0}
        for e in range(1, 6)
    ] + [{"epoch": e, "step": 10 * e, "split": "val", "acc@1": 0.1 * e} for e in range(1, 6)]
    png = tmp_path / "curves.png"
    plot_training_curves(write_jsonl(tmp_path / "m.jsonl", records), png)
    assert size_of(png) == (2 * 5 * DPI, int(3.8 * DPI))  # loss and retrieval panels

    only_loss = [r for r in records if "loss" in r]
    plot_training_curves(write_jsonl(tmp_path / "loss.jsonl", only_loss), png)
    assert size_of(png)[0] == 5 * DPI

    # a generator run's validation records carry only its NLL
    generator = [{"epoch": e, "step": e, "split": "val", "nll": 3.0 - 0.1 * e} for e in (1, 2)]
    plot_training_curves(write_jsonl(tmp_path / "nll.jsonl", generator), png)
    assert size_of(png)[0] == 5 * DPI


def test_training_curves_tolerate_missing_keys(tmp_path: Path) -> None:
    # no split, a record without step (so epochs are the x axis), a record without the metric
    records = [
        {"epoch": 1, "step": 5, "loss": 0.9, "reward": 0.1},
        {"epoch": 1, "acc@1": 0.2, "acc@10": 0.6, "mrr": 0.3, "mean_rank": 7.0},
        {"epoch": 2, "step": 10, "loss": 0.5, "note": "text is ignored"},
        {"epoch": 2, "loss": None, "acc@1": 0.4},
    ]
    png = tmp_path / "curves.png"
    plot_training_curves(write_jsonl(tmp_path / "m.jsonl", records), png)
    assert size_of(png)[0] == len(CURVE_PANELS) * 5 * DPI  # loss, retrieval, mean rank, reward


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "no metrics"), ("{not json\n", "JSON-lines"), ('{"epoch": 1}\n', "nothing to plot")],
)
def test_training_curves_report_unusable_files(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=problem):
        plot_training_curves(path, tmp_path / "curves.png")


@pytest.fixture
def gallery(tmp_path: Path) -> list[Path]:
    return make_bar_gallery(tmp_path / "photos", ["h-top", "v-left", "square", "corner"])


def test_retrieval_grid_frames_the_true_photo(tmp_path: Path, gallery: list[Path]) -> None:
    queries = [bar_sketch("h-top"), bar_sketch("square")]
    ranked = [gallery[:3], [gallery[1], gallery[0], gallery[3]]]  # the square is missed
    hit_and_miss = tmp_path / "grid.png"
    retrieval_grid(queries, ranked, [gallery[0], gallery[2]], hit_and_miss, k=3)

    columns, rows = 3 + 2, 2
    width, height = size_of(hit_and_miss)
    assert width == round(CELL_INCHES * columns * DPI)
    assert height == round((CELL_INCHES + 0.3) * rows * DPI)

    # the same grid with the square found too: one more green frame
    two_hits = tmp_path / "hits.png"
    ranked[1] = [gallery[2], *ranked[1][:2]]
    retrieval_grid(queries, ranked, [gallery[0], gallery[2]], two_hits, k=3)
    assert green_pixels(two_hits) > green_pixels(hit_and_miss) > 0


def test_retrieval_grid_accepts_images_and_short_rankings(tmp_path: Path) -> None:
    images = [Image.new("RGB", (40, 60), colour) for colour in ("red", "blue")]
    png = tmp_path / "grid.png"
    retrieval_grid([bar_sketch("corner")], [images], [images[1]], png, k=4)
    assert size_of(png)[0] == round(CELL_INCHES * 6 * DPI)
    with pytest.raises(ValueError, match="one ranked list"):
        retrieval_grid([bar_sketch("corner")], [], [images[0]], png)


def test_sketch_photo_grid_lays_out_photos_and_sketches(
    tmp_path: Path, gallery: list[Path]
) -> None:
    rows = [
        (
            gallery[0],
            [bar_sketch("h-top"), bar_sketch("v-left")],
            bar_sketch("h-top"),
            ["1.2", "0.8"],
        ),
        (gallery[2], [bar_sketch("square")], None, None),
    ]
    png = tmp_path / "pairs.png"
    sketch_photo_grid(rows, png)
    # photo | 2 generated | real
    assert size_of(png) == (round(CELL_INCHES * 4 * DPI), round((CELL_INCHES + 0.3) * 2 * DPI))
    with Image.open(png) as image:
        grey = np.asarray(image.convert("L"))
    # black ink in the sketch cells (the bar photos are dark grey, never black)
    cell = grey.shape[1] // 4
    assert (grey[:, cell:] < 40).any()

    without_real = [(gallery[1], [bar_sketch("v-left")], None, ["w=1.0"])]
    sketch_photo_grid(without_real, png)
    assert size_of(png)[0] == round(CELL_INCHES * 2 * DPI)  # no empty "real" column
    with pytest.raises(ValueError, match="caption"):
        sketch_photo_grid([(gallery[1], [bar_sketch("v-left")], None, ["a", "b"])], png)
