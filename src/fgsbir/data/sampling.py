"""Which items a training step takes: seeded orders that every process and every resumed run
agrees on, because they depend only on ``(seed, stream, epoch or position)``."""

from __future__ import annotations

import numpy as np


def shuffled_batches(
    n: int, batch_size: int, seed: int, epoch: int, drop_last: bool = True
) -> list[list[int]]:
    """A seeded order of ``n`` items in batches; with ``drop_last`` a short last batch is dropped
    unless it is the only one (a batch of one has no in-batch negatives)."""
    order = np.random.default_rng([seed, 2, epoch]).permutation(n).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def cycled_batch(n: int, size: int, position: int, seed: int, stream: int) -> list[int]:
    """Batch number ``position`` of ``size`` items drawn from ``n`` as consecutive slices of
    seeded permutations, one permutation per pass (a pool smaller than a batch repeats none)."""
    chosen = []
    for item in range(position * size, (position + 1) * size):
        cycle, offset = divmod(item, n)
        order = np.random.default_rng([seed, stream, cycle]).permutation(n)
        chosen.append(int(order[offset]))
    return list(dict.fromkeys(chosen))
