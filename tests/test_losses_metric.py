import math

import pytest
import torch
import torch.nn.functional as F

from fgsbir.losses.metric import (
    DistillationLoss,
    NeighbourhoodLoss,
    RelationDistillation,
    TripletLoss,
    pairwise_distances,
)


def column(*values: float) -> torch.Tensor:
    """1-D embeddings as a (B, 1) tensor: distances are plain absolute differences."""
    return torch.tensor(values, dtype=torch.float32)[:, None]


# Sketches at 0, 1, 3 and photos at 0.1, 1.5, 4.8; margin 1.
# distances: s0 -> [0.1, 1.5, 4.8] (positive 0.1), s1 -> [0.9, 0.5, 3.8] (positive 0.5),
#            s2 -> [2.9, 1.5, 1.8] (positive 1.8)
# hinges relu(pos - neg + 1): s0: [-, 0, 0]; s1: [0.6, -, 0]; s2: [0, 1.3, -]
SKETCHES = column(0.0, 1.0, 3.0)
PHOTOS = column(0.1, 1.5, 4.8)


@pytest.mark.parametrize(
    ("negatives", "per_anchor"),
    [
        ("all", [0.0, (0.6 + 0.0) / 2, (0.0 + 1.3) / 2]),
        ("hardest", [0.0, 0.6, 1.3]),  # closest negatives: s0 -> p1, s1 -> p0, s2 -> p1
        # closest negative farther than the positive: s0 -> p1, s1 -> p0, s2 -> p0 (2.9 > 1.8)
        ("semi-hard", [0.0, 0.6, 0.0]),
    ],
)
def test_triplet_matches_hand_computation(negatives: str, per_anchor: list[float]) -> None:
    loss = TripletLoss(margin=1.0, negatives=negatives)(SKETCHES, PHOTOS)
    assert loss.item() == pytest.approx(sum(per_anchor) / 3, abs=1e-6)


def test_unpaired_photos_are_negatives_of_every_anchor() -> None:
    """A photo past the paired rows (at 2.9) is the closest negative of s2 (hinge 1.8 - 0.1 + 1
    = 2.7), whether or not labels are given; the other anchors keep their hinges."""
    photos = torch.cat([PHOTOS, column(2.9)])
    for labels in (None, torch.tensor([5, 6, 7])):
        loss = TripletLoss(margin=1.0, negatives="hardest")(SKETCHES, photos, labels)
        assert loss.item() == pytest.approx((0.0 + 0.6 + 2.7) / 3, abs=1e-6)


def test_semi_hard_falls_back_to_the_farthest_negative() -> None:
    # s0=0 -> photos [5, 1, 2]: positive 5, every negative closer -> farthest negative p2 (2)
    # s1=10 -> [5, 9, 12]: positive 9, p2 (12) is the closest farther negative -> relu(9-12+.5)=0
    # s2=20 -> [15, 19, 22]: positive 22, none farther -> farthest negative p1 (19)
    loss = TripletLoss(margin=0.5, negatives="semi-hard")(column(0, 10, 20), column(5, 1, -2))
    assert loss.item() == pytest.approx(((5 - 2 + 0.5) + 0.0 + (22 - 19 + 0.5)) / 3)
    hardest = TripletLoss(margin=0.5, negatives="hardest")(column(0, 10, 20), column(5, 1, -2))
    assert hardest.item() == pytest.approx(((5 - 1 + 0.5) + (9 - 5 + 0.5) + (22 - 15 + 0.5)) / 3)


def test_weights_scale_each_anchor() -> None:
    weights = torch.tensor([1.0, 0.0, 2.0])
    loss = TripletLoss(margin=1.0)(SKETCHES, PHOTOS, weights=weights)
    assert loss.item() == pytest.approx((0.0 * 1 + 0.3 * 0 + 0.65 * 2) / 3, abs=1e-6)


def test_duplicate_photo_ids_are_never_negatives() -> None:
    # photos 0 and 1 are the same product: s0's only negative is p2, s1's too
    labels = torch.tensor([4, 4, 9])
    loss = TripletLoss(margin=1.0, negatives="all")(SKETCHES, PHOTOS, labels=labels)
    # s0: relu(0.1 - 4.8 + 1) = 0; s1: relu(0.5 - 3.8 + 1) = 0; s2: negatives p0, p1 -> 0.65
    assert loss.item() == pytest.approx(0.65 / 3, abs=1e-6)
    # a batch of one product has no negatives at all
    same = torch.tensor([1, 1, 1])
    for negatives in ("all", "hardest", "semi-hard"):
        assert TripletLoss(negatives=negatives)(SKETCHES, PHOTOS, labels=same).item() == 0.0


def test_all_negatives_matches_a_loop_on_random_normalised_embeddings() -> None:
    gen = torch.Generator().manual_seed(0)
    sketches = F.normalize(torch.randn(6, 8, generator=gen), dim=1)
    photos = F.normalize(torch.randn(6, 8, generator=gen), dim=1)
    labels = torch.tensor([0, 1, 1, 2, 3, 3])
    expected = 0.0
    for i in range(6):
        positive = (sketches[i] - photos[i]).norm()
        hinges = [
            max(0.0, float(positive - (sketches[i] - photos[j]).norm() + 0.2))
            for j in range(6)
            if labels[j] != labels[i]
        ]
        expected += sum(hinges) / len(hinges) / 6
    loss = TripletLoss(margin=0.2)(sketches, photos, labels=labels)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("negatives", ["all", "hardest", "semi-hard"])
def test_a_gradient_step_lowers_the_loss(negatives: str) -> None:
    gen = torch.Generator().manual_seed(1)
    sketches = torch.randn(8, 4, generator=gen, requires_grad=True)
    photos = torch.randn(8, 4, generator=gen)
    loss_fn = TripletLoss(margin=0.5, negatives=negatives)
    before = loss_fn(F.normalize(sketches, dim=1), F.normalize(photos, dim=1))
    assert before.item() > 0
    before.backward()
    with torch.no_grad():
        sketches -= 0.05 * sketches.grad
    after = loss_fn(F.normalize(sketches, dim=1), F.normalize(photos, dim=1))
    assert after.item() < before.item()


def test_triplet_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        TripletLoss()(SKETCHES, column(1.0, 2.0))
    with pytest.raises(ValueError, match="labels"):
        TripletLoss()(SKETCHES, PHOTOS, labels=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="weights"):
        TripletLoss()(SKETCHES, PHOTOS, weights=torch.ones(2))
    with pytest.raises(ValueError, match="negatives"):
        TripletLoss(negatives="easy")


def test_pairwise_distances_are_euclidean() -> None:
    d = pairwise_distances(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0]]))
    assert d[:, 0].tolist() == pytest.approx([5.0, math.hypot(2, 3)])


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def softmax(xs: list[float]) -> list[float]:
    total = sum(math.exp(x) for x in xs)
    return [math.exp(x) / total for x in xs]


@pytest.mark.parametrize(("tau", "scale"), [(1.0, False), (0.5, True), (0.5, False)])
def test_distillation_matches_hand_computation(tau: float, scale: bool) -> None:
    # student: sketches and photos at 0 and 1 -> distances [[0, 1], [1, 0]]
    # teacher: at 0 and 2 -> [[0, 2], [2, 0]]; both rows give the same KL by symmetry
    student = softmax([0.0, -1.0 / tau])
    teacher = softmax([0.0, -2.0 / tau])
    expected = kl(teacher, student) * (tau**2 if scale else 1.0)
    loss = DistillationLoss(tau=tau, scale_by_tau_sq=scale)(
        column(0, 1), column(0, 1), column(0, 2), column(0, 2)
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_distillation_trains_only_the_student() -> None:
    gen = torch.Generator().manual_seed(2)
    student_s, student_p, teacher_s, teacher_p = (
        torch.randn(5, 3, generator=gen, requires_grad=True) for _ in range(4)
    )
    loss_fn = DistillationLoss(tau=0.3)
    assert loss_fn(teacher_s, teacher_p, teacher_s, teacher_p).item() == pytest.approx(0, abs=1e-6)
    loss = loss_fn(student_s, student_p, teacher_s, teacher_p)
    assert loss.item() > 0
    loss.backward()
    assert student_s.grad is not None and student_p.grad is not None
    assert teacher_s.grad is None and teacher_p.grad is None


def test_neighbourhood_loss_asks_the_sketch_for_the_frozen_order() -> None:
    """Three photos on a line, frozen order p0 < p1 < p2 from p0; a sketch of p0 that sees p2
    closer than p1 pays the hinge of every pair drawn in the wrong order."""
    frozen = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    photos = frozen.clone()
    loss = NeighbourhoodLoss(margin=0.1, triplets=50)
    own = torch.tensor([0])
    right = loss(torch.tensor([[0.0, 0.0]]), photos, frozen, own)
    assert right.item() == pytest.approx(0.0)  # d(s, p1) = 1 < d(s, p2) = 2 by more than 0.1
    wrong = loss(torch.tensor([[2.0, 0.0]]), photos, frozen, own)
    # the only pair is (p1, p2) in either draw order: d(s, p1) - d(s, p2) + 0.1 = 1 - 0 + 0.1
    assert wrong.item() == pytest.approx(1.1)


def test_relation_distillation_is_zero_for_the_teacher_itself() -> None:
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(6, 8), dim=1)
    loss = RelationDistillation(tau=0.1)
    assert loss(emb, emb).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(F.normalize(torch.randn(6, 8), dim=1), emb).item() > 0.01
