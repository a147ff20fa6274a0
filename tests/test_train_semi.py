"""Semi-supervised joint training on a tiny synthetic data set: run folder, both models learn,
ablation switches, resume."""

from __future__ import annotations

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
from fgsbir.data.dataset import load_dataset
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.data.transforms import Preprocessing
from fgsbir.errors import FgsbirError
from fgsbir.evaluate import evaluate_run
from fgsbir.inference import load_embedder, load_generator
from fgsbir.models.embedding import EmbeddingArch
from fgsbir.models.generator import GeneratorArch
from fgsbir.runs import load_resume_state, read_metrics
from fgsbir.train import semi
from fgsbir.train.faithfulness import (
    choose_copy_bias,
    discriminator_faithfulness,
    generator_faithfulness,
)
from fgsbir.train.generator import GeneratorConfig
from fgsbir.train.photo_side import PhotoLosses
from fgsbir.train.semi import SemiConfig, SemiTask, train_semi, train_start_runs
from fgsbir.train.semi_parts import CriticConfig, PolicyConfig
from fgsbir.train.supervised import TrainConfig

BACKBONE = "test_efficientnet"  # timm's tiny test network: the test is about the training loop
TINY_GENERATOR = GeneratorArch(
    backbone=BACKBONE, image_size=64, feature_dim=16, attention_dim=16, hidden=32, z_dim=8,
    components=3, max_points=12,
)  # fmt: skip


def config_policy() -> PolicyConfig:
    """The tiny runs' generator settings."""
    return PolicyConfig(lr=1e-3)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """20 synthetic photos (12 train, 3 val, 5 test) and a folder of 8 other shoe photos."""
    root = tmp_path_factory.mktemp("data")
    pairs = ensure_synthetic(root / "pairs", n_photos=20, sketches_per_photo=2, test_fraction=0.25)
    pool = ensure_synthetic(root / "pool", n_photos=8, sketches_per_photo=1, seed=1)
    return str(pairs), str(pool / "photo")


def tiny_config(data: tuple[str, str], out: Path, epochs: int = 2, **changes: object) -> SemiConfig:
    """A tiny semi run of ``epochs`` joint epochs; ``changes`` replace SemiConfig fields."""
    pairs, pool = data
    config = SemiConfig(
        data=DataConfig(path=pairs, unlabelled=[pool], val_fraction=0.2),
        run=RunOptions(out=str(out), epochs=epochs),
        supervised=TrainConfig(
            run=RunOptions(epochs=2), prep=Preprocessing(image_size=48), batch_size=4, lr=1e-3,
            model=EmbeddingArch(backbone=BACKBONE, pretrained=False, embedding_dim=16),
        ),
        generator=GeneratorConfig(run=RunOptions(epochs=2), model=TINY_GENERATOR,
                                  pretrained=False, batch_size=4, lr=3e-3, grid_rows=2),
        batch_size=4, unlabelled_batch_size=4, lr=1e-3, policy=config_policy(),
        critic=CriticConfig(warmup_steps=2, image_size=16), picture_photos=2, grid_queries=2,
    )  # fmt: skip
    return replace(config, **changes)


@pytest.fixture(scope="module")
def semi_run(data: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("semi") / "run"
    torch.set_num_threads(2)
    return out, train_semi(tiny_config(data, out))


def test_joint_run_trains_both_models_into_a_complete_run_folder(
    semi_run: tuple[Path, dict], data: tuple[str, str]
) -> None:
    out, result = semi_run
    for name in ("model.safetensors", "config.json", "README.md", "metrics.jsonl", "resume.pt"):
        assert (out / name).is_file(), name
    for name in ("generated_start.png", "generated_end.png", "retrieval_test.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert (out / "start_retrieval" / "model.safetensors").is_file()  # start runs trained here
    assert result["start"]["retrieval_s"] > 0 and result["start"]["generator_s"] > 0
    # 12 pairs / 4 per epoch; the 2 discriminator warm-up steps are not training steps
    assert result["epochs_trained"] == 2 and result["steps"] == 2 * 3

    # every loss and reward of every logged step is finite, and each part of the method ran
    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 2 and [r["epoch"] for r in records if r["split"] == "val"] == [0, 1, 2]
    for key in ("loss", "triplet_real", "triplet_generated", "distill", "disc_loss", "reward",
                "reward_retrieval", "reward_disc", "pg_loss", "gen_nll"):  # fmt: skip
        assert all(math.isfinite(r[key]) for r in train), key
    assert all(0.0 <= r["reward_retrieval"] <= 1.0 for r in train)
    # no joint step skipped (neither its retrieval nor its generator update)
    assert result["skipped_steps"] == 0 and all(r["skipped_steps"] == 0 for r in train)

    # both models moved away from their start runs; the generator's backbone stayed frozen
    state = load_resume_state(out)
    assert changed_keys(load_file(out / "start_retrieval" / "model.safetensors"), state["model"])
    start_generator = load_file(out / "start_generator" / "model.safetensors")
    moved = changed_keys(start_generator, state["generator"])
    assert any(key.startswith("cell.") for key in moved)
    assert any(key.startswith("project.") for key in moved)
    assert not any(key.startswith("backbone.") for key in moved)

    # the run folder reads like a supervised one; its generator like a generator run
    evaluated = evaluate_run(out, data[0])
    assert evaluated["acc@1"] == pytest.approx(result["test"]["acc@1"])
    assert load_embedder(out).prep.image_size == 48
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "embedding" and config["method"] == "semi"
    assert config["data_info"]["unlabelled_photos"] == 8
    test = load_dataset(data[0], val_fraction=0.2).test
    faithful = generator_faithfulness(load_generator(out / "generator"), load_embedder(out), test)
    assert faithful["generated"]["n_queries"] == 5 and faithful["chance"]["acc@1"] == 0.2
    assert faithful["real"] == result["test"]
    # the copy bias with the best MRR, the generator left drawing with it
    generator = load_generator(out / "generator")
    best, scores = choose_copy_bias(generator, load_embedder(out), test, biases=(4.0, 0.0))
    assert list(scores) == [0.0, 4.0] and scores[0.0] == faithful["generated"]
    assert generator.copy_bias == best and scores[best]["mrr"] == max(
        s["mrr"] for s in scores.values()
    )
    with pytest.raises(FgsbirError, match="copy bias must be a finite number >= 0"):
        generator.copy_bias = -1.0
    # greedy, one draw: the same queries as above, now also scored by the discriminator
    judged = discriminator_faithfulness(out, load_embedder(out), test, temperature=0.0, draws=1)
    assert judged["mrr"] == pytest.approx(faithful["generated"]["mrr"])
    assert judged["acc@1"] == pytest.approx(faithful["generated"]["acc@1"])
    assert 0.0 < judged["p_generated"] < 1.0 and 0.0 < judged["p_real"] < 1.0


def test_ablation_switches(semi_run: tuple[Path, dict], data: tuple[str, str], tmp_path) -> None:
    """A frozen generator keeps its weights; switched-off parts leave no trace in the log."""
    out, _ = semi_run
    config = tiny_config(
        data, tmp_path / "ablation", epochs=1,
        retrieval_run=str(out / "start_retrieval"), generator_run=str(out / "start_generator"),
        policy=replace(config_policy(), frozen=True), distillation=False, disc_weighting=False,
    )  # fmt: skip
    result = train_semi(config)
    assert result["start"]["retrieval_s"] == 0.0  # given, not trained
    state = load_resume_state(tmp_path / "ablation")
    assert not changed_keys(
        load_file(out / "start_generator" / "model.safetensors"), state["generator"]
    )
    assert changed_keys(load_file(out / "start_retrieval" / "model.safetensors"), state["model"])
    train = [
        r for r in read_metrics(tmp_path / "ablation" / "metrics.jsonl") if r["split"] == "train"
    ]
    assert train and not any(key in train[0] for key in ("distill", "reward", "gen_nll"))


def test_photo_side_losses_join_the_joint_step(
    semi_run: tuple[Path, dict], data: tuple[str, str], tmp_path: Path
) -> None:
    """With ``photo.*`` on, every joint step adds the photo-side losses on its unlabelled photos
    (here after a look-ahead, and with them as negatives of the real pairs' triplet loss), and
    the model card says so."""
    out, _ = semi_run
    config = tiny_config(
        data, tmp_path / "photo", epochs=1,
        retrieval_run=str(out / "start_retrieval"), generator_run=str(out / "start_generator"),
        photo=PhotoLosses(
            neighbourhood=1.0, distill=1.0, intra=1.0, meta_step=10.0, pool_negatives=True
        ),
    )  # fmt: skip
    train_semi(config)
    train = [r for r in read_metrics(tmp_path / "photo" / "metrics.jsonl") if r["split"] == "train"]
    for key in ("neighbourhood", "photo_distill", "intra", "triplet_generated"):
        assert train and math.isfinite(train[0][key]) and train[0][key] > 0, key
    card = (tmp_path / "photo" / "README.md").read_text()
    assert "neighbourhood preservation (weight 1.0)" in card
    assert "after a look-ahead of 10.0 steps" in card
    assert "negatives of the retrieval triplet loss" in card


def test_cli_semi_run_with_a_labelled_fraction(
    semi_run: tuple[Path, dict], data: tuple[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    """``fgsbir train --method semi``: the training photos whose sketches are dropped join the
    unlabelled pool; ``--unlabelled`` without ``--method semi`` is refused."""
    start, _ = semi_run
    pairs, pool = data
    out = tmp_path / "cli"
    settings = {
        "retrieval_run": start / "start_retrieval", "generator_run": start / "start_generator",
        "data.val_fraction": 0.2, "batch_size": 4, "unlabelled_batch_size": 4,
        "critic.warmup_steps": 1, "critic.image_size": 16, "picture_photos": 2, "grid_queries": 2,
    }  # fmt: skip
    args = ["train", "--data", pairs, "--unlabelled", pool, "--out", str(out), "--epochs", "1"]
    sets = [f"--set={key}={value}" for key, value in settings.items()]
    assert main([*args, "--method", "semi", "--labelled-fraction", "0.5", *sets]) == 0
    assert f"run folder: {out}" in capsys.readouterr().out
    info = json.loads((out / "config.json").read_text())["data_info"]
    assert info["unlabelled_photos"] > 8  # the pool's 8 and the unsketched training photos
    assert main([*args[:-4], "--out", str(tmp_path / "supervised")]) == 2
    assert "--unlabelled needs a part that learns from unlabelled photos" in capsys.readouterr().err


def test_resumed_run_matches_an_uninterrupted_one(
    semi_run: tuple[Path, dict], data: tuple[str, str], tmp_path, monkeypatch
) -> None:
    out, _ = semi_run
    starts = {"retrieval_run": str(out / "start_retrieval"),
              "generator_run": str(out / "start_generator")}  # fmt: skip
    straight = train_semi(tiny_config(data, tmp_path / "straight", **starts))

    step = SemiTask.step
    calls = {"n": 0}

    def killed_in_epoch_two(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 1 has 3 steps: this is the middle of epoch 2
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(SemiTask, "step", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_semi(tiny_config(data, tmp_path / "resumed", **starts))
    assert load_resume_state(tmp_path / "resumed")["progress"]["epoch"] == 1
    monkeypatch.setattr(SemiTask, "step", step)
    resumed = train_semi(tiny_config(data, tmp_path / "resumed", **starts))

    a, b = load_resume_state(tmp_path / "straight"), load_resume_state(tmp_path / "resumed")
    done = [(s["progress"]["epoch"], s["progress"]["step"]) for s in (a, b)]
    assert done == [(2, 6), (2, 6)]
    for part in ("model", "generator", "discriminator"):
        assert not changed_keys(a[part], b[part]), part
    assert resumed["test"] == straight["test"]

    def without_time(run: str) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k not in ("time", "epoch_s")}
            for r in read_metrics(tmp_path / run / "metrics.jsonl")
        ]

    assert without_time("resumed") == without_time("straight")  # no doubled records
    with pytest.raises(FgsbirError, match=r"other settings.*policy"):
        policy = replace(config_policy(), pg_weight=2.0)
        train_semi(tiny_config(data, tmp_path / "resumed", policy=policy, **starts))


def test_start_runs_train_on_the_labelled_share_within_their_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing start runs train on this run's data, in its folder, with their share of its time
    budget, its device and threads, and their own epochs; given ones must be of the right kind."""
    trained: dict[str, object] = {}
    monkeypatch.setattr(semi, "train", lambda config: trained.setdefault("retrieval", config))
    monkeypatch.setattr(
        semi, "train_generator", lambda config: trained.setdefault("generator", config)
    )
    config = SemiConfig(
        data=DataConfig(path="pairs", labelled_fraction=0.25, seed=3),
        run=RunOptions(out=str(tmp_path), time_budget_s=100.0, device="cpu", threads=2),
        supervised=TrainConfig(run=RunOptions(epochs=7)),
        generator=GeneratorConfig(run=RunOptions(epochs=9)),
    )
    start = train_start_runs(config)
    assert start.retrieval_run == str(tmp_path / "start_retrieval")
    assert start.generator_run == str(tmp_path / "start_generator")
    for name, epochs, share in (("retrieval", 7, 0.4), ("generator", 9, 0.2)):
        run = trained[name].run  # type: ignore[attr-defined]
        assert trained[name].data == config.data  # type: ignore[attr-defined]
        assert run.out == str(tmp_path / f"start_{name}") and run.epochs == epochs
        assert run.time_budget_s == pytest.approx(100.0 * share)
        assert (run.device, run.threads) == ("cpu", 2)

    # a given start run is checked, not trained
    trained.clear()
    folder = tmp_path / "a_generator"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": "generator"}))
    with pytest.raises(FgsbirError, match="a generator run, not a retrieval run"):
        train_start_runs(replace(config, retrieval_run=str(folder)))
    given = train_start_runs(replace(config, generator_run=str(folder)))
    assert given.generator_run == str(folder) and given.generator_s == 0.0
    assert list(trained) == ["retrieval"]
