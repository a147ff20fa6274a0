"""Training the photo-to-sketch generator on photo-sketch pairs (a task of the training loop).

The backbone is frozen by default, so the feature maps of every training image (and of its mirror
image, for flip augmentation) are computed once (:mod:`fgsbir.data.sequences`), with the traced
edge points the edge-pointer decoder needs (``model.decoder``, see
:func:`~fgsbir.models.generator.create_generator`); the projection, attention, latent and decoder
learn on top. With ``pretrain_data`` the run starts with ``pretrain_epochs`` epochs on that data
-- its photo-sketch pairs; for sketch-only data (a QMUL stroke pickle without photos, a sketch-rnn
``.npz``) the rendered sketch as the image input; for a folder of photos only, the photos with
their traced edge maps as sketches (:mod:`fgsbir.data.edge_sketches`) -- before the
``run.epochs`` on the pairs of ``data``. With ``pretrain_mix`` the epochs on the pairs take
batches of the pre-training data too, ``pretrain_mix`` of them per batch of pairs.

Each epoch is scored by the per-point NLL of the validation sketches (``z`` = the posterior mean).
Drawing with a trained generator is :mod:`fgsbir.inference`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import floor
from pathlib import Path
from typing import Any

import torch

from fgsbir.config import (
    Count,
    DataConfig,
    Natural,
    NonNegative,
    Positive,
    RunOptions,
)
from fgsbir.data.dataset import Dataset, SketchRecord, Split, load_data, load_dataset
from fgsbir.data.edge_sketches import edge_sketch_split
from fgsbir.data.sampling import cycled_batch, shuffled_batches
from fgsbir.data.sequences import (
    CANVAS,
    ImageEncoder,
    SequenceSet,
    drawable_pairs,
    heldout_set,
    paired_set,
    prepared_sketches,
    sketch_only_set,
)
from fgsbir.errors import FgsbirError
from fgsbir.inference import TrainedGenerator, sequence_nll, write_generated_grid
from fgsbir.losses.sequence import kl_loss, kl_weight, point_nll
from fgsbir.models.generator import GeneratorArch, PhotoToSketch, create_generator
from fgsbir.runs import Stateful
from fgsbir.sketch.io import read_sketchrnn_npz
from fgsbir.sketch.strokes import scale_factor
from fgsbir.train.loop import Progress, Task, fit, optimise

GRID_PNG = "generated_{split}.png"
PRETRAIN, PAIRS = "pretrain", "pairs"  # the data set a batch is of


@dataclass
class GeneratorConfig:
    """Everything a generator training run depends on (saved in the run's ``config.json``)."""

    data: DataConfig = field(default_factory=DataConfig)
    run: RunOptions = field(default_factory=lambda: RunOptions(out="runs/generator", epochs=30))
    model: GeneratorArch = field(default_factory=GeneratorArch)
    pretrain_data: str | None = None  # data folder (pairs, sketches or photos) or sketch-rnn .npz
    pretrain_epochs: Natural = 0
    pretrain_mix: NonNegative = 0.0  # pre-training batches per batch of pairs after those epochs
    pretrained: bool | str = True  # backbone: shipped ImageNet weights, a weights file, or none
    finetune_backbone: bool = False  # False: frozen backbone, feature maps computed once
    line_width: Positive = 2.5  # of rendered sketches fed as images (pre-training)
    rdp_epsilon: NonNegative = 3.0  # RDP tolerance on the CANVAS
    batch_size: Count = 32
    lr: Positive = 1e-3
    lr_decay: Positive = 0.9999  # per step
    min_lr: NonNegative = 1e-5
    grad_clip: Positive = 1.0
    kl_floor: NonNegative = 0.2
    kl_weight_start: NonNegative = 0.01
    kl_weight_end: NonNegative = 1.0
    kl_decay: Positive = 0.99995  # per step
    flip: bool = True  # mirror photo and sketch together
    scale_jitter: NonNegative = 0.1  # random x/y stretch of the offsets, in [1 - j, 1 + j]
    grid_rows: Count = 8  # photos in the final grid picture


def nll_table(metrics: dict[str, Any]) -> list[str]:
    """A model card's table of a generator run's NLL on the validation and test sketches."""
    lines = ["| split | NLL per point | sketches |", "|---|---|---|"]
    for split in ("val", "test"):
        if split in metrics:
            scores = metrics[split]
            lines.append(f"| {split} | {scores['nll']:.4f} | {scores['n_sketches']} |")
    return lines


def model_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short README.md for a generator run folder."""
    arch = config["model"]
    pointers = (
        f" and pointers to up to {arch['edge_points']} traced edge points of the photo, offsets "
        "drawn relative to the points they point at"
        if arch["decoder"] == "edge_pointer"
        else ""
    )
    pretraining = ""
    if config["pretrain_data"] and config["data_info"]["pretrain_sketches"]:
        epochs, mix = config["pretrain_epochs"], config["pretrain_mix"]
        source = f"`{config['pretrain_data']}` ({config['data_info']['pretrain_input']})"
        if epochs:
            pretraining = f" after {epochs} epochs on {source}"
        if mix:
            pretraining += (
                f", then mixed in at {mix:g} of its batches per batch of pairs"
                if epochs
                else f" with {source} mixed in at {mix:g} batches per batch of pairs"
            )
    lines = [
        "# Photo-to-sketch generator",
        "",
        f"`{arch['backbone']}` photo encoder ({arch['image_size']} px, "
        f"{'fine-tuned' if config['finetune_backbone'] else 'frozen'}), {arch['z_dim']}-d "
        f"Gaussian latent, LSTM decoder ({arch['hidden']} units) with additive attention over "
        f"the feature map{pointers}, and a {arch['components']}-component mixture-density "
        "head; draws "
        f"stroke-5 sketches of up to {arch['max_points']} points.",
        "",
        f"Trained on `{config['data']['path']}`{pretraining}. Sketches on a {CANVAS:g} canvas, "
        f"RDP epsilon {config['rdp_epsilon']}, offsets divided by the scale factor "
        f"{config['scale']:.4f}.",
        "",
        f"Best epoch on the validation split: {metrics.get('best_epoch')}; "
        f"skipped non-finite steps: {metrics.get('skipped_steps', 0)}.",
        "",
        *nll_table(metrics),
        "",
        "Draw with `fgsbir generate RUN_DIR PHOTO... --out DIR` or, in Python, "
        "`fgsbir.inference.load_generator(RUN_DIR).draw(photos)`.",
        "",
    ]
    return "\n".join(lines)


def pretrain_split(config: GeneratorConfig) -> tuple[Split, str]:
    """The training split of the pre-training source and what the decoder looks at in it: a
    sketch-rnn ``.npz`` or sketch-only data (rendered sketches), a data folder with pairs
    (photos), or a folder of photos only (paired with their traced edge maps)."""
    source = config.pretrain_data
    if not source or not (config.pretrain_epochs or config.pretrain_mix):
        return Split(), "none"
    if source.endswith(".npz"):
        sketches = read_sketchrnn_npz(source).get("train", [])
        records = [SketchRecord(s, None, f"{source}:train/{i}") for i, s in enumerate(sketches)]
        return Split([], records), "rendered sketches"
    data = load_dataset(
        source, val_fraction=0.0, seed=config.data.seed, on_error=config.data.on_error
    )
    if data.train.sketches or not data.unlabelled:
        paired = drawable_pairs(data.train).sketches
        return data.train, "photos" if paired else "rendered sketches"
    traced = edge_sketch_split(data.unlabelled, config.model.max_points)
    return traced, "photos, with their traced edge maps as sketches"


def generator_report(
    generator: TrainedGenerator, dataset: Dataset, out: str | Path, rows: int
) -> dict[str, Any]:
    """A trained generator's NLL on the validation and test sketches, and a grid of ``rows`` of
    its sketches (of the test photos, else the validation ones) in the run folder ``out``."""
    result: dict[str, Any] = {"pictures": []}
    for name in ("val", "test"):
        scores = generator.nll(getattr(dataset, name))
        if scores is not None:
            result[name] = scores
    shown = "test" if dataset.test.sketches else "val"
    split: Split = getattr(dataset, shown)
    if split.sketches:
        grid = Path(out) / GRID_PNG.format(split=shown)
        write_generated_grid(generator, split, grid, rows)
        result["pictures"].append(str(grid))
    return result


class GeneratorTask(Task):
    """Maximum-likelihood training of a :class:`PhotoToSketch` (sketch-rnn's loss: mixture NLL of
    the offsets, pen-state cross-entropy, and a floored, annealed KL term)."""

    kind = "generator"
    config: GeneratorConfig

    def setup(self) -> dict[str, Any]:
        config, device = self.config, self.ctx.device
        if config.pretrain_mix and not config.pretrain_data:
            raise FgsbirError("pretrain_mix needs pretrain_data to take batches of")
        arch = config.model
        self.dataset = load_data(config.data)
        train = drawable_pairs(self.dataset.train)
        if not train.sketches:
            raise FgsbirError(f"{config.data.path}: no photo-sketch pairs to train on")
        limit = (config.rdp_epsilon, arch.max_points)
        train_sketches = prepared_sketches([r.sketch for r in train.sketches], *limit)
        pretrain, pretrain_input = pretrain_split(config)
        pretrain_pairs = drawable_pairs(pretrain)  # photos as the input where the source has them
        pretrain_records = pretrain_pairs.sketches or [
            r for r in pretrain.sketches if not r.sketch.is_empty
        ]
        pretrain_sketches = prepared_sketches([r.sketch for r in pretrain_records], *limit)
        self.scale = scale_factor([s.to_stroke3() for s in train_sketches + pretrain_sketches])

        self.model = create_generator(arch, CANVAS / self.scale, config.pretrained).to(device)
        if not config.finetune_backbone:
            self.model.backbone.requires_grad_(False)
        encode = ImageEncoder(self.model, not config.finetune_backbone, device)
        self.train_set = paired_set(train, train_sketches, self.scale, arch, encode, config.flip)
        self.pretrain_set: SequenceSet | None = None
        if pretrain_pairs.sketches:
            self.pretrain_set = paired_set(
                pretrain_pairs, pretrain_sketches, self.scale, arch, encode, config.flip
            )
        elif pretrain_sketches:
            self.pretrain_set = sketch_only_set(
                pretrain_sketches, self.scale, arch, config.line_width, encode, config.flip
            )
        self.val_set = heldout_set(
            self.dataset.val, self.model, config.rdp_epsilon, self.scale, device
        )
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=config.lr)
        floor = config.min_lr / config.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(config.lr_decay**step, floor)
        )
        return {
            "canvas": CANVAS,
            "scale": self.scale,
            "data_info": {
                "name": self.dataset.name,
                "format": self.dataset.format,
                "train_sketches": len(train.sketches),
                "val_sketches": len(self.dataset.val.sketches),
                "test_sketches": len(self.dataset.test.sketches),
                "pretrain_sketches": len(pretrain_sketches),
                "pretrain_input": pretrain_input,
            },
        }

    @property
    def leading_epochs(self) -> int:
        return self.config.pretrain_epochs if self.pretrain_set is not None else 0

    def upgraded(self, saved: dict[str, Any]) -> dict[str, Any]:
        # runs saved before it existed mixed in nothing
        return super().upgraded({"pretrain_mix": 0.0, **saved})

    def parts(self) -> dict[str, Stateful]:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def selected(self) -> PhotoToSketch:
        return self.model

    def train_mode(self) -> None:
        self.model.train()
        if not self.config.finetune_backbone:
            self.model.backbone.eval()  # frozen: its batch-norm statistics stay ImageNet's

    def batches(self, epoch: int) -> list[tuple[str, list[int]]]:
        """Pre-training batches in the leading epochs; then batches of pairs, each followed by
        its share of ``pretrain_mix`` pre-training batches. Shares add up over the epochs (0.25
        with two batches of pairs an epoch: one pre-training batch every other epoch), and the
        mixed-in batches walk through the pre-training data in seeded passes."""
        size, seed, pretrain = self.config.batch_size, self.config.data.seed, self.pretrain_set
        if pretrain is not None and epoch < self.leading_epochs:
            order = shuffled_batches(len(pretrain), size, seed, epoch, drop_last=False)
            return [(PRETRAIN, batch) for batch in order]
        order = shuffled_batches(len(self.train_set), size, seed, epoch, drop_last=False)
        mix = Fraction(str(self.config.pretrain_mix))  # exact: 0.1 is one batch in ten
        done = (epoch - self.leading_epochs) * len(order)  # batches of pairs in earlier epochs
        batches = []
        for count, batch in enumerate(order, done):
            batches.append((PAIRS, batch))
            if pretrain is not None:
                for position in range(floor(mix * count), floor(mix * (count + 1))):
                    mixed = cycled_batch(len(pretrain), size, position, seed, stream=6)
                    batches.append((PRETRAIN, mixed))
        return batches

    def step(self, batch: tuple[str, list[int]], progress: Progress) -> dict[str, float]:
        config, device = self.config, self.ctx.device
        source, indices = batch
        data = self.pretrain_set if source == PRETRAIN else self.train_set
        assert data is not None
        index = torch.tensor(indices)
        variant = torch.randint(data.strokes5.shape[0], index.shape)
        images, targets, lengths = (t.to(device) for t in data.batch(index, variant))
        encoding = (
            self.model.encode(images) if config.finetune_backbone else self.model.encode_map(images)
        )
        if config.scale_jitter > 0:  # the photo's edge points (if used) stretch with the sketch
            stretch = 1.0 + config.scale_jitter * (2.0 * torch.rand(len(index), 1, 2) - 1.0)
            stretch = stretch.to(device)
            targets = torch.cat([targets[..., :2] * stretch, targets[..., 2:]], -1)
            encoding = encoding.stretched(stretch)
        mixture, mu, log_var = self.model(encoding, targets)
        nll = point_nll(mixture, targets, lengths)
        kl = kl_loss(mu, log_var, config.kl_floor)
        weight = kl_weight(
            progress.step, config.kl_weight_start, config.kl_weight_end, config.kl_decay
        )
        loss = nll + weight * kl
        stepped = optimise(
            loss, self.optimizer, self.ctx, clip=config.grad_clip, scheduler=self.scheduler
        )
        return {
            "loss": loss.item(),
            "nll": nll.item(),
            "kl": kl.item(),
            "kl_weight": weight,
            "lr": self.scheduler.get_last_lr()[0],
            "pretraining": float(source == PRETRAIN),
            "skipped": not stepped,
        }

    def validate(self) -> tuple[dict[str, Any], float] | None:
        if self.val_set is None:
            return None
        metrics = sequence_nll(self.model, self.val_set, self.ctx.device)
        return metrics, -metrics["nll"]

    def finish(self, run_config: dict[str, Any]) -> dict[str, Any]:
        generator = TrainedGenerator(self.model, run_config, self.ctx.device)
        return generator_report(generator, self.dataset, self.config.run.out, self.config.grid_rows)

    def card(self, run_config: dict[str, Any], metrics: dict[str, Any]) -> str:
        return model_card(run_config, metrics)


def train_generator(config: GeneratorConfig) -> dict[str, Any]:
    """Train (or resume) a generator run; returns the selected model's metrics: ``best_epoch``,
    ``epochs_trained``, ``skipped_steps``, ``val`` and ``test`` NLL dicts (see
    :func:`fgsbir.inference.sequence_nll`, where the splits have sketches) and ``pictures``."""
    return fit(GeneratorTask(config))
