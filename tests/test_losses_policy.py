import math

import pytest
import torch
from torch.distributions import Categorical

from fgsbir.losses.policy import (
    RunningBaseline,
    group_baseline,
    reinforce_loss,
    retrieval_reward,
    similarity_reward,
)


def test_reinforce_loss_matches_hand_computation() -> None:
    log_probs = torch.tensor([-1.0, -2.0])
    rewards = torch.tensor([1.0, 0.0])
    # -mean([(1 - 0.5) * -1, (0 - 0.5) * -2]) = -mean([-0.5, 1.0])
    assert reinforce_loss(log_probs, rewards, 0.5).item() == pytest.approx(-0.25)


def test_reinforce_does_not_backpropagate_into_rewards() -> None:
    log_probs = torch.tensor([-1.0, -3.0], requires_grad=True)
    rewards = torch.tensor([2.0, 1.0], requires_grad=True)
    reinforce_loss(log_probs, rewards, torch.tensor(1.5)).backward()
    assert rewards.grad is None
    # d loss / d log_prob_i = -(r_i - b) / B
    assert log_probs.grad.tolist() == pytest.approx([-0.25, 0.25])


@pytest.mark.parametrize(("reward", "more_likely"), [(1.0, True), (-1.0, False)])
def test_one_sgd_step_follows_the_advantage(reward: float, more_likely: bool) -> None:
    """A sequence rewarded above the baseline becomes more probable, below it less probable."""
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.tensor([0.2, -0.1, 0.4, 0.0]))
    optimiser = torch.optim.SGD([logits], lr=0.5)
    policy = Categorical(logits=logits)
    actions = policy.sample((3,))  # a "sequence" of three steps
    log_prob = policy.log_prob(actions).sum()[None]
    before = log_prob.item()

    reinforce_loss(log_prob, torch.tensor([reward]), baseline=0.0).backward()
    optimiser.step()

    after = Categorical(logits=logits).log_prob(actions).sum().item()
    assert (after > before) == more_likely


def test_running_baseline_is_an_exponential_average() -> None:
    baseline = RunningBaseline(momentum=0.9)
    assert baseline.value is None
    assert baseline.update(torch.tensor([1.0, 3.0])) == pytest.approx(2.0)  # first batch: its mean
    assert baseline.update(torch.tensor([4.0])) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)

    restored = RunningBaseline()
    restored.load_state_dict(baseline.state_dict())
    assert restored.value == baseline.value and restored.momentum == 0.9
    with pytest.raises(ValueError, match="momentum"):
        RunningBaseline(momentum=1.0)


def test_retrieval_reward_is_the_softmax_probability_of_the_true_photo() -> None:
    sketches = torch.tensor([[0.0], [1.0]])
    photos = torch.tensor([[0.0], [3.0]])
    # sketch 0: distances [0, 3]; sketch 1: distances [1, 2], true photo at distance 2
    expected = [1 / (1 + math.exp(-3)), math.exp(-2) / (math.exp(-1) + math.exp(-2))]
    reward = retrieval_reward(sketches, photos, tau=1.0)
    assert reward.tolist() == pytest.approx(expected, rel=1e-5)
    assert not reward.requires_grad


def test_retrieval_reward_grows_as_a_sketch_nears_its_photo() -> None:
    photos = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    far = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    near = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    reward_far = retrieval_reward(far, photos)
    reward_near = retrieval_reward(near, photos)
    assert reward_near[0] > reward_far[0] and reward_near[2] > reward_far[2]
    assert ((reward_near >= 0) & (reward_near <= 1)).all()


def test_similarity_reward_counts_standard_deviations_above_the_gallery() -> None:
    sketches = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # norms do not matter
    photos = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    gallery = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    # sketch 0: own similarity 1, gallery [0, -1, 0] (mean -1/3, sd 1/sqrt(3))
    # sketch 1: own similarity 0, gallery [1, 0, -1] (mean 0, sd 1)
    expected = [(1 + 1 / 3) * math.sqrt(3), 0.0]
    assert similarity_reward(sketches, photos, gallery).tolist() == pytest.approx(expected)


def test_group_baseline_is_the_mean_of_each_photos_samples() -> None:
    rewards = torch.tensor([1.0, 3.0, 10.0, 20.0], requires_grad=True)
    assert group_baseline(rewards, 2).tolist() == [2.0, 2.0, 15.0, 15.0]
    # every group's advantages sum to zero: a photo's samples only compete with each other
    advantage = rewards - group_baseline(rewards, 2)
    assert advantage.view(2, 2).sum(1).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="groups of 3"):
        group_baseline(rewards, 3)
