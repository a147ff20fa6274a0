"""The Siamese retrieval network and the public inference object built from a run folder.

:class:`EmbeddingNet` sends sketches and photos through ONE shared backbone and a linear
projection to an L2-normalised embedding; retrieval ranks photos by Euclidean distance to the
sketch. :func:`load_embedder` turns a run folder into an :class:`Embedder` that takes PIL photos
and vector sketches and returns NumPy embeddings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fgsbir.data.transforms import Preprocessing, photos_to_tensor, sketches_to_tensor
from fgsbir.device import select_device
from fgsbir.models.backbones import DEFAULT_BACKBONE, create_backbone, feature_dim
from fgsbir.runs import load_model_state, load_run_config
from fgsbir.sketch.strokes import Sketch


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
        embedding_dim: int = 256,
        dropout: float = 0.0,
        pool_grid: int = 1,
        feature_level: int | None = None,
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


ARCH_KEYS = ("backbone", "embedding_dim", "dropout", "pool_grid", "feature_level")
"""Configuration keys that :func:`build_embedding_net` reads to shape the network."""


def build_embedding_net(config: Mapping[str, Any]) -> EmbeddingNet:
    """An :class:`EmbeddingNet` from the keys ``backbone``, ``pretrained``, ``embedding_dim``,
    ``dropout``, ``pool_grid`` and ``feature_level`` of a configuration (defaults:
    EfficientNet-Lite0 with ImageNet weights, 256, 0, 1, None)."""
    backbone = create_backbone(
        config.get("backbone", DEFAULT_BACKBONE), config.get("pretrained", True)
    )
    return EmbeddingNet(
        backbone,
        config.get("embedding_dim", 256),
        config.get("dropout", 0.0),
        config.get("pool_grid", 1),
        config.get("feature_level"),
    )


def model_identity(model: nn.Module, prep: Preprocessing) -> str:
    """A short hash of the weights and the preprocessing: equal iff embeddings are comparable."""
    digest = hashlib.sha256(json.dumps(prep.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Embedder:
    """Embeds photos and sketches with a trained :class:`EmbeddingNet` (inference only)."""

    def __init__(
        self,
        model: EmbeddingNet,
        prep: Preprocessing,
        config: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.device = select_device(str(device) if device is not None else None)
        self.model = model.to(self.device).eval()
        self.prep = prep
        self.config = dict(config or {})

    @cached_property
    def identity(self) -> str:
        """Hash of the weights and preprocessing (see :func:`model_identity`)."""
        return model_identity(self.model, self.prep)

    @torch.no_grad()
    def _embed(self, images: torch.Tensor) -> np.ndarray:
        return self.model(images.to(self.device)).float().cpu().numpy()

    def embed_photo_tensors(self, photos: torch.Tensor) -> np.ndarray:
        """``(N, D)`` float32 embeddings of preprocessed ``(N, 3, S, S)`` photo tensors."""
        return self._embed(photos)

    def embed_sketch_tensors(self, sketches: torch.Tensor) -> np.ndarray:
        """``(N, D)`` float32 embeddings of preprocessed ``(N, 3, S, S)`` sketch tensors."""
        return self._embed(sketches)

    def embed_photos(self, photos: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """``(N, D)`` float32 L2-normalised embeddings of PIL photos."""
        return self._batched(photos, lambda b: photos_to_tensor(b, self.prep), batch_size)

    def embed_sketches(self, sketches: Sequence[Sketch], batch_size: int = 32) -> np.ndarray:
        """``(N, D)`` float32 L2-normalised embeddings of vector sketches."""
        return self._batched(sketches, lambda b: sketches_to_tensor(b, self.prep), batch_size)

    def _batched(
        self,
        items: Sequence[Any],
        to_tensor: Callable[[Sequence[Any]], torch.Tensor],
        batch_size: int,
    ) -> np.ndarray:
        if not items:
            return np.zeros((0, self.model.embedding_dim), np.float32)
        return np.concatenate(
            [
                self._embed(to_tensor(items[i : i + batch_size]))
                for i in range(0, len(items), batch_size)
            ]
        )


def load_embedder(run_dir: str | Path, device: torch.device | str | None = None) -> Embedder:
    """The :class:`Embedder` of a run folder (``config.json`` + ``model.safetensors``)."""
    config = load_run_config(run_dir)
    model = build_embedding_net({**config, "pretrained": False})
    model.load_state_dict(load_model_state(run_dir))
    return Embedder(model, Preprocessing.from_config(config), config, device)
