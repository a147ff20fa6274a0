"""The command line as a whole: asking for help loads nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "fastapi", "uvicorn", "faiss", "matplotlib")


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["serve", "--help"]])
def test_help_imports_no_heavy_module(args) -> None:
    probe = (
        "import json, sys\n"
        "from fgsbir.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
