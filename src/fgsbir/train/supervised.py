"""Supervised FG-SBIR training: a Siamese embedding network with a triplet loss.

Every epoch visits each labelled training photo once with one of its sketches (augmented), in
batches whose other photos are the negatives. The validation split (carved from the training
photos, never the test split) picks the best epoch. :class:`RetrievalTask` is also the base of
the semi-supervised task, which trains the same model with more losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fgsbir.config import (
    DATA_SETTINGS_ADDED_LATER,
    Count,
    DataConfig,
    Fraction,
    Natural,
    NonNegative,
    Positive,
    RunOptions,
    with_section_defaults,
)
from fgsbir.data.dataset import Dataset, load_data
from fgsbir.data.edge_sketches import edge_sketch_split
from fgsbir.data.sampling import cycled_batch, shuffled_batches
from fgsbir.data.transforms import Augmentation, PairDataset, Preprocessing
from fgsbir.data.unlabelled import UnlabelledPool
from fgsbir.errors import FgsbirError
from fgsbir.evaluate import evaluate_split, write_retrieval_grid
from fgsbir.inference import Embedder
from fgsbir.losses.metric import NegativeMining, TripletLoss
from fgsbir.models.backbones import freeze_early_groups
from fgsbir.models.embedding import EmbeddingArch, EmbeddingNet, build_embedding_net
from fgsbir.runs import Stateful
from fgsbir.train.loop import Progress, Task, fit, optimise
from fgsbir.train.photo_side import PhotoLosses, PhotoSide

GRID_PNG = "retrieval_{split}.png"


@dataclass
class EdgePairs:
    """Pseudo-pairs of the unlabelled photos: each photo with its traced edge drawing
    (:mod:`fgsbir.data.edge_sketches`), augmented like the real pairs. Off by default."""

    epochs: Natural = 0  # epochs on edge pairs alone, before the labelled pairs
    per_batch: Natural = 0  # edge pairs added to every batch of labelled pairs
    max_points: Count = 80  # longest edge drawing (its shortest strokes go first)
    threshold: Fraction = 0.5  # edge strength that is ink, relative to the strong edges


Batch = tuple[Literal["pairs", "edges"], list[int]]
"""Indices of labelled pairs or of edge pairs."""


@dataclass
class TrainConfig:
    """Everything a supervised training run depends on (saved in the run's ``config.json``).

    The defaults are the recipe chosen on QMUL-Shoe-V1's validation split (see
    ``benchmarks/supervised_shoe_v1.py`` and the defaults of :class:`EmbeddingArch` and
    :class:`Preprocessing`).

    ``average_epochs`` switches on weight averaging: an exponential moving average of the weights
    (``torch.optim.swa_utils.AveragedModel``, batch-norm statistics included) whose time constant
    is that many epochs of labelled pairs, updated after every step; validation scores it and the
    run keeps it instead of the trained weights.
    """

    data: DataConfig = field(default_factory=DataConfig)
    run: RunOptions = field(default_factory=lambda: RunOptions(out="runs/supervised"))
    model: EmbeddingArch = field(default_factory=EmbeddingArch)
    prep: Preprocessing = field(default_factory=Preprocessing)
    freeze_groups: int = 0  # leading backbone layer groups (stem, stages) left untrained
    batch_size: Count = 16
    lr: Positive = 3e-4
    weight_decay: NonNegative = 1e-4
    warmup_epochs: NonNegative = 1.0  # linear warm-up, then cosine decay to 0 at the last epoch
    margin: NonNegative = 0.2
    negatives: NegativeMining = "hardest"
    augment: Augmentation = field(default_factory=Augmentation)
    edges: EdgePairs = field(default_factory=EdgePairs)
    photo: PhotoLosses = field(default_factory=PhotoLosses)
    select_metric: Literal["acc@1", "acc@5", "acc@10", "mrr"] = "mrr"  # picks the best epoch
    average_epochs: NonNegative = 0.0  # >0: keep a moving average of the weights (see above)
    grid_queries: Count = 8  # rows of the final retrieval-grid picture

    @property
    def uses_unlabelled(self) -> bool:
        """Whether a part of this recipe learns from unlabelled photos."""
        return bool(self.edges.epochs or self.edges.per_batch or self.photo.on)


def demo_config(out: str | Path) -> TrainConfig:
    """A small model on the built-in synthetic data set: a few minutes on two CPU cores."""
    return TrainConfig(run=RunOptions(out=str(out), epochs=3))


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def data_info(dataset: Dataset) -> dict[str, Any]:
    """What ``config.json`` records of a loaded data set."""
    return {
        "name": dataset.name,
        "format": dataset.format,
        "unlabelled_photos": len(dataset.unlabelled),
        **{
            f"{name}_{what}": len(getattr(getattr(dataset, name), what))
            for name in ("train", "val", "test")
            for what in ("photos", "sketches")
        },
    }


def unlabelled_parts(config: dict[str, Any]) -> str:
    """Which parts of a run (its ``config.json``) learned from unlabelled photos, in words."""
    edges, photo = config.get("edges", {}), config.get("photo", {})
    parts = []
    if edges.get("epochs") or edges.get("per_batch"):
        parts.append(
            f"edge pseudo-pairs ({edges['epochs']} leading epochs, {edges['per_batch']} per batch)"
        )
    weights = {"neighbourhood": "neighbourhood preservation", "distill": "relation distillation",
               "intra": "intra-modal triplets"}  # fmt: skip
    parts += [f"{name} (weight {photo[key]})" for key, name in weights.items() if photo.get(key)]
    if photo.get("pool_negatives"):
        parts.append("negatives of the retrieval triplet loss")
    if photo.get("meta_step") and any(photo.get(key) for key in weights):
        parts.append(f"the photo-side losses after a look-ahead of {photo['meta_step']} steps")
    if parts:
        count = config["data_info"]["unlabelled_photos"]
        return f"{count} unlabelled photos through " + ", ".join(parts)
    return "not used"


def model_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short README.md for a retrieval run folder."""
    arch, prep, data = config["model"], config["prep"], config["data"]
    level = arch["feature_level"]
    members, best = config.get("members", 1), metrics.get("best_epoch")
    if isinstance(best, list):
        best = ", ".join(map(str, best)) + " (one per member)"
    lines = [
        "# FG-SBIR retrieval model",
        "",
        *(
            [
                f"An ensemble of {members} models, each as described below: the same recipe "
                f"trained {members} times on the same splits from other initial weights, their "
                "embeddings concatenated (scaled to unit length). The member runs are in "
                "`member0/`, `member1/`, ...",
                "",
            ]
            if members > 1
            else []
        ),
        f"Siamese `{arch['backbone']}` embedding network (one backbone shared by sketches and "
        f"photos), {arch['embedding_dim']}-d L2-normalised embeddings, trained with a triplet "
        f"loss (margin {config['margin']}, {config['negatives']} in-batch negatives) on "
        f"`{data['path']}` (labelled fraction {data['labelled_fraction']}, seed {data['seed']}).",
        "",
        f"Inputs: {prep['image_size']} px; photos padded to a white square"
        f"{' and drawn as Sobel edge maps' if prep['photo_input'] == 'sobel' else ''}, "
        f"sketches rasterised as black ink {prep['line_width']} px wide; ImageNet "
        "normalisation. Features: "
        + (f"feature level {level} of the backbone" if level is not None else "the last map")
        + f", average-pooled to a {arch['pool_grid']}x{arch['pool_grid']} grid.",
        "",
        f"Photos without sketches: {unlabelled_parts(config)}.",
        "",
        *(
            [
                "Weights: an exponential moving average of the trained weights over about "
                f"{config['average_epochs']} epochs, which validation scored and the run kept.",
                "",
            ]
            if config.get("average_epochs")
            else []
        ),
        f"Best epoch on the validation split: {best} of {metrics.get('epochs_trained')}.",
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
        "`fgsbir.inference.load_embedder(RUN_DIR)`.",
        "",
    ]
    return "\n".join(lines)


def score_splits(
    embedder: Embedder, dataset: Dataset, out: Path, grid_queries: int
) -> dict[str, Any]:
    """``val`` and ``test`` metrics of a trained model (for the splits with sketches), and their
    retrieval grids in ``out`` (``pictures``)."""
    result: dict[str, Any] = {"pictures": []}
    for name in ("val", "test"):
        split = getattr(dataset, name)
        if split.sketches:
            result[name], sketch_emb, photo_emb = evaluate_split(embedder, split)
            grid = out / GRID_PNG.format(split=name)
            write_retrieval_grid(split, sketch_emb, photo_emb, grid, grid_queries)
            result["pictures"].append(str(grid))
    return result


TRAIN_SETTINGS_ADDED_LATER = {"average_epochs": 0.0}
""":class:`TrainConfig`'s own settings added after runs were saved, at the values those runs
trained with."""

SETTINGS_ADDED_LATER = {
    "photo": {"meta_step": 0.0, "pool_negatives": False},
    "data": DATA_SETTINGS_ADDED_LATER,
    "supervised": TRAIN_SETTINGS_ADDED_LATER,  # a semi-supervised run's start recipe
}
"""Settings added to a section (at any depth) after runs were saved, at the values those runs
trained with: :meth:`RetrievalTask.upgraded` adds them (and :data:`TRAIN_SETTINGS_ADDED_LATER`)
to a stopped run's recorded settings."""


class RetrievalTask(Task):
    """Triplet training of an :class:`EmbeddingNet` on the labelled pairs."""

    config: TrainConfig

    def setup(self) -> dict[str, Any]:
        config = self.config
        self.dataset = load_data(config.data)
        if not self.dataset.train.photos or not self.dataset.train.sketches:
            raise FgsbirError(f"{config.data.path}: no training photos with sketches")
        self.prep = self.preprocessing()
        self.pairs = PairDataset(self.dataset.train, self.prep, config.augment, config.data.seed)
        self.edge_pairs = self.build_edge_pairs()
        self.model = self.build_model().to(self.ctx.device)
        self.photo_side = self.build_photo_side()
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        self.scheduler = self.build_scheduler()
        self.averaged = self.build_averaged()
        self.triplet = TripletLoss(config.margin, config.negatives)
        info = data_info(self.dataset)
        if self.edge_pairs is not None:
            info["edge_pairs"] = len(self.edge_pairs)
        return {"data_info": info}

    def upgraded(self, saved: dict[str, Any]) -> dict[str, Any]:
        own = {k: v for k, v in TRAIN_SETTINGS_ADDED_LATER.items() if hasattr(self.config, k)}
        saved = {**own, **saved}  # a semi run's config is no TrainConfig: none of its own
        for section, added in SETTINGS_ADDED_LATER.items():
            saved = with_section_defaults(saved, section, added)
        return saved

    def _need_unlabelled(self, what: str) -> None:
        if not self.dataset.unlabelled:
            raise FgsbirError(
                f"{self.config.data.path}: {what} need unlabelled photos (folders of photos, or "
                "a labelled fraction below 1)"
            )

    def build_photo_side(self) -> PhotoSide | None:
        config = self.config
        if not config.photo.on:
            return None
        self._need_unlabelled("photo-side losses")
        pool = UnlabelledPool(self.dataset.unlabelled, self.prep, self.ctx.device, config.data.seed)
        return PhotoSide(config.photo, self.dataset.train.photos, pool, config.augment, self.ctx)

    def gallery(self, photo_emb: torch.Tensor, extra_emb: list[torch.Tensor]) -> torch.Tensor:
        """The photos the labelled sketches' triplet loss ranks against (see
        :meth:`PhotoSide.gallery`): the paired ``photo_emb`` without a photo side."""
        if self.photo_side is None:
            return photo_emb
        return self.photo_side.gallery(photo_emb, extra_emb)

    def photo_files(self, labels: torch.Tensor) -> list[Path]:
        """The photo files of a :meth:`labelled_batch`'s labels (training or edge-pair photos)."""
        offset = len(self.dataset.train.photos)
        edge_photos = self.edge_pairs.split.photos if self.edge_pairs is not None else []
        return [
            self.dataset.train.photos[label] if label < offset else edge_photos[label - offset]
            for label in labels.tolist()
        ]

    def model_arch(self) -> EmbeddingArch:
        return self.config.model

    def build_edge_pairs(self) -> PairDataset | None:
        edges, data = self.config.edges, self.config.data
        if not (edges.epochs or edges.per_batch):
            return None
        self._need_unlabelled("edge pairs")
        split = edge_sketch_split(
            self.dataset.unlabelled, edges.max_points, threshold=edges.threshold
        )
        return PairDataset(split, self.prep, self.config.augment, data.seed)

    @property
    def leading_epochs(self) -> int:  # type: ignore[override]
        return self.config.edges.epochs if self.edge_pairs is not None else 0

    def preprocessing(self) -> Preprocessing:
        return self.config.prep

    def build_model(self) -> EmbeddingNet:
        model = build_embedding_net(self.model_arch())
        freeze_early_groups(model.backbone, self.config.freeze_groups)
        return model

    def build_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        epochs = range(self.leading_epochs + self.config.run.epochs)
        steps = [len(self.ctx.share(self.batches(epoch))) for epoch in epochs]
        total = sum(steps)
        warmup = round(self.config.warmup_epochs * steps[0])
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, warmup, total)
        )

    def build_averaged(self) -> AveragedModel | None:
        """The moving average of the weights (see :class:`TrainConfig`), if switched on."""
        epochs = self.config.average_epochs
        if not epochs:
            return None
        steps_per_epoch = len(self.ctx.share(self.batches(self.leading_epochs)))
        decay = math.exp(-1.0 / (epochs * steps_per_epoch))
        averaged = AveragedModel(
            self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )
        return averaged.eval().requires_grad_(False)

    def parts(self) -> dict[str, Stateful]:
        parts = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler}
        return parts | ({"averaged": self.averaged} if self.averaged is not None else {})

    def selected(self) -> EmbeddingNet:
        return self.model if self.averaged is None else self.averaged.module

    def train_mode(self) -> None:
        self.model.train()

    def batches(self, epoch: int) -> list[Batch]:
        """Edge pairs in the leading epochs, then labelled pairs."""
        edges = epoch < self.leading_epochs
        data = self.edge_pairs if edges and self.edge_pairs else self.pairs
        order = shuffled_batches(len(data), self.config.batch_size, self.config.data.seed, epoch)
        return [("edges" if edges else "pairs", indices) for indices in order]

    def labelled_batch(self, batch: Batch, progress: Progress) -> tuple[torch.Tensor, ...]:
        """``(sketches, photos, labels)`` of ``batch`` with this step's edge pairs (if any) added,
        augmented as in ``progress.epoch``, on the training device. Edge photos' labels follow
        the training photos' so that they never collide."""
        source, indices = batch
        parts = [(self.pairs, indices, 0)]
        offset = len(self.dataset.train.photos)
        if source == "edges" and self.edge_pairs is not None:
            parts = [(self.edge_pairs, indices, offset)]
        elif self.config.edges.per_batch and self.edge_pairs is not None:
            position = progress.step * self.ctx.world_size + self.ctx.rank
            n, size = len(self.edge_pairs), self.config.edges.per_batch
            extra = cycled_batch(n, size, position, self.config.data.seed, stream=7)
            parts.append((self.edge_pairs, extra, offset))
        collated = []
        for data, chosen, first_label in parts:
            data.set_epoch(progress.epoch)
            sketches, photos, labels = data.collate([data[i] for i in chosen])
            collated.append((sketches, photos, labels + first_label))
        return tuple(
            torch.cat(column).to(self.ctx.device) for column in zip(*collated, strict=True)
        )

    def step(self, batch: Batch, progress: Progress) -> dict[str, float]:
        sketches, photos, labels = self.labelled_batch(batch, progress)
        n = len(labels)
        extra, extra_files = [], []
        if self.photo_side is not None:
            position = progress.step * self.ctx.world_size + self.ctx.rank
            extra, extra_files = self.photo_side.inputs(position)
        inputs = torch.cat([sketches, photos, *extra])
        embeddings = self.model(inputs)
        sizes = [n, n, *map(len, extra)]
        sketch_emb, photo_emb, *extra_emb = embeddings.split(sizes)
        loss = self.triplet(sketch_emb, self.gallery(photo_emb, extra_emb), labels)
        stats = {"triplet": loss.item()}
        if self.photo_side is not None:
            lr = self.optimizer.param_groups[0]["lr"]
            ahead = self.photo_side.ahead(self.model, inputs, embeddings, loss, lr)
            sketch_at, photo_at, *extra_at = ahead.split(sizes)
            files = self.photo_files(labels) + extra_files
            photo_loss, photo_stats = self.photo_side.loss(sketch_at, photo_at, extra_at, files)
            loss, stats = loss + photo_loss, stats | photo_stats
        stepped = optimise(loss, self.optimizer, self.ctx, scheduler=self.scheduler)
        if stepped and self.averaged is not None:
            self.averaged.update_parameters(self.model)
        lr = self.scheduler.get_last_lr()[0]
        return stats | {"loss": loss.item(), "lr": lr, "skipped": not stepped}

    def embedder(self) -> Embedder:
        """The selected model (the trained one or its average), as an inference object (switches
        it to eval mode)."""
        return Embedder(self.selected(), self.prep, device=self.ctx.device)

    def validate(self) -> tuple[dict[str, Any], float] | None:
        if not self.dataset.val.sketches:
            return None
        metrics, _, _ = evaluate_split(self.embedder(), self.dataset.val)
        return metrics, float(metrics[self.config.select_metric])

    def finish(self, run_config: dict[str, Any]) -> dict[str, Any]:
        """Scores on validation and test, with retrieval grids."""
        return score_splits(
            self.embedder(), self.dataset, Path(self.config.run.out), self.config.grid_queries
        )

    def card(self, run_config: dict[str, Any], metrics: dict[str, Any]) -> str:
        return model_card(run_config, metrics)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) a retrieval run; returns the selected model's metrics (on the main
    process; ``{}`` on the others): ``best_epoch``, ``epochs_trained``, ``steps``, ``train_s``,
    ``val`` and ``test`` metric dicts (where the splits have sketches) and ``pictures``."""
    return fit(RetrievalTask(config))
