"""The frozen reference that ranks photos for the photo-side losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgsbir.data.layouts import cache_dir
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.device import DistributedContext
from fgsbir.train.photo_side import ReferenceFeatures

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
