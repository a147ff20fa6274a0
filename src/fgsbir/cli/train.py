"""``fgsbir train``, ``fgsbir evaluate`` and ``fgsbir demo``: thin layers over the library."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fgsbir.config import load_config
from fgsbir.demo import run_demo
from fgsbir.errors import FgsbirError
from fgsbir.evaluate import evaluate_run
from fgsbir.train.semi import SemiConfig, train_semi
from fgsbir.train.supervised import TrainConfig, train
from fgsbir.web.app import serve

METRIC_KEYS = ("acc@1", "acc@5", "acc@10", "mean_rank", "mrr", "n_queries", "n_gallery")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a sketch-photo retrieval model (resumes when RUN_DIR holds a stopped run)",
        description="Train a Siamese FG-SBIR model with a triplet loss. Run the same command "
        "again to resume after an interruption; under torchrun it trains with DDP.",
    )
    p.add_argument("--data", required=True, help="data-set folder, or 'synthetic'")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    p.add_argument(
        "--method", choices=("supervised", "semi"), default="supervised",
        help="'semi': also learn from generated sketches of unlabelled photos (Bhunia et al. 2021)",
    )  # fmt: skip
    p.add_argument(
        "--unlabelled", action="append", metavar="PHOTO_DIR",
        help="a folder of unlabelled photos for --method semi (repeatable)",
    )  # fmt: skip
    p.add_argument("--epochs", type=int)
    p.add_argument("--labelled-fraction", type=float, metavar="F")
    p.add_argument("--format", help="force a data-set layout instead of detecting it")
    p.add_argument(
        "--config", metavar="FILE.yaml", help="YAML file of TrainConfig (or SemiConfig) settings"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a setting, e.g. --set lr=3e-4 --set augment.stroke_drop=0.2",
    )  # fmt: skip
    p.set_defaults(func=_train)

    p = subparsers.add_parser("evaluate", help="score a trained run on a data set's test split")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", required=True, help="data-set folder, or 'synthetic'")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser(
        "demo", help="train a small model on the built-in synthetic data set and evaluate it"
    )
    p.add_argument("--out", default="runs/demo", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-serve", action="store_true", help="stop after training and indexing")
    p.set_defaults(func=_demo)


def _print_summary(result: dict[str, Any], out: str) -> None:
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
    common = dict(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        labelled_fraction=args.labelled_fraction,
        format=args.format,
    )
    if args.method == "semi":
        semi = load_config(SemiConfig, args.config, args.set, unlabelled=args.unlabelled, **common)
        result = train_semi(semi)
    elif args.unlabelled:
        raise FgsbirError("--unlabelled needs --method semi")
    else:
        result = train(load_config(TrainConfig, args.config, args.set, **common))
    if result:  # only rank 0 of a distributed run reports
        _print_summary(result, args.out)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate_run(args.run_dir, args.data)
    if args.json:
        print(json.dumps({k: metrics[k] for k in ("model", "data", *METRIC_KEYS)}))
    else:
        for key in METRIC_KEYS:
            print(f"{key:>10}: {metrics[key]}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    print(f"training a small model on the synthetic data set into {args.out} ...")
    result, index_dir = run_demo(args.out)
    _print_summary(result, args.out)
    print(f"index of the test photos: {index_dir}")
    if not args.no_serve:
        print(f"search page: http://{args.host}:{args.port}/  (Ctrl+C to stop)")
        serve(index_dir, args.host, args.port)
    return 0
