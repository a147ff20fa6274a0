"""The pool of unlabelled photos as semi-supervised training sees it, step by step.

Each photo is decoded once, on first use, and kept twice: as retrieval-network pixels and as the
generator's backbone feature map, computed one photo at a time (convolution results vary slightly
with the batch, and a map must not depend on which photos first came with it, or a resumed run
would drift from a straight one). Which photos a step takes, and how they are augmented, depends
only on ``(seed, step)`` (and the photo), so every process and every resumed run agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fgsbir.data.photos import load_photo
from fgsbir.data.sampling import cycled_batch
from fgsbir.data.transforms import (
    Augmentation,
    Preprocessing,
    augment_photo,
    input_pixels,
    normalise,
)
from fgsbir.models.generator import PhotoToSketch


class UnlabelledPool:
    """Unlabelled photos with their cached retrieval pixels and (given a ``generator``) its
    feature maps."""

    def __init__(
        self,
        photos: Sequence[Path],
        prep: Preprocessing,
        device: torch.device,
        seed: int,
        generator: PhotoToSketch | None = None,
    ) -> None:
        self.photos, self.prep, self.generator = list(photos), prep, generator
        self.device, self.seed = device, seed
        self.pixels: dict[int, torch.Tensor] = {}  # photo -> retrieval-size uint8 pixels
        self.maps: dict[int, torch.Tensor] = {}  # photo -> generator feature map (float16)

    def __len__(self) -> int:
        return len(self.photos)

    def load(self, indices: Sequence[int]) -> None:
        """Decode the photos not seen yet and compute their feature maps."""
        for i in indices:
            if i in self.pixels:
                continue
            image = load_photo(self.photos[i])
            if self.generator is not None:
                pixels = input_pixels(image, self.generator.arch.preprocessing)
                with torch.no_grad():
                    inputs = normalise(pixels[None] / 255.0).to(self.device)
                    self.maps[i] = self.generator.feature_map(inputs)[0].half().cpu()
            self.pixels[i] = input_pixels(image, self.prep)

    def indices(self, position: int, size: int) -> list[int]:
        """The photos of batch number ``position``: consecutive slices of seeded permutations
        (a pool smaller than a batch repeats no photo)."""
        return cycled_batch(len(self.photos), size, position, self.seed, stream=3)

    def views(self, indices: Sequence[int], position: int, aug: Augmentation) -> torch.Tensor:
        """Augmented (crop, colour; no flip) retrieval-network inputs of loaded photos."""
        views = []
        for i in indices:
            rng = np.random.default_rng([self.seed, 4, position, i])
            views.append(augment_photo(self.pixels[i], aug, rng, flip=False))
        return normalise(torch.stack(views))

    def feature_maps(self, indices: Sequence[int]) -> torch.Tensor:
        """``(len(indices), C, h, w)`` float32 feature maps of loaded photos."""
        return torch.stack([self.maps[i] for i in indices]).float()

    def inputs(self, indices: Sequence[int]) -> torch.Tensor:
        """Un-augmented retrieval-network inputs of loaded photos."""
        return normalise(torch.stack([self.pixels[i] for i in indices]) / 255.0)
