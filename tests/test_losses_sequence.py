"""The stroke distribution, its masked NLL and the floored KL against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from fgsbir.losses.sequence import (
    StrokeMixture,
    kl_loss,
    kl_weight,
    raw_output_size,
    stroke_log_prob,
    stroke_nll,
)


def _raw(
    pi: list[float],
    mu: list[tuple[float, float]],
    sigma: list[tuple[float, float]],
    rho: list[float],
    pen: tuple[float, float, float],
) -> torch.Tensor:
    """The decoder output that encodes the given mixture (pi and pen as logits)."""
    mu_a, sigma_a = np.array(mu), np.log(np.array(sigma))
    parts = [np.log(pi), mu_a[:, 0], mu_a[:, 1], sigma_a[:, 0], sigma_a[:, 1]]
    parts += [np.arctanh(np.array(rho) / 0.999), np.log(pen)]
    return torch.tensor(np.concatenate(parts), dtype=torch.float64)


MIXTURE = {
    "pi": [0.3, 0.7],
    "mu": [(0.5, -1.0), (-0.2, 0.4)],
    "sigma": [(1.0, 0.5), (0.3, 2.0)],
    "rho": [0.6, -0.3],
    "pen": (0.5, 0.3, 0.2),
}


def _density(x: tuple[float, float]) -> float:
    total = 0.0
    for w, mu, (sx, sy), r in zip(
        MIXTURE["pi"], MIXTURE["mu"], MIXTURE["sigma"], MIXTURE["rho"], strict=True
    ):
        cov = [[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]]
        total += w * multivariate_normal(mean=mu, cov=cov).pdf(x)
    return total


def test_log_prob_matches_scipy_mixture_and_pen_probabilities() -> None:
    raw = _raw(**MIXTURE)
    batch = StrokeMixture.from_raw(raw.expand(3, len(raw)), components=2)
    offsets = torch.tensor([[0.1, 0.2], [1.5, -2.0], [-0.2, 0.4]], dtype=torch.float64)
    want = [math.log(_density(tuple(o))) for o in offsets.tolist()]
    np.testing.assert_allclose(batch.offset_log_prob(offsets).tolist(), want, rtol=1e-9)
    pens = torch.tensor([0, 1, 2])
    np.testing.assert_allclose(batch.pen_log_prob_of(pens), np.log(MIXTURE["pen"]), rtol=1e-9)
    mixture = StrokeMixture.from_raw(raw, components=2)
    # an end action is scored by its pen state alone
    both = stroke_log_prob(mixture, offsets[1], torch.tensor(0))
    end = stroke_log_prob(mixture, offsets[1], torch.tensor(2))
    assert float(both) == pytest.approx(want[1] + math.log(0.5))
    assert float(end) == pytest.approx(math.log(0.2))


def test_from_raw_rejects_wrong_width() -> None:
    assert raw_output_size(20) == 123
    with pytest.raises(ValueError, match="123"):
        StrokeMixture.from_raw(torch.zeros(3, 120), components=20)


def _unit_mixture(batch: int, steps: int) -> StrokeMixture:
    """One standard Gaussian component and uniform pen states at every step."""
    return StrokeMixture.from_raw(torch.zeros(batch, steps, raw_output_size(1)), components=1)


def test_stroke_nll_masks_after_the_end_row() -> None:
    targets = torch.zeros(2, 4, 5)
    targets[..., 4] = 1.0
    targets[0, :2] = torch.tensor([[1.0, 2.0, 1, 0, 0], [0.0, -1.0, 0, 1, 0]])
    targets[1, :3] = torch.tensor([[3.0, 0.0, 1, 0, 0], [1.0, 1.0, 1, 0, 0], [0.0, 0.0, 0, 1, 0]])
    lengths = torch.tensor([2, 3])
    offset, pen = stroke_nll(_unit_mixture(2, 4), targets, lengths)

    def gauss_nll(dx: float, dy: float) -> float:
        return math.log(2 * math.pi) + 0.5 * (dx * dx + dy * dy)

    want_offset = [
        gauss_nll(1, 2) + gauss_nll(0, -1),
        gauss_nll(3, 0) + gauss_nll(1, 1) + gauss_nll(0, 0),
    ]
    np.testing.assert_allclose(offset.tolist(), want_offset, rtol=1e-6)
    # pen scored on the points and the first end row: 3 and 4 steps of log 3
    np.testing.assert_allclose(pen.tolist(), [3 * math.log(3), 4 * math.log(3)], rtol=1e-6)

    # whatever lies after the first end row does not count
    garbage = targets.clone()
    garbage[0, 3] = torch.tensor([50.0, -70.0, 1, 0, 0])
    garbage[0, 2, :2] = torch.tensor([9.0, 9.0])  # the end row's offset is never scored
    offset2, pen2 = stroke_nll(_unit_mixture(2, 4), garbage, lengths)
    assert torch.equal(offset, offset2)
    assert torch.equal(pen, pen2)


def test_kl_floor_value_and_annealing() -> None:
    zeros = torch.zeros(3, 4)
    assert float(kl_loss(zeros, zeros)) == pytest.approx(0.2)  # true KL 0 -> floor
    assert float(kl_loss(zeros, zeros, floor=0.0)) == 0.0
    # mu = 1, var = 1: KL is 0.5 per dimension, averaged over dimensions
    assert float(kl_loss(torch.ones(3, 4), zeros)) == pytest.approx(0.5)
    log_var = torch.full((2, 5), math.log(2.0))
    assert float(kl_loss(torch.zeros(2, 5), log_var, floor=0.0)) == pytest.approx(
        0.5 * (2.0 - 1.0 - math.log(2.0))
    )
    assert kl_weight(0) == pytest.approx(0.01)
    assert kl_weight(10_000) == pytest.approx(1.0 - 0.99 * 0.99995**10_000)
    assert kl_weight(10**7) == pytest.approx(1.0)


def test_temperature_sharpens_and_scales_spreads() -> None:
    mixture = StrokeMixture.from_raw(_raw(**MIXTURE), components=2)
    same = mixture.tempered(1.0)
    assert torch.allclose(same.log_pi, mixture.log_pi)
    assert torch.allclose(same.log_sigma, mixture.log_sigma)
    cold = mixture.tempered(0.25)
    np.testing.assert_allclose(cold.log_sigma.exp(), mixture.log_sigma.exp() * 0.5)
    pi = np.array(MIXTURE["pi"]) ** 4
    np.testing.assert_allclose(cold.log_pi.exp(), pi / pi.sum())
    assert cold.pen_log_prob.argmax() == 0
    with pytest.raises(ValueError):
        mixture.tempered(0.0)


def test_samples_follow_the_mixture() -> None:
    torch.manual_seed(0)
    one = {k: v[1:] if k != "pen" else v for k, v in MIXTURE.items()}
    one["pi"] = [1.0]
    raw = _raw(**one).float().expand(40_000, raw_output_size(1))
    mixture = StrokeMixture.from_raw(raw, components=1)
    offsets, pen = mixture.sample()
    assert not offsets.requires_grad
    (sx, sy), r = one["sigma"][0], one["rho"][0]
    np.testing.assert_allclose(offsets.mean(0), one["mu"][0], atol=0.03)
    cov = np.cov(offsets.numpy().T)
    np.testing.assert_allclose(cov, [[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]], atol=0.05)
    np.testing.assert_allclose(np.bincount(pen.numpy()) / len(pen), MIXTURE["pen"], atol=0.01)
    mode_offsets, mode_pen = StrokeMixture.from_raw(_raw(**MIXTURE), components=2).mode()
    assert mode_offsets.tolist() == pytest.approx(list(MIXTURE["mu"][1]))
    assert int(mode_pen) == 0
