"""QMUL-Shoe-V1 supervised FG-SBIR over seeds: train on its training pairs, report test acc@K.

Each seed is one run of the default recipe (``TrainConfig()``), in parallel one-thread lanes; the
validation split (10% of the training photos, carved by the seed) picks the best epoch, and the
test split is scored once, at the end. The result is the mean and standard deviation over the
seeds, with each seed's numbers. A finished run is its own cache: running the script again
re-evaluates it from its run folder (``runs/benchmarks/supervised_shoe_v1/seed<N>``) instead of
training it again, and a fresh run with the same seed and thread count gives the same numbers.

How the recipe was found (all numbers on a validation split of 61 training photos, never on the
test split; 2 shared CPU cores, short runs):

* plain triplet loop, colour photos, pooled final EfficientNet-Lite0 features, 160 px:
  val acc@1 0.20 / MRR 0.33 after 12 epochs, and flat from there (the known ~13% plateau);
  lr 3e-4 instead of 1e-4, "all" instead of "hardest" negatives, a 2x2 pooling grid,
  128 px with the first stages frozen: all within 0.30-0.37 MRR;
* no training at all, frozen ImageNet features: colour photos MRR 0.13-0.35, but photos as edge
  maps (Canny or Sobel) with mid-level (stride-16) features pooled on a 4x4 grid: MRR 0.46-0.50;
* training that configuration (stride-16 features of EfficientNet-Lite0, i.e. ``feature_level``
  3, 4x4 grid, 128 px, lr 3e-4): Sobel edge maps reach val acc@1 0.41-0.49 / MRR 0.60-0.65
  within 10 epochs, Canny edge maps 0.28-0.36 / 0.47-0.54.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from _compare import start_lanes
from _record import ROOT, SHARED_DATA, record

from fgsbir.config import DataConfig, RunOptions

NAME = "supervised_shoe_v1"
DATA = SHARED_DATA / "qmul-shoe-v1"


def run_seed(seed: int, out: Path, budget_s: float) -> dict[str, Any]:
    """Train (or re-evaluate a finished) seed's run on one thread; its rounded numbers."""
    from fgsbir.train.supervised import TrainConfig, train

    config = TrainConfig()  # the recipe chosen on the validation split is the default
    config = replace(
        config,
        data=DataConfig(path=str(DATA), seed=seed),
        run=RunOptions(out=str(out), time_budget_s=budget_s, threads=1, device="cpu"),
    )
    result = train(config)
    test, val = result["test"], result["val"]
    return {
        **{key: round(test[key], 4) for key in ("acc@1", "acc@5", "acc@10", "mrr")},
        "mean_rank": round(test["mean_rank"], 2),
        "val_acc@1": round(val["acc@1"], 4),
        "best_epoch": result["best_epoch"],
        "epochs_trained": result["epochs_trained"],
        "train_s": result["train_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--lanes", type=int, default=2, help="runs in parallel, one thread each")
    parser.add_argument("--budget-s", type=float, default=1800.0, help="training time per run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / NAME)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA} (see ../shared/data/README.md)")

    with start_lanes(args.lanes) as lanes:
        futures = {
            seed: lanes.submit(run_seed, seed, args.out / f"seed{seed}", args.budget_s)
            for seed in args.seeds
        }
        per_seed = {str(seed): future.result() for seed, future in futures.items()}
    results: dict[str, Any] = {"seeds": args.seeds}
    for key in ("acc@1", "acc@5", "acc@10", "mrr"):
        values = [run[key] for run in per_seed.values()]
        results[f"{key}_mean"] = round(statistics.mean(values), 4)
        results[f"{key}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    from fgsbir.train.supervised import TrainConfig

    recipe = TrainConfig()
    results |= {
        "per_seed": per_seed,
        "target": "mean acc@1 within one standard deviation of the previous 0.45",
        "settings": {
            "photo_input": recipe.prep.photo_input,
            "image_size": recipe.prep.image_size,
            "feature_level": recipe.model.feature_level,
            "pool_grid": recipe.model.pool_grid,
            "lr": recipe.lr,
            "epochs": recipe.run.epochs,
            "threads_per_run": 1,
        },
    }
    record(NAME, results)
    print(results)


if __name__ == "__main__":
    main()
