"""Torch-side preprocessing (photos and sketches to network tensors) and training augmentation.

Both domains enter the network as ``(B, 3, S, S)`` float tensors with ImageNet normalisation:
photos are padded to a square with white (aspect kept, centred, like the rasteriser fits a sketch
canvas) and resized; sketches are rasterised as black ink on white paper, in three channels.
With ``photo_input="sobel"`` a photo enters as its edge map drawn dark on white (the Sobel
gradient magnitude), which looks much more like a sketch than the colour photo does.

Training augmentation draws all its random numbers from a generator seeded by
``(seed, epoch, item)``, so an item looks the same whichever process, worker or resumed run
loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from pydantic import Field
from skimage.color import rgb2gray
from skimage.filters import sobel

from fgsbir.data.dataset import Split
from fgsbir.data.photos import load_photo
from fgsbir.sketch.augment import affine_jitter, drop_strokes
from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How inputs become network tensors; saved with a model so inference matches training.

    The defaults are the retrieval recipe chosen on QMUL-Shoe-V1's validation split: 128 px, and
    photos as Sobel edge maps (see ``benchmarks/supervised_shoe_v1.py``).
    """

    image_size: Annotated[int, Field(ge=16)] = 128
    line_width: Annotated[float, Field(gt=0.0)] = 2.0  # sketch ink width, in raster pixels
    photo_input: Literal["rgb", "sobel"] = "sobel"  # the colour photo, or its edge map

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of ``(B, 3, S, S)`` images with values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, S, S)`` images in [0, 1] back from :func:`normalise`' output."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0.0, 1.0)


def photo_pixels(photo: Image.Image, size: int) -> torch.Tensor:
    """``(3, size, size)`` uint8: the photo padded to a white square and resized."""
    square = ImageOps.pad(photo.convert("RGB"), (size, size), Image.Resampling.BICUBIC, "white")
    return TF.pil_to_tensor(square)


def edge_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """``(3, S, S)`` uint8 edge map of ``(3, S, S)`` uint8 RGB pixels: dark edges on white.

    The Sobel gradient magnitude of the grey image, scaled so that its 99th percentile (the
    strong edges of an object on a plain background) is full black.
    """
    magnitude = sobel(rgb2gray(pixels.permute(1, 2, 0).numpy()))
    ink = np.clip(magnitude / max(float(np.percentile(magnitude, 99)), 1e-6), 0.0, 1.0)
    grey = torch.from_numpy(np.round(255.0 * (1.0 - ink)).astype(np.uint8))
    return grey.expand(3, -1, -1).contiguous()


def input_pixels(photo: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """``(3, S, S)`` uint8 pixels of what the network sees of a photo (see ``photo_input``)."""
    pixels = photo_pixels(photo, prep.image_size)
    return edge_pixels(pixels) if prep.photo_input == "sobel" else pixels


def photos_to_tensor(photos: Sequence[Image.Image], prep: Preprocessing) -> torch.Tensor:
    """Network input ``(B, 3, S, S)`` for PIL photos."""
    pixels = torch.stack([input_pixels(p, prep) for p in photos])
    return normalise(pixels.float() / 255.0)


def sketch_images(raster: torch.Tensor) -> torch.Tensor:
    """Network input from a ``(B, 1, S, S)`` ink raster: black ink on white, three channels."""
    return normalise((1.0 - raster).expand(-1, 3, -1, -1))


def sketch_ink(images: torch.Tensor) -> torch.Tensor:
    """The ``(B, 1, S, S)`` ink raster (1 = ink) back from :func:`sketch_images`' output."""
    paper = images[:, :1] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return (1.0 - paper).clamp(0.0, 1.0)


def sketches_to_tensor(sketches: Sequence[Sketch], prep: Preprocessing) -> torch.Tensor:
    """Network input ``(B, 3, S, S)`` for vector sketches."""
    return sketch_images(rasterise(list(sketches), prep.image_size, prep.line_width))


@dataclass
class Augmentation:
    """Training augmentation switches and strengths (all off gives the inference inputs)."""

    flip: bool = True  # mirror photo and sketch together (the pair stays a match)
    photo_crop: float = 0.8  # smallest area fraction of a random resized crop; 1 = no crop
    colour_jitter: float = 0.2  # brightness/contrast/saturation factors in [1 - j, 1 + j]
    grayscale: float = 0.0  # probability of a grey photo
    stroke_drop: float = 0.1  # probability of dropping each stroke (never all of them)
    sketch_affine: bool = True  # random affine jitter of the vector sketch


def _crop_box(rng: np.random.Generator, size: int, min_area: float) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random crop: area >= ``min_area``, aspect 3:4 to 4:3."""
    area = rng.uniform(min_area, 1.0) * size * size
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w = min(size, round(float(np.sqrt(area * aspect))))
    h = min(size, round(float(np.sqrt(area / aspect))))
    return int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1)), h, w


def augment_photo(
    pixels: torch.Tensor, aug: Augmentation, rng: np.random.Generator, flip: bool
) -> torch.Tensor:
    """A random view of ``(3, S, S)`` uint8 photo pixels, as float in [0, 1]."""
    size = pixels.shape[-1]
    image = pixels.float() / 255.0
    if aug.photo_crop < 1.0:
        top, left, h, w = _crop_box(rng, size, aug.photo_crop)
        image = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    if flip:
        image = TF.horizontal_flip(image)
    if aug.colour_jitter > 0:
        low, high = 1.0 - aug.colour_jitter, 1.0 + aug.colour_jitter
        image = TF.adjust_brightness(image, rng.uniform(low, high))
        image = TF.adjust_contrast(image, rng.uniform(low, high))
        image = TF.adjust_saturation(image, rng.uniform(low, high))
    if rng.random() < aug.grayscale:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    return image.clamp(0.0, 1.0)


def augment_sketch(
    sketch: Sketch, aug: Augmentation, rng: np.random.Generator, flip: bool
) -> Sketch:
    """A random variant of a vector sketch (before rasterising, so lines keep their width)."""
    if aug.stroke_drop > 0:
        sketch = drop_strokes(sketch, aug.stroke_drop, rng)
    if aug.sketch_affine:
        sketch = affine_jitter(sketch, rng)
    if flip:
        sketch = sketch.transform(np.array([[-1.0, 0.0, sketch.width], [0.0, 1.0, 0.0]]))
    return sketch


class PairDataset(torch.utils.data.Dataset):
    """Training pairs of a split: item ``i`` is photo ``i`` with one of its sketches.

    An epoch visits every photo that has a sketch once; which of its sketches, and every
    augmentation, depends only on ``(seed, epoch, i)`` (see :meth:`set_epoch`). Photos are
    decoded once and kept in memory at the working resolution. Batches come from
    :meth:`collate`: ``(sketches, photos, photo_indices)`` with network-ready tensors.
    """

    def __init__(
        self, split: Split, prep: Preprocessing, aug: Augmentation | None, seed: int = 0
    ) -> None:
        self.split = split
        self.prep = prep
        self.aug = aug
        self.seed = seed
        self.epoch = 0
        by_photo: dict[int, list[Sketch]] = {}
        for record in split.sketches:
            by_photo.setdefault(record.photo, []).append(record.sketch)
        self.photo_ids = sorted(by_photo)
        self.sketches = [by_photo[i] for i in self.photo_ids]
        self._pixels: dict[int, torch.Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.photo_ids)

    def pixels(self, photo: int) -> torch.Tensor:
        """Decoded ``(3, S, S)`` uint8 network-input pixels of a split photo, cached."""
        if photo not in self._pixels:
            self._pixels[photo] = input_pixels(load_photo(self.split.photos[photo]), self.prep)
        return self._pixels[photo]

    def __getitem__(self, i: int) -> tuple[Sketch, torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        photo = self.photo_ids[i]
        candidates = self.sketches[i]
        sketch = candidates[int(rng.integers(len(candidates)))]
        pixels = self.pixels(photo)
        if self.aug is None:
            return sketch, pixels.float() / 255.0, photo
        flip = self.aug.flip and bool(rng.random() < 0.5)
        image = augment_photo(pixels, self.aug, rng, flip)
        return augment_sketch(sketch, self.aug, rng, flip), image, photo

    def collate(
        self, batch: Sequence[tuple[Sketch, torch.Tensor, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sketches, images, photos = zip(*batch, strict=True)
        return (
            sketches_to_tensor(sketches, self.prep),
            normalise(torch.stack(images)),
            torch.tensor(photos, dtype=torch.long),
        )
