"""The ``fgsbir`` command: one sub-module per command group, each a thin layer over the library.

Every module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` (called with the parsed arguments) on each. Command modules import
torch, the models and the web stack only inside ``func``, so ``fgsbir --help`` stays fast.

Every mistake a user can make ends the command with one line on stderr and exit code 2: argument
errors (argparse, see :class:`~fgsbir.cli.common.Parser`) and :class:`~fgsbir.errors.FgsbirError`
("fgsbir: error: ..."). A file skipped under ``--on-error warn`` is one line too
("fgsbir: warning: PATH: problem").
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fgsbir.cli.common import Parser
from fgsbir.errors import DataWarning, FgsbirError

COMMAND_MODULES = [
    "fgsbir.cli.train",
    "fgsbir.cli.generator",
    "fgsbir.cli.search",
    "fgsbir.cli.demo",
]


def build_parser() -> Parser:
    parser = Parser(
        prog="fgsbir",
        description="Fine-grained sketch-based image retrieval: train a model on sketch-photo "
        "pairs, then find a particular photo in a gallery by drawing a quick sketch of it, on "
        "the command line or in a web page. Also trains a generator that draws sketches of "
        "photos.",
        epilog="Start with 'fgsbir demo'. Run 'fgsbir COMMAND --help' for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


@contextmanager
def one_line_data_warnings() -> Iterator[None]:
    """Show each :class:`DataWarning` as one line, "fgsbir: warning: PATH: problem", above any
    progress bar, instead of Python's two lines with a line of source code."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def one_line(message: Any, category: type[Warning], *where: Any, **kw: Any) -> None:
            if not issubclass(category, DataWarning):
                show(message, category, *where, **kw)
                return
            from tqdm import tqdm

            tqdm.write(f"fgsbir: warning: {message}", file=sys.stderr)

        warnings.showwarning = one_line
        yield


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or an argument error (already printed)
        return int(exit_.code or 0)
    try:
        with one_line_data_warnings():
            return int(args.func(args) or 0)
    except FgsbirError as exc:
        lines = (line.strip() for line in str(exc).splitlines())
        print(f"fgsbir: error: {'; '.join(line for line in lines if line)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fgsbir: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
