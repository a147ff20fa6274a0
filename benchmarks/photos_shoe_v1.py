"""Do unlabelled photos improve Shoe-V1 retrieval? Arms x labelled fractions x seeds.

The labelled pairs are a seeded share of Shoe-V1's training photos; the unlabelled pool is the
2,000 Shoe-V2 photos plus the training photos whose sketches were dropped. Every arm is the
default supervised recipe (``TrainConfig()``) plus its parts:

* ``base``: the labelled pairs only;
* ``edges``: ``--edge-epochs`` epochs on edge pseudo-pairs of the unlabelled photos (each photo with
  its traced edge drawing), then the recipe;
* ``control``: the labelled pairs only, trained as long as ``edges`` (the same number of steps:
  the recipe's epochs plus as many more as the edge epochs' steps fill) -- the equal-time control
  that ``edges`` is compared with (paired by seed), so that what it gains is the photos' doing.

Runs go through ``_compare`` (parallel one-thread lanes; every finished run's scores kept in
``benchmarks/results/photos_shoe_v1_cells.json``, so the campaign carries on across sessions).
The best recipe at full labels is chosen by validation acc@1; test acc@1 is read once,
at the end. Results: ``benchmarks/results/photos_shoe_v1.json``, ``photos_shoe_v1.png`` and the
``photos_shoe_v1`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from dataclasses import replace
from functools import cache, partial
from pathlib import Path
from typing import Any

from _compare import Arm, markdown_table, plot, run_campaign, summarise
from _record import RESULTS_DIR, SHARED_DATA, record

from fgsbir.config import DataConfig
from fgsbir.data.dataset import load_data
from fgsbir.data.layouts import cache_dir
from fgsbir.train.supervised import EdgePairs, TrainConfig, train

NAME = "photos_shoe_v1"
DATA = SHARED_DATA / "qmul-shoe-v1"
POOL = SHARED_DATA / "shoev2-photos"


def recipe(fraction: float, seed: int, edge_epochs: int = 0, extra_epochs: int = 0) -> TrainConfig:
    """The default recipe on ``fraction`` of the labelled pairs, with the unlabelled pool."""
    config = TrainConfig(
        data=DataConfig(
            path=str(DATA), unlabelled=[str(POOL)], labelled_fraction=fraction, seed=seed
        ),
        edges=EdgePairs(epochs=edge_epochs),
    )
    return replace(config, run=replace(config.run, epochs=config.run.epochs + extra_epochs))


@cache
def photo_counts(fraction: float, seed: int) -> tuple[int, int]:
    """Labelled training photos and unlabelled photos of a fraction and seed."""
    dataset = load_data(recipe(fraction, seed).data)
    return len(dataset.train.photos), len(dataset.unlabelled)


def equal_steps_control(fraction: float, seed: int, edge_epochs: int) -> TrainConfig:
    """The labelled-pairs recipe with as many more epochs as ``edge_epochs`` of edge pairs take
    steps (one edge pair per unlabelled photo, near enough: photos without edges are rare)."""
    base = recipe(fraction, seed)
    labelled, unlabelled = photo_counts(fraction, seed)
    labelled_steps = max(1, labelled // base.batch_size)
    edge_steps = edge_epochs * (unlabelled // base.batch_size)
    return recipe(fraction, seed, extra_epochs=round(edge_steps / labelled_steps))


def arms(edge_epochs: int) -> list[Arm]:
    return [
        Arm("base", recipe, train),
        Arm("control", partial(equal_steps_control, edge_epochs=edge_epochs), train, "base"),
        Arm("edges", partial(recipe, edge_epochs=edge_epochs), train, "control"),
    ]


def best_recipe(summary: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The arm with the best mean validation acc@1 at full labels, with its test numbers."""
    full = results.get("1.0", {})
    chosen = max(
        (name for name, runs in full.items() if runs),
        key=lambda name: statistics.mean(r["val_acc@1"] for r in full[name].values()),
        default=None,
    )
    if chosen is None:
        return {}
    cell = summary["1.0"][chosen]
    keys = ("seeds", "acc@1", "acc@1_mean", "acc@1_std")
    return {"name": chosen, "chosen_by": "mean validation acc@1"} | {k: cell[k] for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--edge-epochs", type=int, default=2)
    parser.add_argument("--lanes", type=int, default=2, help="runs in parallel, one thread each")
    parser.add_argument(
        "--report-only", action="store_true", help="summarise the finished runs, train nothing"
    )
    parser.add_argument(
        "--out", type=Path, default=cache_dir() / "benchmarks" / NAME, help="run folders"
    )
    args = parser.parse_args()
    for folder in (DATA, POOL):
        if not folder.is_dir():
            raise SystemExit(f"needs {folder} (see ../shared/data/README.md)")

    chosen = arms(args.edge_epochs)
    store = RESULTS_DIR / f"{NAME}_cells.json"
    results = run_campaign(
        chosen, args.fractions, args.seeds, args.out, store, args.lanes, not args.report_only
    )
    summary = summarise(results, chosen)
    gains = {
        fraction: {"recipe": "edges", "vs": "control"}
        | {k: summary[fraction]["edges"].get(k) for k in ("paired_seeds", "diff_mean")}
        | {k: summary[fraction]["edges"].get(k) for k in ("ci95_low", "ci95_high")}
        for fraction in summary
        if fraction != "1.0"
    }
    for gain in gains.values():
        gain["seeds"] = gain.pop("paired_seeds")
    plot(summary, RESULTS_DIR / f"{NAME}.png")
    table = markdown_table(summary)
    print(table)
    command = " ".join(["python", f"benchmarks/{NAME}.py", *map(shlex.quote, sys.argv[1:])])
    record(
        NAME,
        {
            "best_recipe": best_recipe(summary, results),
            "unlabelled_gain": gains,
            "arms": summary,
            "table": table.splitlines(),
            "edge_epochs": args.edge_epochs,
            "plot": f"benchmarks/results/{NAME}.png",
        },
        command,
    )


if __name__ == "__main__":
    main()
