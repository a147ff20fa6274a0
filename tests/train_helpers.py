"""Shared by the training tests: a two-thread fixture, comparing saved weights, and a tiny
generator architecture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fgsbir.models.generator import GeneratorArch

TINY_GENERATOR = GeneratorArch(
    image_size=64,
    feature_dim=16,
    attention_dim=16,
    hidden=32,
    z_dim=8,
    components=3,
    max_points=12,
    edge_points=24,
)
"""An edge-pointer generator small enough to train in a test in seconds."""


@pytest.fixture(autouse=True)
def two_threads() -> Iterator[None]:
    """Two torch threads for the test (the suite runs on one), restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def changed_keys(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    """The names of the tensors that differ between two state dicts."""
    return {key for key, value in before.items() if not torch.equal(value, after[key])}
