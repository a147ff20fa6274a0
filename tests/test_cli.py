"""The command line as a whole: help that explains every option, argument checks before any work,
one-line errors and warnings, what a resumed run says, and files others can read."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli, sets, trained_places
from search_helpers import bar_sketch, make_bar_gallery, make_tiny_run

from fgsbir.cli import main
from fgsbir.cli.train import print_summary
from fgsbir.errors import FgsbirError
from fgsbir.index import GalleryIndex
from fgsbir.inference import generate
from fgsbir.sketch.io import write_svg

HEAVY = ("torch", "timm", "fastapi", "uvicorn", "faiss", "matplotlib")
COMMANDS = (
    "train", "evaluate", "train-generator", "tune-generator", "generate", "index", "search",
    "serve", "demo",
)  # fmt: skip
TINY_RETRIEVAL = [
    "model.backbone=mobilenetv3_small_050", "model.pretrained=false", "model.feature_level=null",
    "model.pool_grid=1", "model.embedding_dim=16", "prep.image_size=48", "batch_size=4",
]  # fmt: skip


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the failed command printed on stderr."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny data set, a retrieval run, a generator run, a gallery with its index, a folder of
    photos only and a plain file."""
    root = tmp_path_factory.mktemp("cli")
    trained = trained_places(root)
    photos_only = root / "photos-only"
    make_bar_gallery(photos_only, ["h-top", "square"])
    sketch = root / "sketch.svg"
    write_svg(bar_sketch("square"), sketch)
    (root / "a-file").write_text("x")
    (root / "empty").mkdir()
    return trained | {
        "photos": photos_only, "sketch": sketch, "photo": trained["gallery"] / "square.jpg",
        "file": root / "a-file", "nowhere": root / "nowhere", "empty": root / "empty",
    }  # fmt: skip


def _fill(args: list[str], places: dict[str, Path], out: Path) -> list[str]:
    return [a.format(**{k: str(v) for k, v in places.items()}, out=str(out)) for a in args]


# -- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["serve", "--help"]])
def test_help_imports_no_heavy_module(args) -> None:
    probe = (
        "import json, sys\n"
        "from fgsbir.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def _help_page(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fgsbir", *args, "--help"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _entries(page: str) -> dict[str, str]:
    """Each argument of a help page (``--epochs N``, ``RUN_DIR``...) with its help text."""
    entries: dict[str, str] = {}
    name = None
    for line in page.splitlines():
        entry = re.match(r"^  (\S+(?: \S+)*)(?:\s{2,}(\S.*))?$", line)
        if entry:
            name = entry.group(1)
            entries[name] = entry.group(2) or ""
        elif name and re.match(r"^ {4,}\S", line):
            entries[name] += " " + line.strip()
        else:
            name = None
    return entries


def test_every_command_and_option_is_explained() -> None:
    top = _help_page([])
    for command in COMMANDS:  # listed with a line of help (on the next line if the name is long)
        assert re.search(rf"^    {command}\s+\S", top, re.MULTILINE), command
    shown = {  # defaults the help pages must show
        "search": ("-k K", "(default: 10)"),
        "serve": ("--port PORT", "(default: 8000)"),
        "generate": ("--temperature T", "(default: 0.3)"),
        "index": ("--kind {exact,hnsw,ivf}", "(default: the existing index's kind"),
    }
    for command in COMMANDS:
        page = _help_page([command])
        entries = _entries(page)
        assert len(entries) >= 4, page
        unexplained = [name for name, text in entries.items() if len(text) < 10]
        assert not unexplained, f"{command}: {unexplained}"
        assert "(default: None)" not in page and "(default: False)" not in page
        assert "Config" not in page  # no class names: settings are named as --set names them
        if command in shown:
            option, default = shown[command]
            assert default in entries[option], entries[option]


def test_help_shows_the_epochs_each_training_command_defaults_to() -> None:
    from fgsbir.train.generator import GeneratorConfig
    from fgsbir.train.reward_tuning import RewardTuningConfig
    from fgsbir.train.semi import SemiConfig
    from fgsbir.train.supervised import TrainConfig

    train = _entries(_help_page(["train"]))["--epochs N"]
    generator = _entries(_help_page(["train-generator"]))["--epochs N"]
    assert f"(default: {TrainConfig().run.epochs})" in train
    assert SemiConfig().run.epochs == TrainConfig().run.epochs  # --method semi: the same
    assert f"(default: {GeneratorConfig().run.epochs})" in generator
    tuning = _entries(_help_page(["tune-generator"]))["--epochs N"]
    assert f"(default: {RewardTuningConfig().run.epochs})" in tuning


# -- argument checks -----------------------------------------------------------------------------

TRAIN = ["train", "--data", "{data}", "--out", "{out}"]
GENERATOR = ["train-generator", "--data", "{data}", "--out", "{out}"]
GENERATE = ["generate", "{gen}", "{photo}", "--out", "{out}"]

# fmt: off
BAD_VALUES = [  # (arguments, the option the message names)
    ([*TRAIN, "--labelled-fraction", "0"], "--labelled-fraction"),
    ([*TRAIN, "--labelled-fraction", "1.5"], "--labelled-fraction"),
    ([*TRAIN, "--labelled-fraction", "-0.5"], "--labelled-fraction"),
    ([*TRAIN, "--labelled-fraction", "half"], "--labelled-fraction"),
    ([*GENERATOR, "--labelled-fraction", "0"], "--labelled-fraction"),
    ([*TRAIN, "--epochs", "0"], "--epochs"),
    ([*TRAIN, "--epochs", "-1"], "--epochs"),
    ([*GENERATOR, "--epochs", "0"], "--epochs"),
    ([*TRAIN, "--epochs", "2.5"], "--epochs"),
    ([*TRAIN, "--time-budget", "-5"], "--time-budget"),
    ([*TRAIN, "--threads", "0"], "--threads"),
    ([*TRAIN, "--seed", "-1"], "--seed"),
    ([*TRAIN, "--format", "nope"], "--format"),
    ([*TRAIN, "--method", "other"], "--method"),
    ([*TRAIN, "--parts", "photos"], "--parts"),
    ([*TRAIN, "--members", "0"], "--members"),
    (["index", "{run}", "{gallery}", "--out", "{out}", "--batch-size", "0"], "--batch-size"),
    (["index", "{run}", "{gallery}", "--out", "{out}", "--kind", "flat"], "--kind"),
    (["search", "{index}", "{sketch}", "-k", "0"], "-k"),
    (["search", "{index}", "{sketch}", "-k", "-3"], "-k"),
    ([*GENERATE, "--temperature", "nan"], "--temperature"),
    ([*GENERATE, "--temperature", "inf"], "--temperature"),
    ([*GENERATE, "--temperature", "-1"], "--temperature"),
    ([*GENERATE, "--samples", "0"], "--samples"),
    ([*GENERATE, "--copy-bias", "-1"], "--copy-bias"),
    (["serve", "{index}", "--threads", "0"], "--threads"),
    (["serve", "{index}", "--port", "99999"], "--port"),
    (["serve", "{index}", "--port", "0"], "--port"),
    (["serve", "{index}", "--copy-bias", "-2"], "--copy-bias"),
    (["demo", "--out", "{out}", "--port", "70000"], "--port"),
    ([*TRAIN[:3]], "--out"),  # required
]
# fmt: on


@pytest.mark.parametrize(
    ("args", "option"), BAD_VALUES, ids=[" ".join(a[-2:]) for a, _ in BAD_VALUES]
)
def test_a_bad_value_is_one_line_naming_the_option_before_any_work(
    args: list[str], option: str, places: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert run_cli(_fill(args, places, out)) == 2
    line = _one_line(capsys)
    command = args[0]
    assert line.startswith(f"fgsbir {command}: error: "), line
    assert option in line and line.endswith(f"see 'fgsbir {command} --help'"), line
    assert not out.exists()


SEMI = [*TRAIN, "--method", "semi", "--labelled-fraction", "0.5"]

# fmt: off
WRONG_INPUT = [  # (arguments, what the message must say)
    # run folders of the wrong kind, or none
    (["evaluate", "{gen}", "--data", "{data}"], "{gen}: a generator run, not a retrieval run"),
    (["evaluate", "{nowhere}", "--data", "{data}"], "{nowhere}: no such run folder"),
    (["evaluate", "{file}", "--data", "{data}"], "{file}: not a run folder"),
    (["evaluate", "{gallery}", "--data", "{data}"], "{gallery}: not a trained run folder"),
    (["index", "{gen}", "{gallery}", "--out", "{out}"], "{gen}: a generator run, not a retrieval"),
    (["search", "{index}", "{sketch}", "--run", "{gen}"], "{gen}: a generator run"),
    (["serve", "{index}", "--run", "{gen}"], "{gen}: a generator run"),
    (["generate", "{run}", "{photo}", "--out", "{out}"], "{run}: a retrieval run, not a generator"),
    # data, photos, index folders
    (["evaluate", "{run}", "--data", "{photos}"], "{photos}: has no test sketches"),
    (["index", "{run}", "{nowhere}", "--out", "{out}"], "{nowhere}"),
    (["index", "{run}", "{empty}", "--out", "{out}"], "{empty}: no photos"),
    (["index", "{run}", "{gallery}", "--out", "{file}"], "{file}: not a folder"),
    (["index", "{run}", "{gallery}", "--out", "{photos}"], "{photos}: not an index folder"),
    (["search", "{gallery}", "{sketch}"], "{gallery}: not an index folder"),
    (["search", "{nowhere}", "{sketch}"], "{nowhere}: no such folder"),
    (["serve", "{gallery}"], "{gallery}: not an index folder"),
    (["generate", "{gen}", "{nowhere}", "--out", "{out}"], "{nowhere}: no such photo"),
    (["generate", "{gen}", "{photo}", "--out", "{file}"], "{file}: not a folder"),
    ([*GENERATE, "--real", "{nowhere}"], "--real {nowhere}: no such folder"),
    # training commands refused before they train: nothing is left behind
    ([*TRAIN, "--set", "lr=-1"], "'lr'"),
    ([*TRAIN, "--set", "nope=1"], "nope"),
    ([*TRAIN, "--config", "{nowhere}"], "{nowhere}"),
    ([*TRAIN, "--device", "banana"], "banana"),
    ([*TRAIN, "--unlabelled", "{gallery}"], "--unlabelled"),
    (["train", "--data", "{data}", "--out", "{file}"], "--out {file}: not a folder"),
    (["train-generator", "--data", "{data}", "--out", "{file}"], "--out {file}: not a folder"),
    (["train", "--data", "{nowhere}", "--out", "{out}"], "{nowhere}"),
    (["train", "--data", "{photos}", "--out", "{out}"], "{photos}"),
    ([*TRAIN, "--method", "semi"], "unlabelled"),
    ([*SEMI, "--members", "2"], "--members"),
    ([*SEMI, "--set", "retrieval_run={nowhere}"], "{nowhere}"),
    ([*SEMI, "--set", "generator_run={run}"], "{run}"),
    ([*GENERATOR, "--set", "model.hidden=0"], "model.hidden"),
    (["train-generator", "--data", "{photos}", "--out", "{out}"], "{photos}"),
    ([*GENERATOR, "--set", "pretrain_data={nowhere}", "--set", "pretrain_epochs=1"], "{nowhere}"),
]
# fmt: on


@pytest.mark.parametrize(("args", "says"), WRONG_INPUT, ids=[" ".join(a) for a, _ in WRONG_INPUT])
def test_a_wrong_file_folder_or_setting_is_one_line_and_leaves_nothing_behind(
    args: list[str], says: str, places: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert run_cli(_fill(args, places, out)) == 2
    line = _one_line(capsys)
    assert line.startswith("fgsbir: error: "), line
    assert _fill([says], places, out)[0] in line, line
    assert not out.exists()
    assert not (places["photos"] / "manifest.json").exists()


def test_index_keeps_the_kind_of_an_existing_index(
    places: dict[str, Path], tmp_path: Path, capsys
) -> None:
    args = ["index", str(places["run"]), str(places["gallery"]), "--out", str(tmp_path / "idx")]
    assert main([*args, "--kind", "hnsw"]) == 0
    assert main(args) == 0
    assert "hnsw index" in capsys.readouterr().out.splitlines()[-1]
    assert GalleryIndex.load(tmp_path / "idx").kind == "hnsw"
    assert main([*args, "--kind", "exact"]) == 0
    assert GalleryIndex.load(tmp_path / "idx").kind == "exact"


def test_a_skipped_photo_is_one_warning_line(
    places: dict[str, Path], tmp_path: Path, capsys
) -> None:
    gallery = tmp_path / "gallery"
    make_bar_gallery(gallery, ["h-top", "square"])
    (gallery / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    args = ["index", str(places["run"]), str(gallery), "--out", str(tmp_path / "idx")]
    assert main([*args, "--on-error", "warn"]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "broken.jpg" in line]
    assert len(warned) == 1, err
    assert warned[0].startswith(f"fgsbir: warning: {gallery / 'broken.jpg'}: "), warned
    assert "Warning" not in err and "report(" not in err  # no category, no source line


def test_a_resumed_run_says_where_it_resumes(
    places: dict[str, Path], tmp_path: Path, capsys
) -> None:
    args = ["train", "--data", str(places["data"]), "--out", str(tmp_path / "run")]
    args += ["--threads", "1", *sets(TINY_RETRIEVAL)]
    assert main([*args, "--epochs", "1"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert main([*args, "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"resuming {tmp_path / 'run'} from epoch 1 of 2"
    assert "best epoch" in printed


def test_parts_switch_on_by_name_and_set_tunes_them(
    places: dict[str, Path], tmp_path: Path
) -> None:
    """``--parts`` turns on the parts that learn from unlabelled photos; ``--set`` wins."""
    args = ["train", "--data", str(places["data"]), "--out", str(tmp_path / "run"), "--epochs", "1"]
    args += ["--labelled-fraction", "0.5", "--parts", "neighbourhood", "edges-mix"]
    assert main([*args, "--threads", "1", *sets([*TINY_RETRIEVAL, "photo.neighbourhood=0.5"])]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["photo"]["neighbourhood"] == 0.5 and config["photo"]["distill"] == 0.0
    assert config["edges"] == config["edges"] | {"per_batch": 8, "epochs": 0}
    assert "neighbourhood preservation (weight 0.5)" in (tmp_path / "run" / "README.md").read_text()


def test_best_epoch_0_is_explained(capsys) -> None:
    print_summary({"best_epoch": 0}, "runs/semi")
    assert (
        capsys.readouterr().out
        == "run folder: runs/semi (best epoch 0: the start model was kept)\n"
    )


@pytest.fixture(params=[0o022, 0o077], ids=["umask-022", "umask-077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_run_and_index_files_have_the_usual_permissions(
    umask: int, places: dict[str, Path], tmp_path: Path
) -> None:
    run = make_tiny_run(tmp_path / "run")
    index = tmp_path / "idx"
    assert main(["index", str(run), str(places["gallery"]), "--out", str(index)]) == 0
    files = [*run.iterdir(), *index.iterdir()]
    assert len(files) == 3 + 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path  # 0644 or 0600


def test_generate_checks_its_arguments_before_drawing(
    places: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "drawn"
    photo = places["photo"]
    for temperature in (float("nan"), float("inf"), -0.1):
        with pytest.raises(FgsbirError, match="temperature"):
            generate(places["gen"], [photo], out, temperature=temperature)
    with pytest.raises(FgsbirError, match="samples"):
        generate(places["gen"], [photo], out, samples=0)
    with pytest.raises(FgsbirError, match="nowhere"):
        generate(places["gen"], [photo, places["nowhere"]], out)
    assert not out.exists()
    assert main(["generate", str(places["gen"]), str(photo), "--out", str(out)]) == 0
    assert (out / "grid.png").is_file()
