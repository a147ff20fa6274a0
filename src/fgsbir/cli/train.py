"""``fgsbir train`` and ``fgsbir evaluate``: thin layers over :mod:`fgsbir.train` and
:mod:`fgsbir.evaluate`."""

from __future__ import annotations

import argparse
import json
from functools import partial
from typing import Any

from fgsbir.cli.common import add_training_arguments, begin_training, checked, training_values
from fgsbir.config import Count, RunOptions, load_config
from fgsbir.errors import FgsbirError
from fgsbir.train import UNLABELLED_PARTS, part_settings

METRIC_KEYS = ("acc@1", "acc@5", "acc@10", "mean_rank", "mrr", "n_queries", "n_gallery")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a retrieval model on sketch-photo pairs (resumes a stopped run)",
        description="Train a model that finds a photo from a sketch of it, on the sketch-photo "
        "pairs of a data set. With --method semi it also learns from sketches that a generator "
        "draws of unlabelled photos. Every setting is checked before training starts. If "
        "training stops (Ctrl+C, a crash), run the same command again to resume it.",
    )
    p.add_argument(
        "--method", choices=("supervised", "semi"), default="supervised",
        help="supervised: learn from the pairs; semi: also from generated sketches of "
        "unlabelled photos",
    )  # fmt: skip
    p.add_argument(
        "--unlabelled", action="append", metavar="PHOTO_DIR",
        help="a folder of unlabelled photos, for --method semi or the photo-side parts "
        "(edges.*, photo.*; repeatable; default: only the training photos whose sketches "
        "--labelled-fraction leaves out)",
    )  # fmt: skip
    p.add_argument(
        "--parts", nargs="+", choices=list(UNLABELLED_PARTS), default=[], metavar="PART",
        help="parts that learn from the unlabelled photos, by name: "
        + ", ".join(f"{name} ({', '.join(f'{k}={v}' for k, v in settings.items())})"
                    for name, settings in UNLABELLED_PARTS.items())
        + "; --set changes their settings further (default: none)",
    )  # fmt: skip
    p.add_argument(
        "--members", type=checked(Count), default=1, metavar="K",
        help="train an ensemble: the recipe K times on the same splits from other initial "
        "weights (in RUN/member0 ...), embeddings concatenated; K times the training time "
        "(supervised only; default: 1, one model)",
    )  # fmt: skip
    add_training_arguments(p, epochs=RunOptions().epochs)
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "evaluate",
        help="score a trained retrieval model on a data set's test split",
        description="Every test sketch of DATA searches all its test photos with the model of "
        "RUN_DIR; prints acc@1/5/10 (the share of sketches whose photo is among the top 1/5/10), "
        "the mean rank of the right photo and the mean reciprocal rank (MRR).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder of 'fgsbir train'")
    p.add_argument(
        "--data", required=True,
        help="data-set folder with test sketches, or 'synthetic' for the built-in data set",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=_evaluate)


def metrics_line(m: dict[str, Any]) -> str:
    """Retrieval metrics as one line: ``acc@1 0.463  acc@5 ...  (200 sketches, 100 photos)``."""
    return (
        f"acc@1 {m['acc@1']:.3f}  acc@5 {m['acc@5']:.3f}  acc@10 {m['acc@10']:.3f}  "
        f"mean rank {m['mean_rank']:.2f}  MRR {m['mrr']:.3f}  "
        f"({m['n_queries']} sketches, {m['n_gallery']} photos)"
    )


def best_epoch(result: dict[str, Any]) -> str:
    """``best epoch N``, explained when the start model (epoch 0) was kept; an ensemble's
    members' ``best epochs N, M``."""
    epoch = result["best_epoch"]
    if isinstance(epoch, list):
        return f"best epochs {', '.join(map(str, epoch))}, one per member"
    return f"best epoch {epoch}" + (": the start model was kept" if epoch == 0 else "")


def print_summary(result: dict[str, Any], out: str) -> None:
    print(f"run folder: {out} ({best_epoch(result)})")
    for split in ("val", "test"):
        if split in result:
            print(f"{split:>5}: {metrics_line(result[split])}")
    for picture in result.get("pictures", []):
        print(f"picture: {picture}")


def _train(args: argparse.Namespace) -> int:
    values = training_values(args) | {"data.unlabelled": args.unlabelled}
    overrides = part_settings(args.parts) + args.set
    if args.method == "semi":
        from fgsbir.train.semi import SemiConfig, train_semi

        if args.members > 1:
            raise FgsbirError("--members: ensembles are trained with --method supervised only")
        config = load_config(SemiConfig, args.config, overrides, **values)
        run = train_semi
    else:
        from fgsbir.train.ensemble import train_ensemble
        from fgsbir.train.supervised import TrainConfig, train

        config = load_config(TrainConfig, args.config, overrides, **values)
        if args.unlabelled and not config.uses_unlabelled:
            raise FgsbirError(
                "--unlabelled needs a part that learns from unlabelled photos: --method semi, "
                f"or --parts {' / '.join(UNLABELLED_PARTS)}"
            )
        run = train if args.members == 1 else partial(train_ensemble, members=args.members)
    begin_training(config.run)
    result = run(config)
    if result:  # only rank 0 of a distributed run reports
        print_summary(result, config.run.out)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fgsbir.evaluate import evaluate_run

    metrics = evaluate_run(args.run_dir, args.data)
    if args.json:
        print(json.dumps({k: metrics[k] for k in ("model", "data", *METRIC_KEYS)}))
    else:
        print(f"{args.run_dir} (model {metrics['model']}) on the test split of {args.data}:")
        print(metrics_line(metrics))
    return 0
