"""Training: the loop (:mod:`~fgsbir.train.loop`) and its tasks (supervised, generator, semi)."""

UNLABELLED_PARTS: dict[str, dict[str, int | float | bool]] = {
    "edges": {"edges.epochs": 2},
    "edges-mix": {"edges.per_batch": 8},
    "neighbourhood": {"photo.neighbourhood": 1.0},
    "distill": {"photo.distill": 1.0},
    "intra": {"photo.intra": 1.0},
    "pool-negatives": {"photo.pool_negatives": True},
}
"""The parts that learn from unlabelled photos, by name (``fgsbir train --parts``), and the
settings each switches on: edge pseudo-pairs as two leading epochs or eight per batch
(:class:`~fgsbir.train.supervised.EdgePairs`), and the photo-side losses at weight 1
(:class:`~fgsbir.train.photo_side.PhotoLosses`), and the unlabelled photos as the retrieval
loss's extra negatives. ``--set`` changes them further."""


def part_settings(names: list[str]) -> list[str]:
    """The ``key=value`` settings of the named parts (see :data:`UNLABELLED_PARTS`)."""
    return [f"{key}={value}" for name in names for key, value in UNLABELLED_PARTS[name].items()]
