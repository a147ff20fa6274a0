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
:func:`fgsbir.inference.load_embedder` and ``fgsbir evaluate`` read like a supervised one);
the generator and discriminator as joint training left them (latest epoch) are saved in
``generator/`` (loadable by :func:`fgsbir.inference.load_generator`) and
``discriminator/``. ``resume.pt`` is rewritten after every epoch; running the same call again
continues from it. ``run.time_budget_s`` bounds the whole call, start runs included, checked before
every epoch. Under ``torchrun`` each process takes its share of the labelled batches and its own
unlabelled photos at every step, and every update averages gradients over the processes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from fgsbir.config import (
    Count,
    DataConfig,
    Fraction,
    NonNegative,
    Positive,
    RunOptions,
    check_config,
    config_from_dict,
)
from fgsbir.data.sequences import drawable_pairs, heldout_set
from fgsbir.data.transforms import Augmentation, Preprocessing, sketch_ink, sketches_to_tensor
from fgsbir.data.unlabelled import UnlabelledPool
from fgsbir.errors import FgsbirError
from fgsbir.inference import DISCRIMINATOR_KIND, load_generator
from fgsbir.losses.metric import DistillationLoss, NegativeMining
from fgsbir.losses.policy import RunningBaseline, reinforce_loss, retrieval_reward
from fgsbir.losses.sequence import kl_loss, stroke_nll
from fgsbir.models.discriminator import PairDiscriminator, at_size, discriminator_weights
from fgsbir.models.embedding import EmbeddingArch, EmbeddingNet, build_embedding_net
from fgsbir.models.generator import Encoding, SampleResult, samples_to_sketches
from fgsbir.runs import Stateful, load_model_state, load_resume_state, load_run_config, save_model
from fgsbir.sketch.strokes import Sketch
from fgsbir.train.generator import GeneratorConfig, train_generator
from fgsbir.train.loop import Progress, fit, optimise, progress_bar
from fgsbir.train.supervised import RetrievalTask, TrainConfig, model_card, train
from fgsbir.viz import sketch_photo_grid

GENERATED_PNG = "generated_{when}.png"
GENERATOR_DIR = "generator"
DISCRIMINATOR_DIR = "discriminator"
START_RETRIEVAL_DIR = "start_retrieval"
START_GENERATOR_DIR = "start_generator"


@dataclass
class SemiConfig:
    """Everything a semi-supervised run depends on (saved in the run's ``config.json``).

    ``supervised`` and ``generator`` configure the start runs that :func:`train_semi` trains
    when ``retrieval_run`` / ``generator_run`` are not given; they get this run's ``data`` (the
    same labelled pairs), a share of its time budget, its device and threads. The retrieval
    architecture and preprocessing are the start run's.
    """

    data: DataConfig = field(default_factory=DataConfig)
    run: RunOptions = field(default_factory=lambda: RunOptions(out="runs/semi"))
    # start runs
    retrieval_run: str | None = None  # a supervised run folder; trained here when None
    generator_run: str | None = None  # a generator run folder; trained here when None
    supervised: TrainConfig = field(default_factory=TrainConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    retrieval_budget_share: Fraction = 0.4  # of run.time_budget_s, for a start retrieval run
    generator_budget_share: Fraction = 0.2  # of run.time_budget_s, for a start generator run
    # joint training
    batch_size: Count = 16  # labelled pairs per step
    unlabelled_batch_size: Count = 16  # unlabelled photos per step
    lr: Positive = 5e-5  # retrieval model (AdamW, constant)
    weight_decay: NonNegative = 1e-4
    margin: NonNegative = 0.2
    negatives: NegativeMining = "hardest"
    augment: Augmentation = field(default_factory=Augmentation)  # unlabelled photos: no flips
    generated_weight: NonNegative = 1.0  # triplet loss on generated pairs, relative to real
    disc_weighting: bool = True  # weight generated pairs by the discriminator's scores
    distillation: bool = True
    distill_weight: NonNegative = 1.0
    distill_tau: Positive = 0.1
    policy_gradient: bool = True  # REINFORCE update of the generator
    generator_frozen: bool = False  # no generator update at all (neither REINFORCE nor NLL)
    pg_weight: NonNegative = 1.0
    reward_tau: Positive = 0.1  # temperature of the retrieval reward
    reward_disc_weight: NonNegative = 0.5  # weight of the discriminator probability in the reward
    baseline_momentum: Fraction = 0.9
    supervised_gen_weight: NonNegative = 1.0  # the generator's sequence loss on labelled pairs
    gen_kl_weight: NonNegative = 0.1  # KL weight of that loss (KL floor: the generator run's)
    gen_lr: Positive = 1e-4  # generator (Adam, betas 0.5 / 0.999, constant)
    grad_clip: Positive = 1.0  # generator gradient norm
    temperature: NonNegative = 0.5  # sampling temperature of generated sketches
    max_points: Count | None = None  # longest generated sketch (default: the generator's)
    disc_image_size: Count = 64
    disc_width: Count = 32
    disc_lr: Positive = 2e-4
    disc_warmup_steps: int = 20  # discriminator-only steps before joint training
    select_metric: Literal["acc@1", "acc@5", "acc@10", "mrr"] = "mrr"  # picks the best epoch
    grid_queries: Count = 8  # rows of the retrieval-grid picture
    picture_photos: Count = 8  # unlabelled photos in the generated-sketch pictures


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


def _start_run(config: SemiConfig, folder: str, share: float) -> RunOptions:
    run = config.run
    budget = None if run.time_budget_s is None else share * run.time_budget_s
    return replace(run, out=str(Path(run.out) / folder), time_budget_s=budget, epochs=run.epochs)


def _check_start_run(folder: str, kind: str) -> None:
    if load_run_config(folder).get("kind") != kind:
        raise FgsbirError(f"{folder}: not a {kind} run")


def train_start_runs(config: SemiConfig) -> StartRuns:
    """The start runs of ``config``: given ones as they are (checked first), missing ones trained
    (or resumed) in ``run.out/start_retrieval`` and ``run.out/start_generator`` on the labelled
    pairs of ``config.data``."""
    for given, kind in ((config.retrieval_run, "embedding"), (config.generator_run, "generator")):
        if given:
            _check_start_run(given, kind)
    start = StartRuns(config.retrieval_run or "", config.generator_run or "")
    if not config.retrieval_run:
        run = _start_run(config, START_RETRIEVAL_DIR, config.retrieval_budget_share)
        run = replace(run, epochs=config.supervised.run.epochs)
        began = time.monotonic()
        train(replace(config.supervised, data=config.data, run=run))
        start.retrieval_run, start.retrieval_s = run.out, time.monotonic() - began
    if not config.generator_run:
        run = _start_run(config, START_GENERATOR_DIR, config.generator_budget_share)
        run = replace(run, epochs=config.generator.run.epochs)
        began = time.monotonic()
        train_generator(replace(config.generator, data=config.data, run=run))
        start.generator_run, start.generator_s = run.out, time.monotonic() - began
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


class SemiTask(RetrievalTask):
    """Joint training of the retrieval model, the generator and the discriminator."""

    validate_start = True  # epoch 0: the start model, after the discriminator's warm-up
    config: SemiConfig  # type: ignore[assignment]

    def __init__(self, config: SemiConfig, start: StartRuns) -> None:
        super().__init__(config)
        self.start = start
        self.start_config = load_run_config(start.retrieval_run)

    # -- set-up and state ----------------------------------------------------------------------

    def preprocessing(self) -> Preprocessing:
        return config_from_dict(Preprocessing, self.start_config["prep"])

    def build_model(self) -> EmbeddingNet:
        arch = config_from_dict(EmbeddingArch, self.start_config["model"])
        model = build_embedding_net(arch, pretrained=False)
        model.load_state_dict(load_model_state(self.start.retrieval_run))
        return model

    def build_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)

    def setup(self) -> dict[str, Any]:
        recorded = super().setup()
        config, device = self.config, self.ctx.device
        if not self.dataset.unlabelled:
            raise FgsbirError(
                f"{config.data.path}: no unlabelled photos; give photo folders (unlabelled) or "
                "a labelled fraction below 1"
            )
        self.teacher = self.build_model().to(device).eval().requires_grad_(False)
        self.distill = DistillationLoss(config.distill_tau)
        self.generator = load_generator(self.start.generator_run, str(device))
        self.gen = self.generator.model
        # the backbone stays frozen (feature maps are cached); the rest learns unless frozen
        self.gen.backbone.requires_grad_(False)
        learned = [p for name, p in self.gen.named_parameters() if not name.startswith("backbone.")]
        for parameter in learned:
            parameter.requires_grad_(not config.generator_frozen)
        self.gen_optimizer = torch.optim.Adam(learned, lr=config.gen_lr, betas=(0.5, 0.999))
        self.baseline = RunningBaseline(config.baseline_momentum)
        sequences = heldout_set(
            self.dataset.train, self.gen, self.generator.config["rdp_epsilon"],
            self.generator.scale, device,
        )  # fmt: skip
        if sequences is None:
            raise FgsbirError(f"{config.data.path}: no training sketches for the generator")
        self.labelled_sequences = sequences
        # sequence i of that set is the i-th drawable pair of the training split
        self.sequences_of: dict[int, list[int]] = {}
        for i, record in enumerate(drawable_pairs(self.dataset.train).sketches):
            self.sequences_of.setdefault(record.photo, []).append(i)
        self.disc = PairDiscriminator(config.disc_width).to(device)
        self.disc_optimizer = torch.optim.Adam(
            self.disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.999)
        )
        self.pool = UnlabelledPool(
            self.dataset.unlabelled, self.prep, self.gen, device, config.data.seed
        )
        return recorded | {
            "method": "semi",
            "model": self.start_config["model"],
            "prep": self.start_config["prep"],
            "start": dataclasses.asdict(self.start),
        }

    def parts(self) -> dict[str, Stateful]:
        return super().parts() | {
            "generator": self.gen,
            "gen_optimizer": self.gen_optimizer,
            "discriminator": self.disc,
            "disc_optimizer": self.disc_optimizer,
            "baseline": self.baseline,
        }

    # -- data ----------------------------------------------------------------------------------

    def _labelled_sequences(self, photos: torch.Tensor, position: int) -> torch.Tensor:
        """One stroke-5 sequence index per labelled photo, ``-1`` where it has none."""
        rng = np.random.default_rng([self.config.data.seed, 5, position])
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
        tensors = sketches_to_tensor(sketches, self.prep).to(self.ctx.device)
        return _Drawn(sample, sketches, tensors, self._low_res(sketch_ink(tensors)))

    def _low_res(self, images: torch.Tensor) -> torch.Tensor:
        return at_size(images, self.config.disc_image_size)

    def _batch(self, epoch: int, batch: list[int], position: int) -> _Batch:
        """Labelled pairs ``batch`` (augmented as in ``epoch``), the unlabelled photos of batch
        number ``position``, and the generator's encoding of the unlabelled photos, then of the
        labelled ones it can learn from (those with a non-empty sketch)."""
        device = self.ctx.device
        sketches, photos, labels = self.labelled_batch(batch, epoch)
        unlabelled = self.pool.indices(position, self.config.unlabelled_batch_size)
        self.pool.load(unlabelled)
        sequences = self._labelled_sequences(labels.cpu(), position)
        has_sequence = sequences >= 0
        chosen = sequences[has_sequence]
        images, targets, lengths = self.labelled_sequences.batch(chosen, torch.zeros_like(chosen))
        maps = torch.cat([self.pool.feature_maps(unlabelled), images])
        return _Batch(
            sketches=sketches,
            photos=photos,
            labels=labels,
            unlabelled=self.pool.views(unlabelled, position, self.config.augment).to(device),
            has_sequence=has_sequence.to(device),
            targets=targets.to(device),
            lengths=lengths.to(device),
            encoding=self.gen.encode_map(maps.to(device)),
        )

    def _position(self, step: int) -> int:
        """A number for this process's batch of unlabelled photos at joint step ``step``
        (the warm-up steps come first)."""
        return (step + self.config.disc_warmup_steps) * self.ctx.world_size + self.ctx.rank

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
        optimise(loss, self.disc_optimizer, self.ctx)
        stats = {
            "disc_loss": loss.item(),
            "disc_real_p": torch.sigmoid(real).mean().item(),
            "disc_fake_p": torch.sigmoid(fake).mean().item(),
        }
        return fake.detach(), stats

    def step(self, batch_indices: list[int], progress: Progress) -> dict[str, float]:
        """One joint step on labelled pairs ``batch_indices`` and the step's unlabelled photos."""
        config = self.config
        batch = self._batch(progress.epoch, batch_indices, self._position(progress.step))
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
        stats["loss"] = loss.item()
        stats["skipped"] = not optimise(loss, self.optimizer, self.ctx)

        if learns:
            # rewards use this step's (pre-update) embeddings: generated sketches of unlabelled
            # photos among the unlabelled photos, those of labelled photos among those photos
            found = torch.cat([
                retrieval_reward(gen_sk[:u].detach(), unl_ph.detach(), config.reward_tau),
                retrieval_reward(gen_sk[u:].detach(), real_ph[batch.has_sequence].detach(),
                                 config.reward_tau),
            ])  # fmt: skip
            stats |= self._generator_update(batch, drawn, found, fake_logits)
            # a skipped generator update skips (part of) the joint step: the loop counts it
            stats["skipped"] = stats["skipped"] or bool(stats.get("skipped_generator"))
        return stats

    def _generator_update(
        self, batch: _Batch, drawn: _Drawn, found: torch.Tensor, fake_logits: torch.Tensor
    ) -> dict[str, float]:
        """REINFORCE on the drawn sketches plus the sequence loss on labelled pairs, one clipped
        step (skipped, and counted, when its loss or gradient is not finite)."""
        config = self.config
        stats: dict[str, float] = {}
        loss = torch.zeros((), device=self.ctx.device)
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
        if loss.requires_grad:
            stepped = optimise(loss, self.gen_optimizer, self.ctx, clip=config.grad_clip)
            stats["skipped_generator"] = float(not stepped)
        return stats

    # -- the loop's hooks ----------------------------------------------------------------------

    def begin(self) -> None:
        """Discriminator-only warm-up steps, so its weights mean something from the first joint
        step; then the pictures of the start generator."""
        batches = self.ctx.share(self.batches(0))
        totals: dict[str, list[float]] = {}
        for i in progress_bar(
            range(self.config.disc_warmup_steps), "discriminator warm-up", self.ctx
        ):
            position = i * self.ctx.world_size + self.ctx.rank
            batch = self._batch(0, batches[i % len(batches)], position)
            drawn = self._draw(batch.encoding, self.config.temperature, track=False)
            for key, value in self._disc_update(batch, drawn)[1].items():
                totals.setdefault(key, []).append(value)
        if self.ctx.is_main:
            self.warm_up = {key: float(np.mean(values)) for key, values in totals.items()}
            self._pictures("start")

    def end_epoch(self, progress: Progress) -> None:
        """Save the latest generator and discriminator (loadable with fgsbir.inference)."""
        out = Path(self.config.run.out)
        latest = {"epoch": progress.epoch, "step": progress.step, "semi_run": str(out)}
        save_model(out / GENERATOR_DIR, self.gen, self.generator.config, latest)
        disc_config = {
            "kind": DISCRIMINATOR_KIND,
            "width": self.config.disc_width,
            "image_size": self.config.disc_image_size,
        }
        save_model(out / DISCRIMINATOR_DIR, self.disc, disc_config, latest)

    def finish(self, run_config: dict[str, Any]) -> dict[str, Any]:
        """The retrieval scores and grids, and pictures of the generator at the start and end."""
        out = Path(self.config.run.out)
        pictures = [str(out / GENERATED_PNG.format(when="start")), str(self._pictures("end"))]
        result = super().finish(run_config)
        return result | {"start": run_config["start"], "pictures": pictures + result["pictures"]}

    def _pictures(self, when: str) -> Path:
        """Generated sketches of evenly spread unlabelled photos, greedy and sampled, captioned
        with the discriminator's probability ``p`` and weight ``w`` (within these photos)."""
        n, device = len(self.pool), self.ctx.device
        spread = np.linspace(0, n - 1, self.config.picture_photos).round().astype(int)
        picked = np.unique(spread).tolist()
        self.pool.load(picked)
        photos = self._low_res(self.pool.inputs(picked).to(device))
        columns = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.config.data.seed)
            with torch.no_grad():
                encoding = self.gen.encode_map(self.pool.feature_maps(picked).to(device))
                for temperature in (0.0, self.config.temperature):
                    drawn = self._draw(encoding, temperature, track=False)
                    logits = self.disc(photos, drawn.ink)
                    p, w = torch.sigmoid(logits).tolist(), discriminator_weights(logits).tolist()
                    captions = [
                        f"T={temperature:g} p={a:.2f} w={b:.2f}" for a, b in zip(p, w, strict=True)
                    ]
                    columns.append((drawn.sketches, captions))
        rows = [
            (self.pool.photos[i], [c[0][row] for c in columns], None, [c[1][row] for c in columns])
            for row, i in enumerate(picked)
        ]
        out_png = Path(self.config.run.out) / GENERATED_PNG.format(when=when)
        sketch_photo_grid(rows, out_png)
        return out_png

    def card(self, run_config: dict[str, Any], metrics: dict[str, Any]) -> str:
        c = self.config
        parts = {
            "discriminator weighting": c.disc_weighting,
            "distillation": c.distillation,
            "policy gradient": c.policy_gradient and not c.generator_frozen,
            "generator updates": not c.generator_frozen,
        }
        switches = ", ".join(f"{name} {'on' if on else 'off'}" for name, on in parts.items())
        kept = " (0: the start model was kept)" if metrics["best_epoch"] == 0 else ""
        return model_card(run_config, metrics) + (
            "\n## Semi-supervised training\n\n"
            f"Joint training after Bhunia et al. (CVPR 2021) from the supervised run "
            f"`{self.start.retrieval_run}` and the generator `{self.start.generator_run}`, with "
            f"{run_config['data_info']['unlabelled_photos']} unlabelled photos ({switches}); "
            f"best epoch {metrics['best_epoch']}{kept}. The generator and discriminator after "
            f"the last epoch are in `{GENERATOR_DIR}/` and `{DISCRIMINATOR_DIR}/`.\n"
        )


def train_semi(config: SemiConfig) -> dict[str, Any]:
    """Train (or resume) a semi-supervised run; returns the selected model's metrics.

    The result holds ``best_epoch`` (0: the start model won on validation), ``epochs_trained``,
    ``steps``, ``skipped_steps``, ``train_s`` (seconds of joint training), ``start`` (the start
    runs and the seconds spent training them here), ``val`` and ``test`` metric dicts (where the
    splits have sketches) and ``pictures``.
    """
    config = check_config(config)
    state = load_resume_state(config.run.out)
    start = StartRuns(**state["config"]["start"]) if state else train_start_runs(config)
    budget = config.run.time_budget_s
    if budget is not None:
        budget = max(budget - start.seconds, 1e-3)
    return fit(SemiTask(config, start), replace(config.run, time_budget_s=budget))
