"""sketch-rnn's sequence losses: a per-step stroke distribution, its masked NLL, and the floored KL.

At every step the decoder predicts a :class:`StrokeMixture`: a mixture of ``M`` bivariate Gaussians
over the pen offset ``(dx, dy)`` and a categorical distribution over the three pen states
(``p_down``, ``p_up``, ``p_end``) of the stroke-5 format. The same object scores targets
(training), scores samples (the log-probability used by policy-gradient training) and draws them.

Masking follows the stroke-5 convention: a sequence of ``n`` points is followed by end rows. The
offsets of the ``n`` points are scored; the pen state is scored on those ``n`` steps *and* on the
first end row (the decision to stop); everything after that is masked out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PEN_END = 2
"""Index of ``p_end`` among the three pen states."""
_LOG_2PI = math.log(2.0 * math.pi)
_RHO_LIMIT = 0.999  # |rho| < 1 keeps the Gaussians non-degenerate
_LOG_SIGMA_MIN = -7.0  # spreads below exp(-7) of the data scale only breed overflow


def raw_output_size(components: int) -> int:
    """Width of the decoder output that :meth:`StrokeMixture.from_raw` splits: ``6 M + 3``."""
    return 6 * components + 3


@dataclass
class StrokeMixture:
    """A per-step stroke-5 distribution; every field has leading batch/time dimensions ``...``.

    ``log_pi (..., M)`` normalised log mixture weights, ``mu (..., M, 2)`` means,
    ``log_sigma (..., M, 2)`` log standard deviations, ``rho (..., M)`` correlations and
    ``pen_log_prob (..., 3)`` normalised log-probabilities of the pen states.
    """

    log_pi: torch.Tensor
    mu: torch.Tensor
    log_sigma: torch.Tensor
    rho: torch.Tensor
    pen_log_prob: torch.Tensor

    @classmethod
    def from_raw(cls, raw: torch.Tensor, components: int) -> StrokeMixture:
        """Split a ``(..., 6 M + 3)`` decoder output: pi logits, mu x/y, log sigma x/y, rho, pen."""
        m = components
        if raw.shape[-1] != raw_output_size(m):
            raise ValueError(f"expected {raw_output_size(m)} outputs, got {raw.shape[-1]}")
        pi, mu_x, mu_y, ls_x, ls_y, rho, pen = raw.split([m, m, m, m, m, m, 3], dim=-1)
        return cls(
            log_pi=F.log_softmax(pi, dim=-1),
            mu=torch.stack([mu_x, mu_y], dim=-1),
            log_sigma=torch.stack([ls_x, ls_y], dim=-1).clamp_min(_LOG_SIGMA_MIN),
            rho=torch.tanh(rho) * _RHO_LIMIT,
            pen_log_prob=F.log_softmax(pen, dim=-1),
        )

    def tempered(self, temperature: float) -> StrokeMixture:
        """sketch-rnn's temperature ``tau > 0``: mixture and pen logits divided by ``tau``, spreads
        multiplied by ``sqrt(tau)`` (``tau < 1`` is more certain, ``tau = 1`` is unchanged)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        return StrokeMixture(
            log_pi=F.log_softmax(self.log_pi / temperature, dim=-1),
            mu=self.mu,
            log_sigma=self.log_sigma + 0.5 * math.log(temperature),
            rho=self.rho,
            pen_log_prob=F.log_softmax(self.pen_log_prob / temperature, dim=-1),
        )

    def offset_log_prob(self, offsets: torch.Tensor) -> torch.Tensor:
        """``log p(dx, dy)`` of ``offsets (..., 2)``, shape ``(...)``."""
        z = (offsets.unsqueeze(-2) - self.mu) * torch.exp(-self.log_sigma)  # (..., M, 2)
        one_minus_rho2 = 1.0 - self.rho**2
        quad = z[..., 0] ** 2 + z[..., 1] ** 2 - 2.0 * self.rho * z[..., 0] * z[..., 1]
        log_normal = (
            -_LOG_2PI
            - self.log_sigma.sum(-1)
            - 0.5 * torch.log(one_minus_rho2)
            - quad / (2.0 * one_minus_rho2)
        )
        return torch.logsumexp(self.log_pi + log_normal, dim=-1)

    def pen_log_prob_of(self, pen: torch.Tensor) -> torch.Tensor:
        """``log p(pen)`` of pen-state indices ``pen (...)`` (0 down, 1 up, 2 end)."""
        return self.pen_log_prob.gather(-1, pen.unsqueeze(-1)).squeeze(-1)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(offsets (..., 2), pen (...))``; both are detached (actions, not functions)."""
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.log_pi).sample()
            mu, sigma, rho = self._component(k)
            e = torch.randn_like(mu)
            dx = mu[..., 0] + sigma[..., 0] * e[..., 0]
            dy = mu[..., 1] + sigma[..., 1] * (rho * e[..., 0] + torch.sqrt(1 - rho**2) * e[..., 1])
            pen = torch.distributions.Categorical(logits=self.pen_log_prob).sample()
        return torch.stack([dx, dy], dim=-1), pen

    def mode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy choice: the mean of the most likely component and the most likely pen state."""
        with torch.no_grad():
            mu, _, _ = self._component(self.log_pi.argmax(-1))
            pen = self.pen_log_prob.argmax(-1)
        return mu, pen

    def _component(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, spread and correlation of component ``k (...)`` of each distribution."""
        index = k[..., None, None].expand(*k.shape, 1, 2)
        mu = self.mu.gather(-2, index).squeeze(-2)
        sigma = self.log_sigma.gather(-2, index).squeeze(-2).exp()
        rho = self.rho.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        return mu, sigma, rho


def stroke_log_prob(
    mixture: StrokeMixture, offsets: torch.Tensor, pen: torch.Tensor
) -> torch.Tensor:
    """``log p`` of one step's action: the pen state, plus the offset unless the pen ends."""
    offset_term = mixture.offset_log_prob(offsets).masked_fill(pen == PEN_END, 0.0)
    return mixture.pen_log_prob_of(pen) + offset_term


def stroke_nll(
    mixture: StrokeMixture, targets: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked negative log-likelihood of stroke-5 ``targets (B, T, 5)``, summed per sequence.

    ``mixture`` holds ``(B, T)`` step distributions and ``lengths (B,)`` the number of real points.
    Returns ``(offset_nll, pen_nll)``, each ``(B,)``: offsets are scored on steps
    ``t < length``, pen states on ``t <= length`` (the first end row included). Divide their sum
    by ``(lengths + 1).sum()`` for the per-step NLL.
    """
    steps = torch.arange(targets.shape[1], device=targets.device)
    point_mask = steps[None, :] < lengths[:, None]
    pen_mask = steps[None, :] <= lengths[:, None]
    offset_nll = -mixture.offset_log_prob(targets[..., :2])
    pen_nll = -mixture.pen_log_prob_of(targets[..., 2:].argmax(-1))
    zero = offset_nll.new_zeros(())
    return (
        torch.where(point_mask, offset_nll, zero).sum(1),
        torch.where(pen_mask, pen_nll, zero).sum(1),
    )


def point_nll(mixture: StrokeMixture, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The batch's NLL per step (offsets and pen states, the end included; see
    :func:`stroke_nll`): sketch-rnn's reconstruction loss."""
    offset, pen = stroke_nll(mixture, targets, lengths)
    return (offset.sum() + pen.sum()) / (lengths + 1).sum()


def kl_loss(mu: torch.Tensor, log_var: torch.Tensor, floor: float = 0.2) -> torch.Tensor:
    """KL of ``N(mu, exp(log_var))`` to ``N(0, I)``, averaged over batch and latent dimensions
    (as sketch-rnn) and floored at ``floor``, below which it stops pulling the latent."""
    kl = -0.5 * torch.mean(1.0 + log_var - mu**2 - log_var.exp())
    return kl.clamp_min(floor)


def kl_weight(step: int, start: float = 0.01, end: float = 1.0, decay: float = 0.99995) -> float:
    """Annealed KL weight ``end - (end - start) * decay**step``: from ``start`` up to ``end``."""
    return end - (end - start) * decay**step
