"""What the commands share: the parser (one-line argument errors, help that shows defaults), value
checks for numeric options, and the training commands' options, defined once.

A numeric option's ``type`` is :func:`checked` with a pydantic annotation: the range of a setting
is the one its dataclass declares (:func:`setting_type`), so the command line and ``--set``/YAML
refuse the same values. A bad value ends the command before any work with one line naming the
option, and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Annotated, Any, NoReturn

from pydantic import Field, TypeAdapter, ValidationError

from fgsbir.config import DataConfig, NonNegative, RunOptions
from fgsbir.errors import FgsbirError

Port = Annotated[int, Field(ge=1, le=65535)]
Temperature = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless the default is "not given" (``None``,
    ``False``, an empty list) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        given = action.default is not None and action.default is not False and action.default != []
        if not given or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line ending in where to get help (exit code 2);
    its sub-command parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def checked(annotation: Any) -> Callable[[str], Any]:
    """An argparse ``type`` that parses a value as ``annotation`` (e.g. ``Count``) and refuses it
    with pydantic's reason when it does not fit."""

    @cache
    def adapter() -> TypeAdapter[Any]:
        return TypeAdapter(annotation)

    def parse(text: str) -> Any:
        try:
            return adapter().validate_strings(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{exc.errors()[0]['msg']} (got {text!r})") from None

    return parse


def setting_type(cls: type, name: str) -> Callable[[str], Any]:
    """The :func:`checked` type of the setting ``name`` of the dataclass ``cls``."""
    return checked(typing.get_type_hints(cls, include_extras=True)[name])


def add_training_arguments(parser: argparse.ArgumentParser, epochs: int) -> None:
    """The data, run and settings options of a training command; ``epochs`` is the default of
    its settings (shown in the help)."""
    defaults = DataConfig()
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", required=True,
        help="data-set folder (its layout is detected), or 'synthetic' for the built-in data set",
    )  # fmt: skip
    data.add_argument(
        "--format", choices=("qmul-v2", "qmul-v1", "sketchy", "photos"),
        help="read the data set in this layout (default: detected from its files)",
    )  # fmt: skip
    data.add_argument(
        "--labelled-fraction", type=setting_type(DataConfig, "labelled_fraction"), metavar="F",
        help="keep the sketches of this seeded share of the training photos, 0 < F <= 1 "
        f"(default: {defaults.labelled_fraction:g})",
    )  # fmt: skip
    data.add_argument(
        "--seed", type=setting_type(DataConfig, "seed"), metavar="N",
        help=f"seeds the splits and training (default: {defaults.seed})",
    )  # fmt: skip
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out", required=True, metavar="RUN_DIR",
        help="run folder to write; a folder holding a stopped run resumes it",
    )  # fmt: skip
    run.add_argument(
        "--epochs", type=setting_type(RunOptions, "epochs"), metavar="N",
        help=f"epochs to train (default: {epochs})",
    )  # fmt: skip
    run.add_argument(
        "--time-budget", type=setting_type(RunOptions, "time_budget_s"), metavar="SECONDS",
        help="stop before an epoch that would overrun this many seconds (default: no limit)",
    )  # fmt: skip
    device_option(run)
    run.add_argument(
        "--threads", type=setting_type(RunOptions, "threads"), metavar="N",
        help="CPU threads for torch (default: torch's choice)",
    )  # fmt: skip
    parser.add_argument(
        "--config", metavar="FILE.yaml",
        help="a YAML file of settings, named as --set names them (default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="change one setting, e.g. --set lr=3e-4 --set data.val_fraction=0.2 (repeatable)",
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


def device_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The ``--device`` option of every command that runs a model."""
    parser.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: a CUDA GPU when there is one, else cpu)"
    )


def copy_bias_option(parser: argparse.ArgumentParser) -> None:
    """The ``--copy-bias`` option of every command that draws with a generator."""
    parser.add_argument(
        "--copy-bias", type=checked(NonNegative), default=0.0, metavar="B",
        help="edge-pointer generators: how much more to follow the photo's edges than the "
        "model learnt to (0: as trained; about 4 drew the most faithful greedy sketches on "
        "Shoe-V1's validation photos)",
    )  # fmt: skip


def begin_training(run: RunOptions) -> None:
    """Before a training command trains: refuse an ``--out`` that is not a folder, and say so
    when it holds a stopped run that the command continues (on the main process only)."""
    from fgsbir.runs import resume_progress

    out = Path(run.out)
    if out.exists() and not out.is_dir():
        raise FgsbirError(f"--out {out}: not a folder")
    progress = resume_progress(out)
    if progress is not None and os.environ.get("RANK", "0") == "0":
        print(f"resuming {out} from epoch {progress['epoch']} of {run.epochs}", flush=True)
