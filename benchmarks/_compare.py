"""A comparison harness: arms x labelled fractions x seeds, run in parallel one-thread lanes.

Each run is cached in its own folder (``<root>/<arm>/f<fraction>/seed<seed>``): a finished run
leaves ``scores.json`` and is never trained again; an interrupted one resumes from its run folder.
The summary gives, per fraction and arm, each seed's test acc@1 with their mean and standard
deviation, and against the arm's baseline (paired by seed) the mean difference with a 95%
confidence interval (Student's t over the per-seed differences).
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scipy import stats

METRICS = ("acc@1", "acc@5", "acc@10", "mrr")


@dataclass(frozen=True)
class Arm:
    """One recipe: ``build(fraction, seed)`` gives its settings (with ``run.out`` unset) and
    ``train`` runs them; ``baseline`` names the arm it is compared with, paired by seed."""

    name: str
    build: Callable[[float, int], Any]
    train: Callable[[Any], dict[str, Any]]
    baseline: str | None = None


def _run(arm: Arm, fraction: float, seed: int, folder: Path) -> dict[str, Any]:
    """Train (or resume) one cell on one thread; its scores, cached in ``scores.json``."""
    config = arm.build(fraction, seed)
    config = replace(config, run=replace(config.run, out=str(folder / "run"), threads=1))
    result = arm.train(config)
    scores = {key: round(result["test"][key], 4) for key in METRICS}
    scores |= {
        "val_acc@1": round(result["val"]["acc@1"], 4),
        "best_epoch": result["best_epoch"],
        "epochs_trained": result["epochs_trained"],
        "steps": result["steps"],
        "train_s": result["train_s"],
    }
    (folder / "scores.json").write_text(json.dumps(scores, indent=2))
    return scores


def run_campaign(
    arms: Sequence[Arm],
    fractions: Sequence[float],
    seeds: Sequence[int],
    root: Path,
    lanes: int,
) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """Every cell's scores, ``[fraction][arm][seed]``; cached cells are read, the others run
    ``lanes`` at a time (the cells of the first seeds first, so a stopped campaign has whole
    seeds)."""
    cells = [(a, f, s) for s in seeds for f in fractions for a in arms]
    results: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    todo = []
    for arm, fraction, seed in cells:
        folder = root / arm.name / f"f{fraction}" / f"seed{seed}"
        cached = folder / "scores.json"
        slot = results.setdefault(str(fraction), {}).setdefault(arm.name, {})
        if cached.is_file():
            slot[seed] = json.loads(cached.read_text())
        else:
            folder.mkdir(parents=True, exist_ok=True)
            todo.append((arm, fraction, seed, folder))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(lanes, mp_context=context) as pool:
        futures = [(a, f, s, pool.submit(_run, a, f, s, d)) for a, f, s, d in todo]
        for arm, fraction, seed, future in futures:
            results[str(fraction)][arm.name][seed] = future.result()
    return results


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Mean of ``values - baseline`` (paired) with a 95% Student-t confidence interval."""
    diffs = [a - b for a, b in zip(values, baseline, strict=True)]
    mean = statistics.mean(diffs)
    half = (
        float(stats.t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs) / len(diffs) ** 0.5
        if len(diffs) > 1
        else float("nan")
    )
    return {
        "diffs": [round(d, 4) for d in diffs],
        "diff_mean": round(mean, 4),
        "ci95_low": round(mean - half, 4),
        "ci95_high": round(mean + half, 4),
    }


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
        "| fraction | arm | acc@1 mean +- std (seeds) | vs | difference [95% CI] | train s |",
        "|---|---|---|---|---|---|",
    ]
    for fraction, cells in summary.items():
        for name, cell in cells.items():
            if not cell["seeds"]:
                continue
            diff = (
                f"{cell['diff_mean']:+.3f} [{cell['ci95_low']:+.3f}, {cell['ci95_high']:+.3f}]"
                if "vs" in cell
                else ""
            )
            lines.append(
                f"| {fraction} | {name} | {cell['acc@1_mean']:.3f} +- {cell['acc@1_std']:.3f} "
                f"({len(cell['seeds'])}) | {cell.get('vs', '')} | {diff} | "
                f"{cell['train_s_mean']} |"
            )
    return "\n".join(lines)


def plot(summary: dict[str, Any], out_png: Path) -> None:
    """acc@1 against labelled fraction, one line per arm, error bars of one standard deviation."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    fractions = sorted(summary, key=float)
    names = list(summary[fractions[0]])
    for name in names:
        xs = [float(f) for f in fractions if summary[f][name]["seeds"]]
        cells = [summary[f][name] for f in fractions if summary[f][name]["seeds"]]
        ax.errorbar(
            xs, [c["acc@1_mean"] for c in cells], yerr=[c["acc@1_std"] for c in cells],
            marker="o", capsize=3, label=name,
        )  # fmt: skip
    ax.set_xlabel("labelled fraction")
    ax.set_ylabel("test acc@1 (mean +- std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
