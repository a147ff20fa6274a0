"""Backbone registry: shipped ImageNet weights, user weight files, no downloads."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata

from fgsbir.data.transforms import Preprocessing, photos_to_tensor
from fgsbir.errors import DataError
from fgsbir.models.backbones import (
    SHIPPED_BACKBONES,
    BackboneError,
    create_backbone,
    feature_dim,
    freeze_early_groups,
    shipped_weights_path,
)

torch.set_num_threads(1)  # faster than 2 on a shared 2-core machine

TABBY_CATS = {281, 282, 283, 284, 285}  # ImageNet classes of domestic cats


@pytest.fixture(scope="module")
def shipped() -> dict[str, torch.Tensor]:
    return torch.load(shipped_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return create_backbone("efficientnet_lite0", pretrained=True).eval()


def test_every_shipped_tensor_is_loaded_in_order(shipped, lite0) -> None:
    backbone_tensors = [v for k, v in shipped.items() if not k.startswith("_fc.")]
    loaded = list(lite0.state_dict().values())
    assert len(loaded) == len(backbone_tensors) == 294
    for mine, theirs in zip(loaded, backbone_tensors, strict=True):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("name", SHIPPED_BACKBONES)
def test_shipped_weights_recognise_a_natural_photo(name) -> None:
    """Features + the shipped ImageNet classifier call the cat photo a cat; random init cannot."""
    shipped = torch.load(shipped_weights_path(name), map_location="cpu", weights_only=True)
    backbone = create_backbone(name, pretrained=True).eval()
    cat = Image.fromarray(skdata.chelsea())
    x = photos_to_tensor([cat], Preprocessing(image_size=224, photo_input="rgb"))
    classifier = (shipped["_fc.weight"], shipped["_fc.bias"])
    random_init = create_backbone(name, pretrained=False).eval()
    with torch.no_grad():
        features = backbone(x)
        probs = torch.softmax(features @ classifier[0].T + classifier[1], dim=1)[0]
        random_features = random_init(x)
    assert int(probs.argmax()) in TABBY_CATS
    assert float(probs[list(TABBY_CATS)].sum()) > 0.5
    cosine = torch.nn.functional.cosine_similarity(features, random_features).item()
    assert abs(cosine) < 0.5


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_user_weights_file_for_another_architecture(tmp_path, suffix) -> None:
    source = create_backbone("resnet18", pretrained=False)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, feature_dim(source))  # a head is ignored
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    loaded = create_backbone("resnet18", pretrained=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        out = loaded.eval()(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, feature_dim(loaded)) == (2, 512)


def test_weights_that_do_not_fit_name_the_file(tmp_path) -> None:
    state = create_backbone("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(DataError, match=r"bad\.safetensors.*conv1\.weight"):
        create_backbone("resnet18", pretrained=path)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read weights"):
        create_backbone("resnet18", pretrained=corrupt)


def test_nothing_is_downloaded() -> None:
    with pytest.raises(BackboneError, match="no ImageNet weights ship"):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(BackboneError, match="unknown backbone"):
        create_backbone("not_a_network")


def test_freeze_early_groups_stops_the_stem_and_first_stages() -> None:
    backbone = create_backbone("efficientnet_lite0", pretrained=False)
    assert freeze_early_groups(backbone, 2) == 3 + 6  # stem (conv + bn) and blocks.0
    frozen = {name for name, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"conv_stem.weight", "bn1.weight", "bn1.bias"} | {
        name for name, _ in backbone.named_parameters() if name.startswith("blocks.0.")
    }
    with pytest.raises(BackboneError, match="cannot freeze 9 groups"):
        freeze_early_groups(backbone, 9)
