"""Every command given bad arguments and bad files: exit code 2, one line naming the problem, no
traceback, and nothing left behind.

Each case is ``(id, arguments, what the message must name)``; arguments may hold placeholders
(``{run}``, ``{gen}``, ``{index}``, ``{bad}/NAME``...) filled from the fixtures below. The cases
run in-process through :func:`fgsbir.cli.main`, so an exception that is not an ``FgsbirError``
fails the test as a traceback would.
"""

from __future__ import annotations

import json
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli, trained_places
from search_helpers import make_bar_gallery


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width x height`` pixels (a decompression bomb's header) with one
    tiny compressed row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width + 1))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad things to point commands at."""
    root = tmp_path_factory.mktemp("fuzz")
    bad = root / "bad"
    bad.mkdir()
    trained = trained_places(root)
    run, gallery = trained["run"], trained["gallery"]

    (bad / "empty").mkdir()
    photos_only = bad / "photos-only"
    make_bar_gallery(photos_only, ["h-top", "square"])
    (bad / "notes.txt").write_text("not an image\n")
    (bad / "photo.jpg").write_text("not a jpeg either\n")
    (bad / "truncated.jpg").write_bytes((gallery / "h-top.jpg").read_bytes()[:60])
    (bad / "list.yaml").write_text("- a list\n")
    (bad / "broken.yaml").write_text("lr: [1, 2\n")
    (bad / "page.xml").write_text("<html><body>not a drawing</body></html>\n")
    (bad / "empty.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" />\n')
    (bad / "broken.svg").write_text("<svg><path d='M 0 0 L")
    (bad / "empty.json").write_text("")
    (bad / "wrong.json").write_text(json.dumps({"strokes": "nope"}))
    (bad / "nan.json").write_text('{"width": 10, "height": 10, "strokes": [[[NaN, 1], [2, 3]]]}')
    _png_header_only(bad / "bomb.png", 60_000, 60_000)
    paths = "".join(f'<path d="M {i % 97} {i % 89} L {i % 13} {i % 7}"/>' for i in range(200_000))
    (bad / "huge.svg").write_text(f'<svg xmlns="http://www.w3.org/2000/svg">{paths}</svg>')
    (bad / "a-file").write_text("x")
    corrupt_run = bad / "corrupt-run"
    corrupt_run.mkdir()
    (corrupt_run / "config.json").write_text("{not json")
    half_run = bad / "half-run"
    half_run.mkdir()
    (half_run / "config.json").write_text((run / "config.json").read_text())
    return trained | {"bad": bad}


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A loopback port that is taken for the module's duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


TRAIN = ["train", "--data", "{data}", "--out", "{out}"]
GENERATOR = ["train-generator", "--data", "{data}", "--out", "{out}"]
SEMI = [*TRAIN, "--method", "semi"]
SKETCH = "{gallery}/h-top.jpg"

# fmt: off
CASES: list[tuple[str, list[str], str]] = [
    # train: values
    ("train-fraction-0", [*TRAIN, "--labelled-fraction", "0"], "labelled"),
    ("train-fraction-1.5", [*TRAIN, "--labelled-fraction", "1.5"], "labelled"),
    ("train-fraction-negative", [*TRAIN, "--labelled-fraction", "-0.5"], "labelled"),
    ("train-fraction-word", [*TRAIN, "--labelled-fraction", "half"], "labelled"),
    ("train-epochs-0", [*TRAIN, "--epochs", "0"], "epochs"),
    ("train-epochs-negative", [*TRAIN, "--epochs", "-1"], "epochs"),
    ("train-format", [*TRAIN, "--format", "nope"], "format"),
    ("train-seed-negative", [*TRAIN, "--seed", "-1"], "seed"),
    ("train-threads-0", [*TRAIN, "--threads", "0"], "threads"),
    ("train-budget-negative", [*TRAIN, "--time-budget", "-5"], "budget"),
    ("train-device-cuda", [*TRAIN, "--device", "cuda"], "cuda"),
    ("train-device-word", [*TRAIN, "--device", "banana"], "banana"),
    ("train-set-word", [*TRAIN, "--set", "lr=abc"], "lr"),
    ("train-set-negative", [*TRAIN, "--set", "lr=-1"], "lr"),
    ("train-set-unknown", [*TRAIN, "--set", "nope=1"], "nope"),
    ("train-set-nested", [*TRAIN, "--set", "model.embedding_dim=0"], "model.embedding_dim"),
    ("train-set-no-value", [*TRAIN, "--set", "lr"], "key=value"),
    ("train-set-choice", [*TRAIN, "--set", "negatives=some"], "negatives"),
    ("train-config-missing", [*TRAIN, "--config", "{bad}/missing.yaml"], "missing.yaml"),
    ("train-config-list", [*TRAIN, "--config", "{bad}/list.yaml"], "list.yaml"),
    ("train-config-syntax", [*TRAIN, "--config", "{bad}/broken.yaml"], "broken.yaml"),
    # train: data
    ("train-data-missing", ["train", "--data", "{bad}/nowhere", "--out", "{out}"], "nowhere"),
    ("train-data-file", ["train", "--data", "{bad}/a-file", "--out", "{out}"], "a-file"),
    ("train-data-empty", ["train", "--data", "{bad}/empty", "--out", "{out}"], "empty"),
    ("train-data-photos", ["train", "--data", "{bad}/photos-only", "--out", "{out}"], "sketch"),
    ("train-out-file", ["train", "--data", "{data}", "--out", "{bad}/a-file"], "a-file"),
    ("train-unlabelled-alone", [*TRAIN, "--unlabelled", "{gallery}"], "--unlabelled"),
    # semi
    ("semi-no-unlabelled", SEMI, "unlabelled"),
    ("semi-unlabelled-missing", [*SEMI, "--unlabelled", "{bad}/nowhere"], "nowhere"),
    (
        "semi-start-missing",
        [*SEMI, "--labelled-fraction", "0.5", "--set", "retrieval_run={bad}/nowhere"],
        "nowhere",
    ),
    (
        "semi-start-kind",
        [*SEMI, "--labelled-fraction", "0.5", "--set", "retrieval_run={gen}"],
        "{gen}",
    ),
    (
        "semi-generator-kind",
        [*SEMI, "--labelled-fraction", "0.5", "--set", "generator_run={run}"],
        "{run}",
    ),
    ("semi-nested-bad", [*SEMI, "--set", "supervised.batch_size=0"], "supervised.batch_size"),
    # train-generator
    ("gen-fraction-0", [*GENERATOR, "--labelled-fraction", "0"], "labelled"),
    ("gen-epochs-0", [*GENERATOR, "--epochs", "0"], "epochs"),
    ("gen-hidden-0", [*GENERATOR, "--set", "model.hidden=0"], "model.hidden"),
    ("gen-dropout", [*GENERATOR, "--set", "model.dropout=1.5"], "model.dropout"),
    (
        "gen-pretrain-missing",
        [*GENERATOR, "--set", "pretrain_data={bad}/nowhere", "--set", "pretrain_epochs=1"],
        "nowhere",
    ),
    (
        "gen-data-photos",
        ["train-generator", "--data", "{bad}/photos-only", "--out", "{out}"],
        "sketch",
    ),
    # evaluate
    ("evaluate-missing", ["evaluate", "{bad}/nowhere", "--data", "{data}"], "nowhere"),
    ("evaluate-generator", ["evaluate", "{gen}", "--data", "{data}"], "generator"),
    ("evaluate-empty", ["evaluate", "{bad}/empty", "--data", "{data}"], "empty"),
    ("evaluate-corrupt", ["evaluate", "{bad}/corrupt-run", "--data", "{data}"], "config"),
    ("evaluate-no-weights", ["evaluate", "{bad}/half-run", "--data", "{data}"], "model"),
    ("evaluate-photos-only", ["evaluate", "{run}", "--data", "{bad}/photos-only"], "sketch"),
    ("evaluate-data-missing", ["evaluate", "{run}", "--data", "{bad}/nowhere"], "nowhere"),
    # generate
    ("generate-retrieval", ["generate", "{run}", SKETCH, "--out", "{out}"], "retrieval run"),
    (
        "generate-photo-missing",
        ["generate", "{gen}", "{bad}/nowhere.jpg", "--out", "{out}"],
        "nowhere.jpg",
    ),
    (
        "generate-not-image",
        ["generate", "{gen}", "{bad}/photo.jpg", "--out", "{out}"],
        "photo.jpg",
    ),
    (
        "generate-nan",
        ["generate", "{gen}", SKETCH, "--out", "{out}", "--temperature", "nan"],
        "temperature",
    ),
    (
        "generate-cold",
        ["generate", "{gen}", SKETCH, "--out", "{out}", "--temperature", "-1"],
        "temperature",
    ),
    (
        "generate-samples-0",
        ["generate", "{gen}", SKETCH, "--out", "{out}", "--samples", "0"],
        "samples",
    ),
    (
        "generate-real-missing",
        ["generate", "{gen}", SKETCH, "--out", "{out}", "--real", "{bad}/nowhere"],
        "nowhere",
    ),
    # index
    ("index-generator", ["index", "{gen}", "{gallery}", "--out", "{out}"], "generator"),
    ("index-run-missing", ["index", "{bad}/nowhere", "{gallery}", "--out", "{out}"], "nowhere"),
    ("index-photos-missing", ["index", "{run}", "{bad}/nowhere", "--out", "{out}"], "nowhere"),
    ("index-photos-empty", ["index", "{run}", "{bad}/empty", "--out", "{out}"], "empty"),
    (
        "index-batch-0",
        ["index", "{run}", "{gallery}", "--out", "{out}", "--batch-size", "0"],
        "batch",
    ),
    ("index-kind", ["index", "{run}", "{gallery}", "--out", "{out}", "--kind", "nope"], "kind"),
    ("index-corrupt-photo", ["index", "{run}", "{bad}", "--out", "{out}"], "photo.jpg"),
    ("index-out-file", ["index", "{run}", "{gallery}", "--out", "{bad}/a-file"], "a-file"),
    # search
    ("search-index-missing", ["search", "{bad}/nowhere", SKETCH], "nowhere"),
    ("search-not-index", ["search", "{bad}/empty", SKETCH], "index"),
    ("search-sketch-missing", ["search", "{index}", "{bad}/nowhere.svg"], "nowhere.svg"),
    ("search-xml", ["search", "{index}", "{bad}/page.xml"], "page.xml"),
    ("search-empty-svg", ["search", "{index}", "{bad}/empty.svg"], "empty.svg"),
    ("search-broken-svg", ["search", "{index}", "{bad}/broken.svg"], "broken.svg"),
    ("search-huge-svg", ["search", "{index}", "{bad}/huge.svg"], "huge.svg"),
    ("search-bomb", ["search", "{index}", "{bad}/bomb.png"], "bomb.png"),
    ("search-truncated", ["search", "{index}", "{bad}/truncated.jpg"], "truncated.jpg"),
    ("search-empty-json", ["search", "{index}", "{bad}/empty.json"], "empty.json"),
    ("search-wrong-json", ["search", "{index}", "{bad}/wrong.json"], "wrong.json"),
    ("search-nan-json", ["search", "{index}", "{bad}/nan.json"], "nan.json"),
    ("search-text", ["search", "{index}", "{bad}/notes.txt"], "notes.txt"),
    ("search-k-0", ["search", "{index}", SKETCH, "-k", "0"], "-k"),
    ("search-k-negative", ["search", "{index}", SKETCH, "-k", "-3"], "-k"),
    ("search-run-generator", ["search", "{index}", SKETCH, "--run", "{gen}"], "generator"),
    # serve (refused before serving)
    ("serve-port-high", ["serve", "{index}", "--port", "99999"], "port"),
    ("serve-port-negative", ["serve", "{index}", "--port", "-1"], "port"),
    ("serve-port-busy", ["serve", "{index}", "--port", "{busy}"], "{busy}"),
    ("serve-index-missing", ["serve", "{bad}/nowhere"], "nowhere"),
    ("serve-threads-0", ["serve", "{index}", "--threads", "0"], "threads"),
    ("demo-port-high", ["demo", "--port", "99999", "--out", "{out}"], "port"),
    ("demo-port-busy", ["demo", "--port", "{busy}", "--out", "{out}"], "{busy}"),
]
# fmt: on


def fill(text: str, places: dict[str, Path], out: Path, busy: int) -> str:
    return text.format(**{k: str(v) for k, v in places.items()}, out=str(out), busy=busy)


@pytest.mark.parametrize(("args", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_code_2(
    args: list[str], names: str, places: dict[str, Path], busy_port: int, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    filled = [fill(a, places, out, busy_port) for a in args]
    code = run_cli(filled)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fgsbir"), lines[0]
    assert "Traceback" not in captured.err
    assert fill(names, places, out, busy_port) in lines[0], lines[0]
    assert not out.exists()  # nothing left behind
