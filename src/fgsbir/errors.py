"""Errors that name the offending file and the problem, instead of a traceback."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

OnError = Literal["raise", "warn"]


class FgsbirError(Exception):
    """Base class of every error fgsbir raises on purpose; the CLI prints it without a traceback."""


class DataError(FgsbirError):
    """A data file is missing, corrupt or malformed."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DataWarning(UserWarning):
    """A malformed data file that was skipped because the caller asked to skip bad files."""


def report(error: DataError, on_error: OnError) -> None:
    """Raise ``error``, or warn about it when the caller chose to skip bad input."""
    if on_error == "raise":
        raise error
    warnings.warn(str(error), DataWarning, stacklevel=2)
