from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fgsbir.cli import main
from fgsbir.config import ConfigError, config_to_dict, load_config
from fgsbir.train.supervised import TrainConfig


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


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["train", "--labelled-fraction", "1.5"], "--labelled-fraction"),
        (["train", "--labelled-fraction", "0"], "--labelled-fraction"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--set", "data.labelled_fraction=0"], "data.labelled_fraction"),
        (["train", "--set", "lr=-1"], "lr"),
        (["train", "--set", "model.pool_grid=zero"], "model.pool_grid"),
        (["train", "--set", "prep.photo_input=grey"], "prep.photo_input"),
        (
            ["train", "--method", "semi", "--set", "supervised.batch_size=0"],
            "supervised.batch_size",
        ),
        (["train-generator", "--set", "model.hidden=0"], "model.hidden"),
        (["train-generator", "--time-budget", "-5"], "--time-budget"),
        (["train-generator", "--set", "run.time_budget_s=-5"], "run.time_budget_s"),
        (["train-generator", "--set", "model.bogus=1"], "model.bogus"),
    ],
)
def test_the_cli_names_a_bad_setting_in_one_line(tmp_path, capsys, args, key) -> None:
    out = tmp_path / "run"
    assert main([*args, "--data", "synthetic", "--out", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("fgsbir") and ": error: " in message and "\n" not in message
    assert key in message
    assert not out.exists()  # refused before any work


def test_a_bad_value_in_a_yaml_file_is_named(tmp_path) -> None:
    bad = tmp_path / "recipe.yaml"
    bad.write_text("data:\n  val_fraction: 2\n")
    with pytest.raises(ConfigError, match=r"'data\.val_fraction'"):
        load_config(TrainConfig, bad)
