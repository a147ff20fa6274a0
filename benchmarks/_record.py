"""Shared by the benchmark scripts: results go to ``results/<name>.json`` and ``BENCHMARKS.md``.

Each benchmark owns one section of ``BENCHMARKS.md`` (between ``<!-- name -->`` markers), rewritten
on every run from its JSON: the command, the date, the machine, the results' table and pictures
(a ``table`` of markdown lines, a ``plot`` and each data set's ``grid``, where they have them) and
the whole JSON, folded. ``python benchmarks/_record.py`` rewrites every section from its JSON.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
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


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``'s model name where there is one). Training on
    another processor family takes other floating-point paths, so the same command and seed can
    end at another number: cells record it beside their commit."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
    return names[0].strip() if names else platform.processor() or platform.machine()


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()} ({cpu_model()}), {os.cpu_count()} CPU cores, {accelerator}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _pictures(results: dict[str, Any]) -> list[str]:
    """The result's plot and each data set's grid of drawings, as repository paths."""
    found = [results.get("plot")]
    found += [part.get("grid") for part in results.values() if isinstance(part, dict)]
    return [path for path in found if isinstance(path, str)]


def _markdown(name: str, payload: dict[str, Any]) -> str:
    """The benchmark's section of ``BENCHMARKS.md``, from its recorded ``payload``."""
    results = {k: v for k, v in payload.items() if k not in ("command", "date", "machine")}
    lines = [
        f"<!-- {name} -->",
        f"## {name}",
        "",
        f"- command: `{payload['command']}`",
        f"- date: {payload['date']}",
        f"- machine: {payload['machine']}",
        "",
    ]
    if isinstance(results.get("table"), list):
        lines += [*results["table"], ""]
    lines += [f"![{Path(path).stem}]({path})" for path in _pictures(results)]
    lines += [
        "",
        "<details><summary>all results (JSON)</summary>",
        "",
        "```json",
        json.dumps(results, indent=2),
        "```",
        "",
        "</details>",
        f"<!-- /{name} -->",
    ]
    return "\n".join(lines) + "\n"


def _write_section(name: str, payload: dict[str, Any]) -> None:
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    section = _markdown(name, payload)
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + "\n" + section
    BENCHMARKS_MD.write_text(text)


def this_command() -> str:
    """How the running benchmark script was started, as a user would type it at the root."""
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def record(name: str, results: dict[str, Any]) -> Path:
    """Save ``results`` as JSON, with the command that made them, and replace the benchmark's
    section of ``BENCHMARKS.md``."""
    command = this_command()
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    payload = {"command": command, "date": date, "machine": machine(), **results}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    _write_section(name, payload)
    return out


def rewrite_sections() -> None:
    """Rewrite each section of ``BENCHMARKS.md`` from its benchmark's recorded JSON."""
    names = re.findall(r"^<!-- ([^/\s]\S*) -->$", BENCHMARKS_MD.read_text(), re.M)
    for name in names:
        _write_section(name, json.loads((RESULTS_DIR / f"{name}.json").read_text()))


if __name__ == "__main__":
    rewrite_sections()
