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

The photo-side losses of :mod:`fgsbir.train.photo_side` (``photo.*``) and the edge pseudo-pairs
(``edges.*``) are on offer here too: the former on the step's labelled pairs and unlabelled photos,
the latter as leading epochs or mixed into the labelled batches.

Every part has a switch (``disc_weighting``, ``distillation``, ``policy_gradient``,
``generator_frozen``) for ablations. Sketches are generated afresh at every step (no pool): the
generator's backbone is frozen during joint training, so each photo's feature map is computed
once, on first use, and the per-step generator cost is the attentive LSTM alone.

Each epoch is one pass over the labelled pairs, scored on the validation split (epoch 0: the
start model, after the discriminator's warm-up). The best epoch's retrieval weights are the run's
``model.safetensors``, read like a supervised run's; the latest generator and discriminator are
saved in ``generator/`` and ``discriminator/`` (see :mod:`fgsbir.inference`).
``run.time_budget_s`` bounds the whole call, start runs included. Under ``torchrun`` each process
takes its share of the labelled batches and its own unlabelled photos at every step.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

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
from fgsbir.data.dataset import load_data
from fgsbir.data.transforms import Augmentation, Preprocessing
from fgsbir.data.unlabelled import UnlabelledPool
from fgsbir.errors import FgsbirError
from fgsbir.losses.metric import DistillationLoss, NegativeMining
from fgsbir.models.discriminator import discriminator_weights
from fgsbir.models.embedding import EmbeddingArch, EmbeddingNet, build_embedding_net
from fgsbir.models.generator import Encoding
from fgsbir.runs import Stateful, load_model_state, load_resume_state, load_run_config
from fgsbir.train.generator import GeneratorConfig, train_generator
from fgsbir.train.loop import Progress, fit, optimise, progress_bar
from fgsbir.train.photo_side import PhotoLosses, PhotoSide
from fgsbir.train.semi_parts import (
    CriticConfig,
    Drawn,
    Labelled,
    PairCritic,
    PolicyConfig,
    SketchPolicy,
    draw_pictures,
)
from fgsbir.train.supervised import (
    Batch,
    EdgePairs,
    RetrievalTask,
    TrainConfig,
    model_card,
    train,
)

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
    edges: EdgePairs = field(default_factory=EdgePairs)
    photo: PhotoLosses = field(default_factory=PhotoLosses)
    generated_weight: NonNegative = 1.0  # triplet loss on generated pairs, relative to real
    disc_weighting: bool = True  # weight generated pairs by the discriminator's scores
    distillation: bool = True
    distill_weight: NonNegative = 1.0
    distill_tau: Positive = 0.1
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # the generator's learning
    critic: CriticConfig = field(default_factory=CriticConfig)  # the discriminator
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


def train_start_runs(config: SemiConfig) -> StartRuns:
    """The start runs of ``config``: given ones as they are (checked first), missing ones trained
    (or resumed) in ``run.out/start_retrieval`` and ``run.out/start_generator`` on the labelled
    pairs of ``config.data``, each with its share of the time budget."""
    starts = {  # kind: (given run, template, trainer, folder, budget share)
        "embedding": (config.retrieval_run, config.supervised, train, START_RETRIEVAL_DIR,
                      config.retrieval_budget_share),
        "generator": (config.generator_run, config.generator, train_generator,
                      START_GENERATOR_DIR, config.generator_budget_share),
    }  # fmt: skip
    for kind, (given, *_) in starts.items():
        if given:
            load_run_config(given, kind)
    folders, seconds = {}, {}
    for kind, (given, template, trainer, folder, share) in starts.items():
        folders[kind], seconds[kind] = given, 0.0
        if given:
            continue
        budget = config.run.time_budget_s
        run = replace(
            config.run, out=str(Path(config.run.out) / folder), epochs=template.run.epochs,
            time_budget_s=None if budget is None else share * budget,
        )  # fmt: skip
        began = time.monotonic()
        trainer(replace(template, data=config.data, run=run))
        folders[kind], seconds[kind] = run.out, time.monotonic() - began
    return StartRuns(folders["embedding"], folders["generator"], *seconds.values())


@dataclass
class _Batch:
    """The inputs of one step, on the training device."""

    sketches: torch.Tensor  # labelled pairs: sketch network inputs (B, 3, S, S)
    photos: torch.Tensor  # and their photos
    labels: torch.Tensor  # (B,) photo ids
    unlabelled: torch.Tensor  # unlabelled photo network inputs (U, 3, S, S)
    pool: list[int]  # which photos of the pool they are
    labelled: Labelled  # the labelled photos' sequences for the generator's supervised loss
    encoding: Encoding  # the generator's view of the U unlabelled, then the B' labelled photos


class SemiTask(RetrievalTask):
    """Joint training of the retrieval model, the generator and the discriminator."""

    validate_start = True  # epoch 0: the start model, after the discriminator's warm-up
    config: SemiConfig  # type: ignore[assignment]

    def __init__(self, config: SemiConfig, start: StartRuns) -> None:
        super().__init__(config)
        self.start = start
        self.start_config = load_run_config(start.retrieval_run)

    def preprocessing(self) -> Preprocessing:
        return config_from_dict(Preprocessing, self.start_config["prep"])

    def build_photo_side(self) -> None:
        """None yet: the photo-side losses use the joint step's unlabelled photos, whose pool
        :meth:`setup` builds after the generator."""

    def build_averaged(self) -> None:
        """None: the joint training keeps the trained weights (no weight averaging)."""

    def model_arch(self) -> EmbeddingArch:
        return config_from_dict(EmbeddingArch, self.start_config["model"])

    def build_model(self) -> EmbeddingNet:
        model = build_embedding_net(self.model_arch(), pretrained=False)
        model.load_state_dict(load_model_state(self.start.retrieval_run))
        return model

    def build_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)

    def setup(self) -> dict[str, Any]:
        recorded = super().setup()
        config, ctx = self.config, self.ctx
        self.teacher = self.build_model().to(ctx.device).eval().requires_grad_(False)
        self.distill = DistillationLoss(config.distill_tau)
        self.policy = SketchPolicy(self.start.generator_run, self.dataset.train, config.policy, ctx)
        self.critic = PairCritic(config.critic, ctx)
        self.pool = UnlabelledPool(
            self.dataset.unlabelled, self.prep, ctx.device, config.data.seed, self.policy.model
        )
        if config.photo.on:
            photos = self.dataset.train.photos
            self.photo_side = PhotoSide(config.photo, photos, self.pool, config.augment, ctx)
        return recorded | {
            "method": "semi",
            "model": self.start_config["model"],
            "prep": self.start_config["prep"],
            "start": dataclasses.asdict(self.start),
        }

    def parts(self) -> dict[str, Stateful]:
        return super().parts() | self.policy.parts() | self.critic.parts()

    def _batch(self, batch: Batch, progress: Progress, position: int) -> _Batch:
        """Labelled pairs ``batch`` (augmented as in ``progress.epoch``), the unlabelled photos
        of batch number ``position``, and the generator's encoding of the unlabelled photos, then
        of the labelled ones it can learn from (those with a non-empty sketch)."""
        device = self.ctx.device
        sketches, photos, labels = self.labelled_batch(batch, progress)
        unlabelled = self.pool.indices(position, self.config.unlabelled_batch_size)
        self.pool.load(unlabelled)
        labelled = self.policy.labelled(labels.cpu(), self.config.data.seed, position)
        maps = torch.cat([self.pool.feature_maps(unlabelled), labelled.maps])
        return _Batch(
            sketches, photos, labels,
            unlabelled=self.pool.views(unlabelled, position, self.config.augment).to(device),
            pool=unlabelled,
            labelled=labelled,
            encoding=self.policy.model.encode_map(maps.to(device)),
        )  # fmt: skip

    def _draw(self, encoding: Encoding, temperature: float, track: bool) -> Drawn:
        return self.policy.draw(
            encoding, temperature, track, self.prep, self.config.critic.image_size
        )

    def _critic_update(self, batch: _Batch, drawn: Drawn) -> tuple[torch.Tensor, dict]:
        """The discriminator's step: real labelled pairs vs every generated pair."""
        fakes = torch.cat([batch.unlabelled, batch.photos[batch.labelled.has_sequence]])
        return self.critic.update(batch.photos, batch.sketches, fakes, drawn.ink)

    def step(self, labelled: Batch, progress: Progress) -> dict[str, float]:
        """One joint step on a batch of labelled pairs and this process's unlabelled photos of
        the step (the warm-up steps' come first); edge-pair epochs train retrieval alone."""
        config, ctx = self.config, self.ctx
        if labelled[0] == "edges":
            return super().step(labelled, progress)
        position = (progress.step + config.critic.warmup_steps) * ctx.world_size + ctx.rank
        batch = self._batch(labelled, progress, position)
        policy = config.policy
        learns = not policy.frozen
        drawn = self._draw(batch.encoding, policy.temperature, learns and policy.policy_gradient)
        fake_logits, stats = self._critic_update(batch, drawn)

        # retrieval: real pairs + discriminator-weighted generated pairs + distillation
        n, u = len(batch.labels), len(batch.unlabelled)
        extra = self.photo_side.copies(batch.unlabelled) if self.photo_side else [batch.unlabelled]
        inputs = torch.cat([batch.sketches, batch.photos, drawn.tensors, *extra])
        embeddings = self.model(inputs)
        sizes = [n, n, len(drawn.tensors), *map(len, extra)]
        real_sk, real_ph, gen_sk, *extra_emb = embeddings.split(sizes)
        unl_ph = extra_emb[0]
        weights = discriminator_weights(fake_logits[:u]) if config.disc_weighting else None
        real_loss = self.triplet(real_sk, self.gallery(real_ph, extra_emb), batch.labels)
        gen_loss = self.triplet(gen_sk[:u], unl_ph, weights=weights)
        loss = real_loss + config.generated_weight * gen_loss
        stats |= {"triplet_real": real_loss.item(), "triplet_generated": gen_loss.item()}
        if config.distillation:
            with torch.no_grad():
                teacher = self.teacher(torch.cat([drawn.tensors[:u], batch.unlabelled]))
            distill = self.distill(gen_sk[:u], unl_ph, *teacher.split([u, u]))
            loss = loss + config.distill_weight * distill
            stats["distill"] = distill.item()
        if self.photo_side is not None:
            files = self.photo_files(batch.labels) + [self.pool.photos[i] for i in batch.pool]
            lr = self.optimizer.param_groups[0]["lr"]
            ahead = self.photo_side.ahead(self.model, inputs, embeddings, loss, lr)
            sketch_at, photo_at, _, *extra_at = ahead.split(sizes)
            photo_loss, photo_stats = self.photo_side.loss(sketch_at, photo_at, extra_at, files)
            loss, stats = loss + photo_loss, stats | photo_stats
        stats["loss"] = loss.item()
        stats["skipped"] = not optimise(loss, self.optimizer, ctx)
        if not learns:
            return stats
        rewards = None
        if policy.policy_gradient:
            # this step's (pre-update) embeddings: generated sketches of unlabelled photos
            # among the unlabelled photos, those of labelled photos among those photos
            groups = [(gen_sk[:u], unl_ph), (gen_sk[u:], real_ph[batch.labelled.has_sequence])]
            rewards, found = self.policy.rewards(groups, fake_logits)
            stats |= found
        labelled_encoding = batch.encoding.rows(slice(u, None))
        stats |= self.policy.update(
            drawn.sample.log_prob, rewards, batch.labelled, labelled_encoding
        )
        # a skipped generator update skips (part of) the joint step: the loop counts it
        stats["skipped"] = stats["skipped"] or bool(stats.get("skipped_generator"))
        return stats

    # -- the loop's hooks ----------------------------------------------------------------------

    def begin(self) -> dict[str, float]:
        """Discriminator-only warm-up steps, so its weights mean something from the first joint
        step; then the pictures of the start generator. Returns the warm-up's mean losses."""
        batches = self.ctx.share(self.batches(0))
        totals: dict[str, list[float]] = {}
        steps = range(self.config.critic.warmup_steps)
        for i in progress_bar(steps, "discriminator warm-up", self.ctx):
            position = i * self.ctx.world_size + self.ctx.rank
            batch = self._batch(batches[i % len(batches)], Progress(step=i), position)
            drawn = self._draw(batch.encoding, self.config.policy.temperature, track=False)
            for key, value in self._critic_update(batch, drawn)[1].items():
                totals.setdefault(key, []).append(value)
        if self.ctx.is_main:
            self._pictures("start")
        return {key: float(np.mean(values)) for key, values in totals.items()}

    def end_epoch(self, progress: Progress) -> None:
        """Save the latest generator and discriminator (loadable with fgsbir.inference)."""
        out = Path(self.config.run.out)
        latest = {"epoch": progress.epoch, "step": progress.step, "semi_run": str(out)}
        self.policy.save(out / GENERATOR_DIR, latest)
        self.critic.save(out / DISCRIMINATOR_DIR, latest)

    def finish(self, run_config: dict[str, Any]) -> dict[str, Any]:
        """The retrieval scores and grids, and pictures of the generator at the start and end."""
        out = Path(self.config.run.out)
        pictures = [str(out / GENERATED_PNG.format(when="start")), str(self._pictures("end"))]
        result = super().finish(run_config)
        return result | {"start": run_config["start"], "pictures": pictures + result["pictures"]}

    def _pictures(self, when: str) -> Path:
        out_png = Path(self.config.run.out) / GENERATED_PNG.format(when=when)
        config = self.config
        draw_pictures(
            self.policy, self.critic, self.pool, self.prep, config.picture_photos,
            config.data.seed, out_png,
        )  # fmt: skip
        return out_png

    def card(self, run_config: dict[str, Any], metrics: dict[str, Any]) -> str:
        c = self.config
        parts = {
            "discriminator weighting": c.disc_weighting,
            "distillation": c.distillation,
            "policy gradient": c.policy.policy_gradient and not c.policy.frozen,
            "generator updates": not c.policy.frozen,
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


def check_data(data: DataConfig) -> None:
    """Refuse data that joint training could not use, before any start run trains."""
    if not load_data(data).unlabelled:
        raise FgsbirError(
            f"{data.path}: no unlabelled photos; give photo folders (--unlabelled) or a "
            "labelled fraction below 1"
        )


def train_semi(config: SemiConfig) -> dict[str, Any]:
    """Train (or resume) a semi-supervised run; returns the selected model's metrics.

    The result holds ``best_epoch`` (0: the start model won on validation), ``epochs_trained``,
    ``steps``, ``skipped_steps``, ``train_s`` (seconds of joint training), ``start`` (the start
    runs and the seconds spent training them here), ``val`` and ``test`` metric dicts (where the
    splits have sketches) and ``pictures``.
    """
    config = check_config(config)
    check_data(config.data)
    state = load_resume_state(config.run.out)
    start = StartRuns(**state["config"]["start"]) if state else train_start_runs(config)
    budget = config.run.time_budget_s
    if budget is not None:
        budget = max(budget - start.seconds, 1e-3)
    return fit(SemiTask(config, start), replace(config.run, time_budget_s=budget))
