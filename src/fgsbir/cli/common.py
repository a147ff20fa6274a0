"""Arguments shared by the training commands, defined once, and their mapping onto settings."""

from __future__ import annotations

import argparse
from typing import Any


def add_training_arguments(parser: argparse.ArgumentParser, settings: str) -> None:
    """The data, run and configuration options of a training command (``settings`` names the
    configuration class the YAML file and ``--set`` address)."""
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, help="data-set folder, or 'synthetic'")
    data.add_argument(
        "--format", choices=("qmul-v2", "qmul-v1", "sketchy", "photos"),
        help="force a data-set layout instead of detecting it",
    )  # fmt: skip
    data.add_argument(
        "--labelled-fraction", type=float, metavar="F",
        help="keep the sketches of this seeded share of the training photos (0 < F <= 1; "
        "default 1)",
    )  # fmt: skip
    data.add_argument("--seed", type=int, help="seeds the splits and training (default 0)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    run.add_argument("--epochs", type=int, help="epochs to train (at least 1)")
    run.add_argument(
        "--time-budget", type=float, metavar="SECONDS",
        help="stop before an epoch that would overrun this many seconds",
    )  # fmt: skip
    run.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--config", metavar="FILE.yaml", help=f"YAML file of {settings} settings")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a setting, e.g. --set lr=3e-4 --set data.val_fraction=0.2",
    )  # fmt: skip


def training_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the shared options give, as dotted keys (``None``: not given)."""
    return {
        "data.path": args.data,
        "data.format": args.format,
        "data.labelled_fraction": args.labelled_fraction,
        "data.seed": args.seed,
        "run.out": args.out,
        "run.epochs": args.epochs,
        "run.time_budget_s": args.time_budget,
        "run.device": args.device,
        "run.threads": args.threads,
    }
