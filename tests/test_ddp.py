"""Every training method under ``torchrun --nproc_per_node=2``: DDP on the CPU with gloo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.inference import load_embedder, load_generator
from fgsbir.runs import read_metrics

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")

RETRIEVAL = ["prep.image_size=48", "batch_size=2", "model.embedding_dim=16"]
GENERATOR = [
    "model.image_size=64", "model.hidden=32", "model.z_dim=8", "model.feature_dim=16",
    "model.attention_dim=16", "model.components=3", "model.max_points=24", "batch_size=4",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """20 synthetic photos with 2 sketches each: 12 to train, 3 to validate, 5 to test."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    return ensure_synthetic(root, n_photos=20, sketches_per_photo=2, test_fraction=0.25)


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "fgsbir", *args, "--device", "cpu", "--threads", "1",
        "--set", "data.val_fraction=0.2",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # only rank 0 reports
    return done


def settings(prefix: str, items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", prefix + item)]


def test_retrieval_training(data, tmp_path) -> None:
    run = tmp_path / "run"
    torchrun("train", "--data", str(data), "--out", str(run), "--epochs", "2",
             *settings("", RETRIEVAL))  # fmt: skip
    # 12 training photos in 6 batches of 2, shared by 2 processes: 3 steps each per epoch
    train_records = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [3, 6]
    config = json.loads((run / "config.json").read_text())
    assert config["metrics"]["test"]["n_queries"] == 10
    assert load_embedder(run, device="cpu").model.embedding_dim == 16


def test_generator_training(data, tmp_path) -> None:
    run = tmp_path / "generator"
    torchrun("train-generator", "--data", str(data), "--out", str(run), "--epochs", "2",
             *settings("", GENERATOR))  # fmt: skip
    # 24 training sketches in 6 batches of 4, shared by 2 processes: 3 steps each per epoch
    train_records = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [3, 6]
    config = json.loads((run / "config.json").read_text())
    assert config["metrics"]["test"]["n_sketches"] == 10
    assert load_generator(run, "cpu").model.arch.hidden == 32


def test_semi_supervised_training(data, tmp_path) -> None:
    run = tmp_path / "semi"
    torchrun(
        "train", "--method", "semi", "--data", str(data), "--out", str(run), "--epochs", "1",
        "--labelled-fraction", "0.5",
        *settings("supervised.", [*RETRIEVAL, "run.epochs=1"]),
        *settings("generator.", [*GENERATOR, "run.epochs=1"]),
        "--set", "batch_size=2", "--set", "unlabelled_batch_size=2",
        "--set", "critic.warmup_steps=2", "--set", "critic.image_size=32",
    )  # fmt: skip
    records = read_metrics(run / "metrics.jsonl")
    # 6 labelled photos in 3 batches of 2: 1 joint step per process (the third batch is left)
    assert [(r["epoch"], r["step"]) for r in records if r["split"] == "train"] == [(1, 1)]
    assert [r["epoch"] for r in records if r["split"] == "val"] == [0, 1]
    config = json.loads((run / "config.json").read_text())
    assert config["metrics"]["test"]["n_queries"] == 10
    assert (run / "generator" / "model.safetensors").is_file()
    assert load_embedder(run, device="cpu").model.embedding_dim == 16
