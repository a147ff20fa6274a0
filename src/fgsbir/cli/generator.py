"""``fgsbir train-generator`` and ``fgsbir generate``: thin layers over
:mod:`fgsbir.train.generator` and :mod:`fgsbir.inference`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fgsbir.cli.common import add_training_arguments, training_values
from fgsbir.config import load_config
from fgsbir.errors import FgsbirError

if TYPE_CHECKING:
    from fgsbir.sketch.strokes import Sketch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-generator",
        help="train the photo-to-sketch generator (resumes when RUN_DIR holds a stopped run)",
        description="Train the sequential photo-to-sketch generator on photo-sketch pairs, "
        "optionally after pre-training on sketch-only data (--set pretrain_data=PATH --set "
        "pretrain_epochs=N). Run the same command again to resume after an interruption.",
    )
    add_training_arguments(p, "GeneratorConfig")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "generate",
        help="draw vector sketches of photos with a trained generator",
        description="For each photo write NAME_k.svg, NAME_k.png and NAME_k.json (stroke JSON) "
        "for k = 0..K-1, and grid.png beside the photos.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--temperature", type=float, default=0.3, metavar="T",
        help="sampling temperature; 0 draws greedily (default 0.3)",
    )  # fmt: skip
    p.add_argument("--samples", type=int, default=1, metavar="K", help="sketches per photo")
    p.add_argument(
        "--real", metavar="DIR",
        help="folder of real sketches named like the photos (SVG, stroke JSON or PNG), "
        "shown in the grid",
    )  # fmt: skip
    p.add_argument("--device", help="e.g. cpu or cuda (default: CUDA when available)")
    p.set_defaults(func=_generate)


def _train(args: argparse.Namespace) -> int:
    from fgsbir.train.generator import GeneratorConfig, train_generator

    print("preparing the training sequences ...", flush=True)
    config = load_config(GeneratorConfig, args.config, args.set, **training_values(args))
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


def _real_sketch(folder: Path, photo: Path) -> Sketch | None:
    """The sketch in ``folder`` with the photo's stem, if there is one."""
    from fgsbir.sketch.io import load_sketch

    matches = sorted(p for p in folder.glob(f"{photo.stem}.*") if p.is_file())
    return load_sketch(matches[0]) if matches else None


def _generate(args: argparse.Namespace) -> int:
    from fgsbir.inference import generate

    if args.samples < 1:
        raise FgsbirError("--samples must be at least 1")
    if args.temperature < 0:
        raise FgsbirError("--temperature must be at least 0")
    photos = [Path(p) for p in args.photos]
    reals = [_real_sketch(Path(args.real), p) for p in photos] if args.real else None
    generated = generate(
        args.run_dir,
        photos,
        args.out,
        temperature=args.temperature,
        samples=args.samples,
        real_sketches=reals,
        device=args.device,
    )
    grid = Path(args.out) / "grid.png"
    print(f"wrote {len(generated.written)} files to {args.out} (grid: {grid})")
    if generated.empty:
        print(f"{len(generated.empty)} empty sample(s), not written: {', '.join(generated.empty)}")
    return 0
