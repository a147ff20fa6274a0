"""The frozen reference that ranks photos for the photo-side losses, and the look-ahead."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgsbir.data.layouts import cache_dir
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.device import DistributedContext
from fgsbir.train.photo_side import ReferenceFeatures, look_ahead

torch.set_num_threads(1)


def test_reference_ranks_a_photos_copy_nearest_and_caches_its_features(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FGSBIR_CACHE", str(tmp_path / "cache"))
    data = ensure_synthetic(tmp_path / "data", n_photos=6, sketches_per_photo=1)
    photos = sorted((data / "photo").glob("*"))
    copy = tmp_path / "copy.png"  # the first photo, a little darker and shifted by 4 pixels
    pixels = np.asarray(Image.open(photos[0]).convert("RGB")).astype(float) * 0.9
    Image.fromarray(np.roll(pixels, 4, axis=1).astype(np.uint8)).save(copy)
    ctx = DistributedContext()
    reference = ReferenceFeatures([*photos, copy], "efficientnet_lite0", 96, ctx)
    features = reference([copy, *photos], torch.device("cpu"))
    assert features.shape == (len(photos) + 1, 1280)
    assert torch.allclose(features.norm(dim=1), torch.ones(len(photos) + 1))
    distances = torch.cdist(features[:1], features[1:])[0]
    assert int(distances.argmin()) == 0  # its own photo, among six shoes
    assert len(list((cache_dir() / "reference").glob("*.pt"))) == len(photos) + 1
    again = ReferenceFeatures([copy, *photos], "efficientnet_lite0", 96, ctx)
    assert torch.equal(again([copy, *photos], torch.device("cpu")), features)


def test_look_ahead_takes_one_gradient_step_and_passes_gradients_to_the_weights() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    inputs, target = torch.randn(16, 5), torch.randn(16, 3)

    def loss_of(output: torch.Tensor) -> torch.Tensor:
        return (output - target).square().mean()

    loss = loss_of(model(inputs))
    stats = model[1].running_mean.clone()  # after the forward pass that trains them
    ahead = look_ahead(model, inputs, loss, size=1e-2)
    assert torch.equal(model[1].running_mean, stats)  # the look-ahead leaves them alone

    # the same step by hand, on a copy of the model
    weights = list(model.parameters())
    grads = torch.autograd.grad(loss, weights, retain_graph=True)
    rms = torch.sqrt(sum(g.square().sum() for g in grads) / sum(g.numel() for g in grads))
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p, g in zip(moved.parameters(), grads, strict=True):
            p -= 1e-2 / rms * g
    steps = [(m - w).detach() for m, w in zip(moved.parameters(), weights, strict=True)]
    step_rms = torch.sqrt(sum(s.square().sum() for s in steps) / sum(s.numel() for s in steps))
    assert step_rms.item() == pytest.approx(1e-2, rel=1e-4)
    moved[1].running_mean.copy_(stats)  # the hand-made copy's forward must not count
    expected = moved(inputs)
    assert torch.allclose(ahead, expected, atol=1e-6)
    assert loss_of(ahead).item() < loss.item()  # downhill

    # first order: the weights get the gradient that the moved weights would get
    loss_of(ahead).backward()
    loss_of(expected).backward()
    for w, m in zip(weights, moved.parameters(), strict=True):
        assert torch.allclose(w.grad, m.grad, atol=1e-6)
