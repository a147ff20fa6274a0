"""``fgsbir train`` and ``fgsbir evaluate``: thin layers over :mod:`fgsbir.train` and
:mod:`fgsbir.evaluate`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fgsbir.cli.common import add_training_arguments, training_values
from fgsbir.config import load_config
from fgsbir.errors import FgsbirError

METRIC_KEYS = ("acc@1", "acc@5", "acc@10", "mean_rank", "mrr", "n_queries", "n_gallery")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a sketch-photo retrieval model (resumes when RUN_DIR holds a stopped run)",
        description="Train a Siamese FG-SBIR model with a triplet loss, or with --method semi "
        "also from generated sketches of unlabelled photos (Bhunia et al. 2021). Run the same "
        "command again to resume after an interruption; under torchrun it trains with DDP.",
    )
    p.add_argument(
        "--method", choices=("supervised", "semi"), default="supervised",
        help="'semi': also learn from generated sketches of unlabelled photos "
        "(default: supervised)",
    )  # fmt: skip
    p.add_argument(
        "--unlabelled", action="append", metavar="PHOTO_DIR",
        help="a folder of unlabelled photos for --method semi (repeatable)",
    )  # fmt: skip
    add_training_arguments(p, "TrainConfig (or SemiConfig)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("evaluate", help="score a trained run on a data set's test split")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a retrieval run folder")
    p.add_argument("--data", required=True, help="data-set folder, or 'synthetic'")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_evaluate)


def print_summary(result: dict[str, Any], out: str) -> None:
    print(f"run folder: {out} (best epoch {result['best_epoch']})")
    for split in ("val", "test"):
        if split in result:
            m = result[split]
            print(
                f"{split:>5}: acc@1 {m['acc@1']:.3f}  acc@5 {m['acc@5']:.3f}  "
                f"acc@10 {m['acc@10']:.3f}  mean rank {m['mean_rank']:.2f}  "
                f"({m['n_queries']} sketches, {m['n_gallery']} photos)"
            )
    for picture in result.get("pictures", []):
        print(f"picture: {picture}")


def _train(args: argparse.Namespace) -> int:
    values = training_values(args)
    if args.method == "semi":
        from fgsbir.train.semi import SemiConfig, train_semi

        values["data.unlabelled"] = args.unlabelled
        result = train_semi(load_config(SemiConfig, args.config, args.set, **values))
    elif args.unlabelled:
        raise FgsbirError("--unlabelled needs --method semi")
    else:
        from fgsbir.train.supervised import TrainConfig, train

        result = train(load_config(TrainConfig, args.config, args.set, **values))
    if result:  # only rank 0 of a distributed run reports
        print_summary(result, args.out)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fgsbir.evaluate import evaluate_run

    metrics = evaluate_run(args.run_dir, args.data)
    if args.json:
        print(json.dumps({k: metrics[k] for k in ("model", "data", *METRIC_KEYS)}))
    else:
        for key in METRIC_KEYS:
            value = metrics[key]
            print(f"{key:>10}: {value:.4f}" if isinstance(value, float) else f"{key:>10}: {value}")
    return 0
