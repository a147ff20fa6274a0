import math

import pytest
import torch
import torch.nn.functional as F

from fgsbir.models.discriminator import PairDiscriminator, discriminator_weights

SIZE = 32
SIDE = 12


def squares(corners: torch.Tensor, filled: bool) -> torch.Tensor:
    """(B, 1, SIZE, SIZE) images of SIDE-pixel squares, filled or outlined, at ``corners``."""
    images = torch.zeros(len(corners), 1, SIZE, SIZE)
    for image, (y, x) in zip(images, corners.tolist(), strict=True):
        image[0, y : y + SIDE, x : x + SIDE] = 1.0
        if not filled:
            image[0, y + 1 : y + SIDE - 1, x + 1 : x + SIDE - 1] = 0.0
    return images


def toy_pairs(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Photos of a bright square; real sketches outline it, fake ones outline a square elsewhere."""
    corners = torch.randint(0, SIZE - SIDE, (n, 2), generator=gen)
    elsewhere = (corners + torch.randint(4, SIZE - SIDE - 4, (n, 2), generator=gen)) % (SIZE - SIDE)
    photos = squares(corners, filled=True).expand(n, 3, SIZE, SIZE) * 2 - 1
    sketches = torch.cat([squares(corners, filled=False), squares(elsewhere, filled=False)])
    labels = torch.cat([torch.ones(n), torch.zeros(n)])
    return torch.cat([photos, photos]), sketches, labels


def test_learns_to_tell_matching_from_mismatched_pairs() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = PairDiscriminator(width=16)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(120):
        photos, sketches, labels = toy_pairs(16, gen)
        loss = F.binary_cross_entropy_with_logits(model(photos, sketches), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    photos, sketches, labels = toy_pairs(64, gen)  # unseen pairs
    with torch.no_grad():
        accuracy = ((model(photos, sketches) > 0).float() == labels).float().mean().item()
    assert accuracy >= 0.9


def test_scores_one_logit_per_pair_at_any_size() -> None:
    model = PairDiscriminator()
    for size in (64, 96):
        assert model(torch.zeros(3, 3, size, size), torch.zeros(3, 1, size, size)).shape == (3,)
    with pytest.raises(ValueError, match="sketch"):
        model(torch.zeros(2, 3, 64, 64), torch.zeros(2, 1, 32, 32))


def test_weights_are_detached_sigmoids_averaging_one() -> None:
    logits = torch.tensor([0.0, math.log(3.0)], requires_grad=True)
    # sigmoids [0.5, 0.75], mean 0.625
    weights = discriminator_weights(logits)
    assert weights.tolist() == pytest.approx([0.5 / 0.625, 0.75 / 0.625])
    assert not weights.requires_grad
    assert discriminator_weights(torch.randn(7)).mean().item() == pytest.approx(1.0)
