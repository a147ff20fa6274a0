"""Supervised FG-SBIR training: a Siamese embedding network with a triplet loss.

Every epoch visits each labelled training photo once with one of its sketches (augmented), in
batches whose other photos are the negatives. After each epoch the validation split (carved from
the training photos, never the test split) scores the model; the best epoch's weights are the
run's ``model.safetensors``. ``resume.pt`` is rewritten after every epoch, and running the same
command again continues from it exactly as if training had never stopped.

Under ``torchrun`` the same call trains with DistributedDataParallel: each process takes its
share of every epoch's batches, and only rank 0 evaluates and writes files.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from fgsbir.config import config_to_dict
from fgsbir.data.dataset import Dataset, Split, load_dataset
from fgsbir.data.transforms import Augmentation, PairDataset, Preprocessing
from fgsbir.device import DistributedContext
from fgsbir.errors import FgsbirError
from fgsbir.evaluate import evaluate_split, top_k
from fgsbir.losses.metric import NegativeMining, TripletLoss
from fgsbir.models.backbones import DEFAULT_BACKBONE, freeze_early_groups
from fgsbir.models.embedding import Embedder, EmbeddingNet, build_embedding_net
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
from fgsbir.viz import plot_training_curves, retrieval_grid

CURVES_PNG = "training_curves.png"
GRID_PNG = "retrieval_{split}.png"

# Settings that may change when a run is resumed; any other difference is refused.
_RESUMABLE_CHANGES = {"out", "epochs", "time_budget_s", "device"}


@dataclass
class TrainConfig:
    """Everything a supervised training run depends on (saved in the run's ``config.json``).

    The defaults are the recipe chosen on QMUL-Shoe-V1's validation split (see
    ``benchmarks/supervised_shoe_v1.py``): photos enter as Sobel edge maps and the embedding is
    a 4x4 grid of EfficientNet-Lite0's stride-16 features, at 128 px.
    """

    data: str = "synthetic"  # a data-set folder or "synthetic"
    out: str = "runs/supervised"
    format: str | None = None  # force a data-set layout instead of detecting it
    labelled_fraction: float = 1.0
    val_fraction: float = 0.1
    on_error: Literal["raise", "warn"] = "raise"
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool | str = True  # True: shipped ImageNet weights; a path: a weights file
    embedding_dim: int = 256
    dropout: float = 0.0
    feature_level: int | None = 3  # embed this feature level's map (None: the last layer's)
    pool_grid: int = 4  # pool the feature map to a grid (keeps spatial layout); 1: global
    freeze_groups: int = 0  # leading backbone layer groups (stem, stages) left untrained
    image_size: int = 128
    line_width: float = 2.0
    photo_input: Literal["rgb", "sobel"] = "sobel"  # photos as colour, or as edge maps
    epochs: int = 20
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to 0 at the last epoch
    margin: float = 0.2
    negatives: NegativeMining = "hardest"
    augment: Augmentation = field(default_factory=Augmentation)
    select_metric: Literal["acc@1", "acc@5", "acc@10", "mrr"] = "mrr"  # picks the best epoch
    seed: int = 0
    device: str | None = None  # default: CUDA when available
    time_budget_s: float | None = None  # stop before an epoch that would overrun the budget
    grid_queries: int = 8  # rows of the final retrieval-grid picture


def demo_config(out: str | Path) -> TrainConfig:
    """A small model on the built-in synthetic data set: a few minutes on two CPU cores."""
    return TrainConfig(data="synthetic", out=str(out), epochs=3)


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def model_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short README.md for a run folder."""
    lines = [
        "# FG-SBIR retrieval model",
        "",
        f"Siamese `{config['backbone']}` embedding network (one backbone shared by sketches and "
        f"photos), {config['embedding_dim']}-d L2-normalised embeddings, trained with a triplet "
        f"loss (margin {config['margin']}, {config['negatives']} in-batch negatives) on "
        f"`{config['data']}` (labelled fraction {config['labelled_fraction']}).",
        "",
        f"Inputs: {config['image_size']} px; photos padded to a white square"
        f"{' and drawn as Sobel edge maps' if config.get('photo_input') == 'sobel' else ''}, "
        f"sketches rasterised as black ink {config['line_width']} px wide; ImageNet "
        "normalisation. Features: "
        + (
            f"feature level {config['feature_level']} of the backbone"
            if config.get("feature_level") is not None
            else "the backbone's last feature map"
        )
        + f", average-pooled to a {config.get('pool_grid', 1)}x{config.get('pool_grid', 1)} grid.",
        "",
        f"Best epoch on the validation split: {metrics.get('best_epoch')}.",
        "",
        "| split | acc@1 | acc@5 | acc@10 | mean rank | MRR | queries | gallery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        if split in metrics:
            m = metrics[split]
            lines.append(
                f"| {split} | {m['acc@1']:.3f} | {m['acc@5']:.3f} | {m['acc@10']:.3f} | "
                f"{m['mean_rank']:.2f} | {m['mrr']:.3f} | {m['n_queries']} | {m['n_gallery']} |"
            )
    lines += [
        "",
        "Use it with `fgsbir evaluate RUN_DIR --data DATA` or, in Python, "
        "`fgsbir.models.embedding.load_embedder(RUN_DIR)`.",
        "",
    ]
    return "\n".join(lines)


def write_retrieval_grid(
    split: Split, sketch_emb: np.ndarray, photo_emb: np.ndarray, out_png: Path, n_queries: int
) -> None:
    """A retrieval grid of ``n_queries`` sketches spread evenly over an embedded ``split``."""
    picked = np.unique(np.linspace(0, len(split.sketches) - 1, n_queries).round().astype(int))
    ranked = top_k(sketch_emb[picked], photo_emb, 5)
    records = [split.sketches[i] for i in picked]
    retrieval_grid(
        [r.sketch for r in records],
        [[split.photos[j] for j in row] for row in ranked],
        [split.photos[r.photo] for r in records],
        out_png,
    )


class _Trainer:
    """One training run; the state that resume.pt captures lives in its attributes."""

    def __init__(self, config: TrainConfig, ctx: DistributedContext) -> None:
        self.config = config
        self.ctx = ctx
        self.out = Path(config.out)
        self.run_config = {"kind": "embedding", **config_to_dict(config)}
        self.prep = Preprocessing.from_config(self.run_config)
        self.dataset: Dataset = load_dataset(
            config.data,
            format=config.format,
            labelled_fraction=config.labelled_fraction,
            val_fraction=config.val_fraction,
            seed=config.seed,
            on_error=config.on_error,
        )
        if not self.dataset.train.photos or not self.dataset.train.sketches:
            raise FgsbirError(f"{config.data}: no training photos with sketches")
        self.run_config["data_info"] = {
            "name": self.dataset.name,
            "format": self.dataset.format,
            **{
                f"{name}_{what}": len(getattr(getattr(self.dataset, name), what))
                for name in ("train", "val", "test")
                for what in ("photos", "sketches")
            },
        }

        self.pairs = PairDataset(self.dataset.train, self.prep, config.augment, config.seed)
        self.sampler = DistributedSampler(
            self.pairs, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed
        )
        self.loader = DataLoader(
            self.pairs,
            batch_size=config.batch_size,
            sampler=self.sampler,
            collate_fn=self.pairs.collate,
            drop_last=len(self.sampler) > config.batch_size,  # no 1-photo batch: no negatives
        )

        torch.manual_seed(config.seed)
        self.model: EmbeddingNet = build_embedding_net(self.run_config).to(ctx.device)
        freeze_early_groups(self.model.backbone, config.freeze_groups)
        self.trained: torch.nn.Module = (
            DistributedDataParallel(
                self.model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None
            )
            if ctx.is_distributed
            else self.model
        )
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        total = config.epochs * len(self.loader)
        warmup = round(config.warmup_epochs * len(self.loader))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, warmup, total)
        )
        self.criterion = TripletLoss(config.margin, config.negatives)

        self.epoch = 0
        self.step = 0
        self.best: tuple[float, int] | None = None  # (score, epoch)
        self.elapsed_s = 0.0
        self.log = MetricsLog(self.out / METRICS_FILE) if ctx.is_main else None
        self._resume()

    def _resume(self) -> None:
        state = load_resume_state(self.out)
        check_resumable(self.out, state, self.run_config, _RESUMABLE_CHANGES)
        if state is None:
            return
        restore_training_state(state, self._parts())
        self.epoch, self.step = state["epoch"], state["step"]
        self.best, self.elapsed_s = state["best"], state["elapsed_s"]
        if self.log is not None:
            self.log.truncate_after(self.step)

    def _parts(self) -> dict[str, Stateful]:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def _save_resume(self) -> None:
        save_training_state(
            self.out, self.run_config, self._parts(),
            epoch=self.epoch, step=self.step, best=self.best, elapsed_s=self.elapsed_s,
        )  # fmt: skip

    def _embedder(self) -> Embedder:
        """The model being trained, as an inference object (switches it to eval mode)."""
        return Embedder(self.model, self.prep, self.run_config, self.ctx.device)

    def _out_of_time(self, epoch_s: float) -> bool:
        """Whether another epoch of ``epoch_s`` seconds would overrun the budget (rank 0 says)."""
        budget = self.config.time_budget_s
        decision = [budget is not None and self.elapsed_s + epoch_s > budget]
        if self.ctx.is_distributed:
            dist.broadcast_object_list(decision, src=0)
        return bool(decision[0])

    def _train_epoch(self) -> float:
        self.pairs.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        self.trained.train()
        losses = []
        batches = tqdm(
            self.loader,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            disable=not self.ctx.is_main,
            leave=False,
        )
        for sketches, photos, labels in batches:
            n = len(labels)
            embeddings = self.trained(torch.cat([sketches, photos]).to(self.ctx.device))
            loss = self.criterion(embeddings[:n], embeddings[n:], labels.to(self.ctx.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            losses.append(loss.item())
            batches.set_postfix(loss=f"{losses[-1]:.4f}")
        return float(np.mean(losses))

    def _validate(self, loss: float, epoch_s: float) -> None:
        """Log the epoch, score it on the validation split and keep the best weights."""
        assert self.log is not None
        self.log.log(
            epoch=self.epoch, step=self.step, split="train", loss=loss,
            lr=self.scheduler.get_last_lr()[0], epoch_s=round(epoch_s, 2),
        )  # fmt: skip
        if self.dataset.val.sketches:
            metrics, _, _ = evaluate_split(self._embedder(), self.dataset.val)
            self.log.log(epoch=self.epoch, step=self.step, split="val", **metrics)
            score = float(metrics[self.config.select_metric])
        else:  # nothing to select with: the latest epoch is the best
            metrics, score = {}, float(self.epoch)
        if self.best is None or score > self.best[0]:
            self.best = (score, self.epoch)
            save_model(
                self.out, self.model, self.run_config, {"val": metrics, "best_epoch": self.epoch}
            )
        self.model.train()

    def fit(self) -> None:
        epoch_s = 0.0
        while self.epoch < self.config.epochs and not self._out_of_time(epoch_s):
            started = time.monotonic()
            loss = self._train_epoch()
            self.epoch += 1
            if self.ctx.is_main:
                self._validate(loss, time.monotonic() - started)
            epoch_s = time.monotonic() - started
            self.elapsed_s += epoch_s
            if self.ctx.is_main:
                self._save_resume()
            self.ctx.barrier()

    def finish(self) -> dict[str, Any]:
        """Score the selected weights on validation and test, draw pictures, write the card."""
        self.model.load_state_dict(load_model_state(self.out))
        embedder = self._embedder()
        assert self.best is not None
        metrics: dict[str, Any] = {
            "best_epoch": self.best[1],
            "epochs_trained": self.epoch,
            "train_s": round(self.elapsed_s, 1),  # training and validation, over all sessions
        }
        plot_training_curves(self.out / METRICS_FILE, self.out / CURVES_PNG)
        metrics["pictures"] = [str(self.out / CURVES_PNG)]
        for name in ("val", "test"):
            split = getattr(self.dataset, name)
            if split.sketches:
                metrics[name], sketch_emb, photo_emb = evaluate_split(embedder, split)
                grid = self.out / GRID_PNG.format(split=name)
                write_retrieval_grid(split, sketch_emb, photo_emb, grid, self.config.grid_queries)
                metrics["pictures"].append(str(grid))
        save_model(
            self.out, self.model, self.run_config, metrics, model_card(self.run_config, metrics)
        )
        return metrics


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) a run; returns the selected model's metrics (on rank 0; ``{}`` elsewhere).

    The result holds ``best_epoch``, ``epochs_trained``, ``train_s``, ``val`` and ``test`` metric
    dicts (where the splits have sketches) and ``pictures`` (paths of the PNG files written).
    """
    ctx = DistributedContext.from_environment(config.device)
    try:
        trainer = _Trainer(config, ctx)
        trainer.fit()
        return trainer.finish() if ctx.is_main else {}
    finally:
        ctx.close()
