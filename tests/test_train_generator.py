"""Generator training on a tiny paired data set: run folder, resume, skipped steps, generate CLI."""

from __future__ import annotations

import json
import math
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from train_helpers import TINY_GENERATOR

import fgsbir.train.generator as train_module
from fgsbir.cli import main
from fgsbir.config import DataConfig, RunOptions
from fgsbir.data.dataset import load_dataset
from fgsbir.data.sequences import mirrored, on_canvas
from fgsbir.data.transforms import Preprocessing, input_pixels, normalise
from fgsbir.errors import FgsbirError
from fgsbir.inference import TrainedGenerator, generate, load_generator
from fgsbir.losses.sequence import PEN_END
from fgsbir.models.edge_pointer import EdgePointerSketcher
from fgsbir.models.generator import GeneratorArch, PhotoToSketch
from fgsbir.runs import MODEL_FILE, load_resume_state, read_metrics, save_resume_state
from fgsbir.sketch.io import read_stroke_json, read_svg
from fgsbir.sketch.strokes import Sketch
from fgsbir.train.generator import GeneratorConfig, train_generator

TINY_MODEL = {
    name: value
    for name, value in TINY_GENERATOR.__dict__.items()
    if value != getattr(GeneratorArch(), name)
}
"""The tiny generator's settings that differ from the defaults (for ``--set`` too)."""


def _polygon(i: int) -> np.ndarray:
    """Outline of shape ``i``: a closed polygon with 3 to 6 corners somewhere on the canvas."""
    corners = 3 + i % 4
    angles = np.linspace(0, 2 * np.pi, corners + 1) + 0.3 * i
    centre = np.array([90.0 + 12 * (i % 5), 100.0 + 9 * (i % 3)])
    return centre + (50 + 4 * (i % 3)) * np.stack([np.cos(angles), np.sin(angles)], 1)


def _write_pairs(root: Path, n_train: int = 8, n_test: int = 3) -> Path:
    """A QMUL-V2-layout data set: filled polygons photographed, their outlines sketched."""
    (root / "photo").mkdir(parents=True)
    strokes = {}
    for i in range(n_train + n_test):
        outline = _polygon(i)
        photo = Image.new("RGB", (256, 256), "white")
        ImageDraw.Draw(photo).polygon([tuple(p) for p in outline], fill=(40 * (i % 6), 90, 160))
        photo.save(root / "photo" / f"p{i}.png")
        points = np.hstack([outline, np.zeros((len(outline), 1))]).astype(np.float64)
        points[-1, 2] = 1.0
        strokes[f"{'train' if i < n_train else 'test'}/p{i}_1"] = points
    with (root / "Tiny_Coordinate").open("wb") as f:
        pickle.dump(strokes, f)
    return root


def _config(
    data: Path,
    out: Path,
    epochs: int = 2,
    labelled_fraction: float = 1.0,
    **overrides: object,
) -> GeneratorConfig:
    values = {"pretrained": False, "batch_size": 4, "grid_rows": 2, "lr": 3e-3, **overrides}
    return GeneratorConfig(
        data=DataConfig(str(data), labelled_fraction=labelled_fraction, val_fraction=0.25),
        run=RunOptions(str(out), epochs=epochs),
        model=GeneratorArch(**TINY_MODEL),
        **values,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "gen"
    torch.set_num_threads(1)
    return out, train_generator(_config(data, out, epochs=3))


def test_training_writes_a_complete_run_folder(trained: tuple[Path, dict]) -> None:
    out, result = trained
    for name in ("model.safetensors", "config.json", "README.md", "metrics.jsonl", "resume.pt"):
        assert (out / name).is_file(), name
    assert {Path(p).name for p in result["pictures"]} == {
        "training_curves.png",
        "generated_test.png",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "generator" and config["scale"] > 0
    assert config["model"]["hidden"] == TINY_MODEL["hidden"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert [r["epoch"] for r in train] == [1, 2, 3] and len(val) == 3
    assert train[-1]["nll"] < train[0]["nll"]  # it learns
    assert result["epochs_trained"] == 3 and result["skipped_steps"] == 0
    assert np.isfinite(result["test"]["nll"]) and result["test"]["n_sketches"] == 3
    assert result["val"]["nll"] == pytest.approx(min(r["nll"] for r in val))
    assert "NLL per point" in (out / "README.md").read_text()


def test_loaded_generator_draws_sketches_on_the_canvas(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    generator = load_generator(out)
    photos = [Image.new("RGB", (80, 60), "white"), Image.new("RGB", (50, 50), "red")]
    sketches = generator.draw(photos, temperature=0.0)
    assert len(sketches) == 2 and all(s.width == s.height == 256.0 for s in sketches)
    assert all(len(s.points) <= TINY_MODEL["max_points"] for s in sketches)
    again = generator.draw(photos, temperature=0.0)
    np.testing.assert_array_equal(sketches[0].points, again[0].points)  # greedy: deterministic
    result = generator.sample(photos, temperature=1.0)
    assert result.log_prob.requires_grad and torch.isfinite(result.log_prob).all()


def test_loaded_generator_sees_photos_as_its_architecture_says(
    trained: tuple[Path, dict],
) -> None:
    out, _ = trained
    photo = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(photo).rectangle((16, 16, 47, 47), fill="red")
    generator = load_generator(out)
    assert generator.model.arch.photo_input == "sobel"  # the default
    for photo_input in ("sobel", "rgb"):
        generator.model.arch.photo_input = photo_input
        seen = TrainedGenerator(generator.model, generator.config, generator.device)
        pixels = input_pixels(photo, Preprocessing(64, photo_input=photo_input))
        torch.testing.assert_close(
            seen.photo_tensor([photo])[0], normalise(pixels[None] / 255.0)[0]
        )


def test_the_edge_pointer_run_reloads_as_it_was_trained(
    data: Path, trained: tuple[Path, dict]
) -> None:
    """The default decoder is the edge pointer; the loaded run draws and scores sketches as the
    trained one did (same validation NLL, so the same edge points and the same anchors)."""
    out, result = trained
    assert json.loads((out / "config.json").read_text())["model"]["decoder"] == "edge_pointer"
    generator = load_generator(out)
    assert isinstance(generator.model, EdgePointerSketcher)
    assert generator.model.canvas_units == pytest.approx(256.0 / generator.scale)
    split = load_dataset(str(data), val_fraction=0.25).val
    assert generator.nll(split)["nll"] == pytest.approx(result["val"]["nll"], rel=1e-5)


def test_runs_saved_before_the_decoder_choice_load_as_attentive(data: Path, tmp_path: Path) -> None:
    """A run whose config.json has no ``decoder`` (nor ``edge_points``) is an attentive one."""
    out = tmp_path / "attentive"
    model = GeneratorArch(**TINY_MODEL, decoder="attentive")
    train_generator(replace(_config(data, out, epochs=1), model=model))
    photos = [Image.open(data / "photo" / "p9.png")]
    drawn = load_generator(out).draw(photos)[0]
    old = tmp_path / "old"
    shutil.copytree(out, old)
    config = json.loads((old / "config.json").read_text())
    del config["model"]["decoder"], config["model"]["edge_points"]
    (old / "config.json").write_text(json.dumps(config))
    loaded = load_generator(old)
    assert type(loaded.model) is PhotoToSketch and loaded.model.arch.decoder == "attentive"
    np.testing.assert_array_equal(loaded.draw(photos)[0].points, drawn.points)
    assert loaded.copy_bias == 0.0  # nothing to copy: a bias is refused, none is a no-op
    with pytest.raises(FgsbirError, match="a copy bias needs the edge_pointer decoder"):
        load_generator(old, copy_bias=2.0)


def test_resume_continues_exactly(data: Path, tmp_path: Path) -> None:
    """A leading epoch on pre-training pairs (8: two batches), then epochs on the 6 pairs (two
    batches) with one pre-training batch mixed in per batch of pairs; a run stopped in the mixed
    epochs resumes to the weights of the run that went straight through."""
    mixed = {"pretrain_data": str(data), "pretrain_epochs": 1, "pretrain_mix": 1.0}
    straight = tmp_path / "straight"
    train_generator(_config(data, straight, epochs=3, **mixed))
    stopped = tmp_path / "stopped"
    train_generator(_config(data, stopped, epochs=1, **mixed))
    resumed = train_generator(_config(data, stopped, epochs=3, **mixed))
    assert resumed["epochs_trained"] == 4
    a, b = load_resume_state(straight), load_resume_state(stopped)
    assert a is not None and b is not None
    assert a["progress"]["step"] == b["progress"]["step"] == 2 + 3 * 4
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0, msg=key)
    records = read_metrics(stopped / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 1, 2, 2, 3, 3, 4, 4]  # train + val, none doubled
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 6, 10, 14]
    assert [r["pretraining"] for r in train] == [1.0, 0.5, 0.5, 0.5]  # share of the steps
    card = (stopped / "README.md").read_text()
    assert f"after 1 epochs on `{data}` (photos), then mixed in at 1 of its batches" in card
    with pytest.raises(FgsbirError, match="other settings"):
        train_generator(_config(data, stopped, epochs=4, **mixed | {"pretrain_mix": 0.5}))


def test_runs_saved_before_pretrain_mix_resume_as_unmixed(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "old"
    train_generator(_config(data, out, epochs=1))
    state = load_resume_state(out)
    assert state is not None
    del state["config"]["pretrain_mix"]
    save_resume_state(out, state)
    assert train_generator(_config(data, out, epochs=2))["epochs_trained"] == 2


def test_pretrain_mix_shares_add_up_over_the_epochs(data: Path, tmp_path: Path) -> None:
    """0.25 pre-training batches per batch of pairs, two batches of pairs an epoch: one
    pre-training batch every other epoch; without pre-training data there is none to mix in."""
    out = tmp_path / "run"
    config = _config(data, out, epochs=4, pretrain_data=str(data), pretrain_mix=0.25)
    train_generator(config)
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 5, 7, 10]
    assert [r["pretraining"] for r in train] == pytest.approx([0.0, 1 / 3, 0.0, 1 / 3])
    card = (out / "README.md").read_text()
    assert f"with `{data}` (photos) mixed in at 0.25 batches per batch of pairs" in card
    with pytest.raises(FgsbirError, match="pretrain_mix needs pretrain_data"):
        train_generator(_config(data, tmp_path / "none", pretrain_mix=0.25))


def test_non_finite_step_is_skipped_and_counted(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.point_nll
    calls = {"n": 0}

    def poisoned(*args: object) -> torch.Tensor:
        calls["n"] += 1
        return real(*args) * (float("nan") if calls["n"] == 2 else 1.0)

    monkeypatch.setattr(train_module, "point_nll", poisoned)
    result = train_generator(_config(data, tmp_path / "run", epochs=1))
    assert result["skipped_steps"] == 1
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    train_record = next(
        r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"
    )
    assert train_record["skipped_steps"] == 1
    assert math.isfinite(train_record["loss"]) and math.isfinite(train_record["nll"])


def test_labelled_fraction_keeps_a_share_of_the_training_sketches(
    data: Path, tmp_path: Path
) -> None:
    """8 training photos, 2 of them validation: 6 pairs, of which half keep their sketch."""
    for fraction, pairs in ((1.0, 6), (0.5, 3)):
        out = tmp_path / f"f{fraction}"
        train_generator(_config(data, out, epochs=1, labelled_fraction=fraction))
        info = json.loads((out / "config.json").read_text())["data_info"]
        assert info["train_sketches"] == pairs


@pytest.mark.parametrize(
    ("source_kind", "pretrain_input"),
    [
        ("sketches", "rendered sketches"),
        ("pairs", "photos"),
        ("photos", "photos, with their traced edge maps as sketches"),
    ],
)
def test_pretraining_comes_first(
    data: Path, tmp_path: Path, source_kind: str, pretrain_input: str
) -> None:
    """Sketch-only data is pre-trained on with rendered sketches as input, pairs with photos,
    and a folder of photos only with the photos' traced edge maps as their sketches."""
    source = tmp_path / source_kind
    source.mkdir()
    if source_kind == "pairs":
        source = data
    elif source_kind == "sketches":
        (source / "Tiny_Coordinate").write_bytes((data / "Tiny_Coordinate").read_bytes())
    else:
        for photo in sorted((data / "photo").iterdir())[:8]:
            (source / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "run"
    config = _config(data, out, epochs=1, pretrain_data=str(source), pretrain_epochs=2)
    result = train_generator(config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    phases = [r["pretraining"] for r in records if r["split"] == "train"]
    assert phases == [1.0, 1.0, 0.0]  # the share of each epoch's steps on pre-training data
    assert result["epochs_trained"] == 3
    info = json.loads((out / "config.json").read_text())["data_info"]
    assert info["pretrain_sketches"] == 8  # the pickle's train keys, or the 8 photos' outlines
    assert info["pretrain_input"] == pretrain_input
    assert f"after 2 epochs on `{source}`" in (out / "README.md").read_text()


def test_on_canvas_and_mirror() -> None:
    wide = Sketch(np.array([[0.0, 0.0, 0], [640.0, 480.0, 1]]), 640.0, 480.0)
    placed = on_canvas(wide)
    np.testing.assert_allclose(placed.points[:, :2], [[0, 32], [256, 224]])
    np.testing.assert_allclose(mirrored(placed).points[:, :2], [[256, 32], [0, 224]])


def test_generate_lists_empty_samples_instead_of_writing_them(
    data: Path, trained: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = trained
    ends_at_once = tmp_path / "ends-at-once"
    shutil.copytree(run, ends_at_once)
    weights = load_file(ends_at_once / MODEL_FILE)
    weights["head.bias"][-3 + PEN_END] = 1e4  # the first point always ends the sketch
    save_file(weights, ends_at_once / MODEL_FILE)
    photos = [data / "photo" / "p8.png", data / "photo" / "p9.png"]
    result = generate(ends_at_once, photos, tmp_path / "drawn", temperature=0.0)
    assert result.empty == ["p8_0", "p9_0"]
    assert result.written == [tmp_path / "drawn" / "grid.png"]
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["grid.png"]


def test_cli_train_and_generate_write_readable_files(
    data: Path, trained: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, _ = trained
    photos = [str(data / "photo" / "p8.png"), str(data / "photo" / "p9.png")]
    out = tmp_path / "drawn"
    torch.manual_seed(0)
    args = ["generate", str(run), *photos, "--out", str(out), "--samples", "2"]
    code = main([*args, "--temperature", "0.2"])
    printed = capsys.readouterr().out
    assert code == 0
    _, _, listed = printed.partition("not written: ")
    empty = listed.strip().split(", ")
    drawn = 0
    for name in ("p8", "p9"):
        for k in (0, 1):
            svg_path, json_path = out / f"{name}_{k}.svg", out / f"{name}_{k}.json"
            if f"{name}_{k}" in empty:  # this barely trained model may draw nothing
                assert not svg_path.exists() and not json_path.exists()
                continue
            svg, stroke_json = read_svg(svg_path), read_stroke_json(json_path)
            np.testing.assert_allclose(svg.points, stroke_json.points, atol=1e-2)
            assert svg.width == 256.0
            with Image.open(out / f"{name}_{k}.png") as png:
                assert png.size == (256, 256)
            drawn += 1
    assert f"wrote {3 * drawn + 1} files" in printed
    assert drawn >= 2
    with Image.open(out / "grid.png") as grid:
        assert grid.width > grid.height  # two rows of photo + two sketches
    copied = tmp_path / "copied"
    assert main([*args[:-4], "--out", str(copied), "--temperature", "0", "--copy-bias", "4"]) == 0
    assert (copied / "grid.png").is_file()

    cli_run = tmp_path / "cli-run"
    code = main(
        ["train-generator", "--data", str(data), "--out", str(cli_run), "--epochs", "1"]
        + [f"--set=model.{k}={v}" for k, v in TINY_MODEL.items()]
        + ["--set", "pretrained=false", "--set", "batch_size=4", "--set", "grid_rows=1"]
    )
    assert code == 0 and "NLL per point" in capsys.readouterr().out
    assert json.loads((cli_run / "config.json").read_text())["run"]["epochs"] == 1
    assert main(["generate", str(run), photos[0], "--out", str(out), "--samples", "0"]) == 2
