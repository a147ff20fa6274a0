"""The generators (both decoders): shapes, learning on a fixed batch, sampling, greedy decoding,
sketch output; old run configs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from train_helpers import TINY_GENERATOR

from fgsbir.data.transforms import photos_to_tensor
from fgsbir.losses.sequence import kl_loss, stroke_nll
from fgsbir.models.edge_pointer import EdgePointerSketcher
from fgsbir.models.generator import (
    GeneratorArch,
    PhotoToSketch,
    SampleResult,
    create_generator,
    generator_arch,
    samples_to_sketches,
)

TINY = replace(TINY_GENERATOR, decoder="attentive")
CANVAS_UNITS = 8.0  # a 256-pixel canvas at a scale factor of 32


@pytest.fixture(params=["attentive", "edge_pointer"])
def model(request: pytest.FixtureRequest) -> PhotoToSketch:
    torch.manual_seed(0)
    arch = replace(TINY, decoder=request.param)
    return create_generator(arch, CANVAS_UNITS, pretrained=False).eval()


def _photos(count: int) -> torch.Tensor:
    """Network inputs of photos of coloured boxes (edges for the edge pointer to point at)."""
    photos = []
    for i in range(count):
        photo = Image.new("RGB", (96, 96), "white")
        box = [10 + 7 * i % 30, 15 + 5 * i % 20, 60 + 3 * i % 30, 70 + 4 * i % 20]
        ImageDraw.Draw(photo).rectangle(box, fill=(40 * i % 255, 90, 160))
        photos.append(photo)
    return photos_to_tensor(photos, TINY.preprocessing)


def _targets(batch: int, steps: int, lengths: list[int]) -> torch.Tensor:
    """Random stroke-5 sequences of the given lengths, ending in a lift, padded with end rows."""
    generator = torch.Generator().manual_seed(1)
    targets = torch.zeros(batch, steps, 5)
    targets[..., 4] = 1.0
    for i, n in enumerate(lengths):
        targets[i, :n] = 0.0
        targets[i, :n, :2] = torch.randn(n, 2, generator=generator)
        lift = torch.rand(n, generator=generator) < 0.3
        lift[n - 1] = True
        targets[i, :n, 2] = (~lift).float()
        targets[i, :n, 3] = lift.float()
    return targets


def test_create_generator_builds_the_decoder_the_architecture_names() -> None:
    pointer = create_generator(replace(TINY, decoder="edge_pointer"), CANVAS_UNITS, False)
    assert isinstance(pointer, EdgePointerSketcher)
    assert type(create_generator(TINY, CANVAS_UNITS, pretrained=False)) is PhotoToSketch
    with pytest.raises(ValueError, match="create_generator"):
        PhotoToSketch(replace(TINY, decoder="edge_pointer"), pretrained=False)


def test_configs_without_a_decoder_are_attentive_runs() -> None:
    """Runs saved before the decoder choice hold the attentive decoder; new runs say which."""
    saved = {k: v for k, v in TINY.__dict__.items() if k not in ("decoder", "edge_points")}
    assert generator_arch(saved).decoder == "attentive"
    assert generator_arch({**saved, "decoder": "edge_pointer"}).decoder == "edge_pointer"
    assert GeneratorArch().decoder == "edge_pointer"


def test_decode_shapes(model: PhotoToSketch) -> None:
    photos = _photos(3)
    encoding = model.encode(photos)
    cells = (TINY.image_size // 32) ** 2
    assert encoding.values.shape == (3, cells, TINY.feature_dim)
    assert encoding.mu.shape == encoding.log_var.shape == (3, TINY.z_dim)
    mixture, mu, _ = model(encoding, _targets(3, 7, [3, 7, 1]))
    assert mixture.log_pi.shape == (3, 7, TINY.components)
    assert mixture.mu.shape == mixture.log_sigma.shape == (3, 7, TINY.components, 2)
    assert mixture.pen_log_prob.shape == (3, 7, 3)
    assert mu.shape == (3, TINY.z_dim)


def test_recurrent_dropout_acts_in_training_only() -> None:
    """In training, recurrent dropout drops units of the cell's candidate update (keeping the
    rest scaled by ``1 / (1 - p)``) but never the memory; in evaluation the cell is a plain LSTM.
    Watched on the first decoder step: what the LSTM cell reads and what the head sees."""
    torch.manual_seed(0)
    model = PhotoToSketch(replace(TINY, dropout=0.5), pretrained=False)
    plain = PhotoToSketch(replace(TINY, dropout=0.0), pretrained=False)
    plain.load_state_dict(model.state_dict())  # the same weights, without dropout
    seen: dict[str, tuple[torch.Tensor, ...]] = {}
    model.cell.register_forward_pre_hook(lambda _, args: seen.update(cell=args))
    model.head.register_forward_pre_hook(lambda _, args: seen.update(head=args))
    first = _targets(4, 1, [1, 1, 1, 1])  # one step: the decoder reads only the start token
    with torch.no_grad():
        encoding = model.eval().encode(torch.randn(4, 3, TINY.image_size, TINY.image_size))
        decoded = model.decode(encoding, encoding.mu, first)
        inputs, (h, c) = seen["cell"]  # [context, start token] and the initial state
        torch.testing.assert_close(seen["head"][0], model.cell(inputs, (h, c))[0])
        unchanged = plain.eval().decode(encoding, encoding.mu, first)
        torch.testing.assert_close(decoded.log_pi, unchanged.log_pi)
        torch.testing.assert_close(decoded.mu, unchanged.mu)

        model.train()
        model.decode(encoding, encoding.mu, first)
        (dropped_h,) = seen["head"]
    gates = model.cell.weight_ih @ inputs.T + model.cell.bias_ih[:, None]
    gates = (gates + model.cell.weight_hh @ h.T + model.cell.bias_hh[:, None]).T
    i, f, g, o = gates.chunk(4, dim=-1)
    # each unit of the new memory keeps the forget path; the candidate is either dropped or
    # scaled by 1 / (1 - p)
    kept = torch.sigmoid(f) * c
    candidate = torch.sigmoid(i) * torch.tanh(g)
    dropped = torch.isclose(dropped_h, torch.sigmoid(o) * torch.tanh(kept), atol=1e-6)
    doubled = torch.sigmoid(o) * torch.tanh(kept + 2 * candidate)
    assert bool((dropped | torch.isclose(dropped_h, doubled, atol=1e-6)).all())
    assert 0 < int(dropped.sum()) < dropped.numel()


def test_loss_decreases_on_a_fixed_batch(model: PhotoToSketch) -> None:
    model.train()
    photos = _photos(4)
    lengths = torch.tensor([5, 8, 3, 6])
    targets = _targets(4, 9, lengths.tolist())
    with torch.no_grad():  # a frozen backbone, as in training with cached features
        feature_map = model.feature_map(photos)
    trained = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    optimiser = torch.optim.Adam(trained, lr=3e-3)

    def loss() -> torch.Tensor:
        mixture, mu, log_var = model(model.encode_map(feature_map), targets)
        offset, pen = stroke_nll(mixture, targets, lengths)
        return (offset.sum() + pen.sum()) / (lengths + 1).sum() + 0.01 * kl_loss(mu, log_var)

    first = loss().item()
    for _ in range(40):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
    assert loss().item() < first - 1.0


def _check_valid(result: SampleResult, batch: int, max_len: int) -> None:
    strokes5, lengths = result.strokes5, result.lengths
    assert strokes5.shape == (batch, max_len + 1, 5)
    assert torch.all((lengths >= 0) & (lengths <= max_len))
    pens = strokes5[..., 2:]
    assert torch.all(pens.sum(-1) == 1) and torch.all((pens == 0) | (pens == 1))
    for rows, n in zip(strokes5, lengths.tolist(), strict=True):
        assert torch.all(rows[:n, 4] == 0), "p_end before the end"
        assert torch.all(rows[n:] == torch.tensor([0.0, 0, 0, 0, 1])), "not padded after the end"
    assert torch.all(torch.isfinite(result.log_prob))


def test_sampling_gives_valid_sequences_with_differentiable_log_prob(model: PhotoToSketch) -> None:
    # bias the pen head towards ending so that sequences end by themselves
    with torch.no_grad():
        model.head.bias[-1] = -1.0
    photos = _photos(6)
    torch.manual_seed(3)
    result = model.sample(photos, temperature=1.0, max_len=10)
    _check_valid(result, 6, 10)
    assert torch.any((result.lengths > 0) & (result.lengths < 10)), "no sequence ended by itself"
    assert torch.all(result.log_prob < 0)
    result.log_prob.sum().backward()
    grads = [p.grad for p in model.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_log_prob_equals_teacher_forced_likelihood(
    model: PhotoToSketch, temperature: float
) -> None:
    """The sampler's log-probability is the sum of the log-probabilities of its steps under the
    distributions it drew them from: the likelihood the training path gives its output."""
    photos = _photos(6)
    with torch.no_grad():
        model.to_latent.bias[TINY.z_dim :] = -40.0  # sigma ~ 0: the sampled z is mu
        model.head.bias[-1] = -1.0  # greedy runs to max_len, samples end at various lengths
        torch.manual_seed(4)
        result = model.sample(photos, temperature=temperature, max_len=8)
        _check_valid(result, 6, 8)
        assert result.lengths.max() == 8 and (temperature == 0 or result.lengths.min() < 8)
        encoding = model.encode(photos)
        targets = result.strokes5[:, :8]
        offset, pen = stroke_nll(
            model.decode(encoding, encoding.mu, targets), targets, result.lengths
        )
    torch.testing.assert_close(result.log_prob, -(offset + pen))


def test_temperature_zero_is_the_limit_of_sampling(model: PhotoToSketch) -> None:
    photos = _photos(5)
    with torch.no_grad():
        greedy = model.sample(photos, temperature=0.0)
        again = model.sample(photos, temperature=0.0)
        torch.manual_seed(5)
        cold = model.sample(photos, temperature=1e-8)
        warm = model.sample(photos, temperature=1.0)
    assert torch.equal(greedy.strokes5, again.strokes5)
    assert torch.equal(greedy.lengths, cold.lengths)
    torch.testing.assert_close(cold.strokes5, greedy.strokes5, atol=1e-3, rtol=0)
    assert not torch.allclose(warm.strokes5, greedy.strokes5, atol=1e-3)
    with pytest.raises(ValueError):
        model.sample(photos, temperature=-1.0)


def test_samples_to_sketches_denormalises_and_places() -> None:
    strokes5 = torch.tensor(
        [
            [[2.0, 3.0, 1, 0, 0], [1.0, 0.0, 0, 1, 0], [0.0, 1.0, 0, 1, 0], [0, 0, 0, 0, 1]],
            [[0, 0, 0, 0, 1]] * 4,
        ]
    )
    result = SampleResult(strokes5, torch.tensor([3, 0]), torch.zeros(2))
    drawn, empty = samples_to_sketches(result, scale=10.0, canvas=256.0)
    np.testing.assert_allclose(drawn.points, [[20, 30, 0], [30, 30, 1], [30, 40, 1]])
    assert (drawn.width, drawn.height) == (256.0, 256.0)
    assert drawn.num_strokes == 2
    assert empty.is_empty
