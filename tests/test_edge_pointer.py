"""The edge-pointer generator: the photo's traced edge points, and drawing anchored on them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from train_helpers import TINY_GENERATOR

from fgsbir.data.edge_sketches import edge_points
from fgsbir.data.transforms import photos_to_tensor
from fgsbir.losses.sequence import kl_loss, point_nll
from fgsbir.models.generator import PhotoToSketch, SampleResult, create_generator
from fgsbir.sketch.strokes import Sketch, stroke3_to_stroke5

SIDE = 256.0  # the canvas of photos and sketches, in pixels
SCALE = 32.0  # pixels per offset unit
ARCH = dataclasses.replace(TINY_GENERATOR, max_points=8)


def _box(seed: int) -> np.ndarray:
    """The closed outline (5 corners) of a box somewhere on the canvas."""
    rng = np.random.default_rng(seed)
    (x0, y0), (w, h) = rng.uniform(30, 110, 2), rng.uniform(60, 120, 2)
    return np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h], [x0, y0]])


def _photos(boxes: list[np.ndarray]) -> torch.Tensor:
    """Network inputs of photos of filled boxes."""
    photos = []
    for corners in boxes:
        photo = Image.new("RGB", (int(SIDE), int(SIDE)), "white")
        ImageDraw.Draw(photo).rectangle([*corners[0], *corners[2]], fill=(60, 90, 180))
        photos.append(photo)
    return photos_to_tensor(photos, ARCH.preprocessing)


def _outlines(boxes: list[np.ndarray]) -> torch.Tensor:
    """The boxes' outlines as stroke-5 targets, in offset units."""
    rows = []
    for corners in boxes:
        stroke3 = Sketch.from_strokes([corners], SIDE, SIDE).to_stroke3()
        rows.append(torch.from_numpy(stroke3_to_stroke5(stroke3, ARCH.max_points + 1)))
    targets = torch.stack(rows)
    targets[..., :2] /= SCALE
    return targets


def _box_error(result: SampleResult, boxes: list[np.ndarray]) -> float:
    """Mean distance (pixels) between the bounding boxes of drawings and of the boxes."""
    errors = []
    for corners, strokes5, n in zip(boxes, result.strokes5, result.lengths.tolist(), strict=True):
        drawn = np.cumsum(strokes5[: max(n, 1), :2].numpy() * SCALE, axis=0)
        found = np.r_[drawn.min(0), drawn.max(0)] - np.r_[corners.min(0), corners.max(0)]
        errors.append(float(np.abs(found).mean()))
    return float(np.mean(errors))


def _trained(decoder: str) -> PhotoToSketch:
    """A generator that learnt to outline 8 boxes (300 steps on one batch, a few seconds)."""
    torch.manual_seed(0)
    model = create_generator(
        dataclasses.replace(ARCH, decoder=decoder), SIDE / SCALE, pretrained=False
    )
    boxes = [_box(i) for i in range(8)]
    with torch.no_grad():
        maps = model.feature_map(_photos(boxes))
    targets, lengths = _outlines(boxes), torch.full((8,), 5)
    learnt = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    optimiser = torch.optim.Adam(learnt, lr=1e-2)
    for _ in range(300):
        mixture, mu, log_var = model(model.encode_map(maps), targets)
        loss = point_nll(mixture, targets, lengths) + 0.01 * kl_loss(mu, log_var)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def pointer() -> PhotoToSketch:
    return _trained("edge_pointer")


UNSEEN = [_box(100 + i) for i in range(4)]


def test_edge_points_are_the_traced_outline_in_drawing_order() -> None:
    corners = _box(7)
    table = edge_points(_photos([corners]), "sobel", count=24)[0]
    present = table[:, 3] == 1
    points = table[present, :2].numpy() * SIDE
    assert 4 <= len(points) <= 8 and not table[~present].any()  # the corners, then padding
    assert table[present, 2].tolist()[-1] == 1  # the last point ends the traced stroke
    # every point lies on the box outline, within the edge map's pixel (4 px of 256)
    inside = (points >= corners.min(0) - 5) & (points <= corners.max(0) + 5)
    on_side = (np.abs(points[:, None] - corners[None, [0, 2]]) < 5).any(axis=(1, 2))
    assert inside.all() and on_side.all()
    # consecutive points are neighbours along the outline: no jump across the box
    assert (np.linalg.norm(np.diff(points, axis=0), axis=1) < np.ptp(corners, 0).max() + 5).all()
    # a mirrored photo gives the mirrored points
    mirrored = edge_points(_photos([corners]).flip(-1), "sobel", count=24)[0]
    flipped = mirrored[mirrored[:, 3] == 1, :2].numpy() * [-1.0, 1.0] + [1.0, 0.0]
    distances = np.linalg.norm(flipped[:, None] - table[present, :2].numpy()[None], axis=-1)
    assert (distances.min(0) < 2 / 64).all() and (distances.min(1) < 2 / 64).all()


def test_a_photo_without_edges_has_no_points() -> None:
    blank = photos_to_tensor([Image.new("RGB", (64, 64), "white")], ARCH.preprocessing)
    assert not edge_points(blank, "sobel", count=24).any()


def test_the_pointer_outlines_boxes_it_never_saw(pointer: PhotoToSketch) -> None:
    """After the same training, the edge pointer draws unseen boxes where they are; the
    attentive decoder, which sees the photo only through its 2 x 2 feature map, cannot."""
    photos, attentive = _photos(UNSEEN), _trained("attentive")
    with torch.no_grad():
        pointed = pointer.sample(photos, temperature=0.0)
        attended = attentive.sample(photos, temperature=0.0)
    assert _box_error(pointed, UNSEEN) < 12.0
    assert _box_error(attended, UNSEEN) > 20.0


def test_moving_the_edge_points_moves_the_drawing(pointer: PhotoToSketch) -> None:
    """The same photos (same feature map) with their edge points moved by (26, 13) pixels:
    the greedy drawings follow the points."""
    shift = torch.tensor([0.1, 0.05])
    with torch.no_grad():
        encoding = pointer.encode(_photos(UNSEEN))
        moved = dataclasses.replace(encoding, points=encoding.points + shift)
        drawn = pointer.sample(moved, temperature=0.0)
    shifted = [corners + shift.numpy() * SIDE for corners in UNSEEN]
    assert _box_error(drawn, shifted) < 12.0
    assert _box_error(drawn, UNSEEN) > _box_error(drawn, shifted) + 5.0


def test_a_copy_bias_anchors_every_component_on_the_edges() -> None:
    """With its free offsets silenced (an untrained head whose mixture means are 0), a
    component's mean is its anchor: a mix of the pen's place and the edge points. As the pen walks
    off the canvas, its share drags the anchors out of the box; a large copy bias takes that share
    away, so every anchor lies among the box's edges."""
    torch.manual_seed(0)
    model = create_generator(ARCH, SIDE / SCALE, pretrained=False).eval()
    means = slice(ARCH.components, 3 * ARCH.components)  # the head's mu_x, mu_y outputs
    with torch.no_grad():
        model.head.weight[means] = 0.0
        model.head.bias[means] = 0.0
    walk = torch.zeros(len(UNSEEN), ARCH.max_points + 1, 5)
    walk[..., :2], walk[..., 2] = 10.0, 1.0  # 320-pixel steps down and right, pen down
    pen = torch.cumsum(walk[..., :2], dim=1) - walk[..., :2]  # where each step starts
    low = torch.tensor(np.stack([c.min(0) - 5 for c in UNSEEN]) / SCALE)[:, None, None]
    high = torch.tensor(np.stack([c.max(0) + 5 for c in UNSEEN]) / SCALE)[:, None, None]

    def inside_share() -> float:
        with torch.no_grad():
            mixture, _, _ = model(model.encode(_photos(UNSEEN)), walk)
        anchors = mixture.mu + pen[:, :, None]  # (B, T, M, 2)
        return ((anchors >= low) & (anchors <= high)).all(-1).float().mean().item()

    free = inside_share()
    model.copy_bias = 50.0
    assert inside_share() == 1.0 and free < 0.25
