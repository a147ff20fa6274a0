"""Shared by the benchmark scripts: results go to ``results/<name>.json`` and ``BENCHMARKS.md``.

Each benchmark owns one section of ``BENCHMARKS.md`` (between ``<!-- name -->`` markers), rewritten
on every run with the command, the date, the machine and the results.
"""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SHARED_DATA = ROOT.parent / "shared" / "data"
HEADER = (
    "# Benchmarks\n\n"
    "Written by the scripts in `benchmarks/`; each section is replaced by its script's last run.\n"
)


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {accelerator}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _markdown(name: str, results: dict[str, Any], command: str, date: str) -> str:
    lines = [
        f"<!-- {name} -->",
        f"## {name}",
        "",
        f"- command: `{command}`",
        f"- date: {date}",
        f"- machine: {machine()}",
        "",
        "```json",
        json.dumps(results, indent=2),
        "```",
        f"<!-- /{name} -->",
    ]
    return "\n".join(lines) + "\n"


def record(name: str, results: dict[str, Any], command: str) -> Path:
    """Save ``results`` as JSON and replace the benchmark's section of ``BENCHMARKS.md``."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    payload = {"command": command, "date": date, "machine": machine(), **results}
    out.write_text(json.dumps(payload, indent=2) + "\n")

    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    section = _markdown(name, results, command, date)
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + "\n" + section
    BENCHMARKS_MD.write_text(text)
    return out
