"""The Siamese retrieval network: ONE backbone shared by sketches and photos.

:class:`EmbeddingNet` sends sketches and photos through the shared backbone and a linear
projection to an L2-normalised embedding; retrieval ranks photos by Euclidean distance to the
sketch. :func:`fgsbir.inference.load_embedder` turns a run folder into an embedder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fgsbir.models.backbones import create_backbone, feature_dim


class EmbeddingNet(nn.Module):
    """Backbone features -> dropout -> linear projection -> L2 normalisation.

    ``feature_level`` = k takes the feature map of the backbone's k-th feature level (timm's
    ``feature_info``; e.g. stride 16 for k = 3 on EfficientNet) and drops the later layers:
    mid-level features describe shape, and shape is what a sketch shares with its photo. Without
    it the last feature map is used. ``pool_grid`` = g average-pools the map to a ``g x g`` grid,
    so the embedding keeps where things are (sketches and product photos share a canonical
    pose); with neither option the features are the backbone's own pooled vector.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embedding_dim: int,
        dropout: float,
        pool_grid: int,
        feature_level: int | None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool_grid = pool_grid
        self.feature_level = feature_level
        if feature_level is not None:
            backbone.prune_intermediate_layers(indices=[feature_level], prune_head=True)
            channels = backbone.feature_info[feature_level]["num_chs"]
        else:
            channels = backbone.num_features
        pooled_by_backbone = feature_level is None and pool_grid == 1
        in_features = feature_dim(backbone) if pooled_by_backbone else channels * pool_grid**2
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_features, embedding_dim)
        self.to(memory_format=torch.channels_last)  # much faster convolutions on the CPU

    @property
    def embedding_dim(self) -> int:
        return self.head.out_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` features before the projection."""
        images = images.contiguous(memory_format=torch.channels_last)
        if self.feature_level is not None:
            maps = self.backbone.forward_intermediates(
                images, indices=[self.feature_level], intermediates_only=True
            )[0]
        elif self.pool_grid > 1:
            maps = self.backbone.forward_features(images)
        else:
            return self.backbone(images)
        return F.adaptive_avg_pool2d(maps, self.pool_grid).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised images (sketches or photos) -> ``(B, D)`` unit vectors."""
        return F.normalize(self.head(self.dropout(self.features(images))), dim=1)


class EmbeddingEnsemble(nn.Module):
    """Several trained :class:`EmbeddingNet` s as one model: their embeddings concatenated and
    scaled by ``1 / sqrt(K)``, a unit vector whose squared distances are the members' mean."""

    def __init__(self, members: Sequence[EmbeddingNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    @property
    def embedding_dim(self) -> int:
        return sum(member.embedding_dim for member in self.members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scale = 1.0 / math.sqrt(len(self.members))
        return torch.cat([member(images) for member in self.members], dim=1) * scale


RetrievalNet = EmbeddingNet | EmbeddingEnsemble
"""What embeds sketches and photos for retrieval: one network, or an ensemble of them."""


@dataclass
class EmbeddingArch:
    """Architecture of an :class:`EmbeddingNet` (saved in the run's ``config.json``).

    The defaults are the recipe chosen on QMUL-Shoe-V1's validation split (see
    ``benchmarks/supervised_shoe_v1.py``): a 4x4 grid of EfficientNet-Lite1's stride-16 features.
    Lite1 won on the mean validation acc@1 of 5 seeds at full labels, 0.600 against Lite0's 0.567
    and Lite2's 0.587 (``benchmarks/photos.py``, arms ``lite1``, ``base``, ``lite2``).
    """

    backbone: str = "efficientnet_lite1"
    pretrained: bool | str = True  # True: shipped ImageNet weights; a path: a weights file
    embedding_dim: Annotated[int, Field(ge=1)] = 256
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    feature_level: int | None = 3  # embed this feature level's map (None: the last layer's)
    pool_grid: Annotated[int, Field(ge=1)] = 4  # average-pool the map to a grid; 1: global


def build_embedding_net(arch: EmbeddingArch, pretrained: bool | str | None = None) -> EmbeddingNet:
    """An :class:`EmbeddingNet` of ``arch``; ``pretrained`` overrides ``arch.pretrained`` (e.g.
    ``False`` when trained weights are loaded next)."""
    weights = arch.pretrained if pretrained is None else pretrained
    return EmbeddingNet(
        create_backbone(arch.backbone, weights),
        arch.embedding_dim,
        arch.dropout,
        arch.pool_grid,
        arch.feature_level,
    )
