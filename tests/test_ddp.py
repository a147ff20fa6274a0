"""``fgsbir train`` under ``torchrun --nproc_per_node=2``: DDP on the CPU with gloo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.models.embedding import load_embedder
from fgsbir.runs import read_metrics

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")


def test_two_process_training(tmp_path) -> None:
    data = ensure_synthetic(
        tmp_path / "data", n_photos=20, sketches_per_photo=2, test_fraction=0.25
    )
    run = tmp_path / "run"
    settings = [
        "image_size=48",
        "batch_size=2",
        "val_fraction=0.2",
        "embedding_dim=16",
        "device=cpu",
    ]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "fgsbir", "train", "--data", str(data), "--out", str(run), "--epochs", "2",
        *[arg for s in settings for arg in ("--set", s)],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # only rank 0 reports

    # 12 training photos shared by 2 processes: 6 each, in 3 batches of 2 per epoch
    train_records = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [3, 6]
    config = json.loads((run / "config.json").read_text())
    assert config["metrics"]["test"]["n_queries"] == 10
    embedder = load_embedder(run, device="cpu")
    assert embedder.model.embedding_dim == 16
