"""Trained models at work, apart from training: load a run folder, embed, draw, score.

* :class:`Embedder` (from :func:`load_embedder`): a retrieval model that embeds PIL photos and
  vector sketches as NumPy vectors; evaluation, the index and the web page take one.
* :class:`TrainedGenerator` (from :func:`load_generator`): a photo-to-sketch generator that draws
  vector sketches of photos; :func:`generate` writes them as files.
* :func:`load_discriminator`: the (photo, sketch) scorer a semi-supervised run leaves.
* :func:`load_gallery_model` and :func:`load_gallery_generator`: the models a served gallery
  index searches and sketches its photos with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fgsbir.config import config_from_dict
from fgsbir.data.dataset import Split
from fgsbir.data.photos import load_photo
from fgsbir.data.sequences import SequenceSet, heldout_set
from fgsbir.data.transforms import Preprocessing, photos_to_tensor, sketches_to_tensor
from fgsbir.device import select_device
from fgsbir.errors import DataError, FgsbirError
from fgsbir.losses.sequence import stroke_nll
from fgsbir.models.discriminator import PairDiscriminator
from fgsbir.models.embedding import (
    EmbeddingArch,
    EmbeddingEnsemble,
    RetrievalNet,
    build_embedding_net,
)
from fgsbir.models.generator import (
    PhotoToSketch,
    SampleResult,
    create_generator,
    generator_arch,
    samples_to_sketches,
)
from fgsbir.runs import CONFIG_FILE, load_model_state, load_run_config
from fgsbir.sketch.io import write_png, write_stroke_json, write_svg
from fgsbir.sketch.strokes import Sketch
from fgsbir.viz import sketch_photo_grid

_WRITERS = ((".svg", write_svg), (".png", write_png), (".json", write_stroke_json))
DISCRIMINATOR_KIND = "discriminator"


def model_identity(model: nn.Module, prep: Preprocessing) -> str:
    """A short hash of the weights and the preprocessing: equal iff embeddings are comparable."""
    digest = hashlib.sha256(json.dumps(prep.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Embedder:
    """Embeds photos and sketches with a trained :class:`EmbeddingNet` or ensemble of them
    (inference only)."""

    def __init__(
        self,
        model: RetrievalNet,
        prep: Preprocessing,
        config: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.device = select_device(str(device) if device is not None else None)
        self.model = model.to(self.device).eval()
        self.prep = prep
        self.config = dict(config or {})

    @cached_property
    def identity(self) -> str:
        """Hash of the weights and preprocessing (see :func:`model_identity`)."""
        return model_identity(self.model, self.prep)

    @torch.no_grad()
    def _embed(self, images: torch.Tensor) -> np.ndarray:
        return self.model(images.to(self.device)).float().cpu().numpy()

    def embed_photo_tensors(self, photos: torch.Tensor) -> np.ndarray:
        """``(N, D)`` float32 embeddings of preprocessed ``(N, 3, S, S)`` photo tensors."""
        return self._embed(photos)

    def embed_sketch_tensors(self, sketches: torch.Tensor) -> np.ndarray:
        """``(N, D)`` float32 embeddings of preprocessed ``(N, 3, S, S)`` sketch tensors."""
        return self._embed(sketches)

    def embed_photos(self, photos: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """``(N, D)`` float32 L2-normalised embeddings of PIL photos."""
        return self._batched(photos, lambda b: photos_to_tensor(b, self.prep), batch_size)

    def embed_sketches(self, sketches: Sequence[Sketch], batch_size: int = 32) -> np.ndarray:
        """``(N, D)`` float32 L2-normalised embeddings of vector sketches."""
        return self._batched(sketches, lambda b: sketches_to_tensor(b, self.prep), batch_size)

    def _batched(
        self,
        items: Sequence[Any],
        to_tensor: Callable[[Sequence[Any]], torch.Tensor],
        batch_size: int,
    ) -> np.ndarray:
        if not items:
            return np.zeros((0, self.model.embedding_dim), np.float32)
        return np.concatenate(
            [
                self._embed(to_tensor(items[i : i + batch_size]))
                for i in range(0, len(items), batch_size)
            ]
        )


def load_embedder(run_dir: str | Path, device: torch.device | str | None = None) -> Embedder:
    """The :class:`Embedder` of a retrieval run folder (``config.json`` + ``model.safetensors``;
    an ensemble's where ``config.json`` says ``members``)."""
    config = load_run_config(run_dir, "embedding")
    arch = config_from_dict(EmbeddingArch, config["model"])
    nets = [build_embedding_net(arch, pretrained=False) for _ in range(config.get("members", 1))]
    model: RetrievalNet = nets[0] if len(nets) == 1 else EmbeddingEnsemble(nets)
    model.load_state_dict(load_model_state(run_dir))
    return Embedder(model, config_from_dict(Preprocessing, config["prep"]), config, device)


def gallery_run_dir(index_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    """The retrieval run of the index in ``index_dir``: ``run_dir`` if given, else the run folder
    the index was built with."""
    from fgsbir.index import GalleryIndexError, read_manifest

    if run_dir is None:
        run_dir = read_manifest(Path(index_dir)).get("run_dir")
        if run_dir is None:
            raise GalleryIndexError(
                f"{index_dir}: the index does not record the run folder of its model; name one"
            )
    return Path(run_dir)


def load_gallery_model(
    index_dir: str | Path, run_dir: str | Path | None = None, device: str | None = None
) -> Embedder:
    """The model that embeds queries of the index in ``index_dir``: that of ``run_dir`` if given,
    else that of the run folder the index was built with."""
    return load_embedder(gallery_run_dir(index_dir, run_dir), device)


def load_gallery_generator(
    index_dir: str | Path,
    run_dir: str | Path | None = None,
    generator_dir: str | Path | None = None,
    device: str | None = None,
    copy_bias: float = 0.0,
) -> TrainedGenerator | None:
    """The generator that sketches the photos of the index in ``index_dir``, drawing with
    ``copy_bias``: that of ``generator_dir`` if given, else the one a semi-supervised retrieval run
    (``run_dir``, or the index's) saved beside its model, else ``None`` (refused with a bias)."""
    from fgsbir.train.semi import GENERATOR_DIR  # where a semi run keeps its generator

    if generator_dir is not None:
        return load_generator(generator_dir, device, copy_bias)
    beside = gallery_run_dir(index_dir, run_dir) / GENERATOR_DIR
    if (beside / CONFIG_FILE).is_file():
        return load_generator(beside, device, copy_bias)
    if copy_bias:
        raise FgsbirError(
            f"{index_dir}: its run holds no generator to draw with a copy bias "
            "(name one with --generator RUN_DIR)"
        )
    return None


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
        self.prep = model.arch.preprocessing

    @property
    def copy_bias(self) -> float:
        """How much more the edge pointer anchors on the photo's edges than it learnt to (see
        :mod:`fgsbir.models.edge_pointer`); 0 for the attentive decoder."""
        return float(getattr(self.model, "copy_bias", 0.0))

    @copy_bias.setter
    def copy_bias(self, bias: float) -> None:
        if not (math.isfinite(bias) and bias >= 0):
            raise FgsbirError(f"copy bias must be a finite number >= 0, not {bias}")
        if not hasattr(self.model, "copy_bias"):
            if bias:
                raise FgsbirError(f"a copy bias needs the edge_pointer decoder, not "
                                  f"{self.model.arch.decoder}")  # fmt: skip
            return
        self.model.copy_bias = float(bias)

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


def load_generator(
    run_dir: str | Path, device: str | None = None, copy_bias: float = 0.0
) -> TrainedGenerator:
    """The generator of a generator run folder (or of a semi run's ``generator/`` folder),
    drawing with ``copy_bias`` (see :attr:`TrainedGenerator.copy_bias`)."""
    config = load_run_config(run_dir, "generator")
    canvas_units = float(config["canvas"]) / float(config["scale"])
    model = create_generator(generator_arch(config["model"]), canvas_units, pretrained=False)
    model.load_state_dict(load_model_state(run_dir))
    chosen = select_device(device)
    generator = TrainedGenerator(model.to(chosen), config, chosen)
    generator.copy_bias = copy_bias
    return generator


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
    copy_bias: float = 0.0,
) -> Generated:
    """Draw ``samples`` sketches of each photo into ``out_dir`` (with ``copy_bias``: see
    :attr:`TrainedGenerator.copy_bias`).

    For photo ``NAME.jpg`` and sample ``k`` it writes ``NAME_k.svg``, ``NAME_k.png`` and
    ``NAME_k.json`` (stroke JSON), except for an empty sample (the model ended the sketch before
    drawing anything), which no reader would accept: its name is listed in ``empty`` instead.
    ``grid.png`` shows the first ``grid_rows`` photos beside their sketches (and
    ``real_sketches[i]`` where given). Photos are read and drawn ``batch_size`` at a time.
    The run, the arguments and the photos' existence are checked before anything is drawn, and
    ``out_dir`` is made only when the first batch is drawn.
    """
    generator = load_generator(run_dir, device, copy_bias)
    paths = [Path(p) for p in photos]
    out_dir = Path(out_dir)
    _check_generate_arguments(paths, out_dir, temperature, samples, grid_rows, batch_size)
    names = _unique_names(paths)
    reals = list(real_sketches) if real_sketches is not None else [None] * len(paths)
    result = Generated()
    rows = []
    for start in range(0, len(paths), batch_size):
        images = [load_photo(p) for p in paths[start : start + batch_size]]
        drawn = [generator.draw(images, temperature, batch_size=batch_size) for _ in range(samples)]
        out_dir.mkdir(parents=True, exist_ok=True)
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


def _check_generate_arguments(
    photos: list[Path],
    out_dir: Path,
    temperature: float,
    samples: int,
    grid_rows: int,
    batch_size: int,
) -> None:
    """Refuse arguments of :func:`generate` that would fail late or draw nonsense (NaN)."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise FgsbirError(f"temperature must be a finite number >= 0, not {temperature}")
    counts = {"samples": (samples, 1), "grid_rows": (grid_rows, 0), "batch_size": (batch_size, 1)}
    for name, (value, least) in counts.items():
        if value < least:
            raise FgsbirError(f"{name} must be at least {least}, not {value}")
    if not photos:
        raise FgsbirError("no photos to draw")
    for photo in photos:
        if not photo.is_file():
            raise DataError(photo, "no such photo" if not photo.exists() else "not a file")
    if out_dir.exists() and not out_dir.is_dir():
        raise FgsbirError(f"{out_dir}: not a folder")


def load_discriminator(
    run_dir: str | Path, device: str | None = None
) -> tuple[PairDiscriminator, int]:
    """The discriminator a semi run saved in ``run_dir`` (its ``discriminator/`` folder), in eval
    mode, and the image size it scores pairs at (see ``fgsbir.models.discriminator.at_size``)."""
    config = load_run_config(run_dir, DISCRIMINATOR_KIND)
    disc = PairDiscriminator(config["width"])
    disc.load_state_dict(load_model_state(run_dir))
    return disc.to(select_device(device)).eval(), int(config["image_size"])
