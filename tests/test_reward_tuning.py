"""Reward tuning of a generator on a tiny synthetic data set: run folder, what moves, resume,
mistakes."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import changed_keys, two_threads  # noqa: F401 (a fixture)

from fgsbir.cli import main
from fgsbir.config import DataConfig, RunOptions
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.data.transforms import Preprocessing
from fgsbir.errors import FgsbirError
from fgsbir.inference import load_generator
from fgsbir.models.embedding import EmbeddingArch
from fgsbir.models.generator import GeneratorArch
from fgsbir.runs import load_resume_state, read_metrics
from fgsbir.train.generator import GeneratorConfig, train_generator
from fgsbir.train.reward_tuning import RewardTuningConfig, RewardTuningTask, tune_generator
from fgsbir.train.supervised import TrainConfig, train

BACKBONE = "test_efficientnet"  # timm's tiny test network: the test is about the training loop


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Synthetic pairs (15 photos, 3 of them for validation), 8 other photos, and a generator and
    a retrieval model trained for an epoch on the pairs."""
    root = tmp_path_factory.mktemp("tuning")
    pairs = ensure_synthetic(root / "pairs", n_photos=15, sketches_per_photo=1, test_fraction=0.2)
    pool = ensure_synthetic(root / "pool", n_photos=8, sketches_per_photo=1, seed=1) / "photo"
    data = DataConfig(path=str(pairs), val_fraction=0.25)
    arch = GeneratorArch(
        backbone=BACKBONE, image_size=64, feature_dim=8, attention_dim=8, hidden=16, z_dim=4,
        components=2, max_points=10, edge_points=16,
    )  # fmt: skip
    torch.set_num_threads(2)
    train_generator(
        GeneratorConfig(data=data, run=RunOptions(out=str(root / "generator"), epochs=1),
                        model=arch, pretrained=False, batch_size=4, grid_rows=2)
    )  # fmt: skip
    train(
        TrainConfig(data=data, run=RunOptions(out=str(root / "retrieval"), epochs=1),
                    model=EmbeddingArch(backbone=BACKBONE, pretrained=False, embedding_dim=8),
                    prep=Preprocessing(image_size=48), batch_size=4, grid_queries=2)
    )  # fmt: skip
    return {
        "pairs": str(pairs), "pool": str(pool), "root": str(root),
        "generator": str(root / "generator"), "reward_model": str(root / "retrieval"),
    }  # fmt: skip


def tiny_config(runs: dict[str, str], out: Path, **changes: object) -> RewardTuningConfig:
    config = RewardTuningConfig(
        data=DataConfig(path=runs["pairs"], unlabelled=[runs["pool"]], val_fraction=0.25),
        run=RunOptions(out=str(out), epochs=2), generator=runs["generator"],
        reward_model=runs["reward_model"], steps_per_epoch=2, photos_per_step=2,
        samples_per_photo=3, gallery=4, labelled_per_step=4, val_draws=2, grid_rows=2,
    )  # fmt: skip
    return replace(config, **changes)


@pytest.fixture(scope="module")
def tuned(runs: dict[str, str]) -> tuple[Path, str]:
    """A two-epoch tuning run, through the command line."""
    out = Path(runs["root"]) / "tuned"
    settings = [
        "steps_per_epoch=2", "photos_per_step=2", "samples_per_photo=3", "gallery=4",
        "labelled_per_step=4", "val_draws=2", "grid_rows=2", "data.val_fraction=0.25",
    ]  # fmt: skip
    args = ["tune-generator", "--data", runs["pairs"], "--unlabelled", runs["pool"],
            "--generator", runs["generator"], "--reward-model", runs["reward_model"],
            "--out", str(out), "--epochs", "2"]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*args, *[x for s in settings for x in ("--set", s)]]) == 0
    return out, printed.getvalue()


def test_tuning_writes_a_generator_run_that_moved_from_its_start(
    tuned: tuple[Path, str], runs: dict[str, str]
) -> None:
    out, printed = tuned
    assert f"run folder: {out}" in printed and "val: photos found by their sketches" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "generator" and config["generator"] == runs["generator"]
    start = json.loads((Path(runs["generator"]) / "config.json").read_text())
    assert config["scale"] == start["scale"] and config["model"] == start["model"]
    assert config["data_info"]["unlabelled_photos"] == 8
    sketches = load_generator(out).draw([], 0.0)  # loads and draws like a generator run
    assert sketches == []
    assert (out / "generated_test.png").is_file() and (out / "README.md").is_file()

    records = read_metrics(out / "metrics.jsonl")
    val = [r for r in records if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [0, 1, 2]  # epoch 0: the start generator
    assert all(0.0 < r["mrr"] <= 1.0 and math.isfinite(r["nll"]) for r in val)
    train_records = [r for r in records if r["split"] == "train"]
    for key in ("reward", "baseline", "pg_loss", "gen_nll", "loss"):
        assert all(math.isfinite(r[key]) for r in train_records), key
    # group baselines: each photo's advantages sum to zero, so the baseline is the mean reward
    assert all(r["baseline"] == pytest.approx(r["reward"], abs=1e-5) for r in train_records)

    moved = changed_keys(load_file(Path(runs["generator"]) / "model.safetensors"),
                     load_resume_state(out)["model"])  # fmt: skip
    assert any(key.startswith("cell.") for key in moved)
    assert not any(key.startswith("backbone.") for key in moved)


def test_resumed_tuning_matches_an_uninterrupted_one(
    runs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = tune_generator(tiny_config(runs, tmp_path / "straight"))
    step = RewardTuningTask.step
    calls = {"n": 0}

    def killed_in_epoch_two(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # two steps an epoch: the second step of epoch 2
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(RewardTuningTask, "step", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        tune_generator(tiny_config(runs, tmp_path / "resumed"))
    monkeypatch.setattr(RewardTuningTask, "step", step)
    resumed = tune_generator(tiny_config(runs, tmp_path / "resumed"))
    a, b = (load_resume_state(tmp_path / name) for name in ("straight", "resumed"))
    assert not changed_keys(a["model"], b["model"])
    assert resumed["found"] == straight["found"] and resumed["test"] == straight["test"]


def test_mistakes_are_named(runs: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(FgsbirError, match="reward_model: name a run folder"):
        tune_generator(tiny_config(runs, tmp_path / "a", reward_model=""))
    no_pool = replace(tiny_config(runs, tmp_path / "b").data, unlabelled=[])
    with pytest.raises(FgsbirError, match="no unlabelled photos"):
        tune_generator(tiny_config(runs, tmp_path / "b", data=no_pool))
    with pytest.raises(FgsbirError, match="not a generator run"):
        tune_generator(tiny_config(runs, tmp_path / "c", generator=runs["reward_model"]))
