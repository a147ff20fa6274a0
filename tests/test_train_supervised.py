"""Supervised training end to end on the synthetic data set: CLI, run folder, resume, budget."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from fgsbir.cli import main
from fgsbir.config import ConfigError, DataConfig, RunOptions
from fgsbir.data.dataset import load_dataset
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.data.transforms import Augmentation, PairDataset, Preprocessing
from fgsbir.errors import FgsbirError
from fgsbir.evaluate import evaluate_split
from fgsbir.inference import Embedder, load_embedder
from fgsbir.models.embedding import EmbeddingArch, build_embedding_net
from fgsbir.runs import load_resume_state, read_metrics, save_resume_state
from fgsbir.train.photo_side import PhotoLosses
from fgsbir.train.supervised import EdgePairs, TrainConfig, train

torch.set_num_threads(1)  # faster than 2 on a shared 2-core machine

TINY = ["prep.image_size=48", "batch_size=8", "model.embedding_dim=32"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    """20 synthetic photos with 2 sketches each: 12 to train, 3 to validate, 5 to test."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    return str(ensure_synthetic(root, n_photos=20, sketches_per_photo=2, test_fraction=0.25))


def tiny_config(
    data: str, out, epochs: int = 3, val_fraction: float = 0.2, **changes
) -> TrainConfig:
    """A small recipe; ``changes`` replace TrainConfig fields, ``run_changes`` RunOptions'."""
    run_changes = changes.pop("run_changes", {})
    config = TrainConfig(
        data=DataConfig(path=data, val_fraction=val_fraction),
        run=RunOptions(out=str(out), epochs=epochs, **run_changes),
        model=EmbeddingArch(embedding_dim=32),
        prep=Preprocessing(image_size=48),
        batch_size=4,
        warmup_epochs=0.5,
    )
    return replace(config, **changes)


def test_train_and_evaluate_from_the_command_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", "synthetic", "--out", str(run), "--epochs", "2"]
    args += ["--labelled-fraction", "0.2"]
    assert main(args + [item for s in TINY for item in ("--set", s)]) == 0
    printed = capsys.readouterr().out
    assert "test: acc@1" in printed and "retrieval_test.png" in printed
    for name in ("model.safetensors", "config.json", "README.md", "metrics.jsonl", "resume.pt"):
        assert (run / name).is_file(), name
    for name in ("training_curves.png", "retrieval_val.png", "retrieval_test.png"):
        assert (run / name).stat().st_size > 10_000, name

    config = json.loads((run / "config.json").read_text())
    assert config["prep"]["image_size"] == 48
    assert config["model"]["backbone"] == "efficientnet_lite1"
    assert config["data_info"]["train_photos"] == 27 and config["data_info"]["val_photos"] == 15
    records = read_metrics(run / "metrics.jsonl")
    assert [(r["epoch"], r["split"]) for r in records] == [
        (1, "train"), (1, "val"), (2, "train"), (2, "val"),
    ]  # fmt: skip
    assert [r["step"] for r in records] == [3, 3, 6, 6]  # 27 photos, batches of 8, last dropped

    assert main(["evaluate", str(run), "--data", "synthetic", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["n_queries"] == 150 and evaluated["n_gallery"] == 50
    test = config["metrics"]["test"]
    for key in ("acc@1", "acc@5", "acc@10", "mean_rank", "mrr"):
        assert evaluated[key] == pytest.approx(test[key]), key
    assert 0.0 <= evaluated["acc@1"] <= evaluated["acc@5"] <= evaluated["acc@10"] <= 1.0
    assert "| test |" in (run / "README.md").read_text()


def test_training_fits_its_pairs(tiny_data, tmp_path) -> None:
    """Without augmentation a few epochs rank each training sketch's own photo near the top."""
    config = tiny_config(
        tiny_data, tmp_path, epochs=8, lr=1e-3, val_fraction=0.0,
        augment=Augmentation(flip=False, photo_crop=1.0, colour_jitter=0.0, stroke_drop=0.0,
                             sketch_affine=False),
    )  # fmt: skip
    train_split = load_dataset(tiny_data, val_fraction=0.0).train
    torch.manual_seed(0)
    untrained = Embedder(build_embedding_net(config.model), config.prep, device="cpu")
    before = evaluate_split(untrained, train_split)[0]
    train(config)
    after = evaluate_split(load_embedder(tmp_path, "cpu"), train_split)[0]
    assert after["n_gallery"] == 15 and after["n_queries"] == 30
    assert after["mrr"] > before["mrr"] + 0.15  # measured: 0.30 -> 0.57
    assert after["mean_rank"] < 0.6 * before["mean_rank"]  # measured: 7.1 -> 2.9


@pytest.mark.parametrize("average_epochs", [0.0, 1.0])
def test_resumed_run_matches_an_uninterrupted_one(
    tiny_data, tmp_path, monkeypatch, average_epochs
) -> None:
    """Also the reproducibility check: the straight run and the resumed one are two runs of the
    same command, and give the same weights and numbers (with a weight average too)."""

    def config(out: str) -> TrainConfig:
        return tiny_config(tiny_data, tmp_path / out, average_epochs=average_epochs)

    straight = train(config("straight"))

    collate = PairDataset.collate
    calls = {"n": 0}

    def killed_in_epoch_two(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 1 has 3 batches: this is the middle of epoch 2
            raise KeyboardInterrupt
        return collate(self, batch)

    monkeypatch.setattr(PairDataset, "collate", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config("resumed"))
    assert load_resume_state(tmp_path / "resumed")["progress"]["epoch"] == 1
    monkeypatch.setattr(PairDataset, "collate", collate)
    resumed = train(config("resumed"))

    a = load_resume_state(tmp_path / "straight")
    b = load_resume_state(tmp_path / "resumed")
    assert a["progress"] == b["progress"] | {
        "elapsed_s": a["progress"]["elapsed_s"],
        "last_epoch_s": a["progress"]["last_epoch_s"],
    }
    assert (a["progress"]["epoch"], a["progress"]["step"]) == (3, 9)
    for part in ("model", "averaged") if average_epochs else ("model",):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    best_a = load_file(tmp_path / "straight" / "model.safetensors")
    best_b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    assert resumed["test"] == straight["test"]

    def without_time(run: str) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k not in ("time", "epoch_s")}
            for r in read_metrics(tmp_path / run / "metrics.jsonl")
        ]

    assert without_time("resumed") == without_time("straight")  # no doubled records


def test_time_budget_and_changed_settings(tiny_data, tmp_path) -> None:
    budget = {"time_budget_s": 1e-6}
    result = train(tiny_config(tiny_data, tmp_path, epochs=5, run_changes=budget))
    assert result["epochs_trained"] == 1  # the first epoch always runs; it overran the budget
    with pytest.raises(FgsbirError, match=r"other settings.*lr"):
        train(tiny_config(tiny_data, tmp_path, epochs=5, lr=1e-3))
    # run options may change on resume: more epochs and no budget carry on from epoch 1
    assert train(tiny_config(tiny_data, tmp_path, epochs=2))["epochs_trained"] == 2


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"data": DataConfig(labelled_fraction=1.5)}, "data.labelled_fraction"),
        ({"run": RunOptions(epochs=0)}, "run.epochs"),
        ({"model": EmbeddingArch(embedding_dim=0)}, "model.embedding_dim"),
        ({"prep": Preprocessing(photo_input="grey")}, "prep.photo_input"),  # type: ignore[arg-type]
    ],
)
def test_bad_settings_are_refused_before_training(tmp_path, changes, key) -> None:
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        train(replace(TrainConfig(run=RunOptions(out=str(tmp_path / "run"))), **changes))
    assert not (tmp_path / "run").exists()


def test_edge_pairs_of_unlabelled_photos_lead_and_mix(tiny_data, tmp_path) -> None:
    """Half the 12 training photos lose their sketches: their traced edge drawings pair with them
    for one leading epoch, then join every batch of labelled pairs."""
    config = tiny_config(tiny_data, tmp_path, epochs=2, edges=EdgePairs(epochs=1, per_batch=2))
    config = replace(config, data=replace(config.data, labelled_fraction=0.5))
    result = train(config)
    info = json.loads((tmp_path / "config.json").read_text())["data_info"]
    assert info["train_photos"] == 6 and info["unlabelled_photos"] == 6
    assert 4 <= info["edge_pairs"] <= 6  # photos with almost no edges are left out
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    # 1 edge epoch of edge_pairs // 4 batches, then 2 epochs of 6 // 4 = 1 labelled batch each
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["step"] == info["edge_pairs"] // 4 + 2
    assert result["epochs_trained"] == 3


def test_edge_pairs_need_unlabelled_photos(tiny_data, tmp_path) -> None:
    with pytest.raises(FgsbirError, match="edge pairs need unlabelled photos"):
        train(tiny_config(tiny_data, tmp_path, edges=EdgePairs(per_batch=2)))
    assert not (tmp_path / "model.safetensors").exists()


def test_photo_side_losses_train_on_unlabelled_photos(tiny_data, tmp_path) -> None:
    """Each photo-side loss shows in the log; with them the run still learns its pairs."""
    photo = PhotoLosses(neighbourhood=1.0, distill=1.0, intra=0.5, unlabelled_per_batch=4)
    config = tiny_config(tiny_data, tmp_path, epochs=2, photo=photo)
    config = replace(config, data=replace(config.data, labelled_fraction=0.5))
    result = train(config)
    train_records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    for key in ("triplet", "neighbourhood", "photo_distill", "intra"):
        assert all(math.isfinite(r[key]) for r in train_records), key
    assert train_records[0]["loss"] > train_records[0]["triplet"]  # the photo terms add up
    assert result["skipped_steps"] == 0 and result["test"]["n_queries"] == 10
    card = (tmp_path / "README.md").read_text()
    assert "6 unlabelled photos through neighbourhood preservation (weight 1.0)" in card
    assert "intra-modal triplets (weight 0.5)" in card


def test_unlabelled_photos_as_negatives_change_the_retrieval_loss(tiny_data, tmp_path) -> None:
    """With ``pool_negatives`` each step's unlabelled photos join the triplet loss's negatives:
    the first step's triplet loss (same weights, same batch; an epoch is one step here) can only
    grow, the run trains, and its card says so."""
    config = tiny_config(tiny_data, tmp_path / "plain", epochs=1, batch_size=64)
    photo = PhotoLosses(neighbourhood=1.0, unlabelled_per_batch=4)
    config = replace(config, data=replace(config.data, labelled_fraction=0.5), photo=photo)
    pooled = replace(config, photo=replace(photo, pool_negatives=True))
    pooled = replace(pooled, run=replace(pooled.run, out=str(tmp_path / "pooled")))
    results = [train(config), train(pooled)]
    first = [
        next(r for r in read_metrics(tmp_path / run / "metrics.jsonl") if r["split"] == "train")
        for run in ("plain", "pooled")
    ]
    assert first[0]["step"] == first[1]["step"] == 1
    assert first[1]["triplet"] >= first[0]["triplet"] > 0
    assert first[1]["triplet"] != first[0]["triplet"]
    assert results[1]["skipped_steps"] == 0
    card = (tmp_path / "pooled" / "README.md").read_text()
    assert "negatives of the retrieval triplet loss" in card


def test_photo_side_losses_after_a_look_ahead(tiny_data, tmp_path) -> None:
    """With ``meta_step`` the photo-side losses are taken one retrieval step ahead: the run
    trains, logs them, and its model differs from the one without the look-ahead."""
    config = tiny_config(tiny_data, tmp_path / "plain", epochs=1)
    photo = PhotoLosses(neighbourhood=1.0, unlabelled_per_batch=4)
    config = replace(config, data=replace(config.data, labelled_fraction=0.5), photo=photo)
    ahead = replace(config, photo=replace(photo, meta_step=20.0))
    ahead = replace(ahead, run=replace(ahead.run, out=str(tmp_path / "ahead")))
    results = [train(config), train(ahead)]
    records = [
        r for r in read_metrics(tmp_path / "ahead" / "metrics.jsonl") if r["split"] == "train"
    ]
    assert all(math.isfinite(r["neighbourhood"]) for r in records)
    assert results[1]["skipped_steps"] == 0
    weights = [load_file(str(tmp_path / run / "model.safetensors")) for run in ("plain", "ahead")]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    card = (tmp_path / "ahead" / "README.md").read_text()
    assert "the photo-side losses after a look-ahead of 20.0 steps" in card


def test_runs_saved_before_later_settings_resume_without_them(tiny_data, tmp_path) -> None:
    """A run saved before the look-ahead and weight averaging existed resumes; asking for
    either is another run."""
    train(tiny_config(tiny_data, tmp_path, epochs=1))
    state = load_resume_state(tmp_path)
    del state["config"]["photo"]["meta_step"], state["config"]["average_epochs"]
    save_resume_state(tmp_path, state)
    assert train(tiny_config(tiny_data, tmp_path, epochs=2))["epochs_trained"] == 2
    with pytest.raises(FgsbirError, match=r"other settings.*photo"):
        train(tiny_config(tiny_data, tmp_path, epochs=3, photo=PhotoLosses(meta_step=1.0)))
    with pytest.raises(FgsbirError, match=r"other settings \(average_epochs\)"):
        train(tiny_config(tiny_data, tmp_path, epochs=3, average_epochs=1.0))


def test_weight_average_is_what_validation_scores_and_the_run_keeps(tiny_data, tmp_path) -> None:
    """The kept weights are the moving average, not the trained ones, and the recorded scores
    are the average's; a time constant near zero keeps the trained weights exactly."""
    plain = train(tiny_config(tiny_data, tmp_path / "plain", val_fraction=0.0))
    instant = train(
        tiny_config(tiny_data, tmp_path / "instant", val_fraction=0.0, average_epochs=1e-9)
    )
    assert instant["test"] == plain["test"]
    kept = {name: load_file(tmp_path / name / "model.safetensors") for name in ("plain", "instant")}
    assert all(torch.equal(kept["plain"][k], kept["instant"][k]) for k in kept["plain"])

    last = train(
        tiny_config(tiny_data, tmp_path / "last", val_fraction=0.0, average_epochs=1.0)
    )  # no validation: the last epoch is kept
    state = load_resume_state(tmp_path / "last")
    kept_last = load_file(tmp_path / "last" / "model.safetensors")
    assert all(torch.equal(kept_last[k], state["averaged"][f"module.{k}"]) for k in kept_last)
    assert not all(torch.equal(kept_last[k], state["model"][k]) for k in kept_last)
    assert last["test"] != plain["test"]

    averaged = train(tiny_config(tiny_data, tmp_path / "averaged", average_epochs=1.0))
    records = read_metrics(tmp_path / "averaged" / "metrics.jsonl")
    [logged] = [r for r in records if r["split"] == "val" and r["epoch"] == averaged["best_epoch"]]
    val = load_dataset(tiny_data, val_fraction=0.2).val
    scored = evaluate_split(load_embedder(tmp_path / "averaged", "cpu"), val)[0]
    assert scored == pytest.approx({k: logged[k] for k in scored})
    assert (
        "moving average of the trained weights over about 1.0 epochs"
        in (tmp_path / "averaged" / "README.md").read_text()
    )


def test_photo_side_losses_need_unlabelled_photos(tiny_data, tmp_path) -> None:
    with pytest.raises(FgsbirError, match="photo-side losses need unlabelled photos"):
        train(tiny_config(tiny_data, tmp_path, photo=PhotoLosses(distill=1.0)))


def test_an_ensemble_is_one_model_of_members_trained_on_the_same_splits(
    tiny_data, tmp_path, capsys
) -> None:
    """Member 0 is the single run of the same settings, member 1 starts from other weights on
    the same splits; the ensemble folder is a retrieval run whose embeddings are the members'
    concatenated, scored and evaluated like any run."""
    out, single = tmp_path / "ensemble", tmp_path / "single"
    args = ["train", "--data", tiny_data, "--epochs", "1", *(x for s in TINY for x in ("--set", s))]
    assert main([*args, "--out", str(out), "--members", "2"]) == 0
    assert "best epochs" in capsys.readouterr().out
    assert main([*args, "--out", str(single)]) == 0
    weights = [load_file(str(out / f"member{k}" / "model.safetensors")) for k in (0, 1)]
    single_weights = load_file(str(single / "model.safetensors"))
    assert all(torch.equal(weights[0][k], single_weights[k]) for k in single_weights)
    assert not torch.equal(weights[0]["head.weight"], weights[1]["head.weight"])
    members = [json.loads((out / f"member{k}" / "config.json").read_text()) for k in (0, 1)]
    assert members[1]["data"]["split_seed"] == members[0]["data"]["seed"] == 0
    assert members[0]["data_info"] == members[1]["data_info"]

    ensemble = load_embedder(out)
    test = load_dataset(tiny_data).test
    scored, sketch_emb, photo_emb = evaluate_split(ensemble, test)
    member_emb = [evaluate_split(load_embedder(out / f"member{k}"), test)[1] for k in (0, 1)]
    expected = torch.cat([torch.as_tensor(e) for e in member_emb], dim=1) / math.sqrt(2)
    assert torch.allclose(torch.as_tensor(sketch_emb), expected, atol=1e-5)
    assert photo_emb.shape == (len(test.photos), 64)
    config = json.loads((out / "config.json").read_text())
    assert config["members"] == 2 and config["metrics"]["test"]["mrr"] == pytest.approx(
        scored["mrr"]
    )
    assert len(config["metrics"]["best_epoch"]) == 2
    assert config["metrics"]["train_s"] == pytest.approx(
        sum(m["metrics"]["train_s"] for m in members), abs=0.2
    )
    assert "An ensemble of 2 models" in (out / "README.md").read_text()
