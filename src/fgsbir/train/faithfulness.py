"""How faithful generated sketches are: does the sketch drawn for a photo retrieve that photo?

A fixed retrieval model (the *judge*) ranks a split's photos for the sketch generated from each
photo that has a real sketch. :func:`generator_faithfulness` scores a generator that way;
:func:`choose_copy_bias` sets an edge-pointer generator's copy bias by it;
:func:`discriminator_faithfulness` asks whether a semi-supervised run's discriminator, whose scores
weight the generated pairs in joint training, favours the faithful ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fgsbir.config import config_from_dict
from fgsbir.data.dataset import Split
from fgsbir.data.photos import load_photo
from fgsbir.data.transforms import Preprocessing, photos_to_tensor, sketch_ink, sketches_to_tensor
from fgsbir.evaluate import evaluate_split, rank_of_true, retrieval_metrics
from fgsbir.inference import Embedder, TrainedGenerator, load_discriminator, load_generator
from fgsbir.models.discriminator import at_size
from fgsbir.runs import load_run_config
from fgsbir.sketch.strokes import Sketch
from fgsbir.train.semi import DISCRIMINATOR_DIR, GENERATOR_DIR


def _sketched_photos(split: Split) -> list[int]:
    """The photos of ``split`` that have a real sketch: those a generated sketch is drawn for."""
    return sorted({r.photo for r in split.sketches if r.photo is not None})


def generator_faithfulness(
    generator: TrainedGenerator,
    embedder: Embedder,
    split: Split,
    temperature: float = 0.0,
    batch_size: int = 32,
) -> dict[str, dict[str, float | int]]:
    """How well generated sketches retrieve their own photo, judged by a retrieval model.

    Every photo of ``split`` that has a sketch gets one generated sketch (greedy by default),
    which queries all the split's photos. Returns ``generated`` (the metrics of
    :func:`~fgsbir.evaluate.retrieval_metrics` for those queries), ``real`` (the same model
    queried with the real sketches) and ``chance`` (``acc@K`` of a random ranking).
    """
    real, _, photo_emb = evaluate_split(embedder, split, batch_size)
    generated = _generated_metrics(generator, embedder, split, photo_emb, temperature, batch_size)
    n = len(split.photos)
    chance = {f"acc@{k}": min(k, n) / n for k in (1, 5, 10)}
    return {"generated": generated, "real": real, "chance": chance}


def _generated_metrics(
    generator: TrainedGenerator,
    embedder: Embedder,
    split: Split,
    photo_emb: np.ndarray,
    temperature: float,
    batch_size: int,
) -> dict[str, float | int]:
    """``generated`` of :func:`generator_faithfulness`, given the split's photo embeddings."""
    drawn_for = _sketched_photos(split)
    sketches: list[Sketch] = []
    for start in range(0, len(drawn_for), batch_size):
        photos = [load_photo(split.photos[i]) for i in drawn_for[start : start + batch_size]]
        sketches += generator.draw(photos, temperature, batch_size=batch_size)
    return retrieval_metrics(embedder.embed_sketches(sketches), photo_emb, drawn_for)


COPY_BIASES = (0.0, 1.0, 2.0, 4.0, 8.0)
"""The copy biases :func:`choose_copy_bias` tries."""


def choose_copy_bias(
    generator: TrainedGenerator,
    embedder: Embedder,
    split: Split,
    biases: Sequence[float] = COPY_BIASES,
    temperature: float = 0.0,
    batch_size: int = 32,
) -> tuple[float, dict[float, dict[str, float | int]]]:
    """Of ``biases``, the copy bias (see :attr:`~fgsbir.inference.TrainedGenerator.copy_bias`)
    whose sketches of ``split``'s photos find them best by ``embedder``'s MRR (of ties, the
    smallest bias), with each bias's ``generated`` scores from :func:`generator_faithfulness`.
    Pick it on validation photos, with a retrieval model trained without them. The generator is
    left drawing with the chosen bias."""
    _, _, photo_emb = evaluate_split(embedder, split, batch_size)  # once for every bias
    scores = {}
    for bias in sorted(biases):
        generator.copy_bias = bias
        scores[bias] = _generated_metrics(
            generator, embedder, split, photo_emb, temperature, batch_size
        )
    best = max(scores, key=lambda bias: (scores[bias]["mrr"], -bias))
    generator.copy_bias = best
    return best, scores


@torch.no_grad()
def discriminator_faithfulness(
    semi_run: str | Path,
    judge: Embedder,
    split: Split,
    temperature: float = 0.5,
    draws: int = 4,
    batch_size: int = 32,
) -> dict[str, float]:
    """Do the discriminator's scores favour the faithful generated pairs?

    The final generator of ``semi_run`` draws ``draws`` sketches of each photo of ``split`` that
    has a sketch, at ``temperature`` (joint training's); ``judge`` ranks the split's photos for
    each, and the run's final discriminator scores each (photo, sketch) pair as joint training
    does. Returns ``mrr`` and ``acc@1`` of those queries, the same averages weighted by the
    discriminator's probabilities (``mrr_weighted``, ``acc@1_weighted``: above the plain ones
    when the discriminator favours the pairs whose sketch finds its photo), and ``p_generated``
    and ``p_real``, its mean probability of the generated pairs and of the real ones.
    """
    run = Path(semi_run)
    generator = load_generator(run / GENERATOR_DIR)
    disc, size = load_discriminator(run / DISCRIMINATOR_DIR, str(generator.device))
    prep = config_from_dict(Preprocessing, load_run_config(run)["prep"])

    def probability(photos: torch.Tensor, sketches: list[Sketch]) -> list[float]:
        ink = sketch_ink(sketches_to_tensor(sketches, prep)).to(generator.device)
        return torch.sigmoid(disc(photos, at_size(ink, size))).tolist()

    _, _, photo_emb = evaluate_split(judge, split, batch_size)
    drawn_for = _sketched_photos(split)
    p_generated: list[float] = []
    p_real: list[float] = []
    ranks: list[np.ndarray] = []
    for start in range(0, len(drawn_for), batch_size):
        chosen = drawn_for[start : start + batch_size]
        photos = [load_photo(split.photos[i]) for i in chosen]
        photo_input = at_size(photos_to_tensor(photos, prep), size).to(generator.device)
        p_real += probability(photo_input, [split.sketches_of(i)[0].sketch for i in chosen])
        for _ in range(draws):
            sketches = generator.draw(photos, temperature, batch_size=batch_size)
            p_generated += probability(photo_input, sketches)
            ranks.append(rank_of_true(judge.embed_sketches(sketches), photo_emb, chosen))
    rank = np.concatenate(ranks)
    weights = np.asarray(p_generated)
    scores = {"mrr": 1.0 / rank, "acc@1": (rank == 1).astype(float)}
    result = {key: float(value.mean()) for key, value in scores.items()}
    result |= {
        f"{key}_weighted": float(np.average(v, weights=weights)) for key, v in scores.items()
    }
    return result | {"p_generated": float(weights.mean()), "p_real": float(np.mean(p_real))}
