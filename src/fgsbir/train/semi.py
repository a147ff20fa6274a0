"""Semi-supervised FG-SBIR (Bhunia et al., CVPR 2021): retrieval and photo-to-sketch generation
trained jointly, with unlabelled photos.

:func:`train_semi` starts from a supervised retrieval run and a supervised generator run on the
labelled pairs (training both with :func:`fgsbir.train.supervised.train` and
:func:`fgsbir.train.generator.train_generator` when they are not given), then trains jointly. Each
step takes a batch of labelled pairs and a batch of unlabelled photos and

1. samples one sketch per photo (unlabelled and labelled) with the generator, and rasterises them;
2. trains the discriminator (low resolution) on real labelled pairs vs generated pairs;
3. updates the retrieval model with the triplet loss on real pairs, plus the triplet loss on
   (generated sketch, unlabelled photo) pairs weighted by the detached, batch-normalised
   discriminator scores, plus KL distillation of the frozen start model's in-batch retrieval
   distributions of the generated sketches;
4. updates the generator by REINFORCE on every sampled sketch, with reward = retrieval reward
   (from this step's retrieval embeddings) + ``reward_disc_weight`` x discriminator probability,
   minus a running baseline, plus its supervised sequence loss on the labelled pairs.

Every part has a switch (``disc_weighting``, ``distillation``, ``policy_gradient``,
``generator_frozen``) for ablations. Sketches are generated afresh at every step (no pool): the
generator's backbone is frozen during joint training, so each photo's feature map is computed
once, on first use, and the per-step generator cost is the attentive LSTM alone.

Each epoch is one pass over the labelled pairs; the validation split scores the retrieval model
after every epoch, and after the discriminator's warm-up (epoch 0: the start model competes too).
The best epoch's retrieval weights are the run's ``model.safetensors`` (a run folder that
:func:`fgsbir.models.embedding.load_embedder` and ``fgsbir evaluate`` read like a supervised one);
the generator and discriminator as joint training left them (latest epoch) are saved in
``generator/`` (loadable by :func:`fgsbir.train.generator.load_generator`) and
``discriminator/``. ``resume.pt`` is rewritten after every epoch; running the same call again
continues from it. ``time_budget_s`` bounds the whole call, start runs included, checked before
every joint step. Joint training runs in one process (no DDP).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fgsbir.config import config_to_dict
from fgsbir.data.dataset import Dataset, load_dataset
from fgsbir.data.photos import load_photo
from fgsbir.data.transforms import (
    Augmentation,
    PairDataset,
    Preprocessing,
    augment_photo,
    input_pixels,
    normalise,
    sketch_ink,
    sketches_to_tensor,
)
from fgsbir.device import select_device
from fgsbir.errors import FgsbirError
from fgsbir.evaluate import evaluate_split
from fgsbir.losses.metric import DistillationLoss, NegativeMining, TripletLoss
from fgsbir.losses.policy import RunningBaseline, reinforce_loss, retrieval_reward
from fgsbir.losses.sequence import kl_loss, stroke_nll
from fgsbir.models.discriminator import PairDiscriminator, at_size, discriminator_weights
from fgsbir.models.embedding import ARCH_KEYS, Embedder, EmbeddingNet, build_embedding_net
from fgsbir.models.generator import Encoding, SampleResult, samples_to_sketches
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
from fgsbir.sketch.strokes import Sketch
from fgsbir.train.generator import (
    GeneratorConfig,
    heldout_set,
    load_generator,
    train_generator,
)
from fgsbir.train.supervised import TrainConfig, model_card, train, write_retrieval_grid
from fgsbir.viz import plot_training_curves, sketch_photo_grid

CURVES_PNG = "training_curves.png"
GRID_PNG = "retrieval_{split}.png"
GENERATED_PNG = "generated_{when}.png"
GENERATOR_DIR = "generator"
DISCRIMINATOR_DIR = "discriminator"
DISCRIMINATOR_KIND = "discriminator"
START_RETRIEVAL_DIR = "start_retrieval"
START_GENERATOR_DIR = "start_generator"
# Retrieval-model settings that come from the start run (architecture and preprocessing).
_ARCH_KEYS = (*ARCH_KEYS, *(f.name for f in dataclasses.fields(Preprocessing)))
# Settings that may change when a run is resumed; any other difference is refused.
_RESUMABLE_CHANGES = {"out", "epochs", "time_budget_s", "device", "threads"}
# Settings of the start runs that the semi-supervised configuration decides.
_SHARED_KEYS = ("data", "format", "labelled_fraction", "val_fraction", "on_error", "seed", "device")


@dataclass
class SemiConfig:
    """Everything a semi-supervised run depends on (saved in the run's ``config.json``).

    ``supervised`` and ``generator`` configure the start runs that :func:`train_semi` trains
    when ``retrieval_run`` / ``generator_run`` are not given; their ``data``, ``format``,
    ``labelled_fraction``, ``val_fraction``, ``on_error``, ``seed``, ``device``, ``out`` and
    ``time_budget_s`` are set from this configuration. The retrieval architecture and
    preprocessing (backbone, embedding size, image size, line width) are the start run's.
    """

    data: str = "synthetic"  # a data-set folder or "synthetic"
    out: str = "runs/semi"
    format: str | None = None  # force a data-set layout instead of detecting it
    unlabelled: list[str] = field(default_factory=list)  # extra folders of unlabelled photos
    labelled_fraction: float = 1.0  # the other training photos join the unlabelled pool
    val_fraction: float = 0.1
    on_error: Literal["raise", "warn"] = "raise"
    # start runs
    retrieval_run: str | None = None  # a supervised run folder; trained here when None
    generator_run: str | None = None  # a generator run folder; trained here when None
    supervised: TrainConfig = field(default_factory=TrainConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    retrieval_budget_share: float = 0.4  # of time_budget_s, for a start retrieval run
    generator_budget_share: float = 0.2  # of time_budget_s, for a start generator run
    # joint training
    epochs: int = 20  # passes over the labelled pairs
    batch_size: int = 16  # labelled pairs per step
    unlabelled_batch_size: int = 16  # unlabelled photos per step
    lr: float = 5e-5  # retrieval model (AdamW, constant)
    weight_decay: float = 1e-4
    margin: float = 0.2
    negatives: NegativeMining = "hardest"
    augment: Augmentation = field(default_factory=Augmentation)  # unlabelled photos: no flips
    generated_weight: float = 1.0  # triplet loss on generated pairs, relative to real pairs
    disc_weighting: bool = True  # weight generated pairs by the discriminator's scores
    distillation: bool = True
    distill_weight: float = 1.0
    distill_tau: float = 0.1
    policy_gradient: bool = True  # REINFORCE update of the generator
    generator_frozen: bool = False  # no generator update at all (neither REINFORCE nor NLL)
    pg_weight: float = 1.0
    reward_tau: float = 0.1  # temperature of the retrieval reward
    reward_disc_weight: float = 0.5  # weight of the discriminator probability in the reward
    baseline_momentum: float = 0.9
    supervised_gen_weight: float = 1.0  # the generator's sequence loss on labelled pairs
    gen_kl_weight: float = 0.1  # KL weight of that loss (KL floor: the generator run's)
    gen_lr: float = 1e-4  # generator (Adam, betas 0.5 / 0.999, constant)
    grad_clip: float = 1.0  # generator gradient norm
    temperature: float = 0.5  # sampling temperature of generated sketches
    max_points: int | None = None  # longest generated sketch (default: the generator's)
    disc_image_size: int = 64
    disc_width: int = 32
    disc_lr: float = 2e-4
    disc_warmup_steps: int = 20  # discriminator-only steps before joint training
    select_metric: Literal["acc@1", "acc@5", "acc@10", "mrr"] = "mrr"  # picks the best epoch
    seed: int = 0
    device: str | None = None  # default: CUDA when available
    threads: int | None = None  # torch CPU threads (None: leave torch's choice)
    time_budget_s: float | None = None  # the whole call, start runs included
    grid_queries: int = 8  # rows of the retrieval-grid picture
    picture_photos: int = 8  # unlabelled photos in the generated-sketch pictures


@dataclass
class StartRuns:
    """The runs joint training starts from, and the seconds this call spent training them."""

    retrieval_run: str
    generator_run: str
    retrieval_s: float = 0.0
    generator_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.retrieval_s + self.generator_s


def _start_config(template: Any, config: SemiConfig, out: Path, share: float) -> Any:
    """``template`` (a start run's configuration) with this run's shared settings, ``out`` and
    its share of the time budget. A shared setting the start trainer does not have must be at
    its default, or the start run would not train on what this run calls labelled."""
    known = {f.name for f in dataclasses.fields(template)}
    defaults = SemiConfig()
    unsupported = [
        key
        for key in _SHARED_KEYS
        if key not in known and getattr(config, key) != getattr(defaults, key)
    ]
    if unsupported:
        raise FgsbirError(
            f"{type(template).__name__} has no setting {', '.join(unsupported)}; train that "
            "start run separately and pass its folder"
        )
    budget = template.time_budget_s
    if config.time_budget_s is not None:
        budget = share * config.time_budget_s
    shared = {key: getattr(config, key) for key in _SHARED_KEYS if key in known}
    return replace(template, **shared, out=str(out), time_budget_s=budget)


def train_start_runs(config: SemiConfig) -> StartRuns:
    """The start runs of ``config``: given ones as they are, missing ones trained (or resumed)
    in ``out/start_retrieval`` and ``out/start_generator`` on the labelled pairs."""
    out = Path(config.out)
    start = StartRuns(config.retrieval_run or "", config.generator_run or "")
    if not config.retrieval_run:
        folder = out / START_RETRIEVAL_DIR
        began = time.monotonic()
        train(_start_config(config.supervised, config, folder, config.retrieval_budget_share))
        start.retrieval_run, start.retrieval_s = str(folder), time.monotonic() - began
    if not config.generator_run:
        folder = out / START_GENERATOR_DIR
        began = time.monotonic()
        train_generator(
            _start_config(config.generator, config, folder, config.generator_budget_share)
        )
        start.generator_run, start.generator_s = str(folder), time.monotonic() - began
    return start


def _rows(encoding: Encoding, rows: slice) -> Encoding:
    """The encoding of some photos of a batch."""
    return Encoding(
        **{f.name: getattr(encoding, f.name)[rows] for f in dataclasses.fields(Encoding)}
    )


@dataclass
class _Drawn:
    """Sketches generated for a batch of photos: the samples and the networks' views of them."""

    sample: SampleResult
    sketches: list[Sketch]
    tensors: torch.Tensor  # retrieval-network input (B, 3, S, S)
    ink: torch.Tensor  # discriminator input (B, 1, s, s)


@dataclass
class _Batch:
    """The inputs of one step, on the training device."""

    sketches: torch.Tensor  # labelled pairs: sketch network inputs (B, 3, S, S)
    photos: torch.Tensor  # and their photos
    labels: torch.Tensor  # (B,) photo ids
    unlabelled: torch.Tensor  # unlabelled photo network inputs (U, 3, S, S)
    has_sequence: torch.Tensor  # (B,) bool: the labelled photo has a sequence to learn from
    targets: torch.Tensor  # stroke-5 targets of those photos (B', T, 5)
    lengths: torch.Tensor  # (B',)
    encoding: Encoding  # the generator's view of the U unlabelled, then the B' labelled photos


class _SemiTrainer:
    """One joint training run; the state that resume.pt captures lives in its attributes."""

    def __init__(self, config: SemiConfig, start: StartRuns, state: dict[str, Any] | None) -> None:
        self.config = config
        self.start = start
        self.budget_s = (
            None if config.time_budget_s is None else config.time_budget_s - start.seconds
        )
        self.out = Path(config.out)
        self.device = select_device(config.device)
        start_config = load_run_config(start.retrieval_run)
        if start_config.get("kind") != "embedding":
            raise FgsbirError(f"{start.retrieval_run}: not a retrieval run")
        self.run_config: dict[str, Any] = {
            "kind": "embedding",
            "method": "semi",
            **{key: start_config[key] for key in _ARCH_KEYS},
            **config_to_dict(config),
            "retrieval_start": start.retrieval_run,
            "generator_start": start.generator_run,
        }
        self.prep = Preprocessing.from_config(self.run_config)
        self.dataset: Dataset = load_dataset(
            config.data,
            format=config.format,
            labelled_fraction=config.labelled_fraction,
            val_fraction=config.val_fraction,
            seed=config.seed,
            on_error=config.on_error,
            unlabelled=config.unlabelled,
        )
        if not self.dataset.train.sketches:
            raise FgsbirError(f"{config.data}: no training photos with sketches")
        if not self.dataset.unlabelled:
            raise FgsbirError(
                f"{config.data}: no unlabelled photos; give photo folders (unlabelled) or a "
                "labelled fraction below 1"
            )
        self.run_config["data_info"] = {
            "name": self.dataset.name,
            "format": self.dataset.format,
            "unlabelled_photos": len(self.dataset.unlabelled),
            **{
                f"{name}_{what}": len(getattr(getattr(self.dataset, name), what))
                for name in ("train", "val", "test")
                for what in ("photos", "sketches")
            },
        }
        self.pairs = PairDataset(self.dataset.train, self.prep, config.augment, config.seed)

        torch.manual_seed(config.seed)
        self.model = self._retrieval_net(start.retrieval_run)
        self.teacher = self._retrieval_net(start.retrieval_run).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.triplet = TripletLoss(config.margin, config.negatives)
        self.distill = DistillationLoss(config.distill_tau)

        self.generator = load_generator(start.generator_run, config.device)
        self.gen = self.generator.model
        # the backbone stays frozen (feature maps are cached); the rest learns unless frozen
        self.gen.backbone.requires_grad_(False)
        learned = [p for name, p in self.gen.named_parameters() if not name.startswith("backbone.")]
        for parameter in learned:
            parameter.requires_grad_(not config.generator_frozen)
        self.gen_optimizer = torch.optim.Adam(learned, lr=config.gen_lr, betas=(0.5, 0.999))
        self.baseline = RunningBaseline(config.baseline_momentum)
        gen_config = self.generator.config
        sequences = heldout_set(
            self.dataset.train, self.gen, gen_config["rdp_epsilon"], self.generator.scale,
            self.device,
        )  # fmt: skip
        if sequences is None:
            raise FgsbirError(f"{config.data}: no training sketches for the generator to learn")
        self.labelled_sequences = sequences
        # sequence i of that set is the i-th non-empty sketch with a photo of the training split
        self.sequences_of: dict[int, list[int]] = {}
        kept = [
            r for r in self.dataset.train.sketches if r.photo is not None and not r.sketch.is_empty
        ]
        for i, record in enumerate(kept):
            self.sequences_of.setdefault(record.photo, []).append(i)

        self.disc = PairDiscriminator(config.disc_width).to(self.device)
        self.disc_optimizer = torch.optim.Adam(
            self.disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.999)
        )
        self._pixels: dict[int, torch.Tensor] = {}  # unlabelled photo -> retrieval-size pixels
        self._maps: dict[int, torch.Tensor] = {}  # unlabelled photo -> generator feature map

        self.epoch = 0
        self.step = 0
        self.skipped = 0
        self.best: tuple[float, int] | None = None  # (score, epoch)
        self.elapsed_s = 0.0
        self.log = MetricsLog(self.out / METRICS_FILE)
        self.resumed = self._resume(state)

    # -- set-up and state ----------------------------------------------------------------------

    def _retrieval_net(self, run_dir: str) -> EmbeddingNet:
        model = build_embedding_net({**self.run_config, "pretrained": False})
        model.load_state_dict(load_model_state(run_dir))
        return model.to(self.device)

    def _parts(self) -> dict[str, Stateful]:
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "generator": self.gen,
            "gen_optimizer": self.gen_optimizer,
            "discriminator": self.disc,
            "disc_optimizer": self.disc_optimizer,
            "baseline": self.baseline,
        }

    def _resume(self, state: dict[str, Any] | None) -> bool:
        check_resumable(self.out, state, self.run_config, _RESUMABLE_CHANGES)
        if state is None:
            return False
        restore_training_state(state, self._parts())
        self.epoch, self.step, self.skipped = state["epoch"], state["step"], state["skipped"]
        self.best, self.elapsed_s = state["best"], state["elapsed_s"]
        self.log.truncate_after(self.step)
        return True

    def _save_resume(self) -> None:
        save_training_state(
            self.out, self.run_config, self._parts(), start=dataclasses.asdict(self.start),
            epoch=self.epoch, step=self.step, skipped=self.skipped, best=self.best,
            elapsed_s=self.elapsed_s,
        )  # fmt: skip

    # -- data ----------------------------------------------------------------------------------

    def _load_unlabelled(self, indices: Sequence[int]) -> None:
        """Decode the photos not seen yet and compute their generator feature maps, one photo
        at a time: a map must not depend on which photos first came with it (convolution
        results vary slightly with the batch), or a resumed run would drift from a straight one.
        """
        for i in indices:
            if i in self._maps:
                continue
            image = load_photo(self.dataset.unlabelled[i])
            pixels = input_pixels(image, self.generator.prep)
            with torch.no_grad():
                feature_map = self.gen.feature_map(normalise(pixels[None] / 255.0).to(self.device))
            self._maps[i] = feature_map[0].half().cpu()
            self._pixels[i] = input_pixels(image, self.prep)

    def _unlabelled_indices(self, step: int) -> list[int]:
        """The unlabelled photos of a step: consecutive slices of seeded permutations."""
        n, size = len(self.dataset.unlabelled), self.config.unlabelled_batch_size
        indices = []
        for position in range(step * size, (step + 1) * size):
            cycle, offset = divmod(position, n)
            order = np.random.default_rng([self.config.seed, 3, cycle]).permutation(n)
            indices.append(int(order[offset]))
        return list(dict.fromkeys(indices))  # a pool smaller than a batch repeats no photo

    def _unlabelled_photos(self, indices: Sequence[int], step: int) -> torch.Tensor:
        """Augmented (crop, colour; no flip) network inputs of unlabelled photos."""
        views = []
        for i in indices:
            rng = np.random.default_rng([self.config.seed, 4, step, i])
            views.append(augment_photo(self._pixels[i], self.config.augment, rng, flip=False))
        return normalise(torch.stack(views))

    def _labelled_sequences(self, photos: torch.Tensor, step: int) -> torch.Tensor:
        """One stroke-5 sequence index per labelled photo, ``-1`` where it has none."""
        rng = np.random.default_rng([self.config.seed, 5, step])
        chosen = [
            int(rng.choice(self.sequences_of[p])) if p in self.sequences_of else -1
            for p in photos.tolist()
        ]
        return torch.tensor(chosen, dtype=torch.long)

    def _draw(self, encoding: Encoding, temperature: float, track: bool) -> _Drawn:
        """Sample sketches (gradients through ``log_prob`` when ``track``) and render them."""
        with torch.set_grad_enabled(track):
            sample = self.gen.sample(encoding, temperature, self.config.max_points)
        sketches = samples_to_sketches(sample, self.generator.scale, self.generator.canvas)
        tensors = sketches_to_tensor(sketches, self.prep).to(self.device)
        return _Drawn(sample, sketches, tensors, self._low_res(sketch_ink(tensors)))

    def _low_res(self, images: torch.Tensor) -> torch.Tensor:
        return at_size(images, self.config.disc_image_size)

    # -- training ------------------------------------------------------------------------------

    def _batch(self, epoch: int, batch: Sequence[int]) -> _Batch:
        """Labelled pairs ``batch`` (augmented as in ``epoch``), the step's unlabelled photos, and
        the generator's encoding of the unlabelled photos, then of the labelled ones it can
        learn from (those with a non-empty sketch)."""
        self.pairs.set_epoch(epoch)
        sketches, photos, labels = self.pairs.collate([self.pairs[i] for i in batch])
        unlabelled = self._unlabelled_indices(self.step)
        self._load_unlabelled(unlabelled)
        sequences = self._labelled_sequences(labels, self.step)
        has_sequence = sequences >= 0
        chosen = sequences[has_sequence]
        images, targets, lengths = self.labelled_sequences.batch(chosen, torch.zeros_like(chosen))
        maps = torch.cat([torch.stack([self._maps[i] for i in unlabelled]).float(), images])
        return _Batch(
            sketches=sketches.to(self.device),
            photos=photos.to(self.device),
            labels=labels.to(self.device),
            unlabelled=self._unlabelled_photos(unlabelled, self.step).to(self.device),
            has_sequence=has_sequence.to(self.device),
            targets=targets.to(self.device),
            lengths=lengths.to(self.device),
            encoding=self.gen.encode_map(maps.to(self.device)),
        )

    def _disc_update(self, batch: _Batch, drawn: _Drawn) -> tuple[torch.Tensor, dict[str, float]]:
        """Train the discriminator on real labelled pairs vs every generated pair; returns its
        (pre-update, detached) logits on the generated pairs."""
        fake_photos = torch.cat([batch.unlabelled, batch.photos[batch.has_sequence]])
        logits = self.disc(
            self._low_res(torch.cat([batch.photos, fake_photos])),
            torch.cat([self._low_res(sketch_ink(batch.sketches)), drawn.ink]),
        )
        real, fake = logits.split([len(batch.photos), len(fake_photos)])
        loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_optimizer.step()
        stats = {
            "disc_loss": loss.item(),
            "disc_real_p": torch.sigmoid(real).mean().item(),
            "disc_fake_p": torch.sigmoid(fake).mean().item(),
        }
        return fake.detach(), stats

    def _warm_up_step(self, batch_indices: Sequence[int]) -> dict[str, float]:
        """A discriminator-only step, so its weights mean something from the first joint step."""
        batch = self._batch(0, batch_indices)
        drawn = self._draw(batch.encoding, self.config.temperature, track=False)
        self.step += 1
        return self._disc_update(batch, drawn)[1]

    def _step(self, epoch: int, batch_indices: Sequence[int]) -> dict[str, float]:
        """One joint step on labelled pairs ``batch_indices`` and the step's unlabelled photos."""
        config = self.config
        batch = self._batch(epoch, batch_indices)
        learns = not config.generator_frozen
        drawn = self._draw(batch.encoding, config.temperature, learns and config.policy_gradient)
        fake_logits, stats = self._disc_update(batch, drawn)

        # retrieval: real pairs + discriminator-weighted generated pairs + distillation
        n, u = len(batch.labels), len(batch.unlabelled)
        embeddings = self.model(
            torch.cat([batch.sketches, batch.photos, drawn.tensors, batch.unlabelled])
        )
        real_sk, real_ph, gen_sk, unl_ph = embeddings.split([n, n, len(drawn.tensors), u])
        weights = discriminator_weights(fake_logits[:u]) if config.disc_weighting else None
        real_loss = self.triplet(real_sk, real_ph, batch.labels)
        gen_loss = self.triplet(gen_sk[:u], unl_ph, weights=weights)
        loss = real_loss + config.generated_weight * gen_loss
        stats |= {"triplet_real": real_loss.item(), "triplet_generated": gen_loss.item()}
        if config.distillation:
            with torch.no_grad():
                teacher = self.teacher(torch.cat([drawn.tensors[:u], batch.unlabelled]))
            distill = self.distill(gen_sk[:u], unl_ph, *teacher.split([u, u]))
            loss = loss + config.distill_weight * distill
            stats["distill"] = distill.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        stats["loss"] = loss.item()

        if learns:
            # rewards use this step's (pre-update) embeddings: generated sketches of unlabelled
            # photos among the unlabelled photos, those of labelled photos among those photos
            found = torch.cat([
                retrieval_reward(gen_sk[:u].detach(), unl_ph.detach(), config.reward_tau),
                retrieval_reward(gen_sk[u:].detach(), real_ph[batch.has_sequence].detach(),
                                 config.reward_tau),
            ])  # fmt: skip
            stats |= self._generator_update(batch, drawn, found, fake_logits)
        self.step += 1
        return stats

    def _generator_update(
        self, batch: _Batch, drawn: _Drawn, found: torch.Tensor, fake_logits: torch.Tensor
    ) -> dict[str, float]:
        """REINFORCE on the drawn sketches plus the sequence loss on labelled pairs, one clipped
        step; a non-finite loss or gradient skips the step (counted)."""
        config = self.config
        stats: dict[str, float] = {}
        loss = torch.zeros((), device=self.device)
        if config.policy_gradient:
            realism = torch.sigmoid(fake_logits)
            rewards = found + config.reward_disc_weight * realism
            baseline = self.baseline.update(rewards)
            pg = reinforce_loss(drawn.sample.log_prob, rewards, baseline)
            loss = loss + config.pg_weight * pg
            stats |= {
                "reward": rewards.mean().item(),
                "reward_retrieval": found.mean().item(),
                "reward_disc": realism.mean().item(),
                "baseline": baseline,
                "pg_loss": pg.item(),
            }
        if config.supervised_gen_weight > 0 and len(batch.targets):
            labelled = _rows(batch.encoding, slice(len(batch.unlabelled), None))
            mixture, mu, log_var = self.gen(labelled, batch.targets)
            offset, pen = stroke_nll(mixture, batch.targets, batch.lengths)
            nll = (offset.sum() + pen.sum()) / (batch.lengths + 1).sum()
            kl = kl_loss(mu, log_var, self.generator.config["kl_floor"])
            loss = loss + config.supervised_gen_weight * (nll + config.gen_kl_weight * kl)
            stats["gen_nll"] = nll.item()
        if not loss.requires_grad:
            return stats
        self.gen_optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            params = [p for p in self.gen.parameters() if p.requires_grad]
            if torch.isfinite(torch.nn.utils.clip_grad_norm_(params, config.grad_clip)):
                self.gen_optimizer.step()
                return stats
        self.gen_optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        return stats

    # -- the loop ------------------------------------------------------------------------------

    def _batches(self, epoch: int) -> list[list[int]]:
        """Seeded batches of labelled pairs; no short last batch unless it is the only one."""
        order = np.random.default_rng([self.config.seed, 6, epoch]).permutation(len(self.pairs))
        size = self.config.batch_size
        batches = [order[i : i + size].tolist() for i in range(0, len(order), size)]
        if len(batches) > 1 and len(batches[-1]) < size:
            batches.pop()
        return batches

    def _out_of_time(self, spent_s: float) -> bool:
        return self.budget_s is not None and self.elapsed_s + spent_s > self.budget_s

    def _train_epoch(self, began: float, step_s: float) -> tuple[dict[str, float], float]:
        """One pass over the labelled pairs, cut short when the next step would overrun the
        budget; returns the mean statistics and the mean step time."""
        totals: dict[str, list[float]] = {}
        steps = tqdm(
            self._batches(self.epoch), desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            leave=False,
        )  # fmt: skip
        for i, batch in enumerate(steps):
            if i > 0 and self._out_of_time(time.monotonic() - began + step_s):
                break
            stepped = time.monotonic()
            for key, value in self._step(self.epoch, batch).items():
                totals.setdefault(key, []).append(value)
            step_s = time.monotonic() - stepped
            steps.set_postfix(loss=f"{totals['loss'][-1]:.4f}")
        return {key: float(np.mean(values)) for key, values in totals.items()}, step_s

    def _warm_up(self) -> None:
        batches = self._batches(0)
        totals: dict[str, list[float]] = {}
        for i in tqdm(range(self.config.disc_warmup_steps), desc="discriminator warm-up"):
            for key, value in self._warm_up_step(batches[i % len(batches)]).items():
                totals.setdefault(key, []).append(value)
        if totals:
            means = {key: float(np.mean(values)) for key, values in totals.items()}
            self.log.log(epoch=0, step=self.step, split="warmup", **means)

    def _embedder(self) -> Embedder:
        """The retrieval model being trained, as an inference object (switches it to eval)."""
        return Embedder(self.model, self.prep, self.run_config, self.device)

    def _validate(self, train: dict[str, float], epoch_s: float) -> None:
        """Log the epoch, score it on the validation split, keep the best retrieval model and
        the latest generator and discriminator."""
        if train:
            self.log.log(
                epoch=self.epoch, step=self.step, split="train", **train,
                skipped_generator_steps=self.skipped, epoch_s=round(epoch_s, 2),
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
        latest = {"epoch": self.epoch, "step": self.step, "semi_run": str(self.out)}
        save_model(self.out / GENERATOR_DIR, self.gen, self.generator.config, latest)
        disc_config = {
            "kind": DISCRIMINATOR_KIND,
            "width": self.config.disc_width,
            "image_size": self.config.disc_image_size,
        }
        save_model(self.out / DISCRIMINATOR_DIR, self.disc, disc_config, latest)
        self.model.train()

    def _pictures(self, when: str) -> Path:
        """Generated sketches of evenly spread unlabelled photos, greedy and sampled, captioned
        with the discriminator's probability ``p`` and weight ``w`` (within these photos)."""
        n = len(self.dataset.unlabelled)
        picked = np.unique(np.linspace(0, n - 1, self.config.picture_photos).round()).tolist()
        picked = [int(i) for i in picked]
        self._load_unlabelled(picked)
        photos = normalise(torch.stack([self._pixels[i] for i in picked]) / 255.0)
        maps = torch.stack([self._maps[i] for i in picked]).float().to(self.device)
        columns = []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.config.seed)
            encoding = self.gen.encode_map(maps)
            for temperature in (0.0, self.config.temperature):
                drawn = self._draw(encoding, temperature, track=False)
                logits = self.disc(self._low_res(photos.to(self.device)), drawn.ink)
                p, w = torch.sigmoid(logits).tolist(), discriminator_weights(logits).tolist()
                captions = [
                    f"T={temperature:g} p={a:.2f} w={b:.2f}" for a, b in zip(p, w, strict=True)
                ]
                columns.append((drawn.sketches, captions))
        rows = [
            (
                self.dataset.unlabelled[i],
                [sketches[row] for sketches, _ in columns],
                None,
                [captions[row] for _, captions in columns],
            )
            for row, i in enumerate(picked)
        ]
        out_png = self.out / GENERATED_PNG.format(when=when)
        sketch_photo_grid(rows, out_png)
        return out_png

    def fit(self) -> None:
        if not self.resumed:
            began = time.monotonic()
            self._warm_up()
            self._pictures("start")
            self._validate({}, 0.0)  # epoch 0: the start model, after the warm-up
            self.elapsed_s += time.monotonic() - began
            self._save_resume()
        step_s = 0.0
        while self.epoch < self.config.epochs and not self._out_of_time(step_s):
            began = time.monotonic()
            train, step_s = self._train_epoch(began, step_s)
            self.epoch += 1
            self._validate(train, time.monotonic() - began)
            self.elapsed_s += time.monotonic() - began
            self._save_resume()

    def finish(self) -> dict[str, Any]:
        """Draw the curves and the end pictures; score the selected retrieval model on
        validation and test, with retrieval grids; write the model card."""
        pictures = [self.out / CURVES_PNG, self.out / GENERATED_PNG.format(when="start")]
        pictures.append(self._pictures("end"))
        self.model.load_state_dict(load_model_state(self.out))
        embedder = self._embedder()
        assert self.best is not None
        metrics: dict[str, Any] = {
            "best_epoch": self.best[1],
            "epochs_trained": self.epoch,
            "steps": self.step,
            "skipped_generator_steps": self.skipped,
            "joint_s": round(self.elapsed_s, 1),
            "start": dataclasses.asdict(self.start),
        }
        plot_training_curves(self.out / METRICS_FILE, self.out / CURVES_PNG)
        for name in ("val", "test"):
            split = getattr(self.dataset, name)
            if split.sketches:
                metrics[name], sketch_emb, photo_emb = evaluate_split(embedder, split)
                grid = self.out / GRID_PNG.format(split=name)
                write_retrieval_grid(split, sketch_emb, photo_emb, grid, self.config.grid_queries)
                pictures.append(grid)
        metrics["pictures"] = [str(p) for p in pictures]
        save_model(self.out, self.model, self.run_config, metrics, self._card(metrics))
        return metrics

    def _card(self, metrics: dict[str, Any]) -> str:
        c = self.config
        parts = {
            "discriminator weighting": c.disc_weighting,
            "distillation": c.distillation,
            "policy gradient": c.policy_gradient and not c.generator_frozen,
            "generator updates": not c.generator_frozen,
        }
        switches = ", ".join(f"{name} {'on' if on else 'off'}" for name, on in parts.items())
        lines = [
            "",
            "## Semi-supervised training",
            "",
            f"Joint training after Bhunia et al. (CVPR 2021) from the supervised run "
            f"`{self.start.retrieval_run}` and the generator `{self.start.generator_run}`, with "
            f"{self.run_config['data_info']['unlabelled_photos']} unlabelled photos ({switches}); "
            f"{self.epoch} epochs, {metrics['joint_s']} s. The generator and discriminator "
            f"after the last epoch are in `{GENERATOR_DIR}/` and `{DISCRIMINATOR_DIR}/`.",
            "",
        ]
        return model_card(self.run_config, metrics) + "\n".join(lines)


def load_discriminator(
    run_dir: str | Path, device: str | None = None
) -> tuple[PairDiscriminator, int]:
    """The discriminator a semi run saved in ``run_dir`` (its ``discriminator/`` folder), in eval
    mode, and the image size it scores pairs at (see :func:`at_size`)."""
    config = load_run_config(run_dir)
    if config.get("kind") != DISCRIMINATOR_KIND:
        raise FgsbirError(f"{run_dir}: not a discriminator (kind {config.get('kind')!r})")
    disc = PairDiscriminator(config["width"])
    disc.load_state_dict(load_model_state(run_dir))
    return disc.to(select_device(device)).eval(), int(config["image_size"])


def train_semi(config: SemiConfig) -> dict[str, Any]:
    """Train (or resume) a semi-supervised run; returns the selected model's metrics.

    The result holds ``best_epoch`` (0: the start model won on validation), ``epochs_trained``,
    ``steps``, ``skipped_generator_steps``, ``joint_s`` (seconds of joint training), ``start``
    (the start runs and the seconds spent training them here), ``val`` and ``test`` metric
    dicts (where the splits have sketches) and ``pictures``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise FgsbirError("semi-supervised training runs in one process; start it without torchrun")
    if config.threads:
        torch.set_num_threads(config.threads)
    state = load_resume_state(config.out)
    start = StartRuns(**state["start"]) if state is not None else train_start_runs(config)
    trainer = _SemiTrainer(config, start, state)
    trainer.fit()
    return trainer.finish()
