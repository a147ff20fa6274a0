"""Do unlabelled photos improve retrieval? Arms x labelled fractions x seeds, per data set.

The labelled pairs are a seeded share of the data set's training photos; the unlabelled pool is
the training photos whose sketches were dropped, plus a photo folder where the data set has one
(Shoe-V1: the 2,000 Shoe-V2 photos; synthetic: 200 more synthetic shoes). Every arm is the
supervised recipe (``TrainConfig()``, on the backbone it was first measured with,
:data:`CAMPAIGN_BACKBONE`, unless the arm says otherwise) plus its parts:

* ``base``: the labelled pairs only;
* ``edges``: ``--edge-epochs`` epochs on edge pseudo-pairs of the unlabelled photos (each photo
  with its traced edge drawing), then the recipe; ``edges_mix``: 8 edge pairs in every batch;
* ``neighbourhood`` / ``distill`` / ``intra``: one photo-side loss (weight 1) over the step's
  labelled and unlabelled photos (:mod:`fgsbir.train.photo_side`);
* ``edges_neighbourhood``: edge pre-training and the neighbourhood loss;
* ``lite1`` / ``lite2``: the recipe on EfficientNet-Lite1 / Lite2 (the backbone choice: Lite1
  became the default on these arms' validation numbers); ``lite1_control`` and ``lite1_edges``
  repeat ``control`` and ``edges`` on Lite1; ``lite1_edges_<N>px`` is ``lite1_edges`` on
  ``N`` px inputs (:data:`LARGER_INPUTS`), compared with it; ``lite1_neighbourhood``: the
  neighbourhood loss on Lite1 (the published gain is at full labels), against ``lite1_control``;
  ``lite1_neighbourhood_meta``: the same after a look-ahead of one optimiser step (the published
  first-order meta update, :data:`META_STEP`), against ``lite1_control``;
  ``lite1_edges_neighbourhood``: edge pre-training and the neighbourhood loss on Lite1, against
  ``lite1_control_x5``; ``lite1_edges_neighbourhood_negatives``: the same with the unlabelled
  photos also negatives of the retrieval loss (``photo.pool_negatives``, no extra passes: the
  neighbourhood loss embeds them anyway), against the same control; ``lite1_negatives``: those
  negatives alone, against ``lite1_control`` (which trains longer);
  ``lite1_edges6_neighbourhood``: ``lite1_edges_neighbourhood`` with :data:`LONG_EDGE_EPOCHS`
  edge epochs; ``lite1_edges_neighbourhood_negatives_ensemble2``: two models of that recipe
  (:data:`ENSEMBLE_MEMBERS`), and ``..._ema``: that recipe keeping a moving average of its
  weights (:data:`AVERAGE_EPOCHS`, no extra passes), both against the single recipe;
  ``..._ema_ensemble2``: two of those, against one;
* equal-time controls, the labelled pairs only, trained as long as the arms they stand beside:
  ``control`` as many steps as ``edges`` (the recipe's epochs plus as many more as the edge
  epochs' steps fill), ``control_x2`` twice the epochs (an arm with photo-side losses or edge
  pairs mixed in takes about twice the time per step here, see ``TIME_RATIO``),
  ``lite1_control_x5`` :data:`EDGES_NEIGHBOURHOOD_TIME_RATIO` times ``lite1_control``'s epochs.

Each arm is compared, paired by seed, with its equal-time control, so that what it gains is the
photos' doing. Runs go through ``_compare`` (parallel one-thread lanes; every finished run's
scores kept in ``benchmarks/results/photos_<data>_cells.json``, so a campaign carries on across
sessions). The best recipe at full labels is chosen by mean validation acc@1; test acc@1 is read
once, at the end. Results: ``benchmarks/results/photos_<data>.json``, ``.png`` and the
``photos_<data>`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path
from typing import Any

from _compare import Arm, add_campaign_arguments, summarised_campaign
from _record import RESULTS_DIR, SHARED_DATA, record

from fgsbir.config import DataConfig
from fgsbir.data.dataset import load_data
from fgsbir.data.layouts import cache_dir
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.train.ensemble import train_ensemble
from fgsbir.train.photo_side import PhotoLosses
from fgsbir.train.supervised import EdgePairs, TrainConfig, train


@dataclass(frozen=True)
class DataSet:
    """Where a campaign's labelled pairs and extra unlabelled photos are."""

    name: str  # the results' name: photos_<name>
    path: str
    pool: tuple[str, ...] = ()
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)


DATA_SETS = ("shoe-v1", "sketchy-subset", "synthetic")


def data_set(name: str) -> DataSet:
    """A campaign's data set (the synthetic ones are made on first use)."""
    if name == "shoe-v1":
        shoe_v2 = str(SHARED_DATA / "shoev2-photos")
        return DataSet("shoe_v1", str(SHARED_DATA / "qmul-shoe-v1"), (shoe_v2,))
    if name == "sketchy-subset":  # two classes, no other photos: nothing unlabelled at 1.0
        return DataSet("sketchy_subset", str(SHARED_DATA / "sketchy-subset"), (), (0.25, 0.5))
    pool = ensure_synthetic(n_photos=200, sketches_per_photo=1, seed=1) / "photo"
    return DataSet("synthetic", str(ensure_synthetic()), (str(pool),))


CAMPAIGN_BACKBONE = "efficientnet_lite0"
"""The backbone of the arms that name none: the default when the campaign began."""


def recipe(
    data: DataSet,
    fraction: float,
    seed: int,
    edge_epochs: int = 0,
    extra_epochs: int = 0,
    edges: EdgePairs | None = None,
    photo: PhotoLosses | None = None,
    backbone: str = CAMPAIGN_BACKBONE,
    image_size: int | None = None,
    average_epochs: float = 0.0,
) -> TrainConfig:
    """The default recipe on ``fraction`` of the labelled pairs, with the unlabelled pool, the
    given edge pairs (``edge_epochs`` leading epochs unless ``edges`` says more), photo-side
    losses, backbone, input size (default: the recipe's) and weight average."""
    config = TrainConfig(
        data=DataConfig(
            path=data.path, unlabelled=list(data.pool), labelled_fraction=fraction, seed=seed
        ),
        edges=edges or EdgePairs(epochs=edge_epochs),
        photo=photo or PhotoLosses(),
        average_epochs=average_epochs,
    )
    config = replace(config, model=replace(config.model, backbone=backbone))
    if image_size is not None:
        config = replace(config, prep=replace(config.prep, image_size=image_size))
    return replace(config, run=replace(config.run, epochs=config.run.epochs + extra_epochs))


@cache
def photo_counts(data: DataSet, fraction: float, seed: int) -> tuple[int, int]:
    """Labelled training photos and unlabelled photos of a fraction and seed."""
    dataset = load_data(recipe(data, fraction, seed).data)
    return len(dataset.train.photos), len(dataset.unlabelled)


def equal_steps_control(
    data: DataSet, fraction: float, seed: int, edge_epochs: int, backbone: str = CAMPAIGN_BACKBONE
) -> TrainConfig:
    """The labelled-pairs recipe with as many more epochs as ``edge_epochs`` of edge pairs take
    steps (one edge pair per unlabelled photo, near enough: photos without edges are rare)."""
    base = recipe(data, fraction, seed)
    labelled, unlabelled = photo_counts(data, fraction, seed)
    labelled_steps = max(1, labelled // base.batch_size)
    edge_steps = edge_epochs * (unlabelled // base.batch_size)
    extra = round(edge_steps / labelled_steps)
    return recipe(data, fraction, seed, extra_epochs=extra, backbone=backbone)


TIME_RATIO = 2.0
"""Training time of an arm with a photo-side loss or mixed-in edge pairs over the labelled-pairs
recipe, measured here on Shoe-V1 at a quarter of the labels (1.7-2.5 on one thread): what its
equal-time control ``control_x2`` multiplies the epochs by."""


def longer(config: TrainConfig, ratio: float) -> TrainConfig:
    """``config`` trained ``ratio`` times as many epochs."""
    return replace(config, run=replace(config.run, epochs=round(config.run.epochs * ratio)))


def longer_arm(
    build: Callable[[float, int], TrainConfig], ratio: float, fraction: float, seed: int
) -> TrainConfig:
    """An arm's settings (``build``), trained ``ratio`` times as many epochs."""
    return longer(build(fraction, seed), ratio)


def equal_time_control(data: DataSet, fraction: float, seed: int) -> TrainConfig:
    """The labelled-pairs recipe trained :data:`TIME_RATIO` times as many epochs."""
    return longer(recipe(data, fraction, seed), TIME_RATIO)


EDGES_NEIGHBOURHOOD_TIME_RATIO = 5.3
"""Training time of ``lite1_edges_neighbourhood`` over ``lite1_control`` (as many steps, each
also taking the neighbourhood loss), measured here at a quarter of the labels on seeds 0-4 in
the same conditions (1,015 s against 191 s a run): what its equal-time control
``lite1_control_x5`` multiplies ``lite1_control``'s epochs by."""


EDGE_EPOCHS = 2
"""Leading epochs of edge pairs in the arms that have them (two passes over the pool)."""

LONG_EDGE_EPOCHS = 6
"""Leading epochs of edge pairs in ``lite1_edges6_neighbourhood``: does longer edge
pre-training carry the full-label recipe further?"""

LARGER_INPUTS = (192, 224)
"""Input sizes tried on the best recipe besides the default 128 px (chosen when runs had to be
short; a run at 224 px takes about three times as long, well within the issue's 30 minutes)."""


AVERAGE_EPOCHS = 2.0
"""The time constant of the weight average in ``lite1_edges_neighbourhood_negatives_ema``, in
epochs of labelled pairs (a step's weights count half after about 1.4 epochs). Set a priori, not
tuned: 20 epochs leave room to average a few without lagging far behind the cosine schedule."""

ENSEMBLE_MEMBERS = 2
"""Members of the ensemble arm: as many as fit the issue's 30 minutes of training per run with
its members' recipe (about 800 s each here at full labels)."""


META_STEP = 1.0
"""The look-ahead of ``lite1_neighbourhood_meta``, in learning rates per weight: about one step
of the optimiser (on Shoe-V1 at the start it takes the triplet loss from 0.21 to 0.13)."""


def arms(data: DataSet, edge_epochs: int) -> list[Arm]:
    """Every arm, each with the equal-time control it is compared with (paired by seed)."""

    def arm(name: str, baseline: str | None = None, members: int = 1, **parts: Any) -> Arm:
        trainer = train if members == 1 else partial(train_ensemble, members=members)
        return Arm(name, partial(recipe, data, **parts), trainer, baseline)

    neighbourhood = PhotoLosses(neighbourhood=1.0)
    meta = replace(neighbourhood, meta_step=META_STEP)
    control = partial(equal_steps_control, data, edge_epochs=edge_epochs)
    lite1 = "efficientnet_lite1"
    lite1_control = partial(control, backbone=lite1)
    lite1_control_x5 = partial(longer_arm, lite1_control, EDGES_NEIGHBOURHOOD_TIME_RATIO)
    negatives = "lite1_edges_neighbourhood_negatives"  # the best test recipe, and its variants
    negatives_parts: dict[str, Any] = dict(
        edge_epochs=edge_epochs,
        photo=replace(neighbourhood, pool_negatives=True),
        backbone=lite1,
    )
    return [
        arm("base"),
        Arm("control", control, train, "base"),
        arm("edges", "control", edge_epochs=edge_epochs),
        Arm("control_x2", partial(equal_time_control, data), train, "base"),
        arm("neighbourhood", "control_x2", photo=neighbourhood),
        arm("distill", "control_x2", photo=PhotoLosses(distill=1.0)),
        arm("intra", "control_x2", photo=PhotoLosses(intra=1.0)),
        arm("edges_mix", "control_x2", edges=EdgePairs(per_batch=8)),
        arm("edges_neighbourhood", "control", edge_epochs=edge_epochs, photo=neighbourhood),
        arm("lite1", "base", backbone=lite1),
        arm("lite2", "base", backbone="efficientnet_lite2"),
        Arm("lite1_control", lite1_control, train, "lite1"),
        Arm("lite1_control_x5", lite1_control_x5, train, "lite1_control"),
        arm("lite1_edges", "lite1_control", edge_epochs=edge_epochs, backbone=lite1),
        arm("lite1_neighbourhood", "lite1_control", photo=neighbourhood, backbone=lite1),
        arm("lite1_neighbourhood_meta", "lite1_control", photo=meta, backbone=lite1),
        arm(
            "lite1_edges_neighbourhood",
            "lite1_control_x5",
            edge_epochs=edge_epochs,
            photo=neighbourhood,
            backbone=lite1,
        ),
        arm(
            f"lite1_edges{LONG_EDGE_EPOCHS}_neighbourhood",
            edge_epochs=LONG_EDGE_EPOCHS,
            photo=neighbourhood,
            backbone=lite1,
        ),
        arm(
            f"{negatives}_ensemble{ENSEMBLE_MEMBERS}",
            negatives,
            ENSEMBLE_MEMBERS,
            **negatives_parts,
        ),
        arm(
            "lite1_negatives",
            "lite1_control",
            photo=PhotoLosses(pool_negatives=True),
            backbone=lite1,
        ),
        arm(negatives, "lite1_control_x5", **negatives_parts),
        arm(f"{negatives}_ema", negatives, average_epochs=AVERAGE_EPOCHS, **negatives_parts),
        arm(
            f"{negatives}_ema_ensemble{ENSEMBLE_MEMBERS}",
            f"{negatives}_ema",
            ENSEMBLE_MEMBERS,
            average_epochs=AVERAGE_EPOCHS,
            **negatives_parts,
        ),
        *(
            arm(
                f"lite1_edges_{size}px",
                "lite1_edges",
                edge_epochs=edge_epochs,
                backbone=lite1,
                image_size=size,
            )
            for size in LARGER_INPUTS
        ),
    ]


BACKBONE_ARMS = {"base": CAMPAIGN_BACKBONE, "lite1": "efficientnet_lite1",
                 "lite2": "efficientnet_lite2"}  # fmt: skip


EQUAL_TIME_CONTROLS = ("control", "control_x2", "lite1_control", "lite1_control_x5")
"""The arms trained on the labelled pairs only, as long as the arms compared with them."""

MIN_SEEDS = 5  # an arm competes for the best recipe once it has run this many seeds


def choose(results: dict[str, Any], names: list[str]) -> str | None:
    """Of ``names``, the arm with the best mean validation acc@1 at full labels (of those with
    :data:`MIN_SEEDS` seeds at least); of arms that tie, the one that trains fastest."""
    full = results.get("1.0", {})
    ran = [name for name in names if len(full.get(name, {})) >= MIN_SEEDS]

    def merit(name: str) -> tuple[float, float]:
        runs = full[name].values()
        val = statistics.mean(r["val_acc@1"] for r in runs)
        return round(val, 6), -statistics.mean(r["train_s"] for r in runs)

    return max(ran, key=merit, default=None)


def best_recipe(summary: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The arm with the best mean validation acc@1 at full labels, with its test numbers."""
    chosen = choose(results, list(results.get("1.0", {})))
    if chosen is None:
        return {}
    cell = summary["1.0"][chosen]
    keys = ("seeds", "acc@1", "acc@1_mean", "acc@1_std", "val_acc@1_mean")
    return {"name": chosen, "chosen_by": "mean validation acc@1"} | {k: cell[k] for k in keys}


def unlabelled_gains(summary: dict[str, Any], every: list[Arm]) -> dict[str, Any]:
    """Per fraction below 1, the arm with the unlabelled photos whose validation acc@1 is best,
    against its equal-time control: the paired test acc@1 difference with its 95% CI. Only arms
    compared with a labelled-pairs control compete (not the controls themselves)."""
    gains = {}
    for fraction, cells in summary.items():
        candidates = [
            arm for arm in every
            if arm.baseline in EQUAL_TIME_CONTROLS and arm.name not in EQUAL_TIME_CONTROLS
            and cells[arm.name].get("paired_seeds")
        ]  # fmt: skip
        if fraction == "1.0" or not candidates:
            continue
        arm = max(candidates, key=lambda arm: cells[arm.name]["val_acc@1_mean"])
        cell = cells[arm.name]
        gains[fraction] = {"recipe": arm.name, "vs": arm.baseline, "seeds": cell["paired_seeds"]}
        gains[fraction] |= {k: cell[k] for k in ("diff_mean", "ci95_low", "ci95_high")}
        gains[fraction]["chosen_by"] = "mean validation acc@1"
    return gains


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=DATA_SETS, default="shoe-v1")
    parser.add_argument("--fractions", type=float, nargs="+", help="default: the data set's")
    parser.add_argument("--edge-epochs", type=int, default=EDGE_EPOCHS)
    add_campaign_arguments(parser)
    args = parser.parse_args()
    data = data_set(args.data)
    for folder in (data.path, *data.pool):
        if not Path(folder).is_dir():
            raise SystemExit(f"needs {folder} (see ../shared/data/README.md)")

    name = f"photos_{data.name}"
    every = arms(data, args.edge_epochs)
    runs = args.out or cache_dir() / "benchmarks" / name
    fractions = args.fractions or data.fractions
    results, summary, table = summarised_campaign(name, every, fractions, args, runs, RESULTS_DIR)
    record(
        name,
        {
            "best_recipe": best_recipe(summary, results),
            "backbone": BACKBONE_ARMS.get(choose(results, list(BACKBONE_ARMS)) or "base"),
            "unlabelled_gain": unlabelled_gains(summary, every),
            "arms": summary,
            "table": table.splitlines(),
            "edge_epochs": args.edge_epochs,
            "time_ratio": TIME_RATIO,
            "plot": f"benchmarks/results/{name}.png",
        },
    )


if __name__ == "__main__":
    main()
