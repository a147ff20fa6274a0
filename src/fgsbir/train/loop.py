"""The one training loop; each training method is a :class:`Task` that it runs.

The loop owns everything methods share: the run folder (``resume.pt`` after every epoch, the best
epoch's weights as ``model.safetensors``, ``config.json``, ``metrics.jsonl``, training curves and
the model card), epochs and the time budget, the random seeds and thread count, DDP under
``torchrun`` (each process takes its share of every epoch's batches; :func:`optimise` averages
gradients across processes), progress bars, the skip of non-finite steps, and the choice of the
best epoch on the validation split. A task says only what is its own: its set-up, the parts that
resume must restore, the batches of an epoch, one step, the validation score, the final
evaluation and the card text.

Reproducibility: every random stream is seeded by ``data.seed`` (model initialisation through
torch's global generator, data order and augmentation through generators seeded by
``(seed, epoch, item)``), so the same settings with the same thread count give the same numbers,
run after run and across a resume. Different thread counts (or process counts) sum floating-point
numbers in other orders and give slightly different weights; a run stopped by its time budget
stops where the clock says.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fgsbir.config import (
    DATA_SETTINGS_ADDED_LATER,
    RunOptions,
    check_config,
    config_to_dict,
    with_section_defaults,
)
from fgsbir.device import DistributedContext
from fgsbir.runs import (
    METRICS_FILE,
    MetricsLog,
    Stateful,
    check_resumable,
    load_model_state,
    load_resume_state,
    restore_training_state,
    save_model,
    save_training_state,
)
from fgsbir.viz import plot_training_curves

CURVES_PNG = "training_curves.png"

T = TypeVar("T")


@dataclass
class Progress:
    """Where a run stands; saved in ``resume.pt`` beside the task's parts."""

    epoch: int = 0
    step: int = 0
    skipped_steps: int = 0  # steps whose loss or gradient was not finite
    best_score: float | None = None
    best_epoch: int | None = None
    elapsed_s: float = 0.0  # training and validation, over every session of the run
    last_epoch_s: float = 0.0


class Task(ABC):
    """One training method. ``config`` is its settings dataclass, with ``data`` (a
    :class:`~fgsbir.config.DataConfig`) and ``run`` (a :class:`~fgsbir.config.RunOptions`)."""

    kind = "embedding"  # what config.json says the run's model is
    validate_start = False  # also score the start model (as epoch 0) before training
    leading_epochs = 0  # epochs before the run's ``epochs`` (e.g. pre-training)

    def __init__(self, config: Any) -> None:
        self.config = config
        self.ctx = DistributedContext()

    @abstractmethod
    def setup(self) -> dict[str, Any]:
        """Load the data and build models and optimisers; returns what ``config.json`` records
        beyond the settings (e.g. ``data_info``)."""

    @abstractmethod
    def parts(self) -> dict[str, Stateful]:
        """Everything ``resume.pt`` must restore (models, optimisers, schedulers...)."""

    @abstractmethod
    def selected(self) -> nn.Module:
        """The model whose best-epoch weights become the run's ``model.safetensors``."""

    @abstractmethod
    def batches(self, epoch: int) -> Sequence[Any]:
        """All batches of an epoch, in order; under DDP each process gets its share."""

    @abstractmethod
    def step(self, batch: Any, progress: Progress) -> dict[str, float]:
        """One training step (``progress.epoch`` and ``.step``: the ones it is); returns
        statistics to log (``skipped``: true if it was skipped)."""

    @abstractmethod
    def validate(self) -> tuple[dict[str, Any], float] | None:
        """Validation metrics and a score (higher is better); ``None`` without validation data
        (the latest epoch is then the best)."""

    @abstractmethod
    def finish(self, run_config: dict[str, Any]) -> dict[str, Any]:
        """Final metrics and ``pictures`` of the selected weights (already loaded)."""

    @abstractmethod
    def card(self, run_config: dict[str, Any], metrics: dict[str, Any]) -> str:
        """The run folder's ``README.md``."""

    def upgraded(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A stopped run's recorded settings as this version records them (settings added since,
        at the values that run trained with), for the check that a resume continues it."""
        return with_section_defaults(saved, "data", DATA_SETTINGS_ADDED_LATER)

    def train_mode(self) -> None:
        """Put the models in training mode (called before every epoch)."""
        self.selected().train()

    def begin(self) -> dict[str, float]:
        """Called once, before the first epoch of a new run (not when resuming); returns
        statistics to log (as a ``warmup`` record), if any."""
        return {}

    def end_epoch(self, progress: Progress) -> None:
        """Called on the main process after each epoch's validation (e.g. to save more parts)."""
        return


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def optimise(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    ctx: DistributedContext,
    clip: float | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> bool:
    """Back-propagate ``loss`` and step; under DDP the gradients are averaged over processes
    first. A non-finite loss or gradient (on any process) skips the step, leaving the weights as
    they were; returns whether it stepped."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    stepped = ctx.all_true(bool(torch.isfinite(loss)))
    if stepped:
        loss.backward()
        ctx.average_gradients(params)
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf"))
        stepped = bool(torch.isfinite(norm))
    if not stepped:
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return True


def progress_bar(items: Iterable[T], description: str, ctx: DistributedContext) -> tqdm:
    """A progress bar over ``items`` on the main process (none on the others)."""
    return tqdm(items, desc=description, disable=not ctx.is_main, leave=False)


def fit(task: Task, options: RunOptions | None = None) -> dict[str, Any]:
    """Train (or resume) ``task`` in ``options.out`` (default: ``task.config.run``); returns the
    selected model's metrics on the main process, ``{}`` on the others.

    The result holds ``best_epoch``, ``epochs_trained``, ``steps``, ``skipped_steps``,
    ``train_s`` and whatever the task's :meth:`Task.finish` adds (``val``/``test`` metrics,
    ``pictures``).
    """
    task.config = check_config(task.config)
    options = check_config(options or task.config.run)
    if options.threads:
        torch.set_num_threads(options.threads)
    task.ctx = DistributedContext.join(options.device)
    seed_everything(task.config.data.seed)
    loop = _Loop(task, options)
    loop.run()
    return loop.finish() if task.ctx.is_main else {}


class _Loop:
    def __init__(self, task: Task, options: RunOptions) -> None:
        self.task, self.options, self.ctx = task, options, task.ctx
        self.out = Path(options.out)
        self.run_config = {"kind": task.kind, **config_to_dict(task.config)}
        self.run_config |= task.setup()
        self.epochs = options.epochs + task.leading_epochs
        self.progress = Progress()
        self.log = MetricsLog(self.out / METRICS_FILE) if self.ctx.is_main else None

    def run(self) -> None:
        state = load_resume_state(self.out)
        if state is not None:
            state["config"] = self.task.upgraded(state["config"])
        fixed = {k: v for k, v in self.run_config.items() if k != "run"}
        check_resumable(self.out, state, fixed)
        if state is not None:
            restore_training_state(state, self.task.parts())
            self.progress = Progress(**state["progress"])
            if self.log is not None:
                self.log.truncate_after(self.progress.step)
        self.ctx.broadcast_modules(self.task.parts().values())
        if state is None:
            began = time.monotonic()
            warm_up = self.task.begin()
            if warm_up and self.log is not None:
                self.log.log(epoch=0, step=0, split="warmup", **warm_up)
            if self.task.validate_start and self.ctx.is_main:
                self._validate({}, 0.0)
            self._end_epoch(time.monotonic() - began, counts=False)
        while self.progress.epoch < self.epochs and not self._out_of_time():
            began = time.monotonic()
            stats = self._train_epoch()
            self.progress.epoch += 1
            self.ctx.broadcast_modules(self.task.parts().values(), buffers_only=True)
            if self.ctx.is_main:
                self._validate(stats, time.monotonic() - began)
            self._end_epoch(time.monotonic() - began, counts=True)

    def _end_epoch(self, seconds: float, counts: bool) -> None:
        self.progress.elapsed_s += seconds
        if counts:
            self.progress.last_epoch_s = seconds
        if self.ctx.is_main:
            self.task.end_epoch(self.progress)
            save_training_state(
                self.out, self.run_config, self.task.parts(), progress=asdict(self.progress)
            )
        self.ctx.barrier()

    def _out_of_time(self) -> bool:
        """Whether another epoch as long as the last would overrun the budget (rank 0 says); the
        first epoch always runs."""
        budget, p = self.options.time_budget_s, self.progress
        over = budget is not None and p.epoch > 0 and p.elapsed_s + p.last_epoch_s > budget
        return self.ctx.decide(over)

    def _train_epoch(self) -> dict[str, float]:
        task, p = self.task, self.progress
        task.train_mode()
        batches = self.ctx.share(task.batches(p.epoch))
        totals: dict[str, list[float]] = {}
        bar = progress_bar(batches, f"epoch {p.epoch + 1}/{self.epochs}", self.ctx)
        for batch in bar:
            stats = task.step(batch, p)
            p.step += 1
            if stats.pop("skipped", False):
                p.skipped_steps += 1
                continue  # its losses are not finite: they would spoil the epoch's means
            for key, value in stats.items():
                totals.setdefault(key, []).append(value)
            bar.set_postfix(loss=f"{stats.get('loss', float('nan')):.4f}")
        return {key: float(np.mean(values)) for key, values in totals.items()}

    def _validate(self, stats: dict[str, float], epoch_s: float) -> None:
        """Log the epoch, score it on the validation split and keep the best weights."""
        assert self.log is not None
        p = self.progress
        if stats or p.epoch > 0:
            self.log.log(
                epoch=p.epoch, step=p.step, split="train", **stats,
                skipped_steps=p.skipped_steps, epoch_s=round(epoch_s, 2),
            )  # fmt: skip
        scored = self.task.validate()
        if scored is None:
            metrics, score = {}, float(p.epoch)
        else:
            metrics, score = scored
            self.log.log(epoch=p.epoch, step=p.step, split="val", **metrics)
        if p.best_score is None or score > p.best_score:  # a tie keeps the earlier epoch
            p.best_score, p.best_epoch = score, p.epoch
            summary = {"val": metrics, "best_epoch": p.epoch}
            save_model(self.out, self.task.selected(), self.run_config, summary)
        self.task.train_mode()

    def finish(self) -> dict[str, Any]:
        """Load the best weights, let the task evaluate them, draw the curves, write the card."""
        p = self.progress
        self.task.selected().load_state_dict(load_model_state(self.out))
        metrics: dict[str, Any] = {
            "best_epoch": p.best_epoch,
            "epochs_trained": p.epoch,
            "steps": p.step,
            "skipped_steps": p.skipped_steps,
            "train_s": round(p.elapsed_s, 1),
        }
        plot_training_curves(self.out / METRICS_FILE, self.out / CURVES_PNG)
        finished = self.task.finish(self.run_config)
        metrics |= finished
        metrics["pictures"] = [str(self.out / CURVES_PNG), *finished.get("pictures", [])]
        card = self.task.card(self.run_config, metrics)
        save_model(self.out, self.task.selected(), self.run_config, metrics, card)
        return metrics
