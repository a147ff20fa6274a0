"""Shared by the search tests: a small deterministic embedder, galleries and a tiny real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch

GRID = 8  # the fake embedding is the ink density on a GRID x GRID grid
RASTER = 64


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.reshape(len(vectors), -1).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)


def _pool(ink: np.ndarray) -> np.ndarray:
    """``(B, RASTER, RASTER)`` ink -> ``(B, GRID * GRID)`` unit vectors of cell means."""
    cell = RASTER // GRID
    return _unit(ink.reshape(len(ink), GRID, cell, GRID, cell).mean(axis=(2, 4)))


class FakeEmbedder:
    """Embeds by where the ink is: the darkness of a photo or the raster of a sketch, pooled on a
    coarse grid. Deterministic, instant, and a sketch drawn over a photo's dark parts matches it."""

    def __init__(self, identity: str = "fake-model-a") -> None:
        self.identity = identity
        self.photos_embedded = 0

    def embed_photos(self, images: list[Image.Image], batch_size: int = 32) -> np.ndarray:
        self.photos_embedded += len(images)
        grey = [ImageOps.pad(im.convert("L"), (RASTER, RASTER), color=255) for im in images]
        return _pool(1.0 - np.stack([np.asarray(g, np.float32) / 255.0 for g in grey]))

    def embed_sketches(self, sketches: list[Sketch], batch_size: int = 32) -> np.ndarray:
        ink = rasterise(list(sketches), RASTER, 2.0)[:, 0].numpy()
        return _pool(ink)


# A gallery of bars: photo i is white with one black bar; a sketch of the same bar finds it.
BARS: dict[str, tuple[float, float, float, float]] = {
    "h-top": (0.1, 0.15, 0.9, 0.25),
    "h-middle": (0.1, 0.45, 0.9, 0.55),
    "h-bottom": (0.1, 0.75, 0.9, 0.85),
    "v-left": (0.15, 0.1, 0.25, 0.9),
    "v-centre": (0.45, 0.1, 0.55, 0.9),
    "v-right": (0.75, 0.1, 0.85, 0.9),
    "square": (0.35, 0.35, 0.65, 0.65),
    "corner": (0.05, 0.05, 0.3, 0.3),
}


def make_bar_gallery(folder: Path, names: list[str] | None = None, size: int = 64) -> list[Path]:
    """Write one JPEG per bar of :data:`BARS` (or of ``names``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(BARS):
        image = Image.new("RGB", (size, size), "white")
        x0, y0, x1, y1 = (round(v * size) for v in BARS[name])
        ImageDraw.Draw(image).rectangle((x0, y0, x1, y1), fill=(20, 20, 20))
        path = folder / f"{name}.jpg"
        image.save(path, quality=95)
        paths.append(path)
    return paths


def bar_sketch(name: str, width: float = 256.0, height: float = 256.0) -> Sketch:
    """Zig-zag strokes filling the bar ``name`` on a ``width x height`` canvas."""
    x0, y0, x1, y1 = BARS[name]
    ys = np.linspace(y0, y1, 4)
    strokes = [np.array([[x0 * width, y * height], [x1 * width, y * height]]) for y in ys]
    return Sketch.from_strokes(strokes, width, height)


def make_tiny_run(run_dir: Path) -> Path:
    """An untrained run folder with a small real network (MobileNetV3 at 64 px, 32-d)."""
    from fgsbir.config import config_to_dict
    from fgsbir.data.transforms import Preprocessing
    from fgsbir.models.embedding import EmbeddingArch, build_embedding_net
    from fgsbir.runs import save_model
    from fgsbir.train.supervised import TrainConfig

    arch = EmbeddingArch(
        backbone="mobilenetv3_small_050",
        pretrained=False,
        embedding_dim=32,
        feature_level=None,
        pool_grid=1,
    )
    prep = Preprocessing(image_size=64, line_width=2.0, photo_input="rgb")
    config = {"kind": "embedding", **config_to_dict(TrainConfig(model=arch, prep=prep))}
    torch.manual_seed(0)
    model = build_embedding_net(arch)
    save_model(run_dir, model, config, None, "Untrained tiny model for tests.")
    return run_dir


class FakeGenerator:
    """Sketches a photo as the outline of its dark part's bounding box, in two strokes, on a
    256-pixel canvas (the photo padded to a square, as the real generators see it); counts the
    photos it drew."""

    def __init__(self) -> None:
        self.drawn = 0

    def draw(self, photos: list[Image.Image], temperature: float = 0.0) -> list[Sketch]:
        self.drawn += len(photos)
        sketches = []
        for photo in photos:
            grey = np.asarray(ImageOps.pad(photo.convert("L"), (256, 256), color=255))
            ys, xs = np.nonzero(grey < 128)
            x0, x1, y0, y1 = (float(v) for v in (xs.min(), xs.max(), ys.min(), ys.max()))
            box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
            sketches.append(Sketch.from_strokes([box[:3], box[2:]], 256.0, 256.0))
        return sketches


def make_tiny_generator_run(run_dir: Path) -> Path:
    """An untrained edge-pointer generator run folder (MobileNetV3 at 64 px) whose pen head is
    biased against ending, so that it always draws its 12 points."""
    from dataclasses import replace

    from train_helpers import TINY_GENERATOR

    from fgsbir.config import config_to_dict
    from fgsbir.models.generator import create_generator
    from fgsbir.runs import save_model
    from fgsbir.train.generator import GeneratorConfig

    arch = replace(TINY_GENERATOR, backbone="mobilenetv3_small_050")
    config = config_to_dict(GeneratorConfig(model=arch, pretrained=False))
    config = {"kind": "generator", **config, "scale": 16.0, "canvas": 256.0}
    torch.manual_seed(0)
    model = create_generator(arch, config["canvas"] / config["scale"], pretrained=False)
    with torch.no_grad():
        model.head.bias[-1] = -10.0  # the p_end logit
    save_model(run_dir, model, config, None, "Untrained tiny generator for tests.")
    return run_dir
