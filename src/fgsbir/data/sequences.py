"""Stroke-5 training data for the photo-to-sketch generator: sketches on one canvas, as
sequences, beside the images they are drawn from.

Sketches are put on a square ``CANVAS`` (fitted, centred, as the rasteriser does), simplified by
RDP, limited to ``max_points`` points and turned into stroke-5 (see :mod:`fgsbir.sketch.strokes`)
in units of one data-set-wide scale factor. A :class:`SequenceSet` holds them with their images:
backbone feature maps when the generator's backbone is frozen (computed once), else the network
inputs themselves; with flip augmentation, in two variants (as drawn, and mirrored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fgsbir.data.dataset import Split
from fgsbir.data.photos import load_photo
from fgsbir.data.transforms import input_pixels, normalise, sketch_images
from fgsbir.models.generator import GeneratorArch, PhotoToSketch
from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch, limit_length, simplify, stroke3_to_stroke5

CANVAS = 256.0
"""Side of the square canvas every training sketch is fitted to (and generated sketches use)."""
_MAP_BATCH = 32  # images per backbone pass when caching feature maps


def on_canvas(sketch: Sketch, size: float = CANVAS) -> Sketch:
    """The sketch fitted into a ``size x size`` canvas (aspect kept, centred)."""
    k = size / max(sketch.width, sketch.height)
    dx, dy = (size - k * sketch.width) / 2.0, (size - k * sketch.height) / 2.0
    moved = sketch.transform(np.array([[k, 0.0, dx], [0.0, k, dy]]))
    return Sketch(moved.points, size, size)


def prepare_sketch(sketch: Sketch, rdp_epsilon: float, max_points: int) -> Sketch:
    """A training sketch: on the square canvas, RDP-simplified and at most ``max_points`` long."""
    return limit_length(simplify(on_canvas(sketch), rdp_epsilon), max_points)


def mirrored(sketch: Sketch) -> Sketch:
    """The sketch flipped left-right on its canvas."""
    return sketch.transform(np.array([[-1.0, 0.0, sketch.width], [0.0, 1.0, 0.0]]))


@dataclass
class SequenceSet:
    """Stroke-5 targets with the images they are drawn from, in ``V`` variants (1, or 2 with the
    mirror images). ``images`` are feature maps (frozen backbone) or network inputs."""

    strokes5: torch.Tensor  # (V, N, max_points + 1, 5), offsets divided by the scale factor
    lengths: torch.Tensor  # (V, N)
    images: torch.Tensor  # (V, P, ...) float16
    owner: torch.Tensor  # (N,) index into P of each sequence's image

    def __len__(self) -> int:
        return self.strokes5.shape[1]

    def batch(
        self, index: torch.Tensor, variant: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, strokes5, lengths)`` of sequences ``index`` in the given variants."""
        return (
            self.images[variant, self.owner[index]].float(),
            self.strokes5[variant, index],
            self.lengths[variant, index],
        )


def _stroke5(sketches: Sequence[Sketch], scale: float, max_points: int) -> torch.Tensor:
    rows = [stroke3_to_stroke5(s.to_stroke3(), max_points + 1) for s in sketches]
    stroke5 = torch.from_numpy(np.stack(rows))
    stroke5[..., :2] /= scale
    return stroke5


def _lengths(sketches: Sequence[Sketch]) -> torch.Tensor:
    return torch.tensor([len(s.points) for s in sketches], dtype=torch.long)


class ImageEncoder:
    """Turns network inputs into what :class:`SequenceSet` stores: backbone feature maps when
    the backbone is frozen, else the inputs themselves."""

    def __init__(self, model: PhotoToSketch, frozen: bool, device: torch.device) -> None:
        self.model, self.frozen, self.device = model, frozen, device

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.frozen:
            return inputs.half()
        self.model.backbone.eval()
        maps = [
            self.model.feature_map(inputs[i : i + _MAP_BATCH].to(self.device)).cpu()
            for i in range(0, len(inputs), _MAP_BATCH)
        ]
        return torch.cat(maps).half()


def _variants(flip: bool) -> list[bool]:
    return [False, True] if flip else [False]


def paired_set(
    split: Split,
    sketches: Sequence[Sketch],
    scale: float,
    arch: GeneratorArch,
    encode: ImageEncoder,
    flip: bool,
) -> SequenceSet:
    """Sequences of a split's sketches (already prepared) drawn from its photos."""
    used = sorted({r.photo for r in split.sketches})
    slot = {photo: i for i, photo in enumerate(used)}
    prep = arch.preprocessing
    pixels = torch.stack([input_pixels(load_photo(split.photos[p]), prep) for p in used])
    images, strokes, lengths = [], [], []
    for mirror in _variants(flip):
        shown = pixels.flip(-1) if mirror else pixels
        images.append(encode(normalise(shown.float() / 255.0)))
        drawn = [mirrored(s) for s in sketches] if mirror else list(sketches)
        strokes.append(_stroke5(drawn, scale, arch.max_points))
        lengths.append(_lengths(drawn))
    owner = torch.tensor([slot[r.photo] for r in split.sketches], dtype=torch.long)
    return SequenceSet(torch.stack(strokes), torch.stack(lengths), torch.stack(images), owner)


def sketch_only_set(
    sketches: Sequence[Sketch],
    scale: float,
    arch: GeneratorArch,
    line_width: float,
    encode: ImageEncoder,
    flip: bool,
) -> SequenceSet:
    """Sequences of sketches drawn from their own renderings."""
    images, strokes, lengths = [], [], []
    for mirror in _variants(flip):
        drawn = [mirrored(s) for s in sketches] if mirror else list(sketches)
        rendered = [
            encode(sketch_images(rasterise(drawn[i : i + _MAP_BATCH], arch.image_size, line_width)))
            for i in range(0, len(drawn), _MAP_BATCH)
        ]
        images.append(torch.cat(rendered))
        strokes.append(_stroke5(drawn, scale, arch.max_points))
        lengths.append(_lengths(drawn))
    owner = torch.arange(len(sketches))
    return SequenceSet(torch.stack(strokes), torch.stack(lengths), torch.stack(images), owner)


def prepared_sketches(
    sketches: Sequence[Sketch], rdp_epsilon: float, max_points: int
) -> list[Sketch]:
    return [prepare_sketch(s, rdp_epsilon, max_points) for s in sketches]


def drawable_pairs(split: Split) -> Split:
    """The split's non-empty sketches that have a photo (the rest has nothing to learn from)."""
    kept = [r for r in split.sketches if r.photo is not None and not r.sketch.is_empty]
    return Split(split.photos, kept)


def heldout_set(
    split: Split, model: PhotoToSketch, rdp_epsilon: float, scale: float, device: torch.device
) -> SequenceSet | None:
    """A split's photo-sketch pairs as backbone feature maps and targets (``None`` if empty)."""
    split = drawable_pairs(split)
    if not split.sketches:
        return None
    arch = model.arch
    sketches = prepared_sketches([r.sketch for r in split.sketches], rdp_epsilon, arch.max_points)
    encode = ImageEncoder(model, frozen=True, device=device)
    return paired_set(split, sketches, scale, arch, encode, flip=False)
