"""REINFORCE for the photo-to-sketch generator: retrieval rewards and baselines.

The generator samples a sketch for a photo; the retrieval model scores how well that sketch finds
its photo (:func:`retrieval_reward` among a batch's photos, or :func:`similarity_reward` against
a gallery); :func:`reinforce_loss` then raises the log-probability of sketches that scored above
the baseline and lowers it for those below. The baseline is a :class:`RunningBaseline` over
batches, or, with several samples per photo, the mean of the photo's own samples
(:func:`group_baseline`), so a sketch is pushed up only for finding its photo better than its
siblings do, whatever the photo's difficulty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fgsbir.losses.metric import pairwise_distances


def reinforce_loss(
    log_probs: torch.Tensor, rewards: torch.Tensor, baseline: float | torch.Tensor
) -> torch.Tensor:
    """``-mean((reward - baseline) * log_prob)``; the advantage is detached.

    ``log_probs`` ``(B,)``: log-probability of each sampled sequence (summed over its steps).
    """
    advantage = (rewards - baseline).detach()
    return -(advantage * log_probs).mean()


class RunningBaseline:
    """Exponential moving average of the mean reward, the variance-reducing REINFORCE baseline.

    The first :meth:`update` sets the value to the batch's mean reward (no bias towards 0); later
    ones blend ``value = momentum * value + (1 - momentum) * mean(rewards)``.
    """

    def __init__(self, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.value: float | None = None

    def update(self, rewards: torch.Tensor) -> float:
        """Fold a batch of rewards in and return the new baseline."""
        mean = float(rewards.detach().float().mean())
        if self.value is None:
            self.value = mean
        else:
            self.value = self.momentum * self.value + (1.0 - self.momentum) * mean
        return self.value

    def state_dict(self) -> dict[str, float | None]:
        """The state to store in a resume checkpoint."""
        return {"momentum": self.momentum, "value": self.value}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.momentum = float(state["momentum"])
        self.value = state["value"]


@torch.no_grad()
def retrieval_reward(
    sketch_emb: torch.Tensor, photo_emb: torch.Tensor, tau: float = 0.1
) -> torch.Tensor:
    """``(B,)`` reward in ``[0, 1]``: how well generated sketch ``i`` retrieves its photo ``i``.

    The reward is the softmax probability of the true photo among the batch's photos,
    ``softmax(-d(s_i, p_j) / tau)[i]`` with Euclidean distances. Unlike the reciprocal rank it moves
    smoothly as the sketch gets closer to its photo, so small improvements are rewarded too.
    """
    log_p = F.log_softmax(-pairwise_distances(sketch_emb, photo_emb) / tau, dim=1)
    return log_p.diagonal().exp()


@torch.no_grad()
def similarity_reward(
    sketch_emb: torch.Tensor, photo_emb: torch.Tensor, gallery_emb: torch.Tensor
) -> torch.Tensor:
    """``(B,)``: how far sketch ``i``'s cosine similarity to its photo ``i`` stands above its
    similarities to the ``(G, D)`` gallery photos (other photos), in standard deviations of the
    latter. It keeps moving where a softmax over the gallery has saturated at 0 (a sketch far
    down the ranking) or 1."""
    sketches = F.normalize(sketch_emb, dim=1)
    own = (sketches * F.normalize(photo_emb, dim=1)).sum(1)
    others = sketches @ F.normalize(gallery_emb, dim=1).T
    return (own - others.mean(1)) / others.std(1).clamp_min(1e-6)


def group_baseline(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each reward's baseline: the mean reward of its group, ``group_size`` consecutive samples
    (of one photo)."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    means = rewards.detach().view(-1, group_size).mean(1)
    return means.repeat_interleave(group_size)
