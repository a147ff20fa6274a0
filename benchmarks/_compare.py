"""A comparison harness: arms x labelled fractions x seeds, run in parallel one-thread lanes.

Each run trains in its own folder (``<root>/<arm>/f<fraction>/seed<seed>``, resumed if it was
interrupted); a finished run's scores go to a cell store, a JSON file kept in the repository
(``benchmarks/results/<name>_cells.json``), keyed by the arm, fraction, seed and a digest of the
run's settings, with the commit that produced them. A cell already in the store is never trained
again, so a campaign carries on across sessions and machines, and a changed recipe starts afresh;
campaigns over other seeds or arms may share the store while they run (one lane each, say).
A campaign trains the seeds it is given and reports those and every other seed the store holds
for its arms and fractions.
The summary gives, per fraction and arm, each seed's test acc@1 with their mean and standard
deviation, and against the arm's baseline (paired by seed) the mean difference with a 95%
confidence interval (Student's t over the per-seed differences).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import hashlib
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

from _record import ROOT, machine
from scipy import stats

from fgsbir.config import config_to_dict
from fgsbir.train.supervised import SETTINGS_ADDED_LATER, TRAIN_SETTINGS_ADDED_LATER

METRICS = ("acc@1", "acc@5", "acc@10", "mrr")


@dataclass(frozen=True)
class Arm:
    """One recipe: ``build(fraction, seed)`` gives its settings (with ``run.out`` unset) and
    ``train`` runs them; ``baseline`` names the arm it is compared with, paired by seed."""

    name: str
    build: Callable[[float, int], Any]
    train: Callable[[Any], dict[str, Any]]
    baseline: str | None = None


NESTED_LATER_SETTINGS = {
    (section, name): value
    for section, added in SETTINGS_ADDED_LATER.items()
    for name, value in added.items()
}
"""Settings added inside a section (at any depth) after cells were keyed, with their defaults
(:data:`fgsbir.train.supervised.SETTINGS_ADDED_LATER`): left out of the digest where they hold
them, so that those cells keep their keys."""


def _leave_out_later_settings(settings: dict[str, Any]) -> None:
    for key, value in settings.items():
        if isinstance(value, dict):
            for (section, name), default in NESTED_LATER_SETTINGS.items():
                if key == section and value.get(name, not default) == default:
                    value.pop(name)
            _leave_out_later_settings(value)


def settings_digest(config: Any, left_out: Sequence[str] = ()) -> str:
    """A short hash of a run's settings, but where and on what it runs; the ``left_out`` fields
    are left out where they hold their defaults (settings added after cells were keyed, so that
    those keep their keys), and so are :data:`NESTED_LATER_SETTINGS` and a
    :class:`~fgsbir.train.supervised.TrainConfig`'s ``TRAIN_SETTINGS_ADDED_LATER``."""
    settings = config_to_dict(config)
    for key in ("out", "device", "threads"):
        settings["run"].pop(key)
    left_out = [*left_out, *TRAIN_SETTINGS_ADDED_LATER]  # absent from other configs
    defaults = config_to_dict(type(config)()) if left_out else {}
    for key in left_out:
        if key in settings and settings[key] == defaults[key]:
            settings.pop(key)
    _leave_out_later_settings(settings)
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def _settings(arm: Arm, fraction: float, seed: int) -> tuple[Any, str]:
    """The cell's settings and their digest."""
    config = arm.build(fraction, seed)
    return config, settings_digest(config)


def commit() -> str:
    """The checked-out commit, ``-dirty`` where tracked files other than the results have changed
    (``benchmarks/results`` and BENCHMARKS.md, which every campaign's report rewrites)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout

    head = git("rev-parse", "--short", "HEAD").strip()
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)benchmarks/results", ":(exclude)BENCHMARKS.md")  # fmt: skip
    return f"{head}-dirty" if head and changed else head or "unknown"


def _run(arm: Arm, config: Any, folder: Path) -> dict[str, Any]:
    """Train (or resume) one cell on one thread; its scores."""
    config = replace(config, run=replace(config.run, out=str(folder), threads=1))
    result = arm.train(config)
    scores = {key: round(result["test"][key], 4) for key in METRICS}
    scores |= {
        "val_acc@1": round(result["val"]["acc@1"], 4),
        "best_epoch": result["best_epoch"],
        "epochs_trained": result["epochs_trained"],
        "steps": result["steps"],
        "train_s": result["train_s"],
        "commit": commit(),
        "machine": machine(),
    }
    return scores


def _end_with(campaign: int) -> None:
    """A lane's start: on Linux, have the kernel stop this lane when the campaign's process ends,
    however it ends (``kill``, a crash), so that no lane trains on unseen; a lane whose campaign
    is already gone stops at once. Elsewhere only Ctrl-C, which reaches every lane, stops them."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != campaign:
        os._exit(1)


def start_lanes(count: int) -> ProcessPoolExecutor:
    """``count`` worker processes, started fresh (``spawn``) and stopped with the campaign."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        count, mp_context=context, initializer=_end_with, initargs=(os.getpid(),)
    )


def add_campaign_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every campaign takes: which seeds and arms, how many lanes, where runs go."""
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
        help="the seeds to train; the report covers every seed in the cell store too",
    )  # fmt: skip
    parser.add_argument(
        "--arms", nargs="+", help="the arms to train (default: all); the report covers them all"
    )
    parser.add_argument("--lanes", type=int, default=2, help="runs in parallel, one thread each")
    parser.add_argument(
        "--report-only", action="store_true", help="summarise the finished runs, train nothing"
    )
    parser.add_argument("--out", type=Path, help="run folders (default: in the cache folder)")


def run_campaign(
    arms: Sequence[Arm],
    fractions: Sequence[float],
    seeds: Sequence[int],
    root: Path,
    store: Path,
    lanes: int,
    train: bool = True,
    trained: Sequence[str] | None = None,
) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """Every cell's scores, ``[fraction][arm][seed]``, over the given ``seeds`` and every other
    seed whose cell (same settings) is in the ``store``: read from the store where it is there,
    else (with ``train``, for the given seeds and the arms named ``trained``, default all)
    trained ``lanes`` at a time (the first seeds' cells first, so a stopped campaign has whole
    seeds) and added to the store as each finishes. An unknown name in ``trained`` is refused."""
    known = [arm.name for arm in arms]
    if unknown := set(trained or ()) - set(known):
        raise SystemExit(f"unknown arm(s) {sorted(unknown)}; known: {', '.join(known)}")
    cells = json.loads(store.read_text()) if store.is_file() else {}
    results: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    todo = []
    for seed in sorted(set(seeds) | _stored_seeds(cells, arms, fractions)):
        for fraction in fractions:
            for arm in arms:
                config, digest = _settings(arm, fraction, seed)
                key = f"{arm.name}/f{fraction}/seed{seed}/{digest}"
                slot = results.setdefault(str(fraction), {}).setdefault(arm.name, {})
                if key in cells:
                    slot[seed] = cells[key]
                elif train and seed in seeds and arm.name in (trained or known):
                    folder = root / arm.name / f"f{fraction}" / f"seed{seed}" / digest
                    todo.append((key, slot, seed, arm, config, folder))
    with start_lanes(lanes) as pool:
        jobs = [(k, slot, s, partial(_run, a, c, d)) for k, slot, s, a, c, d in todo]
        store_as_finished(pool, jobs, store)
    return results


Job = tuple[str, dict[int, Any], int, Callable[[], dict[str, Any]]]
"""A cell to train: its key in the store, the slot its scores go in, its seed, the training."""


def store_as_finished(pool: ProcessPoolExecutor, jobs: Sequence[Job], store: Path) -> None:
    """Train every job in the ``pool`` and put each cell's scores in its slot and the ``store``
    as soon as it finishes, whichever finishes first (a stopped campaign keeps every cell done)."""
    pending = {pool.submit(train): (key, slot, seed) for key, slot, seed, train in jobs}
    for future in as_completed(pending):
        key, slot, seed = pending[future]
        slot[seed] = future.result()
        add_cell(store, key, slot[seed])


def summarised_campaign(
    name: str,
    arms: Sequence[Arm],
    fractions: Sequence[float],
    args: argparse.Namespace,
    runs: Path,
    results_dir: Path,
) -> tuple[dict[str, dict[str, dict[int, dict[str, Any]]]], dict[str, Any], str]:
    """The campaign ``name`` as its options (:func:`add_campaign_arguments`) ask, with its cell
    store and plot in ``results_dir`` (``<name>_cells.json``, ``<name>.png``): its cells
    (:func:`run_campaign`), their summary (:func:`summarise`) and table, printed."""
    results = run_campaign(
        arms,
        fractions,
        args.seeds,
        runs,
        results_dir / f"{name}_cells.json",
        args.lanes,
        not args.report_only,
        args.arms,
    )
    summary = summarise(results, arms)
    plot(summary, results_dir / f"{name}.png")
    table = markdown_table(summary)
    print(table)
    return results, summary, table


def _stored_seeds(
    cells: dict[str, Any], arms: Sequence[Arm], fractions: Sequence[float]
) -> set[int]:
    """The seeds of the stored cells of these arms and fractions (their settings unchecked)."""
    names = {arm.name for arm in arms}
    tags = {f"f{fraction}" for fraction in fractions}
    seeds = set()
    for key in cells:
        name, tag, seed, _ = key.rsplit("/", 3)
        if name in names and tag in tags:
            seeds.add(int(seed.removeprefix("seed")))
    return seeds


def add_cell(store: Path, key: str, scores: dict[str, Any]) -> None:
    """Add one cell to the store, keeping the cells that other campaigns (other seeds or arms,
    run at the same time) have added since this one read it."""
    with open(store.with_name(f".{store.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cells = json.loads(store.read_text()) if store.is_file() else {}
        cells[key] = scores
        partial = store.with_name(f".{store.name}.partial")
        partial.write_text(json.dumps(cells, indent=1, sort_keys=True) + "\n")
        partial.replace(store)


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Mean of ``values - baseline`` (paired) with a 95% Student-t confidence interval; one pair
    gives no interval, its bounds are None (``null`` in JSON)."""
    diffs = [a - b for a, b in zip(values, baseline, strict=True)]
    mean = statistics.mean(diffs)
    low = high = None
    if len(diffs) > 1:
        half = float(stats.t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs)
        half /= len(diffs) ** 0.5
        low, high = round(mean - half, 4), round(mean + half, 4)
    return {
        "diffs": [round(d, 4) for d in diffs],
        "diff_mean": round(mean, 4),
        "ci95_low": low,
        "ci95_high": high,
    }


def interval_text(found: dict[str, Any]) -> str:
    """``+0.030 [-0.015, +0.074]``, or ``+0.030 [1 seed, no CI]`` without an interval."""
    if found["ci95_low"] is None:
        return f"{found['diff_mean']:+.3f} [1 seed, no CI]"
    return f"{found['diff_mean']:+.3f} [{found['ci95_low']:+.3f}, {found['ci95_high']:+.3f}]"


def summarise(
    results: dict[str, dict[str, dict[int, dict[str, Any]]]], arms: Sequence[Arm]
) -> dict[str, Any]:
    """Per fraction and arm: seeds, per-seed acc@1, mean and std, mean training seconds and, for
    an arm with a baseline, the paired difference on the seeds both have."""
    summary: dict[str, Any] = {}
    for fraction, by_arm in results.items():
        cells: dict[str, Any] = {}
        for arm in arms:
            runs = by_arm.get(arm.name, {})
            seeds = sorted(runs)
            acc = [runs[s]["acc@1"] for s in seeds]
            cell: dict[str, Any] = {"seeds": seeds, "acc@1": acc}
            if acc:
                cell["acc@1_mean"] = round(statistics.mean(acc), 4)
                cell["acc@1_std"] = round(statistics.stdev(acc), 4) if len(acc) > 1 else 0.0
                cell["val_acc@1_mean"] = round(
                    statistics.mean(runs[s]["val_acc@1"] for s in seeds), 4
                )
                cell["train_s_mean"] = round(statistics.mean(runs[s]["train_s"] for s in seeds), 1)
            base = by_arm.get(arm.baseline or "", {})
            shared = [s for s in seeds if s in base]
            if arm.baseline and shared:
                cell["vs"] = arm.baseline
                cell |= paired_difference(
                    [runs[s]["acc@1"] for s in shared], [base[s]["acc@1"] for s in shared]
                )
                cell["paired_seeds"] = shared
            cells[arm.name] = cell
        summary[fraction] = cells
    return summary


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per fraction and arm: acc@1 mean +- std (n), and the paired difference."""
    lines = [
        "| fraction | arm | acc@1 mean +- std (seeds) | vs | difference [95% CI] | val acc@1 "
        "| train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for fraction, cells in summary.items():
        for name, cell in cells.items():
            if not cell["seeds"]:
                continue
            diff = interval_text(cell) if "vs" in cell else ""
            lines.append(
                f"| {fraction} | {name} | {cell['acc@1_mean']:.3f} +- {cell['acc@1_std']:.3f} "
                f"({len(cell['seeds'])}) | {cell.get('vs', '')} | {diff} | "
                f"{cell['val_acc@1_mean']:.3f} | {cell['train_s_mean']} |"
            )
    return "\n".join(lines)


def plot(summary: dict[str, Any], out_png: Path) -> None:
    """acc@1 against labelled fraction, one line per arm, error bars of one standard deviation;
    the arms are set a little apart along the fraction axis, so that their bars do not overlap."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    fractions = sorted(summary, key=float)
    names = [
        name for name in summary[fractions[0]] if any(summary[f][name]["seeds"] for f in fractions)
    ]
    colours = colormaps["tab20"].colors  # one colour per arm, up to 20 arms
    at = [float(f) for f in fractions]
    spread = 0.6 * min((b - a for a, b in pairwise(at)), default=0.1)
    step = spread / len(names)  # between neighbouring arms, all of them within ``spread``
    for i, (name, colour) in enumerate(zip(names, colours, strict=False)):
        shift = (i - (len(names) - 1) / 2) * step
        xs = [float(f) + shift for f in fractions if summary[f][name]["seeds"]]
        cells = [summary[f][name] for f in fractions if summary[f][name]["seeds"]]
        ax.errorbar(
            xs, [c["acc@1_mean"] for c in cells], yerr=[c["acc@1_std"] for c in cells],
            marker="o", capsize=3, label=name, color=colour,
        )  # fmt: skip
    ax.set_xlabel("labelled fraction")
    ax.set_ylabel("test acc@1 (mean +- std over seeds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
