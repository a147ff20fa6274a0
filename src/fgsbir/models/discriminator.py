"""Scores a (photo, rasterised sketch) pair as a real human sketch of that photo or a generated one.

In the semi-supervised method the discriminator's confidence that a generated sketch is real
weights that pair in the retrieval loss, so poor generations count less
(:func:`discriminator_weights`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _down(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A stride-2 4x4 convolution halving the resolution, then LeakyReLU."""
    return [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]


class PairDiscriminator(nn.Module):
    """A small CNN over the photo and the sketch stacked as 4 channels; logits ``(B,)``.

    Inputs: ``photo`` ``(B, 3, H, W)`` normalised as for the embedding network and ``sketch``
    ``(B, 1, H, W)`` raster with 1 = ink, at the same size (64-128 px is plenty). Four stride-2
    convolutions (``width``, 2x, 4x, 4x channels) see photo and ink together from the first layer;
    their features are pooled by both mean (overall look) and max (any one spot where strokes and
    photo disagree) and mapped to one logit: positive = real pair. No normalisation layers: real and
    generated batches never share statistics. About 0.4 M parameters at ``width=32``.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_down(4, width),
            *_down(width, 2 * width),
            *_down(2 * width, 4 * width),
            *_down(4 * width, 4 * width),
        )
        self.head = nn.Linear(8 * width, 1)

    def forward(self, photo: torch.Tensor, sketch: torch.Tensor) -> torch.Tensor:
        expected_sketch = (photo.shape[0], 1, *photo.shape[2:])
        if photo.ndim != 4 or photo.shape[1] != 3 or tuple(sketch.shape) != expected_sketch:
            raise ValueError(
                f"expected photo (B, 3, H, W) and sketch (B, 1, H, W), got "
                f"{tuple(photo.shape)} and {tuple(sketch.shape)}"
            )
        # map ink in [0, 1] to [-1, 1], the scale of a normalised photo
        features = self.features(torch.cat([photo, sketch * 2.0 - 1.0], dim=1))
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.head(pooled).squeeze(1)


def at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """Network inputs ``(B, C, H, W)`` (photos, or sketch ink) resized to the discriminator's
    ``size`` x ``size``."""
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def discriminator_weights(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pair weights ``(B,)`` from discriminator logits: sigmoid scores divided by their mean.

    The weights are detached (the retrieval loss must not train the discriminator) and average 1
    over the batch, so weighting keeps the loss's scale and only shifts emphasis towards the pairs
    the discriminator finds realistic.
    """
    scores = torch.sigmoid(logits.detach().float())
    return scores / scores.mean().clamp_min(eps)
