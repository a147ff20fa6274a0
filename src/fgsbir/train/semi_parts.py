"""The generator and the discriminator as semi-supervised joint training uses them.

:class:`SketchPolicy` is the photo-to-sketch generator seen as a policy: it draws sketches of a
batch of photos (with their log-probabilities), and learns by REINFORCE from rewards plus its
supervised sequence loss on labelled pairs. :class:`PairCritic` is the (photo, sketch)
discriminator: it learns to tell real labelled pairs from generated ones, and its scores weight
the generated pairs and reward the generator. Each owns its network and optimiser, so the joint
task (:mod:`fgsbir.train.semi`) only wires them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fgsbir.config import Count, Natural, NonNegative, Positive, Rate
from fgsbir.data.dataset import Split
from fgsbir.data.sequences import drawable_pairs, heldout_set
from fgsbir.data.transforms import Preprocessing, sketch_ink, sketches_to_tensor
from fgsbir.data.unlabelled import UnlabelledPool
from fgsbir.device import DistributedContext
from fgsbir.errors import FgsbirError
from fgsbir.inference import DISCRIMINATOR_KIND, load_generator
from fgsbir.losses.policy import RunningBaseline, reinforce_loss, retrieval_reward
from fgsbir.losses.sequence import kl_loss, point_nll
from fgsbir.models.discriminator import PairDiscriminator, at_size, discriminator_weights
from fgsbir.models.generator import Encoding, SampleResult, samples_to_sketches
from fgsbir.runs import Stateful, save_model
from fgsbir.sketch.strokes import Sketch
from fgsbir.train.loop import optimise
from fgsbir.viz import sketch_photo_grid


@dataclass
class PolicyConfig:
    """How the generator keeps learning in joint training."""

    policy_gradient: bool = True  # REINFORCE on the drawn sketches
    frozen: bool = False  # no generator update at all (neither REINFORCE nor the sequence loss)
    lr: Positive = 1e-4  # Adam, betas 0.5 / 0.999, constant
    pg_weight: NonNegative = 1.0
    reward_tau: Positive = 0.1  # temperature of the retrieval reward
    reward_disc_weight: NonNegative = 0.5  # weight of the discriminator probability in the reward
    baseline_momentum: Rate = 0.9
    supervised_weight: NonNegative = 1.0  # the sequence loss on labelled pairs
    kl_weight: NonNegative = 0.1  # KL weight of that loss (KL floor: the generator run's)
    grad_clip: Positive = 1.0
    temperature: NonNegative = 0.5  # sampling temperature of generated sketches
    max_points: Count | None = None  # longest generated sketch (default: the generator's)


@dataclass
class CriticConfig:
    """The discriminator of joint training."""

    image_size: Count = 64  # it scores pairs at this size
    width: Count = 32
    lr: Positive = 2e-4  # Adam, betas 0.5 / 0.999
    warmup_steps: Natural = 20  # discriminator-only steps before joint training


@dataclass
class Drawn:
    """Sketches generated for a batch of photos: the samples and the networks' views of them."""

    sample: SampleResult
    sketches: list[Sketch]
    tensors: torch.Tensor  # retrieval-network input (B, 3, S, S)
    ink: torch.Tensor  # discriminator input (B, 1, s, s)


@dataclass
class Labelled:
    """The stroke-5 sequences of a batch's labelled photos that have one, with their maps."""

    has_sequence: torch.Tensor  # (B,) bool
    maps: torch.Tensor  # generator feature maps of those photos (B', C, h, w)
    targets: torch.Tensor  # (B', T, 5)
    lengths: torch.Tensor  # (B',)


class SketchPolicy:
    """A trained generator (from ``generator_run``) that keeps learning: its backbone stays
    frozen (feature maps are cached), the rest learns unless ``frozen``."""

    def __init__(
        self, generator_run: str, train: Split, config: PolicyConfig, ctx: DistributedContext
    ) -> None:
        self.config, self.ctx = config, ctx
        self.generator = load_generator(generator_run, str(ctx.device))
        self.model = self.generator.model
        self.model.backbone.requires_grad_(False)
        learned = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.")]
        for parameter in learned:
            parameter.requires_grad_(not config.frozen)
        self.optimizer = torch.optim.Adam(learned, lr=config.lr, betas=(0.5, 0.999))
        self.baseline = RunningBaseline(config.baseline_momentum)
        config = self.generator.config
        sequences = heldout_set(
            train, self.model, config["rdp_epsilon"], self.generator.scale, ctx.device
        )
        if sequences is None:
            raise FgsbirError("no training sketches for the generator to learn from")
        self.sequences = sequences
        # sequence i of that set is the i-th drawable pair of the training split
        self.sequences_of: dict[int, list[int]] = {}
        for i, record in enumerate(drawable_pairs(train).sketches):
            self.sequences_of.setdefault(record.photo, []).append(i)

    def parts(self) -> dict[str, Stateful]:
        return {"generator": self.model, "gen_optimizer": self.optimizer, "baseline": self.baseline}

    def labelled(self, photos: torch.Tensor, seed: int, position: int) -> Labelled:
        """One of its sequences (seeded by ``seed`` and ``position``) per labelled photo."""
        rng = np.random.default_rng([seed, 5, position])
        chosen = torch.tensor(
            [
                int(rng.choice(self.sequences_of[p])) if p in self.sequences_of else -1
                for p in photos.tolist()
            ],
            dtype=torch.long,
        )
        has = chosen >= 0
        maps, targets, lengths = self.sequences.batch(chosen[has], torch.zeros_like(chosen[has]))
        device = self.ctx.device
        return Labelled(has.to(device), maps, targets.to(device), lengths.to(device))

    def draw(
        self,
        encoding: Encoding,
        temperature: float,
        track: bool,
        prep: Preprocessing,
        ink_size: int,
    ) -> Drawn:
        """Sample sketches (gradients through ``log_prob`` when ``track``) and render them for
        the retrieval network (``prep``) and, at ``ink_size``, the discriminator."""
        with torch.set_grad_enabled(track):
            sample = self.model.sample(encoding, temperature, self.config.max_points)
        sketches = samples_to_sketches(sample, self.generator.scale, self.generator.canvas)
        tensors = sketches_to_tensor(sketches, prep).to(self.ctx.device)
        return Drawn(sample, sketches, tensors, at_size(sketch_ink(tensors), ink_size))

    def rewards(
        self, groups: Sequence[tuple[torch.Tensor, torch.Tensor]], disc_logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Each drawn sketch's reward: how well its embedding retrieves its photo among the
        photos of its group (``(sketch_emb, photo_emb)``, row ``i`` is sketch ``i``'s photo),
        plus ``reward_disc_weight`` x the discriminator's probability that it is real."""
        tau = self.config.reward_tau
        found = torch.cat([retrieval_reward(s.detach(), p.detach(), tau) for s, p in groups])
        realism = torch.sigmoid(disc_logits)
        stats = {"reward_retrieval": found.mean().item(), "reward_disc": realism.mean().item()}
        return found + self.config.reward_disc_weight * realism, stats

    def update(
        self,
        log_prob: torch.Tensor,
        rewards: torch.Tensor | None,
        labelled: Labelled,
        encoding: Encoding,
        baseline: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One clipped step on REINFORCE (when ``rewards`` are given) plus the weighted sequence
        loss of the labelled sequences (``encoding``: their photos'); ``skipped_generator`` is 1
        when its loss or gradient was not finite. ``log_prob``: the drawn sketches'; the
        ``baseline`` is the running one unless given (one per sketch)."""
        config = self.config
        stats: dict[str, float] = {}
        loss = torch.zeros((), device=self.ctx.device)
        if rewards is not None:
            subtracted = self.baseline.update(rewards) if baseline is None else baseline
            pg = reinforce_loss(log_prob, rewards, subtracted)
            loss = loss + config.pg_weight * pg
            mean = subtracted if isinstance(subtracted, float) else subtracted.mean().item()
            stats |= {"reward": rewards.mean().item(), "baseline": mean, "pg_loss": pg.item()}
        if config.supervised_weight > 0 and len(labelled.targets):
            mixture, mu, log_var = self.model(encoding, labelled.targets)
            nll = point_nll(mixture, labelled.targets, labelled.lengths)
            kl = kl_loss(mu, log_var, self.generator.config["kl_floor"])
            loss = loss + config.supervised_weight * (nll + config.kl_weight * kl)
            stats["gen_nll"] = nll.item()
        if loss.requires_grad:
            stepped = optimise(loss, self.optimizer, self.ctx, clip=config.grad_clip)
            stats["skipped_generator"] = float(not stepped)
        return stats

    def save(self, folder: Path, latest: dict[str, Any]) -> None:
        save_model(folder, self.model, self.generator.config, latest)


class PairCritic:
    """A (photo, sketch) discriminator trained with Adam."""

    def __init__(self, config: CriticConfig, ctx: DistributedContext) -> None:
        self.config, self.ctx = config, ctx
        self.model = PairDiscriminator(config.width).to(ctx.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.5, 0.999))

    def parts(self) -> dict[str, Stateful]:
        return {"discriminator": self.model, "disc_optimizer": self.optimizer}

    def low_res(self, images: torch.Tensor) -> torch.Tensor:
        return at_size(images, self.config.image_size)

    def score(self, photos: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
        """Logits of (network-input photo, low-resolution ink) pairs being real."""
        return self.model(self.low_res(photos), ink)

    def update(
        self,
        real_photos: torch.Tensor,
        real_sketches: torch.Tensor,
        fake_photos: torch.Tensor,
        fake_ink: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One step on real pairs (network-input photos and sketches) vs generated pairs;
        returns the (pre-update, detached) logits of the generated pairs and statistics."""
        logits = self.score(
            torch.cat([real_photos, fake_photos]),
            torch.cat([self.low_res(sketch_ink(real_sketches)), fake_ink]),
        )
        real, fake = logits.split([len(real_photos), len(fake_photos)])
        loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        optimise(loss, self.optimizer, self.ctx)
        stats = {
            "disc_loss": loss.item(),
            "disc_real_p": torch.sigmoid(real).mean().item(),
            "disc_fake_p": torch.sigmoid(fake).mean().item(),
        }
        return fake.detach(), stats

    def save(self, folder: Path, latest: dict[str, Any]) -> None:
        c = self.config
        config = {"kind": DISCRIMINATOR_KIND, "width": c.width, "image_size": c.image_size}
        save_model(folder, self.model, config, latest)


def draw_pictures(
    policy: SketchPolicy,
    critic: PairCritic,
    pool: UnlabelledPool,
    prep: Preprocessing,
    count: int,
    seed: int,
    out_png: Path,
) -> None:
    """Sketches the generator draws of ``count`` evenly spread unlabelled photos, greedy and at
    the policy's temperature, captioned with the discriminator's probability ``p`` and weight
    ``w`` (within these photos); sampled with their own seed, so training's random streams are
    untouched."""
    device = critic.ctx.device
    picked = np.unique(np.linspace(0, len(pool) - 1, count).round().astype(int)).tolist()
    pool.load(picked)
    photos = pool.inputs(picked).to(device)
    columns = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.no_grad():
            encoding = policy.model.encode_map(pool.feature_maps(picked).to(device))
            for t in (0.0, policy.config.temperature):
                drawn = policy.draw(encoding, t, False, prep, critic.config.image_size)
                logits = critic.score(photos, drawn.ink)
                p, w = torch.sigmoid(logits).tolist(), discriminator_weights(logits).tolist()
                captions = [f"T={t:g} p={a:.2f} w={b:.2f}" for a, b in zip(p, w, strict=True)]
                columns.append((drawn.sketches, captions))
    rows = [
        (pool.photos[i], [c[0][row] for c in columns], None, [c[1][row] for c in columns])
        for row, i in enumerate(picked)
    ]
    sketch_photo_grid(rows, out_png)
