"""Metric-learning losses on paired sketch/photo embeddings.

Every loss takes ``(B, D)`` sketch and photo embeddings where row ``i`` of the sketches is paired
with row ``i`` of the photos; every other photo of the batch serves as a negative (in-batch
negatives). :class:`TripletLoss` also takes photos beyond the ``B`` paired ones: photos without a
sketch in the batch, negatives of every anchor. Distances are Euclidean, the metric retrieval
ranks with (see :mod:`fgsbir.evaluate`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NegativeMining = Literal["all", "hardest", "semi-hard"]


def pairwise_distances(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(Q, G)`` between every query row and every gallery row."""
    return torch.cdist(queries, gallery)


def negative_mask(
    batch_size: int, labels: torch.Tensor | None, device: torch.device, photos: int | None = None
) -> torch.Tensor:
    """``(B, N)`` bool: photo ``j`` is a negative of sketch ``i``; ``N`` is ``photos`` (default
    ``B``), the photos past the first ``B`` being unpaired.

    Without labels every photo but the anchor's own is a negative; with ``labels`` (one photo id
    per paired row) photos sharing the anchor's id are never negatives, so duplicates in a batch
    are safe. Unpaired photos are negatives of every anchor.
    """
    photos = batch_size if photos is None else photos
    if labels is None:
        return ~torch.eye(batch_size, photos, dtype=torch.bool, device=device)
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    labels = labels.to(device)
    unpaired = torch.ones(batch_size, photos - batch_size, dtype=torch.bool, device=device)
    return torch.cat([labels[:, None] != labels[None, :], unpaired], dim=1)


class TripletLoss(nn.Module):
    """Triplet margin loss ``relu(d(s_i, p_i) - d(s_i, p_j) + margin)`` with in-batch negatives.

    ``negatives`` chooses which negatives ``p_j`` of each anchor ``s_i`` count:

    * ``"all"``: the anchor's loss is the mean hinge over all its negatives;
    * ``"hardest"``: the hinge of its closest negative;
    * ``"semi-hard"``: the hinge of its closest negative that is farther than the positive
      (FaceNet); when there is none, its farthest negative.

    An anchor without any negative (every photo of the batch shares its label) contributes 0.
    ``weights`` ``(B,)`` multiply each anchor's loss before the mean over the batch (they are not
    renormalised; :func:`fgsbir.models.discriminator.discriminator_weights` already average 1).
    """

    def __init__(self, margin: float = 0.2, negatives: NegativeMining = "all") -> None:
        super().__init__()
        if negatives not in ("all", "hardest", "semi-hard"):
            raise ValueError(
                f"negatives must be 'all', 'hardest' or 'semi-hard', got {negatives!r}"
            )
        self.margin = margin
        self.negatives = negatives

    def forward(
        self,
        sketch_emb: torch.Tensor,
        photo_emb: torch.Tensor,
        labels: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        paired = photo_emb[: len(sketch_emb)]
        if sketch_emb.shape != paired.shape or sketch_emb.ndim != 2:
            raise ValueError(
                f"expected (B, D) sketches and (N >= B, D) photos, got shapes "
                f"{tuple(sketch_emb.shape)} and {tuple(photo_emb.shape)}"
            )
        batch = sketch_emb.shape[0]
        dist = pairwise_distances(sketch_emb, photo_emb)
        positive = dist.diagonal()[:, None]
        is_negative = negative_mask(batch, labels, dist.device, len(photo_emb))
        hinge = F.relu(positive - dist + self.margin)

        if self.negatives == "all":
            count = is_negative.sum(dim=1)
            per_anchor = (hinge * is_negative).sum(dim=1) / count.clamp_min(1)
        else:
            inf = torch.full_like(dist, float("inf"))
            if self.negatives == "hardest":
                chosen = torch.where(is_negative, dist, inf).argmin(dim=1)
            else:
                farther = is_negative & (dist > positive)
                closest_farther = torch.where(farther, dist, inf).argmin(dim=1)
                farthest = torch.where(is_negative, dist, -inf).argmax(dim=1)
                chosen = torch.where(farther.any(dim=1), closest_farther, farthest)
            per_anchor = hinge.gather(1, chosen[:, None]).squeeze(1) * is_negative.any(dim=1)

        if weights is not None:
            if weights.shape != (batch,):
                raise ValueError(f"weights must have shape ({batch},), got {tuple(weights.shape)}")
            per_anchor = per_anchor * weights
        return per_anchor.mean()


class DistillationLoss(nn.Module):
    """KL(teacher || student) between in-batch retrieval distributions.

    For each anchor ``i`` the distribution over the batch's photos is
    ``softmax(-d(s_i, p_j) / tau)`` with Euclidean distances, computed for the teacher's and the
    student's embeddings; the loss is the KL divergence averaged over anchors. The teacher side is
    detached. With ``scale_by_tau_sq`` (the default, as in Hinton et al. 2015) the loss is
    multiplied by ``tau**2`` so its gradient magnitude does not depend on the temperature.
    """

    def __init__(self, tau: float = 0.1, scale_by_tau_sq: bool = True) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = tau
        self.scale_by_tau_sq = scale_by_tau_sq

    def log_distribution(self, sketch_emb: torch.Tensor, photo_emb: torch.Tensor) -> torch.Tensor:
        """``(B, B)`` log-softmax over photos of ``-distance / tau`` for every sketch."""
        return F.log_softmax(-pairwise_distances(sketch_emb, photo_emb) / self.tau, dim=1)

    def forward(
        self,
        student_sketch: torch.Tensor,
        student_photo: torch.Tensor,
        teacher_sketch: torch.Tensor,
        teacher_photo: torch.Tensor,
    ) -> torch.Tensor:
        student = self.log_distribution(student_sketch, student_photo)
        with torch.no_grad():
            teacher = self.log_distribution(teacher_sketch, teacher_photo)
        loss = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
        return loss * self.tau**2 if self.scale_by_tau_sq else loss


class NeighbourhoodLoss(nn.Module):
    """Keeps a frozen photo model's neighbourhood order in the trained embedding (after Li, Pang,
    Song, CVPR 2023, "Photo Pre-Training, But for Sketch").

    For the sketch ``s_i`` of photo ``i`` and two other photos ``j, k`` that the frozen model
    ranks ``d0(p_i, p_j) < d0(p_i, p_k)``, the hinge ``relu(d(s_i, p_j) - d(s_i, p_k) + margin)``
    asks the sketch to see them in the same order. ``triplets`` random pairs ``(j, k)`` per
    anchor come from all the given photos, so photos without sketches take part too.
    """

    def __init__(self, margin: float = 0.01, triplets: int = 10) -> None:
        super().__init__()
        self.margin, self.triplets = margin, triplets

    def forward(
        self,
        sketch_emb: torch.Tensor,
        photo_emb: torch.Tensor,
        frozen: torch.Tensor,
        own: torch.Tensor,
    ) -> torch.Tensor:
        """``sketch_emb (B, D)``; ``photo_emb (P, D)`` and ``frozen (P, F)``: the trained and the
        frozen embeddings of the same photos; ``own (B,)``: each sketch's photo among them."""
        count = photo_emb.shape[0]
        if count < 3:
            return sketch_emb.new_zeros(())
        shape = (sketch_emb.shape[0], self.triplets)
        # two distinct photos, neither the anchor's own: draw from the others, then shift past it
        first = torch.randint(count - 1, shape, device=own.device)
        second = torch.randint(count - 2, shape, device=own.device)
        second = second + (second >= first).long()
        j = first + (first >= own[:, None]).long()
        k = second + (second >= own[:, None]).long()
        reference = pairwise_distances(frozen[own], frozen)
        closer = reference.gather(1, j) < reference.gather(1, k)
        near, far = torch.where(closer, j, k), torch.where(closer, k, j)
        dist = pairwise_distances(sketch_emb, photo_emb)
        return F.relu(dist.gather(1, near) - dist.gather(1, far) + self.margin).mean()


class RelationDistillation(nn.Module):
    """KL(teacher || student) of each photo's distribution over the *other* photos of a batch,
    ``softmax(-d / tau)``, the teacher being a frozen photo model (after Sain et al., CVPR 2023,
    "Exploiting Unlabelled Photos for Stronger Fine-Grained SBIR"): the trained model keeps how
    the photos relate, whatever it learns from sketches."""

    def __init__(self, tau: float = 0.1) -> None:
        super().__init__()
        self.tau = tau

    def _log_distribution(self, emb: torch.Tensor) -> torch.Tensor:
        dist = pairwise_distances(emb, emb)
        dist = dist.masked_fill(torch.eye(len(emb), dtype=torch.bool, device=emb.device), 1e4)
        return F.log_softmax(-dist / self.tau, dim=1)

    def forward(self, photo_emb: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
        if len(photo_emb) < 3:
            return photo_emb.new_zeros(())
        with torch.no_grad():
            teacher = self._log_distribution(frozen)
        student = self._log_distribution(photo_emb)
        return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * self.tau**2
