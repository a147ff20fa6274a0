"""Run folders: what a training command leaves behind, and how it picks up after a crash.

A run folder holds ``model.safetensors`` (the selected weights), ``config.json`` (architecture,
preprocessing, data and metrics), ``README.md`` (a short model card), ``metrics.jsonl`` (one JSON
object per logged event) and ``resume.pt`` (everything needed to continue training exactly where
it stopped). Every file is written atomically, so a kill never leaves a half-written one.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fgsbir.errors import FgsbirError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
METRICS_FILE = "metrics.jsonl"
RESUME_FILE = "resume.pt"
RUN_KINDS = {  # config.json's "kind": what users call such a run, and where one comes from
    "embedding": ("retrieval", "made by 'fgsbir train'"),
    "generator": ("generator", "made by 'fgsbir train-generator', or a semi run's generator/"),
    "discriminator": ("discriminator", "a semi run's discriminator/ folder"),
}


class RunError(FgsbirError):
    """A run folder that is missing or incomplete."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(temporary_path)`` and a rename: a kill leaves the old file
    or the new one, never half of one. The file gets the usual permissions (0644 under the usual
    umask 022), readable by others like any file a program writes, not mkstemp's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # minus the umask
    mode = os.stat(tmp).st_mode
    try:
        write(tmp)
        os.chmod(tmp, mode)  # some writers replace the file with a private one of their own
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class MetricsLog:
    """Appends one JSON object per call to a ``metrics.jsonl`` file (with a wall-clock ``time``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **record: Any) -> dict[str, Any]:
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step``: a resumed run re-logs them, so none is doubled."""
        kept = [r for r in self.read() if r.get("step", -1) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.path, lambda p: p.write_text(text))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_model(
    run_dir: str | Path,
    model: torch.nn.Module,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    card: str = "",
) -> None:
    """Write the selected weights, the configuration (with metrics) and the model card."""
    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(run_dir / MODEL_FILE, lambda p: save_file(state, str(p)))
    payload = {**config, "metrics": metrics or {}}
    atomic_write(run_dir / CONFIG_FILE, lambda p: p.write_text(json.dumps(payload, indent=2)))
    if card:
        atomic_write(run_dir / CARD_FILE, lambda p: p.write_text(card))


def load_model_state(run_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: not a trained run folder (no {MODEL_FILE})")
    return load_file(str(path))


def load_run_config(run_dir: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The ``config.json`` of a trained run folder (refused unless it holds a model of ``kind``,
    if given); a missing or unreadable one is a RunError that says what ``run_dir`` is instead."""
    folder = Path(run_dir)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: {_not_a_run(folder)}")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: unreadable run config ({exc})") from None
    if kind is not None and config.get("kind") != kind:
        have = config.get("kind")
        have = f"a {RUN_KINDS[have][0]} run" if have in RUN_KINDS else f"a run of kind {have!r}"
        name, origin = RUN_KINDS[kind]
        raise RunError(f"{run_dir}: {have}, not a {name} run ({origin})")
    return config


def _not_a_run(folder: Path) -> str:
    if not folder.exists():
        return "no such run folder"
    if not folder.is_dir():
        return "not a run folder but a file"
    if (folder / RESUME_FILE).is_file():
        return "a run that is training or stopped before its first epoch ended (no config.json)"
    return f"not a trained run folder (no {CONFIG_FILE})"


def save_resume_state(run_dir: str | Path, state: dict[str, Any]) -> None:
    """Atomically save a training state (model, optimiser, schedule, epoch, RNG states...)."""
    atomic_write(Path(run_dir) / RESUME_FILE, lambda p: torch.save(state, p))


class Stateful(Protocol):
    """Anything with PyTorch's ``state_dict`` / ``load_state_dict`` pair (modules, optimisers,
    schedulers, ...)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


def save_training_state(
    run_dir: str | Path,
    run_config: dict[str, Any],
    parts: Mapping[str, Stateful],
    **progress: Any,
) -> None:
    """Save what resuming a run needs: its settings, the state of every part, the random
    generators' states and ``progress`` (epoch, step, best score, seconds spent...)."""
    state = {name: part.state_dict() for name, part in parts.items()}
    save_resume_state(run_dir, {"config": run_config, **state, "rng": rng_state(), **progress})


def restore_training_state(state: dict[str, Any], parts: Mapping[str, Stateful]) -> None:
    """Load the parts and random generators saved by :func:`save_training_state`."""
    for name, part in parts.items():
        part.load_state_dict(state[name])
    set_rng_state(state["rng"])


def load_resume_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The state saved by :func:`save_resume_state`, or ``None`` when the run starts afresh."""
    path = Path(run_dir) / RESUME_FILE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def resume_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """The training progress (``epoch``, ``step``...) saved in ``run_dir``'s resume state, or
    ``None`` when there is none; quick even for a large state (its tensors are not read)."""
    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return dict(state["progress"])


def check_resumable(
    run_dir: str | Path, state: dict[str, Any] | None, run_config: dict[str, Any]
) -> None:
    """Refuse to train into ``run_dir`` when that would lose or mix work: a folder with a finished
    model but no resume ``state``, or a stopped run whose settings differ from ``run_config``."""
    if state is None:
        if (Path(run_dir) / MODEL_FILE).exists():
            raise FgsbirError(
                f"{run_dir}: holds a trained model but no resume state; choose a new --out"
            )
        return
    saved = {k: v for k, v in state["config"].items() if k != "run"}
    changed = sorted(
        key for key in set(saved) | set(run_config) if saved.get(key) != run_config.get(key)
    )
    if changed:
        raise FgsbirError(
            f"{run_dir}: holds a run with other settings ({', '.join(changed)}); "
            "choose a new --out to start another run"
        )


def rng_state() -> dict[str, Any]:
    """The states of every random generator training touches (Python, NumPy, torch, CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
