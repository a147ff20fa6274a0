"""Siamese embedding network, preprocessing and the run-folder inference object."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fgsbir.config import config_from_dict, config_to_dict
from fgsbir.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    input_pixels,
    photos_to_tensor,
    sketch_ink,
    sketches_to_tensor,
)
from fgsbir.errors import FgsbirError
from fgsbir.inference import Embedder, load_embedder
from fgsbir.models.embedding import EmbeddingArch, build_embedding_net
from fgsbir.runs import save_model
from fgsbir.sketch.strokes import Sketch
from fgsbir.train.supervised import TrainConfig

torch.set_num_threads(1)  # faster than 2 on a shared 2-core machine

ARCH = EmbeddingArch(
    backbone="resnet18", pretrained=False, embedding_dim=32, feature_level=None, pool_grid=1
)
PREP = Preprocessing(image_size=48, photo_input="rgb")


def _photos(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)) for i in range(n)
    ]


def _sketches(n: int) -> list[Sketch]:
    return [
        Sketch.from_strokes([[(10, 10), (200, 30 + 20 * i)], [(50, 200), (60, 90)]])
        for i in range(n)
    ]


@pytest.fixture()
def run_dir(tmp_path):
    torch.manual_seed(0)
    config = {"kind": "embedding", **config_to_dict(TrainConfig(model=ARCH, prep=PREP))}
    save_model(tmp_path, build_embedding_net(ARCH), config)
    return tmp_path


def test_sketch_tensor_is_black_ink_on_white() -> None:
    prep = Preprocessing(image_size=64, line_width=3.0)
    horizontal = Sketch.from_strokes([[(0, 128), (256, 128)]])
    x = sketches_to_tensor([horizontal], prep)
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    assert x.shape == (1, 3, 64, 64)
    assert torch.allclose(x[0, :, 5, 30], white, atol=1e-5)  # paper far from the line
    assert torch.allclose(x[0, :, 32, 30], black, atol=1e-5)  # on the line (rows 30.5..33.5)
    ink = sketch_ink(x)  # and back: the raster the discriminator sees
    assert ink.shape == (1, 1, 64, 64)
    assert ink[0, 0, 5, 30] == pytest.approx(0.0, abs=1e-5)
    assert ink[0, 0, 32, 30] == pytest.approx(1.0, abs=1e-5)


def test_photo_is_padded_to_a_white_square() -> None:
    wide = Image.new("RGB", (100, 50), (0, 0, 0))
    x = photos_to_tensor([wide], Preprocessing(image_size=20, photo_input="rgb"))[0]
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[:, 0, 10], white, atol=1e-5)  # padding above
    assert torch.allclose(x[:, 10, 10], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))


def test_sobel_photo_input_draws_dark_edges_on_white() -> None:
    photo = np.full((40, 40, 3), 255, np.uint8)
    photo[10:30, 10:30] = (200, 30, 30)  # a red square on white
    prep = Preprocessing(image_size=40, photo_input="sobel")
    pixels = input_pixels(Image.fromarray(photo), prep)
    assert pixels.shape == (3, 40, 40) and pixels.dtype == torch.uint8
    assert torch.equal(pixels[0], pixels[1])  # grey
    assert pixels[0, 2, 2] == 255 and pixels[0, 20, 20] == 255  # flat paper, flat square
    assert pixels[0, 20, 10] < 60 and pixels[0, 10, 20] < 60  # the square's edges are dark
    rgb = input_pixels(Image.fromarray(photo), Preprocessing(image_size=40, photo_input="rgb"))
    assert tuple(rgb[:, 20, 20].tolist()) == (200, 30, 30)


def test_one_shared_network_gives_unit_embeddings() -> None:
    torch.manual_seed(0)
    net = build_embedding_net(ARCH).eval()
    with torch.no_grad():
        photos = net(photos_to_tensor(_photos(3), PREP))
        sketches = net(sketches_to_tensor(_sketches(3), PREP))
    assert photos.shape == sketches.shape == (3, 32)
    assert torch.allclose(photos.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(sketches.norm(dim=1), torch.ones(3), atol=1e-5)
    assert len(list(net.children())) == 3  # backbone, dropout, head: no second tower


def test_load_embedder_reproduces_the_saved_network(run_dir) -> None:
    embedder = load_embedder(run_dir, device="cpu")
    torch.manual_seed(0)
    reference = build_embedding_net(ARCH).eval()
    photos, sketches = _photos(5), _sketches(4)
    with torch.no_grad():
        expected_photos = reference(photos_to_tensor(photos, PREP)).numpy()
        expected_sketches = reference(sketches_to_tensor(sketches, PREP)).numpy()

    got = embedder.embed_photos(photos, batch_size=2)  # batching must not matter
    assert got.dtype == np.float32 and got.shape == (5, 32)
    np.testing.assert_allclose(got, expected_photos, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_sketches(sketches), expected_sketches, atol=1e-5)
    np.testing.assert_allclose(
        embedder.embed_photo_tensors(photos_to_tensor(photos, PREP)), expected_photos, atol=1e-5
    )
    np.testing.assert_allclose(
        embedder.embed_sketch_tensors(sketches_to_tensor(sketches, PREP)),
        expected_sketches,
        atol=1e-5,
    )
    assert embedder.embed_photos([]).shape == (0, 32)
    assert embedder.config["kind"] == "embedding"
    assert config_from_dict(EmbeddingArch, embedder.config["model"]) == ARCH
    assert embedder.prep == PREP


def test_load_embedder_refuses_a_run_of_another_kind(run_dir) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "kind": "generator"}))
    with pytest.raises(FgsbirError, match=r"a generator run, not a retrieval run"):
        load_embedder(run_dir, device="cpu")


def test_identity_follows_weights_and_preprocessing(run_dir) -> None:
    first = load_embedder(run_dir, device="cpu")
    assert load_embedder(run_dir, device="cpu").identity == first.identity
    other_prep = Embedder(first.model, Preprocessing(image_size=64), first.config, "cpu")
    assert other_prep.identity != first.identity
    with torch.no_grad():
        first.model.head.bias[0] += 1e-3
    assert Embedder(first.model, first.prep, first.config, "cpu").identity != first.identity


def test_mid_level_features_on_a_grid() -> None:
    """``feature_level`` drops the later stages; ``pool_grid`` keeps a grid of positions."""
    arch = dataclasses.replace(ARCH, feature_level=2, pool_grid=2)
    torch.manual_seed(0)
    net = build_embedding_net(arch).eval()
    names = {
        name.split(".")[1] for name, _ in net.named_parameters() if name.startswith("backbone")
    }
    assert "layer2" in names and "layer3" not in names and "layer4" not in names
    assert net.head.in_features == 128 * 2 * 2  # resnet18 level 2: 128 channels, stride 8
    left = Sketch.from_strokes([[(20, 40), (60, 220)], [(30, 100), (90, 120)]])
    right = left.translate(160, 0)  # the same strokes in the right half of the canvas
    blank = Sketch.from_strokes([])
    prep = dataclasses.replace(PREP, image_size=128)
    with torch.no_grad():
        emb = net(sketches_to_tensor([left, right], prep))
        grid = net.features(sketches_to_tensor([left, right, blank], prep)).view(3, 128, 2, 2)
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # the ink changes the features of the grid cells of its own half the most
    change = (grid[:2] - grid[2]).abs().sum(dim=(1, 2))  # (sketch, column)
    assert change[0, 0] > 1.5 * change[0, 1] and change[1, 1] > 1.5 * change[1, 0]
