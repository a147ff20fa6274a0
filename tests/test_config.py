from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fgsbir.config import ConfigError, config_to_dict, load_config


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Example:
    data: str = "synthetic"
    out: Path | None = None
    epochs: int = 3
    augment: bool = True
    optim: Optim = field(default_factory=Optim)


def test_defaults_yaml_overrides_and_keywords_apply_in_order(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 7\noptim:\n  lr: 0.01\n")
    config = load_config(
        Example, yaml_file, ["optim.lr=3e-4", "augment=false"], out="runs/x", epochs=None
    )
    assert config.epochs == 7  # from YAML; a None keyword leaves it alone
    assert config.optim.lr == pytest.approx(3e-4)  # override beats YAML
    assert config.optim.betas == (0.9, 0.999)  # untouched nested default
    assert config.augment is False
    assert config.out == Path("runs/x")


def test_round_trip_through_dict():
    config = load_config(Example, overrides=["optim.betas=[0.5, 0.9]"])
    assert config_to_dict(config)["optim"]["betas"] == [0.5, 0.9]
    assert load_config(Example, overrides=[]) == Example()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epoch=3", "unknown config key"),
        ("optim.momentum=0.9", "optim.momentum"),
        ("epochs=many", "epochs"),
        ("epochs", "key=value"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Example, overrides=[override])


def test_bad_yaml_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(Example, bad)
