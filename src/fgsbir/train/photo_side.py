"""Photo-side learning: losses on photos alone, so that photos without sketches teach the
retrieval model too (issue: "photos that pay").

Every step embeds, beside its labelled pairs, a batch of unlabelled photos (augmented). A frozen
ImageNet network (the *reference*) has described every photo once, before training: its pooled
features of the plain RGB photo (:class:`ReferenceFeatures`, cached on disk), which rank photos
the way a photo model does, whatever inputs the retrieval model sees. Three small, switchable
losses use them, each with its weight in :class:`PhotoLosses`:

* **neighbourhood preservation** (:class:`~fgsbir.losses.metric.NeighbourhoodLoss`, after Li,
  Pang and Song, CVPR 2023): a sketch sees two photos in the order the reference ranks them
  against its own photo; the photos are the step's labelled and unlabelled ones;
* **relation distillation** (:class:`~fgsbir.losses.metric.RelationDistillation`, after Sain et
  al., CVPR 2023): the photos' distance distributions follow the reference's;
* **intra-modal triplets**: a photo and a shape-augmented copy of it (affine warp, erased
  patches) are a positive pair, the step's other photos its negatives.

With ``pool_negatives`` the unlabelled photos need no loss of their own: the retrieval triplet
loss of the labelled pairs ranks each sketch against them too (:meth:`PhotoSide.gallery`), so
every sketch learns to tell its photo from far more shoes than the few labelled ones.

With ``meta_step`` the losses are taken *after* a look-ahead: at the weights one gradient step of
the step's retrieval loss away (:meth:`PhotoSide.ahead`), so that the model learns weights from
which learning sketches keeps the photos' neighbourhoods, rather than a sum of both wishes. This
is the first-order meta update that Li, Pang and Song found better than the weighted sum (after
Li et al., AAAI 2018, "Learning to Generalize", MLDG): the look-ahead's gradient is treated as a
constant, so one more backward pass and one more forward pass per step, and no second
derivatives. Its size is ``meta_step`` learning rates per weight (root mean square), whatever the
gradient's scale.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import torchvision.transforms.v2 as T
from pydantic import Field

from fgsbir.config import Count, NonNegative, Positive
from fgsbir.data.layouts import cache_dir
from fgsbir.data.photos import load_photo
from fgsbir.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    Preprocessing,
    photos_to_tensor,
)
from fgsbir.data.unlabelled import UnlabelledPool
from fgsbir.device import DistributedContext
from fgsbir.losses.metric import NeighbourhoodLoss, RelationDistillation, TripletLoss
from fgsbir.models.backbones import DEFAULT_BACKBONE, create_backbone
from fgsbir.train.loop import progress_bar

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
    unlabelled_per_batch: Count = 16  # unlabelled photos each step adds (semi: its own batch)
    reference: str = DEFAULT_BACKBONE  # ImageNet network (shipped weights) that ranks photos
    reference_size: Annotated[int, Field(ge=32)] = 224  # the RGB photo's side as it sees it
    meta_step: NonNegative = 0.0  # look-ahead in learning rates (0: the losses at the weights)
    pool_negatives: bool = False  # the unlabelled photos are negatives of the retrieval loss

    @property
    def on(self) -> bool:
        losses = self.neighbourhood > 0 or self.distill > 0 or self.intra > 0
        return losses or self.pool_negatives


def look_ahead(
    model: torch.nn.Module, inputs: torch.Tensor, loss: torch.Tensor, size: float
) -> torch.Tensor:
    """``model``'s output for ``inputs`` at its weights moved one step down the gradient of
    ``loss`` (a function of those weights), the step's root mean square per weight ``size``.

    The moved weights are the weights minus a constant (first order: the step is not
    differentiated), so gradients through the output reach the weights as they are; batch-norm
    statistics are left as they were."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    weights = [p for _, p in named]
    grads = torch.autograd.grad(loss, weights, retain_graph=True, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, grads, strict=True)]
    rms = torch.sqrt(sum(g.square().sum() for g in grads) / sum(g.numel() for g in grads))
    scale = size / rms.clamp_min(1e-12)
    moved = {name: p - scale * g for (name, p), g in zip(named, grads, strict=True)}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    return torch.func.functional_call(model, moved | buffers, (inputs,))


class ReferenceFeatures:
    """The reference network's L2-normalised pooled features of photos, one row per photo
    (``rows`` maps a photo file to its row), computed once and cached in
    ``cache_dir()/reference``, keyed by the file's path, size and modification time and the
    network and size."""

    def __init__(
        self, photos: Sequence[Path], name: str, size: int, ctx: DistributedContext
    ) -> None:
        self.rows = {Path(photo): i for i, photo in enumerate(dict.fromkeys(map(Path, photos)))}
        self.name, self.prep = name, Preprocessing(image_size=size, photo_input="rgb")
        self._network: torch.nn.Module | None = None
        rows = progress_bar(self.rows, "reference features", ctx)
        features = [self._features(photo) for photo in rows]
        self.table = torch.nn.functional.normalize(torch.stack(features), dim=1)

    def _features(self, photo: Path) -> torch.Tensor:
        stat = photo.stat()
        key = f"{photo.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.name}|{self.prep}"
        cached = cache_dir() / "reference" / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"
        if cached.is_file():
            return torch.load(cached, weights_only=True)
        if self._network is None:
            self._network = create_backbone(self.name, pretrained=True).eval()
        with torch.no_grad():
            features = self._network(photos_to_tensor([load_photo(photo)], self.prep))[0]
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp")
        torch.save(features.clone(), partial)
        os.replace(partial, cached)
        return features

    def __call__(self, photos: Sequence[Path], device: torch.device) -> torch.Tensor:
        """``(len(photos), F)`` features of photos given at construction."""
        return self.table[[self.rows[Path(photo)] for photo in photos]].to(device)


class PhotoSide:
    """The reference features, the unlabelled photos and the photo-side losses of one run.

    ``photos`` are all the photos the losses may meet: the labelled training photos and the
    photos of edge pairs, beside the ``pool``'s."""

    def __init__(
        self,
        config: PhotoLosses,
        photos: Sequence[Path],
        pool: UnlabelledPool,
        augment: Augmentation,
        ctx: DistributedContext,
    ) -> None:
        self.config, self.pool, self.augment, self.ctx = config, pool, augment, ctx
        self.reference = None
        if config.neighbourhood > 0 or config.distill > 0:
            every = [*photos, *pool.photos]
            self.reference = ReferenceFeatures(every, config.reference, config.reference_size, ctx)
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

    def inputs(self, position: int) -> tuple[list[torch.Tensor], list[Path]]:
        """The photos this step adds to the network's batch: the unlabelled photos of batch
        number ``position`` (augmented), with :meth:`copies` of them; and their files."""
        indices = self.pool.indices(position, self.config.unlabelled_per_batch)
        self.pool.load(indices)
        views = self.pool.views(indices, position, self.augment).to(self.ctx.device)
        return self.copies(views), [self.pool.photos[i] for i in indices]

    def copies(self, views: torch.Tensor) -> list[torch.Tensor]:
        """``views`` of unlabelled photos, and their shape-augmented copies if ``intra`` is on:
        the extra inputs whose embeddings :meth:`loss` takes."""
        if self.config.intra > 0:
            return [views, torch.stack([self.reshape(view) for view in views])]
        return [views]

    def gallery(self, photo_emb: torch.Tensor, extra_emb: list[torch.Tensor]) -> torch.Tensor:
        """The photos the retrieval triplet loss ranks a step's sketches against: the labelled
        ``photo_emb``, then with ``pool_negatives`` the unlabelled photos' embeddings (the first
        of ``extra_emb``, the :meth:`copies`' embeddings) as negatives of every sketch."""
        if not self.config.pool_negatives:
            return photo_emb
        return torch.cat([photo_emb, extra_emb[0]])

    def ahead(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        embeddings: torch.Tensor,
        inner: torch.Tensor,
        lr: float,
    ) -> torch.Tensor:
        """The embeddings of ``inputs`` where :meth:`loss` is taken: ``embeddings`` (``model``'s
        at its weights) without ``meta_step``; with it, :func:`look_ahead` of ``meta_step * lr``
        down the gradient of ``inner``, the step's retrieval loss."""
        if self.config.meta_step == 0:
            return embeddings
        return look_ahead(model, inputs, inner, self.config.meta_step * lr)

    def loss(
        self,
        sketch_emb: torch.Tensor,
        photo_emb: torch.Tensor,
        extra_emb: list[torch.Tensor],
        photos: Sequence[Path],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted photo-side losses of a step whose labelled pairs embed as ``sketch_emb``
        and ``photo_emb``, with the embeddings ``extra_emb`` of the :meth:`copies` of its
        unlabelled photos; ``photos``: the files of the labelled, then the unlabelled photos."""
        config = self.config
        all_emb = torch.cat([photo_emb, extra_emb[0]])
        stats: dict[str, float] = {}
        total = sketch_emb.new_zeros(())
        if self.reference is not None:
            frozen = self.reference(photos, sketch_emb.device)
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
