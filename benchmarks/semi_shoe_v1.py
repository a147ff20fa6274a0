"""Does the semi-supervised method (Bhunia et al., CVPR 2021) beat its equal-time control?

Arms x labelled fractions x seeds through the comparison harness (``_compare``), on the data sets
of ``benchmarks/photos.py`` (``--data shoe-v1``: Shoe-V1's labelled pairs with the Shoe-V2 photos
unlabelled; ``--data synthetic``: the built-in data set with 200 other synthetic shoes):

* ``semi``: joint training (``SemiConfig``'s defaults, :data:`JOINT_STEPS` steps) from two start
  runs on the labelled pairs: the best photo-side recipe (:func:`start_recipe`) and the generator
  (:func:`start_generator`: the edge-pointer decoder, pre-trained on the unlabelled photo folder's
  traced edge maps, then on the pairs);
* ``control``: the labelled pairs only (the default recipe), trained as many epochs as fill the
  semi run's whole time, start runs included (:func:`semi_cost`);
* ``edges``: the plain edge pseudo-pairs of the photo-side benchmark (two leading epochs), then
  the labelled pairs for as many epochs as fill the semi run's time: do the generator's pairs
  beat the edge drawings' (``semi_minus_edges``)?
* ``start``: the semi run's start retrieval run as it is (what joint training starts from;
  ``semi_minus_start``: what joint training adds to it);
* ablations, each against ``semi`` (paired by seed; a negative difference: the part helps):
  ``no_disc_weighting``, ``no_distillation``, ``no_policy_gradient``, ``frozen_generator``, and
  ``semi_attentive`` (the older attentive decoder), and ``semi_photo_side`` (with the photo-side
  neighbourhood and distillation losses of :mod:`fgsbir.train.photo_side` in the joint step).

The start runs are trained once per (fraction, seed, settings) in ``<runs>/_starts`` and shared
by every arm that starts from them (a lock file keeps two lanes from training one twice); each arm
counts their seconds in its ``train_s``. Model choices are made on the validation split; test
acc@1 is read once. Finished cells are kept in ``benchmarks/results/semi_<data>_cells.json``, so a
campaign carries on across sessions. Results: ``benchmarks/results/semi_<data>.json`` (per
fraction ``semi_minus_control``, ``semi_minus_edges`` and ``semi_minus_start``, the ablation
with CIs, the table, the measured time of each equal-time arm), ``.png`` and the ``semi_<data>``
section of BENCHMARKS.md.
``--smoke``: a few steps of every arm on a tiny synthetic set, kept in the cache folder (nothing
recorded).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import replace
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

from _compare import (
    Arm,
    add_campaign_arguments,
    paired_difference,
    settings_digest,
    summarised_campaign,
)
from _record import RESULTS_DIR, record
from generator import DEFAULT_DECODER, PRETRAIN_MIX
from photos import EDGE_EPOCHS, TIME_RATIO, DataSet, data_set, recipe
from photos import arms as photo_arms

from fgsbir.config import DataConfig, RunOptions, config_to_dict
from fgsbir.data.dataset import load_data, load_dataset
from fgsbir.data.layouts import cache_dir
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.models.generator import GeneratorArch
from fgsbir.train.generator import GeneratorConfig, train_generator
from fgsbir.train.photo_side import PhotoLosses
from fgsbir.train.semi import SemiConfig, train_semi
from fgsbir.train.semi_parts import CriticConfig, PolicyConfig
from fgsbir.train.supervised import TrainConfig, train

DATA_SETS = ("shoe-v1", "synthetic")
Decoder = Literal["edge_pointer", "attentive"]
FRACTIONS = (1.0, 0.5, 0.25)
TARGET = {"fraction": "0.25", "diff_mean": 0.03}  # the issue's: semi - control >= 3 points

JOINT_STEPS = 300
"""Joint training's length in labelled batches, whatever the fraction (the old 3,600 s budget
gave 257-401 steps on Shoe-V1); its epochs are this over the batches per epoch."""
GENERATOR_EPOCHS = 60  # the start generator's epochs on the pairs, as benchmarks/generator.py
PRETRAIN_EPOCHS = 15  # and before them on the unlabelled photo folder's traced edge maps

JOINT_STEP_COST = 6.7
GENERATOR_STEP_COST = 3.1
"""Seconds of a joint step and of a start generator step (batch 32, feature caching included),
in supervised retrieval steps (Lite1, batch 16), on Shoe-V1 at a quarter of the labels, one
thread. Joint: 6.8 s a step against 0.93 s, both measured in one process (6 epochs of 4 steps
each, edge-pointer generator, after set-up), 1.3 s of it decoding and encoding unlabelled photos
at first use, which a 300-step run does for about half its steps: 6.2 s on average. Generator:
the edge-pointer cells of benchmarks/generator.py took 2,676-2,750 s for about 1,545 steps
(1.75 s a step, validation and caching included) against 0.57 s a step for the photos
campaign's Lite1 control at 0.25. The equal-time arms' epochs come from these; the results'
``time`` block gives the measured seconds of each arm, to check (``semi_over_control`` near 1)
and re-tune these."""


BACKBONE = "efficientnet_lite1"
"""The retrieval backbone of every arm: that of the best recipe of benchmarks/photos.py."""

START_ARM = "lite1_control"
"""The photo-side benchmark's best recipe (its ``best_recipe``, chosen on validation at full
labels): Lite1 on the labelled pairs alone, as many more epochs as two epochs of edge pairs take.
So the ``semi`` arm learns from unlabelled photos only through the generator's pairs."""


def start_recipe(data: DataSet, fraction: float, seed: int) -> TrainConfig:
    """The semi run's start retrieval run: :data:`START_ARM` of benchmarks/photos.py."""
    (start,) = [arm for arm in photo_arms(data, EDGE_EPOCHS) if arm.name == START_ARM]
    return start.build(fraction, seed)


def start_generator(data: DataSet, decoder: Decoder = "edge_pointer") -> GeneratorConfig:
    """The semi run's start generator (its data are the semi run's labelled pairs): the edge
    pointer as benchmarks/generator.py trains it, pre-training batches mixed in included."""
    mix = PRETRAIN_MIX if data.pool and decoder == DEFAULT_DECODER else 0.0
    return GeneratorConfig(
        run=RunOptions(out="runs/generator", epochs=GENERATOR_EPOCHS),
        model=GeneratorArch(decoder=decoder),
        pretrain_data=data.pool[0] if data.pool else None,
        pretrain_epochs=PRETRAIN_EPOCHS if data.pool else 0,
        pretrain_mix=mix,
    )


def semi(data: DataSet, fraction: float, seed: int, decoder: Decoder = "edge_pointer",
         **switches: Any) -> SemiConfig:  # fmt: skip
    """The semi-supervised run (``switches``: SemiConfig fields set otherwise, for ablations)."""
    config = SemiConfig(
        data=DataConfig(
            path=data.path, unlabelled=list(data.pool), labelled_fraction=fraction, seed=seed
        ),
        supervised=start_recipe(data, fraction, seed),
        generator=start_generator(data, decoder),
        **switches,
    )
    epochs = max(1, round(JOINT_STEPS / counts(data, fraction, seed)["batches"]))
    return replace(config, run=replace(config.run, out="runs/semi", epochs=epochs))


@cache
def counts(data: DataSet, fraction: float, seed: int) -> dict[str, int]:
    """Labelled photos, their sketches, batches of them per epoch, unlabelled photos, and the
    photos of the folder the start generator pre-trains on."""
    dataset = load_data(recipe(data, fraction, seed).data)
    batch = TrainConfig().batch_size
    pretrain = load_dataset(data.pool[0], val_fraction=0.0).unlabelled if data.pool else []
    return {
        "photos": len(dataset.train.photos),
        "sketches": len(dataset.train.sketches),
        "batches": max(1, len(dataset.train.photos) // batch),
        "unlabelled": len(dataset.unlabelled),
        "pretrain": len(pretrain),
    }


def retrieval_cost(config: TrainConfig, n: dict[str, int]) -> float:
    """A supervised run's time in labelled-pair steps (edge epochs are one step per batch of
    unlabelled photos; mixed-in edge pairs or photo-side losses cost ``TIME_RATIO``)."""
    steps = config.edges.epochs * (n["unlabelled"] // config.batch_size)
    steps += config.run.epochs * n["batches"]
    return steps * (TIME_RATIO if config.edges.per_batch or config.photo.on else 1.0)


def semi_cost(data: DataSet, fraction: float, seed: int) -> float:
    """The ``semi`` run's whole time in labelled-pair steps: its start runs and joint training."""
    n, config = counts(data, fraction, seed), semi(data, fraction, seed)
    generator = config.generator
    size = generator.batch_size
    generator_steps = generator.pretrain_epochs * math.ceil(n["pretrain"] / size)
    pair_batches = generator.run.epochs * math.ceil(n["sketches"] / size)
    generator_steps += pair_batches * (1 + generator.pretrain_mix)  # mixed-in batches too
    joint_steps = config.run.epochs * n["batches"] + config.critic.warmup_steps
    return (
        retrieval_cost(config.supervised, n)
        + GENERATOR_STEP_COST * generator_steps
        + JOINT_STEP_COST * joint_steps
    )


def equal_time(data: DataSet, fraction: float, seed: int, edge_epochs: int = 0) -> TrainConfig:
    """The default recipe (after ``edge_epochs`` of edge pairs) with as many more epochs on the
    labelled pairs as fill the semi run's time."""
    n = counts(data, fraction, seed)
    base = recipe(data, fraction, seed, edge_epochs=edge_epochs, backbone=BACKBONE)
    left = semi_cost(data, fraction, seed) - retrieval_cost(base, n)
    extra = max(0, round(left / n["batches"]))
    return recipe(data, fraction, seed, edge_epochs, extra_epochs=extra, backbone=BACKBONE)


# -- start runs shared between arms ----------------------------------------------------------


def shared_run(
    starts: Path, template: Any, trainer: Callable[[Any], dict[str, Any]], run: RunOptions
) -> dict[str, Any]:
    """Train ``template`` (with ``run``'s device and threads) in ``starts/<kind>/<digest>`` once,
    whichever arm asks first; its result (scores, seconds, folder)."""
    folder = starts / type(template).__name__ / settings_digest(template)
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "result.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another lane training it: wait for it
        if not done.is_file():
            out = replace(template.run, out=str(folder / "run"), device=run.device,
                          threads=run.threads, time_budget_s=None)  # fmt: skip
            result = trainer(replace(template, run=out))
            kept = {k: result[k] for k in ("best_epoch", "epochs_trained", "steps", "train_s")}
            kept |= {k: result[k] for k in ("val", "test") if k in result}
            done.write_text(json.dumps(kept | {"folder": out.out}, indent=1) + "\n")
    return json.loads(done.read_text())


def train_start(starts: Path, config: TrainConfig) -> dict[str, Any]:
    """The ``start`` arm: the semi runs' shared start retrieval run."""
    return shared_run(starts, config, train, config.run)


def train_joint(starts: Path, config: SemiConfig) -> dict[str, Any]:
    """A semi run from the shared start runs of its settings; ``train_s`` counts theirs too."""
    retrieval = shared_run(starts, replace(config.supervised, data=config.data), train, config.run)
    generator = replace(config.generator, data=config.data)
    drawer = shared_run(starts, generator, train_generator, config.run)
    config = replace(config, retrieval_run=retrieval["folder"], generator_run=drawer["folder"])
    result = train_semi(config)
    return result | {"train_s": round(result["train_s"] + retrieval["train_s"] +
                                      drawer["train_s"], 1)}  # fmt: skip


def arms(data: DataSet, starts: Path) -> list[Arm]:
    """Every arm with the one it is compared with, paired by seed."""
    joint = partial(train_joint, starts)

    def variant(name: str, **switches: Any) -> Arm:
        return Arm(name, partial(semi, data, **switches), joint, "semi")

    return [
        Arm("semi", partial(semi, data), joint, "control"),
        Arm("control", partial(equal_time, data), train),
        Arm("edges", partial(equal_time, data, edge_epochs=EDGE_EPOCHS), train, "control"),
        Arm("start", partial(start_recipe, data), partial(train_start, starts)),
        variant("no_disc_weighting", disc_weighting=False),
        variant("no_distillation", distillation=False),
        variant("no_policy_gradient", policy=PolicyConfig(policy_gradient=False)),
        variant("frozen_generator", policy=PolicyConfig(frozen=True)),
        variant("semi_attentive", decoder="attentive"),
        variant("semi_photo_side", photo=PhotoLosses(neighbourhood=1.0, distill=1.0)),
    ]


# -- the report -------------------------------------------------------------------------------


def start_settings(config: TrainConfig) -> dict[str, Any]:
    """What the start recipe adds to the default one, and its epochs on the labelled pairs."""
    settings = config_to_dict(config)
    return {"edges": settings["edges"], "photo": settings["photo"], "epochs": config.run.epochs}


def difference(results: dict[str, Any], fraction: str, arm: str, other: str) -> dict[str, Any]:
    """``arm - other`` test acc@1, paired by seed, with its 95% CI (empty without shared seeds)."""
    runs, base = results[fraction].get(arm, {}), results[fraction].get(other, {})
    seeds = sorted(set(runs) & set(base))
    if not seeds:
        return {}
    found = paired_difference([runs[s]["acc@1"] for s in seeds], [base[s]["acc@1"] for s in seeds])
    return {"seeds": seeds} | {k: found[k] for k in ("diff_mean", "ci95_low", "ci95_high")}


def seconds(results: dict[str, Any], fraction: str) -> dict[str, Any]:
    """Mean training seconds of the equal-time arms (start runs included) and their ratios."""
    mean = {
        arm: round(statistics.mean(r["train_s"] for r in runs.values()), 1)
        for arm in ("semi", "control", "edges")
        if (runs := results[fraction].get(arm))
    }
    for arm in ("control", "edges"):
        if "semi" in mean and arm in mean:
            mean[f"semi_over_{arm}"] = round(mean["semi"] / max(mean[arm], 1e-9), 2)
    return mean


def report(results: dict[str, Any], summary: dict[str, Any], chosen: list[Arm]) -> dict[str, Any]:
    """Per fraction: semi - control, semi - edges and semi - start (what joint training adds to
    its start run), the equal-time check, and the ablation."""
    fractions: dict[str, Any] = {}
    for fraction in results:
        found = {
            "semi_minus_control": difference(results, fraction, "semi", "control"),
            "semi_minus_edges": difference(results, fraction, "semi", "edges"),
            "semi_minus_start": difference(results, fraction, "semi", "start"),
            "time_s": seconds(results, fraction),
            "ablation": {
                arm.name: {"seeds": cell["paired_seeds"]}
                | {k: cell[k] for k in ("diff_mean", "ci95_low", "ci95_high")}
                for arm in chosen
                if arm.baseline == "semi" and "vs" in (cell := summary[fraction][arm.name])
            },
        }
        gain = found["semi_minus_control"]
        if fraction == TARGET["fraction"] and gain:
            above_zero = gain["ci95_low"] is not None and gain["ci95_low"] > 0
            found["target_met"] = gain["diff_mean"] >= TARGET["diff_mean"] and above_zero
        fractions[fraction] = found
    return fractions


# -- smoke runs ------------------------------------------------------------------------------


def smoke_data() -> DataSet:
    """64 synthetic shoes with one sketch each, and 16 more photos unlabelled."""
    pool = ensure_synthetic(n_photos=16, sketches_per_photo=1, seed=3) / "photo"
    return DataSet("smoke", str(ensure_synthetic(n_photos=64, sketches_per_photo=1, seed=2)),
                   (str(pool),))  # fmt: skip


def tiny(config: Any) -> Any:
    """``config`` cut to a step or two of small models."""
    if isinstance(config, SemiConfig):
        drawer = config.generator
        model = replace(drawer.model, image_size=64, hidden=32, z_dim=8, components=3,
                        max_points=40, edge_points=40)  # fmt: skip
        drawer = replace(drawer, run=replace(drawer.run, epochs=1), model=model,
                         pretrain_epochs=min(1, drawer.pretrain_epochs))  # fmt: skip
        return replace(
            config,
            run=replace(config.run, epochs=1),
            supervised=tiny(config.supervised),
            generator=drawer,
            critic=CriticConfig(warmup_steps=2),
            picture_photos=2,
            grid_queries=2,
        )
    longer = config.run.epochs > TrainConfig().run.epochs  # an equal-time arm: one epoch more
    return replace(
        config,
        run=replace(config.run, epochs=1 + longer),
        grid_queries=2,
        edges=replace(config.edges, epochs=min(1, config.edges.epochs)),
        prep=replace(config.prep, image_size=64),
    )


def tiny_build(build: Callable[[float, int], Any], fraction: float, seed: int) -> Any:
    return tiny(build(fraction, seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=DATA_SETS, default="shoe-v1")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--smoke", action="store_true", help="tiny runs, nothing recorded")
    add_campaign_arguments(parser)
    args = parser.parse_args()
    data = smoke_data() if args.smoke else data_set(args.data)
    for folder in (data.path, *data.pool):
        if not Path(folder).is_dir():
            raise SystemExit(f"needs {folder} (see ../shared/data/README.md)")

    name = f"semi_{data.name}"
    runs = args.out or cache_dir() / "benchmarks" / name
    results_dir = runs if args.smoke else RESULTS_DIR
    every = arms(data, runs / "_starts")
    if args.smoke:
        every = [replace(arm, build=partial(tiny_build, arm.build)) for arm in every]
    runs.mkdir(parents=True, exist_ok=True)
    results, summary, table = summarised_campaign(
        name, every, args.fractions, args, runs, results_dir
    )
    payload = {
        "fractions": report(results, summary, every),
        "arms": summary,
        "table": table.splitlines(),
        "target": TARGET,
        "settings": {
            "joint_steps": JOINT_STEPS,
            "generator_epochs": GENERATOR_EPOCHS,
            "pretrain_epochs": PRETRAIN_EPOCHS,
            "step_costs": {
                "joint": JOINT_STEP_COST,
                "generator": GENERATOR_STEP_COST,
                "photo_side": TIME_RATIO,
            },
            "start_recipe": start_settings(start_recipe(data, 1.0, 0)),
        },
        "plot": f"benchmarks/results/{name}.png",
    }
    print(json.dumps(payload["fractions"], indent=1))
    if args.smoke:
        (results_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        return
    record(name, payload)


if __name__ == "__main__":
    main()
