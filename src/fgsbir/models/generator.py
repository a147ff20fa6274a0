"""The photo-to-sketch generator: a CNN looks at a photo, an attentive LSTM draws it in stroke-5.

Two decoders share this module's encoder, sampler and training pass (:func:`create_generator`
builds the one ``GeneratorArch.decoder`` names): ``"attentive"`` (this module's
:class:`PhotoToSketch`, described below) and ``"edge_pointer"``
(:class:`~fgsbir.models.edge_pointer.EdgePointerSketcher`, which also anchors every step on the
photo's traced edge points).

Encoder: an ImageNet-initialised timm backbone gives a spatial feature map; a 1x1 convolution
projects it to ``feature_dim`` channels (the attention's values), and its max-pooled raw features
give the mean and log-variance of a Gaussian latent ``z``. Decoder: an LSTM cell whose initial
``(h, c)`` is ``tanh(linear(z))``; at every step additive 2-D attention from the previous hidden
state over the map's cells yields a context vector, the cell reads ``[context, previous stroke-5
point]``, and a linear head predicts a :class:`~fgsbir.losses.sequence.StrokeMixture`. In
training, ``dropout`` is recurrent dropout as in sketch-rnn (Semeniuta et al. 2016): it drops
units of the cell's candidate update, never the memory itself.

Offsets are in units of a data-set-wide scale factor (see :func:`samples_to_sketches`); the
decoder also keeps the pen's position, the sum of the offsets so far, from the canvas origin.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fgsbir.config import Count, config_from_dict
from fgsbir.data.transforms import Preprocessing
from fgsbir.losses.sequence import (
    PEN_END,
    StrokeMixture,
    raw_output_size,
    stroke_log_prob,
)
from fgsbir.models.backbones import DEFAULT_BACKBONE, create_backbone
from fgsbir.sketch.strokes import Sketch, stroke5_to_stroke3

START_TOKEN = (0.0, 0.0, 1.0, 0.0, 0.0)
"""The stroke-5 point fed to the decoder before the first real point."""


@dataclass
class GeneratorArch:
    """Architecture of :class:`PhotoToSketch` (stored in the run's ``config.json``)."""

    decoder: Literal["attentive", "edge_pointer"] = "edge_pointer"
    """How the decoder draws: attending over the feature map only, or also pointing at the
    photo's traced edge points and drawing relative to them (see :func:`create_generator`).
    Runs saved before this choice existed are attentive (see :func:`generator_arch`)."""
    backbone: str = DEFAULT_BACKBONE
    image_size: Annotated[int, Field(ge=16)] = 224  # a 7 x 7 feature map for EfficientNet-Lite0
    feature_dim: Count = 128  # attended feature channels (a 1x1 projection of the backbone's)
    attention_dim: Count = 128
    hidden: Count = 256
    z_dim: Count = 128
    components: Count = 20
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    """Recurrent dropout on the LSTM's candidate update, in training (sketch-rnn's keep 0.9). On
    Shoe-V1 it lowered the validation NLL (2.74 -> 2.73 and 2.60 -> 2.53 on two seeds' splits)."""
    max_points: Count = 80
    """Longest sketch the decoder draws by default (training data is limited to it too)."""
    edge_points: Count = 160
    """Traced edge points of a photo the ``edge_pointer`` decoder can point at (longer tracings
    lose their shortest strokes first)."""
    photo_input: Literal["rgb", "sobel"] = "sobel"
    """What the encoder sees of a photo: its colours, or its edge map drawn like a sketch (see
    :class:`~fgsbir.data.transforms.Preprocessing`), which lets a decoder pre-trained to trace
    rendered sketches trace photos too. Edge maps were chosen on Shoe-V1's validation photos:
    greedy sketches retrieved their photo among 30 at acc@1 0.10 (colour: 0.03; chance 0.03)."""

    @property
    def preprocessing(self) -> Preprocessing:
        """How photos become the encoder's input."""
        return Preprocessing(self.image_size, photo_input=self.photo_input)


@dataclass
class Encoding:
    """What the decoder needs from one batch of photos."""

    values: torch.Tensor  # (B, cells, feature_dim): attended features
    keys: torch.Tensor  # (B, cells, attention_dim): their projection for the attention score
    mu: torch.Tensor  # (B, z_dim)
    log_var: torch.Tensor  # (B, z_dim)

    def rows(self, rows: slice) -> Encoding:
        """The encoding of some photos of the batch."""
        fields = dataclasses.fields(self)
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields})

    def stretched(self, factors: torch.Tensor) -> Encoding:
        """The encoding of the photos stretched about the canvas origin by ``factors (B, 1, 2)``
        (x, y), as training's scale jitter stretches the target sketches; the feature map is
        left as it is."""
        return self

    def latent(self, noise_scale: float = 1.0) -> torch.Tensor:
        """Reparameterised ``z = mu + noise_scale * sigma * eps`` (``noise_scale = 0``: ``mu``)."""
        if noise_scale == 0:
            return self.mu
        return self.mu + noise_scale * torch.exp(0.5 * self.log_var) * torch.randn_like(self.mu)


@dataclass
class DecoderState:
    """The decoder between steps: the LSTM's state and the pen position (offset units, from the
    canvas origin) after the points read so far."""

    h: torch.Tensor  # (B, hidden)
    c: torch.Tensor  # (B, hidden)
    position: torch.Tensor  # (B, 2)


@dataclass
class SampleResult:
    """Sketches drawn by :meth:`PhotoToSketch.sample`.

    ``strokes5 (B, max_len + 1, 5)``: one-hot pen states, rows from ``lengths[i]`` on are
    ``[0, 0, 0, 0, 1]`` (so every sequence ends, even one cut at ``max_len``);
    ``lengths (B,)``: points drawn before the end; ``log_prob (B,)``: log-probability of each
    sequence under the distribution it was drawn from (the tempered one for ``temperature > 0``,
    the model's own for greedy decoding), differentiable w.r.t. the model's parameters when
    gradients are enabled -- what REINFORCE needs.
    """

    strokes5: torch.Tensor
    lengths: torch.Tensor
    log_prob: torch.Tensor


class PhotoToSketch(nn.Module):
    """Photo encoder + attentive LSTM decoder with a mixture-density head (see the module doc).

    Subclasses change what a step reads and how it places the mixture (:meth:`_step`); encoding,
    teacher-forced decoding and sampling are shared."""

    decoder: ClassVar[str] = "attentive"

    def __init__(self, arch: GeneratorArch, pretrained: bool | str = True) -> None:
        super().__init__()
        if arch.decoder != self.decoder:
            raise ValueError(
                f"{type(self).__name__} is the {self.decoder!r} decoder, not {arch.decoder!r}; "
                "build generators with create_generator"
            )
        self.arch = arch
        self.backbone = create_backbone(arch.backbone, pretrained=pretrained)
        self.channels = channels = self.backbone.num_features  # of the spatial feature map
        self.project = nn.Conv2d(channels, arch.feature_dim, kernel_size=1)
        self.to_latent = nn.Linear(channels, 2 * arch.z_dim)
        self.attention_keys = nn.Conv2d(
            arch.feature_dim, arch.attention_dim, kernel_size=3, padding=1
        )
        self.attention_query = nn.Linear(arch.hidden, arch.attention_dim)
        self.attention_score = nn.Linear(arch.attention_dim, 1)
        self.initial_state = nn.Linear(arch.z_dim, 2 * arch.hidden)
        self.cell = nn.LSTMCell(self._cell_inputs(arch), arch.hidden)
        self.recurrent_dropout = nn.Dropout(arch.dropout)
        self.head = nn.Linear(arch.hidden, raw_output_size(arch.components))

    @classmethod
    def _cell_inputs(cls, arch: GeneratorArch) -> int:
        """Width of what the LSTM cell reads at a step: the map context and the previous point."""
        return arch.feature_dim + 5

    def feature_map(self, photos: torch.Tensor) -> torch.Tensor:
        """What the decoder needs of normalised ``(B, 3, H, W)`` images that does not learn when
        the backbone is frozen (so training caches it): here the spatial backbone features
        ``(B, C, h, w)``."""
        return self.backbone.forward_features(photos)

    def encode_map(self, feature_map: torch.Tensor) -> Encoding:
        """Attention values/keys and the latent Gaussian from a backbone feature map."""
        values = self.project(feature_map)
        keys = self.attention_keys(values)
        mu, log_var = self.to_latent(feature_map.amax(dim=(2, 3))).chunk(2, dim=-1)
        return Encoding(
            values=values.flatten(2).transpose(1, 2),
            keys=keys.flatten(2).transpose(1, 2),
            mu=mu,
            log_var=log_var,
        )

    def encode(self, photos: torch.Tensor) -> Encoding:
        return self.encode_map(self.feature_map(photos))

    def _initial(self, z: torch.Tensor) -> DecoderState:
        h, c = torch.tanh(self.initial_state(z)).chunk(2, dim=-1)
        return DecoderState(h.contiguous(), c.contiguous(), z.new_zeros(len(z), 2))

    def _map_context(self, encoding: Encoding, h: torch.Tensor) -> torch.Tensor:
        """Additive attention from ``h`` over the feature map's cells: ``(B, feature_dim)``."""
        query = self.attention_query(h).unsqueeze(1)  # (B, 1, A)
        scores = self.attention_score(torch.tanh(encoding.keys + query)).squeeze(-1)  # (B, cells)
        weights = F.softmax(scores, dim=-1)
        return torch.bmm(weights.unsqueeze(1), encoding.values).squeeze(1)

    def _mixture(self, h: torch.Tensor) -> StrokeMixture:
        return StrokeMixture.from_raw(self.head(h), self.arch.components)

    def _decoding(self, encoding: Encoding) -> Encoding:
        """What every step of one decoding reads (:meth:`_step`'s ``encoding``): here the
        encoding itself; subclasses add what the steps share, computed once."""
        return encoding

    def _step(
        self, encoding: Encoding, state: DecoderState, previous: torch.Tensor
    ) -> tuple[StrokeMixture, DecoderState]:
        """One decoder step after reading the stroke-5 point ``previous (B, 5)``: attend from
        ``h``, advance the cell, and give the distribution of the next point."""
        context = self._map_context(encoding, state.h)
        h, c = self._advance(torch.cat([context, previous], dim=-1), (state.h, state.c))
        return self._mixture(h), DecoderState(h, c, state.position + previous[:, :2])

    def _advance(
        self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One LSTM cell step, with recurrent dropout on the candidate update when training."""
        if not (self.training and self.arch.dropout > 0):
            return self.cell(inputs, state)
        h, c = state
        cell = self.cell
        gates = F.linear(inputs, cell.weight_ih, cell.bias_ih) + F.linear(
            h, cell.weight_hh, cell.bias_hh
        )
        i, f, g, o = gates.chunk(4, dim=-1)  # nn.LSTMCell's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * self.recurrent_dropout(torch.tanh(g))
        return torch.sigmoid(o) * torch.tanh(c), c

    def decode(self, encoding: Encoding, z: torch.Tensor, targets: torch.Tensor) -> StrokeMixture:
        """Teacher-forced step distributions ``(B, T)`` for stroke-5 ``targets (B, T, 5)``."""
        start = targets.new_tensor(START_TOKEN).expand(len(targets), 1, 5)
        inputs = torch.cat([start, targets[:, :-1]], dim=1)
        state, decoding = self._initial(z), self._decoding(encoding)
        steps = []
        for t in range(targets.shape[1]):
            mixture, state = self._step(decoding, state, inputs[:, t])
            steps.append(mixture)
        return _stacked(steps)

    def forward(
        self, encoding: Encoding, targets: torch.Tensor
    ) -> tuple[StrokeMixture, torch.Tensor, torch.Tensor]:
        """Training pass: ``(step distributions, mu, log_var)`` with ``z`` sampled from ``q``."""
        return self.decode(encoding, encoding.latent(), targets), encoding.mu, encoding.log_var

    def sample(
        self,
        photos: torch.Tensor | Encoding,
        temperature: float = 1.0,
        max_len: int | None = None,
    ) -> SampleResult:
        """Draw one sketch per photo (normalised photos or an :class:`Encoding`), batched.

        ``temperature > 0`` samples from the tempered step distributions, with the latent noise
        scaled by ``sqrt(temperature)`` too; ``temperature = 0`` is greedy decoding (``z = mu``,
        the likeliest component's mean and pen state). Decoding stops when every sequence has
        ended or after ``max_len`` points (default ``arch.max_points``).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        encoding = photos if isinstance(photos, Encoding) else self.encode(photos)
        max_len = self.arch.max_points if max_len is None else max_len
        batch = len(encoding.mu)
        device = encoding.mu.device
        state = self._initial(encoding.latent(math.sqrt(temperature)))
        previous = encoding.mu.new_tensor(START_TOKEN).expand(batch, 5)
        strokes5 = encoding.mu.new_zeros(batch, max_len + 1, 5)
        strokes5[..., 4] = 1.0
        lengths = torch.full((batch,), max_len, dtype=torch.long, device=device)
        log_prob = encoding.mu.new_zeros(batch)
        active = torch.ones(batch, dtype=torch.bool, device=device)
        decoding = self._decoding(encoding)
        for t in range(max_len):
            mixture, state = self._step(decoding, state, previous)
            if temperature > 0:
                mixture = mixture.tempered(temperature)
                offsets, pen = mixture.sample()
            else:
                offsets, pen = mixture.mode()
            log_prob = log_prob + torch.where(active, stroke_log_prob(mixture, offsets, pen), 0.0)
            ended = pen == PEN_END
            offsets = offsets.masked_fill(ended.unsqueeze(-1), 0.0)
            previous = torch.cat([offsets, F.one_hot(pen, 3).to(offsets.dtype)], dim=-1)
            strokes5[active, t] = previous[active]
            lengths[active & ended] = t
            active = active & ~ended
            if not active.any():
                break
        return SampleResult(strokes5=strokes5, lengths=lengths, log_prob=log_prob)


def _stacked(steps: Sequence[StrokeMixture]) -> StrokeMixture:
    """The ``(B, T)`` distributions of ``T`` steps' ``(B,)`` ones."""
    fields = dataclasses.fields(StrokeMixture)
    return StrokeMixture(
        **{f.name: torch.stack([getattr(m, f.name) for m in steps], dim=1) for f in fields}
    )


def generator_arch(values: Mapping[str, Any]) -> GeneratorArch:
    """The architecture a run's ``config.json`` records (``config["model"]``); runs saved before
    ``decoder`` existed hold the attentive decoder."""
    return config_from_dict(GeneratorArch, {"decoder": "attentive", **values})


def create_generator(
    arch: GeneratorArch, canvas_units: float, pretrained: bool | str = True
) -> PhotoToSketch:
    """The generator ``arch.decoder`` names. ``canvas_units`` is the side of the drawing canvas
    in offset units (the canvas divided by the data set's scale factor), where the edge-pointer
    decoder places the photo's edge points; ``pretrained``: the backbone's weights (see
    :func:`~fgsbir.models.backbones.create_backbone`)."""
    from fgsbir.models.edge_pointer import EdgePointerSketcher  # it builds on this module

    if arch.decoder == "edge_pointer":
        return EdgePointerSketcher(arch, canvas_units, pretrained)
    return PhotoToSketch(arch, pretrained)


def samples_to_sketches(result: SampleResult, scale: float, canvas: float) -> list[Sketch]:
    """Turn samples into :class:`Sketch` es on a ``canvas x canvas`` square.

    Offsets are multiplied by the data set's ``scale`` factor; the first offset is from the canvas
    origin, so each sketch lands where the model placed it. A sequence that ended at once gives
    an empty sketch.
    """
    strokes5 = result.strokes5.detach().cpu().numpy()
    sketches = []
    for rows, length in zip(strokes5, result.lengths.tolist(), strict=True):
        stroke3 = stroke5_to_stroke3(rows[: length + 1]).astype(np.float32)
        stroke3[:, :2] *= scale
        sketches.append(Sketch.from_stroke3(stroke3, canvas, canvas))
    return sketches
