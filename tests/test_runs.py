import random

import numpy as np
import pytest
import torch

from fgsbir import runs


def test_model_config_and_card_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    runs.save_model(tmp_path, model, {"arch": "linear"}, {"acc@1": 0.5}, card="# card\n")
    state = runs.load_model_state(tmp_path)
    assert torch.equal(state["weight"], model.weight.detach())
    config = runs.load_run_config(tmp_path)
    assert config == {"arch": "linear", "metrics": {"acc@1": 0.5}}
    assert (tmp_path / runs.CARD_FILE).read_text() == "# card\n"
    assert not list(tmp_path.glob("*.tmp")), "atomic writes leave no temporary files"


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(runs.RunError, match="not a trained run folder"):
        runs.load_model_state(tmp_path)


def test_metrics_log_appends_and_truncates(tmp_path):
    log = runs.MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(5):
        log.log(step=step, loss=1.0 / (step + 1))
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [0, 1, 2]
    assert log.read()[1]["loss"] == pytest.approx(0.5)


def test_rng_state_restores_every_generator(tmp_path):
    assert runs.load_resume_state(tmp_path) is None
    runs.save_resume_state(tmp_path, {"epoch": 3, "rng": runs.rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    state = runs.load_resume_state(tmp_path)
    assert state is not None and state["epoch"] == 3
    runs.set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
