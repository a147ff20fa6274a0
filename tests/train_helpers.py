"""Shared by the training tests: a two-thread fixture and comparing saved weights."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


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
