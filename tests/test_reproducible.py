"""The same command with the same seed and thread count gives the same numbers, run after run.

Each run is a fresh process with its own hash seed, so nothing may depend on set or dict order
of strings, on the wall clock, or on state left over from an earlier run in the same process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fgsbir.data.synthetic import ensure_synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiny"
    return ensure_synthetic(root, n_photos=20, sketches_per_photo=2, test_fraction=0.25)


def run_training(data: Path, out: Path, hash_seed: str, *extra: str) -> dict:
    command = [
        sys.executable, "-m", "fgsbir", *extra, "--data", str(data), "--out", str(out),
        "--epochs", "2", "--seed", "3", "--threads", "1", "--device", "cpu",
        "--set", "data.val_fraction=0.2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "config.json").read_text())["metrics"]


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--set", "prep.image_size=48", "--set", "model.embedding_dim=16"],
        [
            "train-generator",
            "--set",
            "model.image_size=64",
            "--set",
            "model.hidden=32",
            "--set",
            "model.components=3",
            "--set",
            "model.max_points=24",
        ],
    ],
    ids=["retrieval", "generator"],
)
def test_same_command_same_numbers(data, tmp_path, command) -> None:
    first = run_training(data, tmp_path / "a", "1", *command)
    second = run_training(data, tmp_path / "b", "2", *command)
    for key in ("val", "test", "best_epoch", "steps"):
        assert first[key] == second[key], key
    a, b = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
