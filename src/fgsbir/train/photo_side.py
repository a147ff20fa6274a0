"""Photo-side learning: losses on photos alone, so that photos without sketches teach the
retrieval model too (issue: "photos that pay").

Every step embeds, beside its labelled pairs, a batch of unlabelled photos (augmented), and a
frozen copy of the pretrained network (the *reference*) embeds the same photos. Three small,
switchable losses use them, each with its weight in :class:`PhotoLosses`:

* **neighbourhood preservation** (:class:`~fgsbir.losses.metric.NeighbourhoodLoss`, after Li,
  Pang and Song, CVPR 2023): a sketch sees two photos in the order the reference ranks them
  against its own photo; the photos are the step's labelled and unlabelled ones;
* **relation distillation** (:class:`~fgsbir.losses.metric.RelationDistillation`, after Sain et
  al., CVPR 2023): the photos' distance distributions follow the reference's;
* **intra-modal triplets**: a photo and a shape-augmented copy of it (affine warp, erased
  patches) are a positive pair, the step's other photos its negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.v2 as T

from fgsbir.config import Count, NonNegative, Positive
from fgsbir.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Augmentation
from fgsbir.data.unlabelled import UnlabelledPool
from fgsbir.device import DistributedContext
from fgsbir.losses.metric import NeighbourhoodLoss, RelationDistillation, TripletLoss
from fgsbir.models.embedding import EmbeddingArch, EmbeddingNet, build_embedding_net

WHITE = tuple((1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
"""White paper, normalised: what a warped photo's uncovered corners are filled with."""


@dataclass
class PhotoLosses:
    """Weights and settings of the photo-side losses (all off by default)."""

    neighbourhood: NonNegative = 0.0
    neighbourhood_margin: NonNegative = 0.01
    neighbourhood_triplets: Count = 10  # random photo pairs per sketch
    distill: NonNegative = 0.0
    distill_tau: Positive = 0.1
    intra: NonNegative = 0.0
    intra_margin: NonNegative = 0.2
    unlabelled_per_batch: Count = 16  # unlabelled photos each step adds

    @property
    def on(self) -> bool:
        return self.neighbourhood > 0 or self.distill > 0 or self.intra > 0


class PhotoSide:
    """The reference network, the unlabelled photos and the photo-side losses of one run."""

    def __init__(
        self,
        config: PhotoLosses,
        arch: EmbeddingArch,
        pool: UnlabelledPool,
        augment: Augmentation,
        ctx: DistributedContext,
    ) -> None:
        self.config, self.pool, self.augment, self.ctx = config, pool, augment, ctx
        self.reference: EmbeddingNet = build_embedding_net(arch).to(ctx.device).eval()
        self.reference.requires_grad_(False)
        self.neighbourhood = NeighbourhoodLoss(
            config.neighbourhood_margin, config.neighbourhood_triplets
        )
        self.distill = RelationDistillation(config.distill_tau)
        self.intra = TripletLoss(config.intra_margin, "hardest")
        self.reshape = T.Compose([
            T.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.85, 1.1), shear=8,
                           fill=list(WHITE)),
            T.RandomErasing(p=0.5, scale=(0.02, 0.1), value=list(WHITE)),
        ])  # fmt: skip

    def inputs(self, position: int) -> list[torch.Tensor]:
        """The photos this step adds to the network's batch: the unlabelled photos of batch
        number ``position`` (augmented), with :meth:`copies` of them."""
        indices = self.pool.indices(position, self.config.unlabelled_per_batch)
        self.pool.load(indices)
        return self.copies(self.pool.views(indices, position, self.augment).to(self.ctx.device))

    def copies(self, views: torch.Tensor) -> list[torch.Tensor]:
        """``views`` of unlabelled photos, and their shape-augmented copies if ``intra`` is on:
        the ``extra`` inputs of :meth:`loss`."""
        if self.config.intra > 0:
            return [views, torch.stack([self.reshape(view) for view in views])]
        return [views]

    def loss(
        self,
        sketch_emb: torch.Tensor,
        photo_emb: torch.Tensor,
        photos: torch.Tensor,
        extra: list[torch.Tensor],
        extra_emb: list[torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted photo-side losses of a step whose labelled pairs embed as ``sketch_emb``
        and ``photo_emb`` (``photos``: their inputs), with the added ``extra`` inputs of
        :meth:`inputs` and their embeddings ``extra_emb``."""
        config = self.config
        all_photos = torch.cat([photos, extra[0]])
        all_emb = torch.cat([photo_emb, extra_emb[0]])
        stats: dict[str, float] = {}
        total = sketch_emb.new_zeros(())
        if config.neighbourhood > 0 or config.distill > 0:
            with torch.no_grad():
                frozen = self.reference.features(all_photos)
                frozen = torch.nn.functional.normalize(frozen, dim=1)
        if config.neighbourhood > 0:
            own = torch.arange(len(sketch_emb), device=sketch_emb.device)
            term = self.neighbourhood(sketch_emb, all_emb, frozen, own)
            total = total + config.neighbourhood * term
            stats["neighbourhood"] = term.item()
        if config.distill > 0:
            term = self.distill(all_emb, frozen)
            total = total + config.distill * term
            stats["photo_distill"] = term.item()
        if config.intra > 0:
            term = self.intra(extra_emb[0], extra_emb[1])
            total = total + config.intra * term
            stats["intra"] = term.item()
        return total, stats
