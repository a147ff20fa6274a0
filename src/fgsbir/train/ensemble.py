"""Ensembles of retrieval models: one recipe trained K times, their embeddings concatenated.

Why: on tiny data much of a model's error is its own luck -- its initial weights, the order of
its batches, the epoch its 30 validation photos pick. On Shoe-V1 one recipe's test acc@1 spreads
over 0.50-0.59 across seeds, and two of its models concatenated retrieved +3.2 points better than
their members on average (all 10 pairs of 5 trained models). Each member costs a full training
run, so an ensemble of K trains K times as long.

How: member k is an ordinary run of the recipe in ``<out>/member<k>`` (resumable like any run),
on the splits of ``data.seed``; member 0 is exactly the single run of the same settings, member
k > 0 draws its initial weights and random streams from a seed derived from ``(seed, k)``
(``data.split_seed`` keeps the splits). The ensemble folder is a retrieval run like any other
(kind ``embedding``, with ``members`` in ``config.json``), holding an
:class:`~fgsbir.models.embedding.EmbeddingEnsemble`: evaluation, the index and the web page use
it as one model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fgsbir.config import config_to_dict
from fgsbir.data.dataset import load_data
from fgsbir.inference import Embedder, load_embedder
from fgsbir.models.embedding import EmbeddingEnsemble
from fgsbir.runs import load_run_config, save_model
from fgsbir.train.supervised import TrainConfig, model_card, score_splits, train


def member_config(config: TrainConfig, member: int) -> TrainConfig:
    """The settings of member ``member`` of an ensemble of ``config`` (see the module doc)."""
    data = config.data
    if member:
        split_seed = data.seed if data.split_seed is None else data.split_seed
        seed = int(np.random.SeedSequence([data.seed, member]).generate_state(1)[0])
        data = replace(data, seed=seed, split_seed=split_seed)
    run = replace(config.run, out=str(Path(config.run.out) / f"member{member}"))
    return replace(config, data=data, run=run)


def train_ensemble(config: TrainConfig, members: int) -> dict[str, Any]:
    """Train (or resume) the ``members`` runs of an ensemble of ``config``, then score the
    ensemble into ``config.run.out``; returns its metrics like :func:`train` (on the main
    process; ``{}`` on the others), with ``best_epoch`` per member, ``steps`` and ``train_s``
    summed over them, and ``members``: each member's own metrics."""
    if members < 1:
        raise ValueError(f"an ensemble needs at least one member, got {members}")
    configs = [member_config(config, k) for k in range(members)]
    results = [train(member) for member in configs]
    if not all(results):
        return {}
    out = Path(config.run.out)
    models = [load_embedder(member.run.out, config.run.device).model for member in configs]
    embedder = Embedder(EmbeddingEnsemble(models), config.prep, device=config.run.device)
    run_config = {"kind": "embedding", **config_to_dict(config), "members": members}
    run_config["data_info"] = load_run_config(configs[0].run.out)["data_info"]
    metrics: dict[str, Any] = {
        "best_epoch": [result["best_epoch"] for result in results],
        "epochs_trained": results[0]["epochs_trained"],
        "steps": sum(result["steps"] for result in results),
        "skipped_steps": sum(result["skipped_steps"] for result in results),
        "train_s": round(sum(result["train_s"] for result in results), 1),
        "members": [{k: v for k, v in r.items() if k != "pictures"} for r in results],
    }
    metrics |= score_splits(embedder, load_data(config.data), out, config.grid_queries)
    save_model(out, embedder.model, run_config, metrics, model_card(run_config, metrics))
    return metrics
