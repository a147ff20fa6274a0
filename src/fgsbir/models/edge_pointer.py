"""The edge-pointer decoder: the generator draws *the* photo by pointing at the photo's own edges.

Why: the attentive decoder (:class:`~fgsbir.models.generator.PhotoToSketch`) sees a photo only
through a 7 x 7 feature map and has to invent every coordinate, so it draws *a* shoe: on
Shoe-V1's test photos its greedy sketches retrieve their own photo at acc@1 0.026, while the
photo's traced Sobel edge drawing (80 points) retrieves it at 0.87. The geometry is in the photo;
what a generator has to learn from real pairs is how a person *abstracts* those lines -- which
to keep, in what order, how loosely.

How: a photo's edge map is traced (:func:`fgsbir.data.edge_sketches.edge_points`, the tracer of
the edge pseudo-sketches) into up to ``arch.edge_points`` points in drawing order. Each point
gets an embedding once per photo: the projected CNN features bilinearly sampled at it, its
position and whether it ends a traced stroke. At every step the embeddings are refreshed with the
point's geometry relative to the pen -- the vectors from the pen to the point, to its
predecessor and to its successor along the traced stroke, and how close each is -- so that "the
point after the one the pen is at" is easy to find. A reading head (from the last hidden state)
attends over the points; its context joins the map context, the pen position and the previous
stroke-5 point as the LSTM cell's input. After the cell, every mixture component has a pointer
head: soft attention over the points plus a *pen slot* standing for the pen's own position. The
component's mean offset is ``anchor - pen + mu``, where ``anchor`` is the attention-weighted
position: a component pointing at the pen slot is sketch-rnn's free offset, one pointing at an
edge point copies it, and ``mu`` is how a person strays from the edge. Leaving edges out is what
the attention learns from real pairs; pre-training on the traced edges of unlabelled photos
teaches the copying.

Why soft pointers per component, not a hard choice of point: the anchors are deterministic
functions of the decoder state, so a step is still a :class:`~fgsbir.losses.sequence.
StrokeMixture` of ``components`` Gaussians over the offset: the same NLL, sampling, greedy
decoding and per-sequence log-probability (what REINFORCE needs) as the attentive decoder, with
``components`` different places to go next instead of ``components x points`` mixture terms.

Per step only what depends on the pen is computed: in a point's key ``tanh(embedding + W
geometry)`` the geometry is linear in the pen but for the three closeness features, so the rest of
the argument is computed once per decoding; and the attention reads the halves ``(keys + 1) / 2
= sigmoid(2 (embedding + W geometry))``, which give the same weights and contexts (sigmoid is
several times faster than tanh on CPU).

Copy bias: ``copy_bias`` (0 while training) is subtracted from every pointer head's score of the
pen slot, so that a component anchors on the edges more than it learnt to. Greedy decoding
learns from a few hundred pairs to lean on the free offset and curls into small loops; on Shoe-V1's
validation photos (4 generators, a judge retrieval model) a bias of 4 raised greedy sketches'
acc@1 from 0.07-0.23 to 0.23-0.30. It changes the model's distribution, so an NLL scored with it
is that of the sketches it draws with it. :func:`fgsbir.train.faithfulness.choose_copy_bias` picks
it on validation photos.

Caching: :meth:`EdgePointerSketcher.feature_map` packs the backbone map and the edge-point table
into one ``(B, D)`` row per photo. Everything that caches a frozen backbone's maps (generator
training, semi-supervised training's sequences and unlabelled pool) so traces each photo once,
at about 10 ms a photo; fine-tuning the backbone traces the batch at every step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from fgsbir.data.edge_sketches import EDGE_POINT_FIELDS, edge_points
from fgsbir.losses.sequence import StrokeMixture
from fgsbir.models.generator import DecoderState, Encoding, GeneratorArch, PhotoToSketch

NEAR = 0.04
"""Distance (a fraction of the canvas side, about 10 px of 256) within which the pen is *at* a
point: the scale of the closeness features."""
_GEOMETRY = 11  # per point and step: 3 vectors (x, y), their closeness, has predecessor/successor


@dataclass
class PointerEncoding(Encoding):
    """An :class:`Encoding` with the photo's edge points (``K`` slots, padding included)."""

    points: torch.Tensor  # (B, K, 2) positions, fractions of the canvas side
    present: torch.Tensor  # (B, K) 1 for a point, 0 for padding
    has_previous: torch.Tensor  # (B, K) 1 where the point follows another along a traced stroke
    has_next: torch.Tensor  # (B, K) 1 where another point follows it along a traced stroke
    embedded: torch.Tensor  # (B, K, attention_dim) the points' embeddings

    def stretched(self, factors: torch.Tensor) -> PointerEncoding:
        return dataclasses.replace(self, points=self.points * factors)


@dataclass
class _StepTables(PointerEncoding):
    """A :class:`PointerEncoding` with what every step of one decoding reads of it, computed
    once (:meth:`EdgePointerSketcher._decoding`); slot 0 of the ``1 + K`` slots is the pen slot."""

    twice_fixed: torch.Tensor  # (B, 1 + K, A) 2 x the keys' pre-activations, pen term left out
    neighbours: torch.Tensor  # (B, 1 + K, 3, 2) positions of each point and its neighbours
    flags: torch.Tensor  # (B, 1 + K, 3) which of point, predecessor, successor exist
    absent: torch.Tensor  # (B, 1, 1 + K) True for padding slots
    places: torch.Tensor  # (B, K, 2) the points in offset units


class EdgePointerSketcher(PhotoToSketch):
    """The attentive generator plus pointers to the photo's traced edge points (see the module
    doc). ``canvas_units`` is the canvas side in offset units (canvas / scale factor)."""

    decoder = "edge_pointer"

    def __init__(self, arch: GeneratorArch, canvas_units: float, pretrained: bool | str = True):
        super().__init__(arch, pretrained)
        self.canvas_units = canvas_units
        self.copy_bias = 0.0  # see the module doc; a setting of drawing, not a weight
        a = arch.attention_dim
        self.point_embedding = nn.Linear(arch.feature_dim + 3, a)
        self.point_geometry = nn.Linear(_GEOMETRY, a, bias=False)
        self.pen_slot = nn.Parameter(torch.zeros(a))
        self.read_query = nn.Linear(arch.hidden, a)
        self.point_query = nn.Linear(arch.hidden, arch.components * a)

    @classmethod
    def _cell_inputs(cls, arch: GeneratorArch) -> int:
        """Besides the map context and the previous point: the points' context and the pen."""
        return super()._cell_inputs(arch) + arch.attention_dim + 2

    def feature_map(self, photos: torch.Tensor) -> torch.Tensor:
        """The backbone map and the traced edge-point table, packed into ``(B, D)`` rows."""
        maps = super().feature_map(photos)
        table = edge_points(photos, self.arch.photo_input, self.arch.edge_points).to(maps)
        return torch.cat([maps.flatten(1), table.flatten(1)], dim=1)

    def _unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, h, w)`` backbone maps and ``(B, K, EDGE_POINT_FIELDS)`` edge-point tables."""
        width = self.arch.edge_points * EDGE_POINT_FIELDS
        maps, table = packed[:, :-width], packed[:, -width:]
        side = math.isqrt(maps.shape[1] // self.channels)  # the map is square, as the photo is
        maps = maps.reshape(len(packed), self.channels, side, side)
        return maps, table.reshape(len(packed), -1, EDGE_POINT_FIELDS)

    def encode_map(self, feature_map: torch.Tensor) -> PointerEncoding:
        maps, table = self._unpack(feature_map)
        base = super().encode_map(maps)
        points, stroke_end, present = table[..., :2], table[..., 2], table[..., 3]
        values = base.values.transpose(1, 2).reshape(len(maps), -1, *maps.shape[2:])
        grid = (2.0 * points - 1.0).unsqueeze(2)  # (B, K, 1, 2), grid_sample's [-1, 1] square
        local = F.grid_sample(values, grid, align_corners=False).squeeze(-1).transpose(1, 2)
        embedded = self.point_embedding(
            torch.cat([local, grid.squeeze(2), stroke_end[..., None]], -1)
        )
        continues = present * (1.0 - stroke_end)  # a point the next slot's point follows
        return PointerEncoding(
            **vars(base),
            points=points,
            present=present,
            has_previous=present * F.pad(continues, (1, 0))[:, :-1],
            has_next=continues * F.pad(present, (0, 1))[:, 1:],
            embedded=embedded,
        )

    def _decoding(self, encoding: Encoding) -> _StepTables:
        """What the steps of one decoding read of ``encoding``: its points as key slots behind the
        pen slot, and the part of their keys that does not depend on the pen."""
        encoding = cast(PointerEncoding, encoding)  # what encode_map gives
        points = encoding.points
        neighbours = torch.stack([points, points.roll(1, dims=1), points.roll(-1, dims=1)], 2)
        flags = torch.stack(
            [encoding.present, encoding.has_previous, encoding.has_next], dim=-1
        )  # (B, K, 3): which of point, predecessor, successor exist
        # the geometry as if the pen were at the origin, closeness left out: the steps add the
        # pen's term, linear in the pen, and the closeness (see _halves)
        spread = (neighbours * flags[..., None]).flatten(2) / (4 * NEAR)
        fixed = torch.cat([spread, torch.zeros_like(flags), flags[..., 1:]], dim=-1)
        embedded = encoding.embedded + self.point_geometry(fixed)
        pen_slot = self.pen_slot.expand(len(points), 1, -1)
        slot = points.new_zeros(len(points), 1)  # the pen slot has no place and no neighbours
        return _StepTables(
            **vars(encoding),
            twice_fixed=2.0 * torch.cat([pen_slot, embedded], dim=1),
            neighbours=torch.cat([slot[..., None, None].expand(-1, 1, 3, 2), neighbours], 1),
            flags=torch.cat([slot[..., None].expand(-1, 1, 3), flags], dim=1),
            absent=F.pad(encoding.present, (1, 0), value=1.0)[:, None] == 0,
            places=points * self.canvas_units,
        )

    def _halves(self, tables: _StepTables, pen: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + K, A)``: ``(keys + 1) / 2`` of the pen slot, then of the edge points as seen
        from the pen (``(B, 2)`` fractions), where ``keys = tanh(embedded + geometry)``.

        A point's geometry (the vectors from the pen to it and its neighbours, their closeness,
        which neighbours exist) is linear in the pen but for the closeness, so a step adds to the
        tables' fixed part only the pen's term (``W_vectors @ pen`` for each of the point and its
        neighbours that exists) and the closeness term, in one ``(1 + K, 6) @ (6, A)`` product
        per photo. ``(tanh(x) + 1) / 2 = sigmoid(2 x)``: several
        times faster than tanh on CPU, and the attention needs no more (see :func:`_softmax`).
        """
        weight = self.point_geometry.weight  # (A, _GEOMETRY): vectors (3 x (x, y)), closeness...
        vectors = weight[:, :6].unflatten(1, (3, 2))  # (A, 3, 2)
        pen_term = torch.einsum("bc,aic->bia", pen, vectors) * (-2.0 / (4 * NEAR))  # (B, 3, A)
        closeness_term = 2.0 * weight[:, 6:9].t().expand(len(pen), 3, -1)  # (B, 3, A)
        distances = ((tables.neighbours - pen[:, None, None]) ** 2).sum(-1)  # (B, 1 + K, 3)
        closeness = torch.exp(-distances / NEAR**2) * tables.flags
        coefficients = torch.cat([tables.flags, closeness], dim=-1)  # (B, 1 + K, 6)
        twice = torch.bmm(coefficients, torch.cat([pen_term, closeness_term], dim=1))
        return twice.add_(tables.twice_fixed).sigmoid_()  # add_: baddbmm is several times slower

    def _step(
        self, encoding: Encoding, state: DecoderState, previous: torch.Tensor
    ) -> tuple[StrokeMixture, DecoderState]:
        tables = cast(_StepTables, encoding)  # what _decoding gives
        position = state.position + previous[:, :2]
        pen = position / self.canvas_units
        halves = self._halves(tables, pen)
        scale = 2.0 / math.sqrt(halves.shape[-1])  # keys = 2 halves - 1, scaled by 1 / sqrt(A)
        query = (self.read_query(state.h) * scale).unsqueeze(1)
        read_weights = _softmax(torch.bmm(query, halves.transpose(1, 2)), tables.absent)
        read = torch.bmm(read_weights, halves).squeeze(1)
        inputs = [self._map_context(tables, state.h), 2.0 * read - 1.0, pen]  # weights @ keys
        h, c = self._advance(torch.cat([*inputs, previous], dim=-1), (state.h, state.c))
        queries = self.point_query(h).view(len(h), self.arch.components, -1) * scale
        scores = torch.bmm(halves, queries.transpose(1, 2)).transpose(1, 2)  # (B, M, 1 + K)
        if self.copy_bias:
            scores = torch.cat([scores[..., :1] - self.copy_bias, scores[..., 1:]], dim=-1)
        slots = torch.cat([position.unsqueeze(1), tables.places], dim=1)
        anchors = torch.bmm(_softmax(scores, tables.absent), slots)  # (B, M, 2)
        mixture = self._mixture(h)
        shifted = mixture.mu + anchors - position.unsqueeze(1)
        return dataclasses.replace(mixture, mu=shifted), DecoderState(h, c, position)


def _softmax(scores: torch.Tensor, absent: torch.Tensor) -> torch.Tensor:
    """``(B, Q, 1 + K)`` attention weights over the slots but the ``absent (B, 1, 1 + K)`` ones
    from ``scores``, the scaled dot products of queries with the slots' halves ``(keys + 1) / 2``:
    the weights of the keys themselves, whose scores differ by the same sum of the query for
    every slot."""
    return F.softmax(scores.masked_fill(absent, float("-inf")), dim=-1)
