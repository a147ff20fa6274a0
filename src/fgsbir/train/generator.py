"""Training the photo-to-sketch generator, loading a trained one, and drawing sketches with it.

Sketches are put on a square ``CANVAS`` (fitted, centred, as the rasteriser does), simplified by
RDP, limited to ``model.max_points`` points and turned into stroke-5 in units of one data-set-wide
scale factor (stored in the run's ``config.json``). The backbone is frozen by default, so the
feature maps of every training image (and of its mirror image, for flip augmentation) are computed
once; the projection, attention, latent and decoder learn on top. With ``pretrain_data`` the
run starts with ``pretrain_epochs`` epochs on that data -- its photo-sketch pairs; for
sketch-only data (a QMUL stroke pickle without photos, a sketch-rnn ``.npz``) the rendered sketch
as the image input; for a folder of photos only, the photos with their traced edge maps as
sketches (:mod:`fgsbir.data.edge_sketches`) -- before the ``epochs`` on the pairs of ``data``.

Each epoch is scored by the per-point NLL of the validation sketches (``z`` = the posterior mean);
the best epoch's weights are the run's ``model.safetensors``. A step whose loss or gradient is not
finite is skipped and counted, so no NaN reaches the weights. ``resume.pt`` is rewritten after
every epoch; running the same command again continues from it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fgsbir.config import config_to_dict
from fgsbir.data.dataset import Dataset, SketchRecord, Split, load_dataset
from fgsbir.data.edge_sketches import edge_sketch_split
from fgsbir.data.photos import load_photo
from fgsbir.data.transforms import (
    Preprocessing,
    input_pixels,
    normalise,
    photos_to_tensor,
    sketch_images,
)
from fgsbir.device import select_device
from fgsbir.errors import FgsbirError
from fgsbir.losses.sequence import kl_loss, kl_weight, stroke_nll
from fgsbir.models.generator import (
    Encoding,
    GeneratorArch,
    PhotoToSketch,
    SampleResult,
    samples_to_sketches,
)
from fgsbir.runs import (
    METRICS_FILE,
    MetricsLog,
    Stateful,
    check_resumable,
    load_model_state,
    load_resume_state,
    load_run_config,
    restore_training_state,
    save_model,
    save_training_state,
)
from fgsbir.sketch.io import read_sketchrnn_npz, write_png, write_stroke_json, write_svg
from fgsbir.sketch.rasterise import rasterise
from fgsbir.sketch.strokes import Sketch, limit_length, scale_factor, simplify, stroke3_to_stroke5
from fgsbir.viz import plot_training_curves, sketch_photo_grid

CANVAS = 256.0
"""Side of the square canvas every training sketch is fitted to (and generated sketches use)."""
CURVES_PNG = "training_curves.png"
GRID_PNG = "generated_{split}.png"
_MAP_BATCH = 32  # images per backbone pass when caching feature maps
_WRITERS = ((".svg", write_svg), (".png", write_png), (".json", write_stroke_json))
# Settings that may change when a run is resumed; any other difference is refused.
_RESUMABLE_CHANGES = {"out", "epochs", "time_budget_s", "device", "threads"}


@dataclass
class GeneratorConfig:
    """Everything a generator training run depends on (saved in the run's ``config.json``)."""

    data: str = "synthetic"  # a data-set folder (photo-sketch pairs) or "synthetic"
    out: str = "runs/generator"
    format: str | None = None  # force a data-set layout instead of detecting it
    labelled_fraction: float = 1.0  # train on the sketches of this seeded share of the photos
    val_fraction: float = 0.1
    on_error: Literal["raise", "warn"] = "raise"
    pretrain_data: str | None = None  # data folder (pairs, sketches or photos) or sketch-rnn .npz
    pretrain_epochs: int = 0
    model: GeneratorArch = field(default_factory=GeneratorArch)
    pretrained: bool | str = True  # backbone: shipped ImageNet weights, a weights file, or none
    finetune_backbone: bool = False  # False: frozen backbone, feature maps computed once
    line_width: float = 2.5  # of rendered sketches fed as images (pre-training)
    rdp_epsilon: float = 3.0  # RDP tolerance on the CANVAS
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    lr_decay: float = 0.9999  # per step
    min_lr: float = 1e-5
    grad_clip: float = 1.0
    kl_floor: float = 0.2
    kl_weight_start: float = 0.01
    kl_weight_end: float = 1.0
    kl_decay: float = 0.99995  # per step
    flip: bool = True  # mirror photo and sketch together
    scale_jitter: float = 0.1  # random x/y stretch of the offsets, in [1 - j, 1 + j]
    seed: int = 0
    device: str | None = None  # default: CUDA when available
    threads: int | None = None  # torch CPU threads (None: leave torch's choice)
    time_budget_s: float | None = None  # stop before an epoch that would overrun the budget
    grid_rows: int = 8  # photos in the final grid picture


def on_canvas(sketch: Sketch, size: float = CANVAS) -> Sketch:
    """The sketch fitted into a ``size x size`` canvas (aspect kept, centred)."""
    k = size / max(sketch.width, sketch.height)
    dx, dy = (size - k * sketch.width) / 2.0, (size - k * sketch.height) / 2.0
    moved = sketch.transform(np.array([[k, 0.0, dx], [0.0, k, dy]]))
    return Sketch(moved.points, size, size)


def prepare_sketch(sketch: Sketch, rdp_epsilon: float, max_points: int) -> Sketch:
    """A training sketch: on the square canvas, RDP-simplified and at most ``max_points`` long."""
    return limit_length(simplify(on_canvas(sketch), rdp_epsilon), max_points)


def mirrored(sketch: Sketch) -> Sketch:
    """The sketch flipped left-right on its canvas."""
    return sketch.transform(np.array([[-1.0, 0.0, sketch.width], [0.0, 1.0, 0.0]]))


@dataclass
class SequenceSet:
    """Stroke-5 targets with the images they are drawn from, in ``V`` variants (1, or 2 with the
    mirror images). ``images`` are feature maps (frozen backbone) or network inputs."""

    strokes5: torch.Tensor  # (V, N, max_points + 1, 5), offsets divided by the scale factor
    lengths: torch.Tensor  # (V, N)
    images: torch.Tensor  # (V, P, ...) float16
    owner: torch.Tensor  # (N,) index into P of each sequence's image

    def __len__(self) -> int:
        return self.strokes5.shape[1]

    def batch(
        self, index: torch.Tensor, variant: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, strokes5, lengths)`` of sequences ``index`` in the given variants."""
        return (
            self.images[variant, self.owner[index]].float(),
            self.strokes5[variant, index],
            self.lengths[variant, index],
        )


def _stroke5(sketches: Sequence[Sketch], scale: float, max_points: int) -> torch.Tensor:
    rows = [stroke3_to_stroke5(s.to_stroke3(), max_points + 1) for s in sketches]
    stroke5 = torch.from_numpy(np.stack(rows))
    stroke5[..., :2] /= scale
    return stroke5


def _lengths(sketches: Sequence[Sketch]) -> torch.Tensor:
    return torch.tensor([len(s.points) for s in sketches], dtype=torch.long)


class _ImageEncoder:
    """Turns network inputs into what :class:`SequenceSet` stores: backbone feature maps when
    the backbone is frozen, else the inputs themselves."""

    def __init__(self, model: PhotoToSketch, frozen: bool, device: torch.device) -> None:
        self.model, self.frozen, self.device = model, frozen, device

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.frozen:
            return inputs.half()
        self.model.backbone.eval()
        maps = [
            self.model.feature_map(inputs[i : i + _MAP_BATCH].to(self.device)).cpu()
            for i in range(0, len(inputs), _MAP_BATCH)
        ]
        return torch.cat(maps).half()


def photo_preprocessing(arch: GeneratorArch) -> Preprocessing:
    """How photos become the generator encoder's input."""
    return Preprocessing(arch.image_size, photo_input=arch.photo_input)


def _variants(flip: bool) -> list[bool]:
    return [False, True] if flip else [False]


def _paired_set(
    split: Split,
    sketches: Sequence[Sketch],
    scale: float,
    arch: GeneratorArch,
    encode: _ImageEncoder,
    flip: bool,
) -> SequenceSet:
    """Sequences of a split's sketches (already prepared) drawn from its photos."""
    used = sorted({r.photo for r in split.sketches})
    slot = {photo: i for i, photo in enumerate(used)}
    prep = photo_preprocessing(arch)
    pixels = torch.stack([input_pixels(load_photo(split.photos[p]), prep) for p in used])
    images, strokes, lengths = [], [], []
    for mirror in _variants(flip):
        shown = pixels.flip(-1) if mirror else pixels
        images.append(encode(normalise(shown.float() / 255.0)))
        drawn = [mirrored(s) for s in sketches] if mirror else list(sketches)
        strokes.append(_stroke5(drawn, scale, arch.max_points))
        lengths.append(_lengths(drawn))
    owner = torch.tensor([slot[r.photo] for r in split.sketches], dtype=torch.long)
    return SequenceSet(torch.stack(strokes), torch.stack(lengths), torch.stack(images), owner)


def _sketch_only_set(
    sketches: Sequence[Sketch],
    scale: float,
    arch: GeneratorArch,
    line_width: float,
    encode: _ImageEncoder,
    flip: bool,
) -> SequenceSet:
    """Sequences of sketches drawn from their own renderings."""
    images, strokes, lengths = [], [], []
    for mirror in _variants(flip):
        drawn = [mirrored(s) for s in sketches] if mirror else list(sketches)
        rendered = [
            encode(sketch_images(rasterise(drawn[i : i + _MAP_BATCH], arch.image_size, line_width)))
            for i in range(0, len(drawn), _MAP_BATCH)
        ]
        images.append(torch.cat(rendered))
        strokes.append(_stroke5(drawn, scale, arch.max_points))
        lengths.append(_lengths(drawn))
    owner = torch.arange(len(sketches))
    return SequenceSet(torch.stack(strokes), torch.stack(lengths), torch.stack(images), owner)


def _pretrain_split(source: str, config: GeneratorConfig) -> tuple[Split, str]:
    """The training split of the pre-training source and what the decoder looks at in it: a
    sketch-rnn ``.npz`` or sketch-only data (rendered sketches), a data folder with pairs
    (photos), or a folder of photos only (paired with their traced edge maps)."""
    if source.endswith(".npz"):
        sketches = read_sketchrnn_npz(source).get("train", [])
        records = [SketchRecord(s, None, f"{source}:train/{i}") for i, s in enumerate(sketches)]
        return Split([], records), "rendered sketches"
    data = load_dataset(source, val_fraction=0.0, seed=config.seed, on_error=config.on_error)
    if data.train.sketches or not data.unlabelled:
        paired = _pairs(data.train).sketches
        return data.train, "photos" if paired else "rendered sketches"
    traced = edge_sketch_split(data.unlabelled, config.model.max_points)
    return traced, "photos, with their traced edge maps as sketches"


def _prepared(sketches: Sequence[Sketch], rdp_epsilon: float, max_points: int) -> list[Sketch]:
    return [prepare_sketch(s, rdp_epsilon, max_points) for s in sketches]


def _pairs(split: Split) -> Split:
    """The split's non-empty sketches that have a photo (the rest has nothing to learn from)."""
    kept = [r for r in split.sketches if r.photo is not None and not r.sketch.is_empty]
    return Split(split.photos, kept)


def heldout_set(
    split: Split, model: PhotoToSketch, rdp_epsilon: float, scale: float, device: torch.device
) -> SequenceSet | None:
    """A split's photo-sketch pairs as backbone feature maps and targets (``None`` if empty)."""
    split = _pairs(split)
    if not split.sketches:
        return None
    arch = model.arch
    sketches = _prepared([r.sketch for r in split.sketches], rdp_epsilon, arch.max_points)
    encode = _ImageEncoder(model, frozen=True, device=device)
    return _paired_set(split, sketches, scale, arch, encode, flip=False)


def sequence_nll(
    model: PhotoToSketch, data: SequenceSet, device: torch.device, batch_size: int = 64
) -> dict[str, float]:
    """Per-point NLL of ``data`` (from :func:`heldout_set`) with ``z`` = the posterior mean.

    The NLL per point is the sequences' negative log-likelihood (offsets in scale-factor units
    plus pen states, the end included) divided by their points plus one (the end).
    """
    model.eval()
    offset_sum = pen_sum = 0.0
    steps = 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)))
            images, targets, lengths = data.batch(index, torch.zeros_like(index))
            encoding = model.encode_map(images.to(device))
            mixture = model.decode(encoding, encoding.mu, targets.to(device))
            offset, pen = stroke_nll(mixture, targets.to(device), lengths.to(device))
            offset_sum += float(offset.sum())
            pen_sum += float(pen.sum())
            steps += int((lengths + 1).sum())
    return {
        "nll": (offset_sum + pen_sum) / steps,
        "offset_nll": offset_sum / steps,
        "pen_nll": pen_sum / steps,
        "n_sketches": len(data),
    }


def _encode(model: PhotoToSketch, images: torch.Tensor, finetune_backbone: bool) -> Encoding:
    return model.encode(images) if finetune_backbone else model.encode_map(images)


def model_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short README.md for a generator run folder."""
    arch = config["model"]
    pretraining = (
        f" after {config['pretrain_epochs']} epochs on `{config['pretrain_data']}` "
        f"({config['data_info']['pretrain_input']})"
        if config["pretrain_data"] and config["data_info"]["pretrain_sketches"]
        else ""
    )
    lines = [
        "# Photo-to-sketch generator",
        "",
        f"`{arch['backbone']}` photo encoder ({arch['image_size']} px, "
        f"{'fine-tuned' if config['finetune_backbone'] else 'frozen'}), {arch['z_dim']}-d "
        f"Gaussian latent, LSTM decoder ({arch['hidden']} units) with additive attention over "
        f"the feature map and a {arch['components']}-component mixture-density head; draws "
        f"stroke-5 sketches of up to {arch['max_points']} points.",
        "",
        f"Trained on `{config['data']}`{pretraining}. Sketches on a {CANVAS:g} canvas, RDP "
        f"epsilon {config['rdp_epsilon']}, offsets divided by the scale factor "
        f"{config['scale']:.4f}.",
        "",
        f"Best epoch on the validation split: {metrics.get('best_epoch')}; "
        f"skipped non-finite steps: {metrics.get('skipped_steps', 0)}.",
        "",
        "| split | NLL per point | sketches |",
        "|---|---|---|",
    ]
    for split in ("val", "test"):
        if split in metrics:
            lines.append(
                f"| {split} | {metrics[split]['nll']:.4f} | {metrics[split]['n_sketches']} |"
            )
    lines += [
        "",
        "Draw with `fgsbir generate RUN_DIR PHOTO... --out DIR` or, in Python, "
        "`fgsbir.train.generator.load_generator(RUN_DIR).draw(photos)`.",
        "",
    ]
    return "\n".join(lines)


class _Trainer:
    """One training run; the state that resume.pt captures lives in its attributes."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.device = select_device(config.device)
        arch = config.model
        self.dataset: Dataset = load_dataset(
            config.data,
            format=config.format,
            labelled_fraction=config.labelled_fraction,
            val_fraction=config.val_fraction,
            seed=config.seed,
            on_error=config.on_error,
        )
        train = _pairs(self.dataset.train)
        if not train.sketches:
            raise FgsbirError(f"{config.data}: no photo-sketch pairs to train on")
        limit = (config.rdp_epsilon, arch.max_points)
        train_sketches = _prepared([r.sketch for r in train.sketches], *limit)
        pretrain, pretrain_input = (
            _pretrain_split(config.pretrain_data, config)
            if config.pretrain_data and config.pretrain_epochs > 0
            else (Split(), "none")
        )
        pretrain_pairs = _pairs(pretrain)  # photos as the input where the source has them
        pretrain_records = pretrain_pairs.sketches or [
            r for r in pretrain.sketches if not r.sketch.is_empty
        ]
        pretrain_sketches = _prepared([r.sketch for r in pretrain_records], *limit)
        scale = scale_factor([s.to_stroke3() for s in train_sketches + pretrain_sketches])
        self.run_config = {
            "kind": "generator",
            **config_to_dict(config),
            "canvas": CANVAS,
            "scale": scale,
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

        torch.manual_seed(config.seed)
        self.model = PhotoToSketch(arch, pretrained=config.pretrained).to(self.device)
        if not config.finetune_backbone:
            self.model.backbone.requires_grad_(False)
        encode = _ImageEncoder(self.model, not config.finetune_backbone, self.device)
        self.train_set = _paired_set(train, train_sketches, scale, arch, encode, config.flip)
        self.pretrain_set: SequenceSet | None = None
        if pretrain_pairs.sketches:
            self.pretrain_set = _paired_set(
                pretrain_pairs, pretrain_sketches, scale, arch, encode, config.flip
            )
        elif pretrain_sketches:
            self.pretrain_set = _sketch_only_set(
                pretrain_sketches, scale, arch, config.line_width, encode, config.flip
            )
        self.val_set = heldout_set(
            self.dataset.val, self.model, config.rdp_epsilon, scale, self.device
        )

        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=config.lr)
        floor = config.min_lr / config.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(config.lr_decay**step, floor)
        )
        self.epoch = 0
        self.step = 0
        self.skipped = 0
        self.best: tuple[float, int] | None = None  # (val nll, epoch)
        self.elapsed_s = 0.0
        self.log = MetricsLog(self.out / METRICS_FILE)
        self._resume()

    @property
    def total_epochs(self) -> int:
        return (self.config.pretrain_epochs if self.pretrain_set else 0) + self.config.epochs

    def _resume(self) -> None:
        state = load_resume_state(self.out)
        check_resumable(self.out, state, self.run_config, _RESUMABLE_CHANGES)
        if state is None:
            return
        restore_training_state(state, self._parts())
        self.epoch, self.step, self.skipped = state["epoch"], state["step"], state["skipped"]
        self.best, self.elapsed_s = state["best"], state["elapsed_s"]
        self.log.truncate_after(self.step)

    def _parts(self) -> dict[str, Stateful]:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def _save_resume(self) -> None:
        save_training_state(
            self.out, self.run_config, self._parts(), epoch=self.epoch, step=self.step,
            skipped=self.skipped, best=self.best, elapsed_s=self.elapsed_s,
        )  # fmt: skip

    def _train_mode(self) -> None:
        self.model.train()
        if not self.config.finetune_backbone:
            self.model.backbone.eval()  # frozen: its batch-norm statistics stay ImageNet's

    def _train_epoch(self) -> dict[str, float | str]:
        config = self.config
        pretraining = self.pretrain_set is not None and self.epoch < config.pretrain_epochs
        data = self.pretrain_set if pretraining else self.train_set
        assert data is not None
        self._train_mode()
        order = torch.randperm(len(data))
        batches = tqdm(
            order.split(config.batch_size),
            desc=f"epoch {self.epoch + 1}/{self.total_epochs}" + (" (pre-training)" * pretraining),
            leave=False,
        )
        totals = {"loss": 0.0, "nll": 0.0, "kl": 0.0}
        done = 0
        for index in batches:
            variant = torch.randint(data.strokes5.shape[0], index.shape)
            images, targets, lengths = (t.to(self.device) for t in data.batch(index, variant))
            if config.scale_jitter > 0:
                stretch = 1.0 + config.scale_jitter * (2.0 * torch.rand(len(index), 1, 2) - 1.0)
                targets = torch.cat(
                    [targets[..., :2] * stretch.to(self.device), targets[..., 2:]], -1
                )
            encoding = _encode(self.model, images, config.finetune_backbone)
            mixture, mu, log_var = self.model(encoding, targets)
            offset, pen = stroke_nll(mixture, targets, lengths)
            nll = (offset.sum() + pen.sum()) / (lengths + 1).sum()
            kl = kl_loss(mu, log_var, config.kl_floor)
            weight = self._kl_weight()
            loss = nll + weight * kl
            if not self._optimise(loss):
                continue
            done += 1
            for key, value in (("loss", loss), ("nll", nll), ("kl", kl)):
                totals[key] += value.item()
            batches.set_postfix(loss=f"{loss.item():.3f}")
        means = {key: value / max(done, 1) for key, value in totals.items()}
        return {"phase": "pretrain" if pretraining else "pairs", **means}

    def _optimise(self, loss: torch.Tensor) -> bool:
        """One step; a non-finite loss or gradient skips it (counted) and leaves the weights."""
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            if torch.isfinite(norm):
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                return True
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        return False

    def _kl_weight(self) -> float:
        c = self.config
        return kl_weight(self.step, c.kl_weight_start, c.kl_weight_end, c.kl_decay)

    def _out_of_time(self, epoch_s: float) -> bool:
        budget = self.config.time_budget_s
        return budget is not None and self.elapsed_s + epoch_s > budget

    def _validate(self, train: dict[str, float | str], epoch_s: float) -> None:
        """Log the epoch, score it on the validation sketches and keep the best weights."""
        self.log.log(
            epoch=self.epoch, step=self.step, split="train", **train,
            kl_weight=self._kl_weight(),
            lr=self.scheduler.get_last_lr()[0], skipped_steps=self.skipped,
            epoch_s=round(epoch_s, 2),
        )  # fmt: skip
        if self.val_set is not None:
            metrics = self._nll(self.val_set)
            self.log.log(epoch=self.epoch, step=self.step, split="val", **metrics)
            score = metrics["nll"]
        else:  # nothing to select with: the latest epoch is the best
            metrics, score = {}, -float(self.epoch)
        if self.best is None or score < self.best[0]:
            self.best = (score, self.epoch)
            save_model(
                self.out, self.model, self.run_config, {"val": metrics, "best_epoch": self.epoch}
            )
        plot_training_curves(self.out / METRICS_FILE, self.out / CURVES_PNG)

    def _nll(self, data: SequenceSet) -> dict[str, float]:
        return sequence_nll(self.model, data, self.device)

    def fit(self) -> None:
        epoch_s = 0.0
        while self.epoch < self.total_epochs and not self._out_of_time(epoch_s):
            started = time.monotonic()
            train = self._train_epoch()
            self.epoch += 1
            self._validate(train, time.monotonic() - started)
            epoch_s = time.monotonic() - started
            self.elapsed_s += epoch_s
            self._save_resume()

    def finish(self) -> dict[str, Any]:
        """Score the selected weights on validation and test, draw a grid, write the card."""
        self.model.load_state_dict(load_model_state(self.out))
        assert self.best is not None
        metrics: dict[str, Any] = {
            "best_epoch": self.best[1],
            "epochs_trained": self.epoch,
            "skipped_steps": self.skipped,
        }
        generator = TrainedGenerator(self.model, self.run_config, self.device)
        for name in ("val", "test"):
            scores = generator.nll(getattr(self.dataset, name))
            if scores is not None:
                metrics[name] = scores
        pictures = [str(self.out / CURVES_PNG)]
        shown = "test" if self.dataset.test.sketches else "val"
        split: Split = getattr(self.dataset, shown)
        if split.sketches:
            grid = self.out / GRID_PNG.format(split=shown)
            write_generated_grid(generator, split, grid, self.config.grid_rows)
            pictures.append(str(grid))
        metrics["pictures"] = pictures
        save_model(
            self.out, self.model, self.run_config, metrics, model_card(self.run_config, metrics)
        )
        return metrics


def train_generator(config: GeneratorConfig) -> dict[str, Any]:
    """Train (or resume) a generator run; returns the selected model's metrics.

    The result holds ``best_epoch``, ``epochs_trained``, ``skipped_steps``, ``val`` and ``test``
    NLL dicts (see :func:`sequence_nll`, where the splits have sketches) and ``pictures``.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    trainer = _Trainer(config)
    trainer.fit()
    return trainer.finish()


class TrainedGenerator:
    """A trained generator ready to draw: the model (eval mode), its scale factor and inputs."""

    def __init__(
        self, model: PhotoToSketch, run_config: dict[str, Any], device: torch.device
    ) -> None:
        self.model = model.eval()
        self.config = run_config
        self.device = device
        self.scale = float(run_config["scale"])
        self.canvas = float(run_config["canvas"])
        self.prep = photo_preprocessing(model.arch)

    def photo_tensor(self, photos: Sequence[Image.Image]) -> torch.Tensor:
        """Network input ``(B, 3, S, S)`` for PIL photos, on the model's device."""
        return photos_to_tensor(photos, self.prep).to(self.device)

    def sample(
        self, photos: Sequence[Image.Image], temperature: float = 1.0, max_len: int | None = None
    ) -> SampleResult:
        """One stroke-5 sample per photo (see :meth:`PhotoToSketch.sample`), gradients enabled."""
        return self.model.sample(self.photo_tensor(photos), temperature, max_len)

    def to_sketches(self, result: SampleResult) -> list[Sketch]:
        return samples_to_sketches(result, self.scale, self.canvas)

    def nll(self, split: Split) -> dict[str, float] | None:
        """Per-point NLL of a split's real sketches (see :func:`sequence_nll`); ``None`` if none."""
        data = heldout_set(split, self.model, self.config["rdp_epsilon"], self.scale, self.device)
        return None if data is None else sequence_nll(self.model, data, self.device)

    @torch.no_grad()
    def draw(
        self,
        photos: Sequence[Image.Image],
        temperature: float = 0.0,
        max_len: int | None = None,
        batch_size: int = 64,
    ) -> list[Sketch]:
        """One :class:`Sketch` per photo, drawn in batches (``temperature`` 0: greedy)."""
        sketches: list[Sketch] = []
        for start in range(0, len(photos), batch_size):
            batch = photos[start : start + batch_size]
            sketches += self.to_sketches(self.sample(batch, temperature, max_len))
        return sketches


def load_generator(run_dir: str | Path, device: str | None = None) -> TrainedGenerator:
    """The generator of a run folder written by :func:`train_generator`."""
    run_config = load_run_config(run_dir)
    if run_config.get("kind") != "generator":
        raise FgsbirError(f"{run_dir}: not a generator run (kind {run_config.get('kind')!r})")
    model = PhotoToSketch(GeneratorArch(**run_config["model"]), pretrained=False)
    model.load_state_dict(load_model_state(run_dir))
    chosen = select_device(device)
    return TrainedGenerator(model.to(chosen), run_config, chosen)


def write_generated_grid(
    generator: TrainedGenerator,
    split: Split,
    out_png: Path,
    rows: int,
    temperatures: Sequence[float] = (0.0, 0.3),
) -> None:
    """Grid of ``rows`` photos spread over ``split``: photo | generated sketches | a real one."""
    picked = np.unique(np.linspace(0, len(split.photos) - 1, rows).round().astype(int)).tolist()
    photos = [load_photo(split.photos[i]) for i in picked]
    drawn = [generator.draw(photos, t) for t in temperatures]
    captions = [f"T={t:g}" for t in temperatures]
    grid = []
    for row, photo_index in enumerate(picked):
        real = split.sketches_of(photo_index)
        generated = [sketches[row] for sketches in drawn]
        grid.append((photos[row], generated, real[0].sketch if real else None, captions))
    sketch_photo_grid(grid, out_png)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """File-name stems for the photos; a repeated stem gets the photo's position appended."""
    names: list[str] = []
    for i, path in enumerate(paths):
        names.append(path.stem if path.stem not in names else f"{path.stem}-{i}")
    return names


@dataclass
class Generated:
    """What :func:`generate` did: the files it wrote and the samples (``NAME_k``) left empty."""

    written: list[Path] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def generate(
    run_dir: str | Path,
    photos: Sequence[str | Path],
    out_dir: str | Path,
    temperature: float = 0.3,
    samples: int = 1,
    real_sketches: Sequence[Sketch | None] | None = None,
    grid_rows: int = 16,
    batch_size: int = 64,
    device: str | None = None,
) -> Generated:
    """Draw ``samples`` sketches of each photo into ``out_dir``.

    For photo ``NAME.jpg`` and sample ``k`` it writes ``NAME_k.svg``, ``NAME_k.png`` and
    ``NAME_k.json`` (stroke JSON), except for an empty sample (the model ended the sketch before
    drawing anything), which no reader would accept: its name is listed in ``empty`` instead.
    ``grid.png`` shows the first ``grid_rows`` photos beside their sketches (and
    ``real_sketches[i]`` where given). Photos are read and drawn ``batch_size`` at a time.
    """
    generator = load_generator(run_dir, device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in photos]
    names = _unique_names(paths)
    reals = list(real_sketches) if real_sketches is not None else [None] * len(paths)
    result = Generated()
    rows = []
    for start in range(0, len(paths), batch_size):
        images = [load_photo(p) for p in paths[start : start + batch_size]]
        drawn = [generator.draw(images, temperature, batch_size=batch_size) for _ in range(samples)]
        for j, image in enumerate(images):
            i = start + j
            for k in range(samples):
                stem = out_dir / f"{names[i]}_{k}"
                if drawn[k][j].is_empty:
                    result.empty.append(stem.name)
                    continue
                for suffix, write in _WRITERS:
                    write(drawn[k][j], stem.with_suffix(suffix))
                    result.written.append(stem.with_suffix(suffix))
            if i < grid_rows:
                rows.append((image, [d[j] for d in drawn], reals[i], None))
    if rows:
        sketch_photo_grid(rows, out_dir / "grid.png")
        result.written.append(out_dir / "grid.png")
    return result
