"""``fgsbir train-generator``, ``fgsbir tune-generator`` and ``fgsbir generate``: thin layers
over :mod:`fgsbir.train.generator`, :mod:`fgsbir.train.reward_tuning` and
:mod:`fgsbir.inference`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fgsbir.cli.common import (
    Temperature,
    add_training_arguments,
    begin_training,
    checked,
    copy_bias_option,
    device_option,
    training_values,
)
from fgsbir.config import Count, load_config
from fgsbir.errors import FgsbirError

if TYPE_CHECKING:
    from fgsbir.sketch.strokes import Sketch

EPOCHS = 30  # GeneratorConfig's run.epochs, for the help (tests/test_cli.py checks they agree)
TUNING_EPOCHS = 2  # RewardTuningConfig's, likewise


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-generator",
        help="train a generator that draws sketches of photos (resumes a stopped run)",
        description="Train a model that draws a vector sketch of a photo, stroke by stroke, on "
        "the sketch-photo pairs of a data set; optionally first on sketches alone (--set "
        "pretrain_data=FOLDER --set pretrain_epochs=N; --set pretrain_mix=R keeps taking R of "
        "its batches per batch of pairs after those; 1.0 drew the most faithful sketches on "
        "Shoe-V1's validation photos). The decoder draws relative to the "
        "photo's traced edges (--set model.decoder=edge_pointer, the default) or from the "
        "feature map alone (attentive). If training stops (Ctrl+C, a crash), run the same "
        "command again to resume it.",
    )
    add_training_arguments(p, epochs=EPOCHS)
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "tune-generator",
        help="tune a trained generator to draw sketches that find their own photo "
        "(resumes a stopped run)",
        description="Tune a generator run by policy gradient on unlabelled photos: a trained "
        "retrieval model scores how well each drawn sketch finds its photo among other photos, "
        "and the generator learns to draw the sketches that score best, while its sequence "
        "loss on the data set's pairs keeps them human. The validation photos' scores pick the "
        "epoch (epoch 0: the generator as it was). Writes a generator run folder.",
    )
    add_training_arguments(p, epochs=TUNING_EPOCHS)
    p.add_argument(
        "--generator", required=True, metavar="RUN_DIR",
        help="run folder of 'fgsbir train-generator' to start from",
    )  # fmt: skip
    p.add_argument(
        "--reward-model", required=True, metavar="RUN_DIR",
        help="run folder of 'fgsbir train' whose model scores the sketches",
    )  # fmt: skip
    p.add_argument(
        "--unlabelled", action="append", required=True, metavar="PHOTO_DIR",
        help="a folder of unlabelled photos to draw (repeatable; the training photos without "
        "sketches join them)",
    )  # fmt: skip
    p.set_defaults(func=_tune)

    p = subparsers.add_parser(
        "generate",
        help="draw sketches of photos with a trained generator",
        description="For each photo NAME, write K sketches NAME_k.svg, NAME_k.png and "
        "NAME_k.json (stroke JSON), k = 0..K-1, and grid.png showing photos beside their "
        "sketches.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder of 'fgsbir train-generator'")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photos to draw (JPEG, PNG...)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the sketches to")
    p.add_argument(
        "--temperature", type=checked(Temperature), default=0.3, metavar="T",
        help="sampling temperature: 0 draws the likeliest sketch, higher values more varied ones",
    )  # fmt: skip
    p.add_argument(
        "--samples", type=checked(Count), default=1, metavar="K", help="sketches per photo"
    )
    copy_bias_option(p)
    p.add_argument(
        "--real", metavar="DIR",
        help="folder of real sketches named like the photos (SVG, stroke JSON or PNG), shown "
        "in the grid (default: none)",
    )  # fmt: skip
    device_option(p)
    p.set_defaults(func=_generate)


def _train(args: argparse.Namespace) -> int:
    from fgsbir.train.generator import GeneratorConfig, train_generator

    config = load_config(GeneratorConfig, args.config, args.set, **training_values(args))
    begin_training(config.run)
    print("preparing the training sequences ...", flush=True)
    result = train_generator(config)
    if not result:  # only rank 0 of a distributed run reports
        return 0
    print(f"run folder: {config.run.out} (best epoch {result['best_epoch']})")
    for split in ("val", "test"):
        if split in result:
            m = result[split]
            print(f"{split:>5}: NLL per point {m['nll']:.4f} ({m['n_sketches']} sketches)")
    if result["skipped_steps"]:
        print(f"skipped {result['skipped_steps']} steps with a non-finite loss")
    for picture in result["pictures"]:
        print(f"picture: {picture}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from fgsbir.train.reward_tuning import RewardTuningConfig, tune_generator

    values = training_values(args) | {
        "data.unlabelled": args.unlabelled,
        "generator": args.generator,
        "reward_model": args.reward_model,
    }
    config = load_config(RewardTuningConfig, args.config, args.set, **values)
    begin_training(config.run)
    result = tune_generator(config)
    if not result:  # only rank 0 of a distributed run reports
        return 0
    print(f"run folder: {config.run.out} (best epoch {result['best_epoch']})")
    if "found" in result:
        found = result["found"]
        print(
            f"  val: photos found by their sketches at MRR {found['mrr']:.4f}, "
            f"acc@1 {found['acc@1']:.4f}"
        )
    for picture in result["pictures"]:
        print(f"picture: {picture}")
    return 0


def _real_sketches(folder: Path, photos: list[Path]) -> list[Sketch | None]:
    """For each photo, the sketch in ``folder`` with the photo's stem, if there is one."""
    from fgsbir.sketch.io import load_sketch

    if not folder.is_dir():
        raise FgsbirError(f"--real {folder}: {'not a' if folder.exists() else 'no such'} folder")
    reals: list[Sketch | None] = []
    for photo in photos:
        matches = sorted(p for p in folder.glob(f"{photo.stem}.*") if p.is_file())
        reals.append(load_sketch(matches[0]) if matches else None)
    return reals


def _generate(args: argparse.Namespace) -> int:
    from fgsbir.inference import generate

    photos = [Path(p) for p in args.photos]
    reals = _real_sketches(Path(args.real), photos) if args.real else None
    generated = generate(
        args.run_dir,
        photos,
        args.out,
        temperature=args.temperature,
        samples=args.samples,
        real_sketches=reals,
        device=args.device,
        copy_bias=args.copy_bias,
    )
    grid = Path(args.out) / "grid.png"
    print(f"wrote {len(generated.written)} files to {args.out} (grid: {grid})")
    if generated.empty:
        print(f"{len(generated.empty)} empty sample(s), not written: {', '.join(generated.empty)}")
    return 0
