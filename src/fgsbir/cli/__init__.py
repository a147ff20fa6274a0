"""The ``fgsbir`` command: one sub-module per command group, each a thin layer over the library.

Every module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` (called with the parsed arguments) on each. Command modules import
torch, the models and the web stack only inside ``func``, so ``fgsbir --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fgsbir.errors import FgsbirError

COMMAND_MODULES = [
    "fgsbir.cli.train",
    "fgsbir.cli.generator",
    "fgsbir.cli.search",
    "fgsbir.cli.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fgsbir",
        description="Fine-grained sketch-based image retrieval: train models, search photo "
        "galleries by sketch, and draw sketches of photos.",
        epilog="Run 'fgsbir COMMAND --help' for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FgsbirError as exc:
        print(f"fgsbir: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fgsbir: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
