"""Property-based tests: the sketch readers and the tracer, given anything, return a sketch within
the limits or raise their documented error (DataError; TooMuchInk from the tracer), quickly."""

import io
import json
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from fgsbir.errors import DataError
from fgsbir.limits import MAX_SKETCH_POINTS, MAX_SKETCH_STROKES
from fgsbir.sketch.io import (
    read_png_sketch,
    read_qmul_pickle,
    read_sketchrnn_npz,
    read_stroke_json,
    read_svg,
)
from fgsbir.sketch.strokes import Sketch
from fgsbir.sketch.trace import TooMuchInk, trace_raster

TIME_BOUND = 2.0  # seconds for one file or image, generous for a busy machine
fuzz = settings(
    max_examples=60,
    deadline=None,  # timed by the tests themselves, against TIME_BOUND
    derandomize=True,  # the same examples every run: no flaky suite
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def assert_reads_or_refuses(read: Callable[[Path], object], path: Path) -> None:
    """``read(path)`` gives sketches within the limits or a DataError naming the file, in time."""
    start = time.perf_counter()
    try:
        result = read(path)
    except DataError as err:
        assert err.path == str(path)
    else:
        sketches = result.values() if isinstance(result, dict) else [result]
        for sketch in sketches:
            for one in sketch if isinstance(sketch, list) else [sketch]:
                assert_within_limits(one)
    assert time.perf_counter() - start < TIME_BOUND


def assert_within_limits(sketch: Sketch) -> None:
    assert len(sketch.points) <= MAX_SKETCH_POINTS
    assert sketch.num_strokes <= MAX_SKETCH_STROKES
    assert np.isfinite(sketch.points).all()


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` cut short, or with some bytes overwritten."""
    cut = st.integers(0, len(data)).map(lambda n: data[:n])
    edits = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=8)
    return cut | edits.map(lambda pairs: bytes(_overwrite(bytearray(data), pairs)))


def _overwrite(data: bytearray, pairs: list[tuple[int, int]]) -> bytearray:
    for index, value in pairs:
        data[index] = value
    return data


# SVG: well-formed documents from pieces that matter to the reader, and arbitrary text.
numbers = st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{v:g}") | st.sampled_from(
    ["nan", "inf", "-inf", "1e999", "", "--1", ".", "1e"]
)
path_data = st.lists(
    st.tuples(st.sampled_from("MmLlHhVvCcSsQqTtAaZz"), st.lists(numbers, max_size=7)),
    max_size=12,
).map(lambda commands: " ".join(f"{c} {' '.join(args)}" for c, args in commands))
svg_elements = st.one_of(
    path_data.map(lambda d: f'<path d="{d}"/>'),
    st.lists(numbers, max_size=10).map(lambda v: f'<polyline points="{" ".join(v)}"/>'),
    st.tuples(numbers, numbers).map(lambda v: f'<line x1="{v[0]}" y1="{v[1]}" x2="3" y2="4"/>'),
    st.sampled_from(
        [
            '<g id="a"><path d="M0 0 L5 5"/></g>',
            '<use href="#a"/>',
            '<use href="#missing"/>',
            '<g id="b"><use href="#b"/></g>',
            '<g transform="scale(0)"><path d="M0 0 L1 1"/></g>',
            '<g transform="matrix(nan 0 0 1 0 0)"><path d="M0 0 L1 1"/></g>',
            '<rect width="10" height="10"/>',
            "<text>hello</text>",
        ]
    ),
)
svg_documents = st.tuples(
    st.sampled_from(["", 'width="0"', 'width="-5" height="nan"', 'viewBox="0 0 0 0"', 'width="9"']),
    st.lists(svg_elements, max_size=8),
).map(lambda parts: f'<svg xmlns="http://www.w3.org/2000/svg" {parts[0]}>{"".join(parts[1])}</svg>')


@fuzz
@given(text=svg_documents | st.text(max_size=300))
def test_svg_reader_reads_or_refuses_anything(folder, text):
    path = folder / "fuzz.svg"
    path.write_text(text, encoding="utf-8")
    assert_reads_or_refuses(read_svg, path)


# Stroke JSON: any JSON value, the documented shapes with odd values, and broken bytes.
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=40,
)
stroke_lists = st.lists(st.lists(st.lists(st.floats(), min_size=0, max_size=4), max_size=6))
stroke_objects = st.fixed_dictionaries(
    {"strokes": stroke_lists}, optional={"width": json_values, "height": json_values}
)


@fuzz
@given(
    data=st.one_of(
        st.one_of(json_values, stroke_lists, stroke_objects).map(lambda v: json.dumps(v).encode()),
        mutated(b'{"width": 10, "height": 10, "strokes": [[[1, 2], [3, 4]]]}'),
        st.binary(max_size=200),
    )
)
def test_stroke_json_reader_reads_or_refuses_anything(folder, data):
    path = folder / "fuzz.json"
    path.write_bytes(data)
    assert_reads_or_refuses(read_stroke_json, path)


# QMUL pickles: pickles of odd content, damaged pickles and arbitrary bytes.
array_values = hnp.arrays(
    st.sampled_from([np.float64, np.float32, np.int16, np.uint8, np.bool_, np.complex64]),
    hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
)
pickled_content = st.dictionaries(
    st.text(max_size=8), array_values | json_values, max_size=4
) | st.one_of(array_values, json_values)
good_pickle = pickle.dumps({"/train/a_1": np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 1.0]])})


@fuzz
@given(
    data=st.one_of(
        pickled_content.map(pickle.dumps),
        mutated(good_pickle),
        st.binary(max_size=200),
    )
)
def test_qmul_pickle_reader_reads_or_refuses_anything(folder, data):
    path = folder / "fuzz_Coordinate"
    path.write_bytes(data)
    assert_reads_or_refuses(read_qmul_pickle, path)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()


@fuzz
@given(
    data=st.one_of(
        st.dictionaries(st.sampled_from(["train", "valid", "test"]), array_values).map(npz_bytes),
        mutated(npz_bytes({"train": np.array([[1, 2, 0], [3, 4, 1]], np.int16)[None]})),
        st.binary(max_size=200),
    )
)
def test_sketchrnn_npz_reader_reads_or_refuses_anything(folder, data):
    path = folder / "fuzz.npz"
    path.write_bytes(data)
    assert_reads_or_refuses(read_sketchrnn_npz, path)


# Raster sketches: encoded images of any pixels and mode, damaged images and arbitrary bytes.
images = hnp.arrays(
    np.uint8,
    st.tuples(st.integers(1, 48), st.integers(1, 48), st.sampled_from([1, 2, 3, 4])),
)


def png_bytes(pixels: np.ndarray) -> bytes:
    squeezed = pixels[..., 0] if pixels.shape[2] == 1 else pixels
    stream = io.BytesIO()
    Image.fromarray(squeezed).save(stream, format="PNG")
    return stream.getvalue()


drawing = np.full((40, 40), 255, np.uint8)
drawing[10:30, 20] = drawing[20, 5:35] = 0


@fuzz
@given(
    data=st.one_of(
        images.map(png_bytes), mutated(png_bytes(drawing[..., None])), st.binary(max_size=200)
    )
)
def test_png_reader_reads_or_refuses_anything(folder, data):
    path = folder / "fuzz.png"
    path.write_bytes(data)
    assert_reads_or_refuses(read_png_sketch, path)


# The tracer itself, on arrays of any supported kind and values.
traceable = st.one_of(
    hnp.arrays(
        st.sampled_from([np.uint8, np.uint16, np.bool_]),
        st.tuples(st.integers(1, 64), st.integers(1, 64)),
    ),
    hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        st.tuples(st.integers(1, 64), st.integers(1, 64), st.sampled_from([1, 2, 3, 4])),
        elements=st.floats(-2.0, 2.0) | st.sampled_from([np.nan, np.inf, -np.inf]),
    ),
)


@fuzz
@given(pixels=traceable, threshold=st.floats(0.0, 1.0), min_length=st.floats(0.0, 20.0))
def test_tracer_traces_or_refuses_any_array(pixels, threshold, min_length):
    start = time.perf_counter()
    try:
        sketch = trace_raster(pixels, threshold=threshold, min_length=min_length)
    except TooMuchInk:
        pass
    else:
        assert (sketch.width, sketch.height) == (pixels.shape[1], pixels.shape[0])
        assert_within_limits(sketch)
        inside = (sketch.points[:, :2] >= 0) & (sketch.points[:, :2] <= pixels.shape[1::-1])
        assert inside.all()
    assert time.perf_counter() - start < TIME_BOUND
