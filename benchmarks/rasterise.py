"""Rasteriser benchmark: sketches per second of the batched ``rasterise`` against the per-pixel
Bresenham-and-dilate ``rasterise_reference`` that FG-SBIR code bases usually use (pixels walked in
Python), and against the same pixels drawn with scikit-image's compiled Bresenham.

Sketches are the real QMUL-Chair-V2 vector sketches when ``../shared/data`` is present (about 100
points and 10 strokes each), else synthetic random-walk sketches of that size. Each sketch is drawn
at 224 px with 2 px lines. Timings are wall-clock, repeated in interleaved rounds; the table gives
the median round and the best one (the best is least disturbed by other work on the machine).

Run ``python benchmarks/rasterise.py`` (``--quick`` for a small smoke run that is not recorded).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import SHARED_DATA, record

from fgsbir.sketch.io import read_qmul_pickle
from fgsbir.sketch.rasterise import rasterise, rasterise_reference
from fgsbir.sketch.strokes import Sketch

SIZE = 224
LINE_WIDTH = 2.0
# The per-pixel way of FG-SBIR code bases (the target's baseline), and the same pixels drawn by
# scikit-image's compiled Bresenham (a stronger baseline, reported beside it).
REFERENCES = ("python", "skimage")


def load_sketches(count: int) -> tuple[list[Sketch], str]:
    pickle_path = SHARED_DATA / "chairv2-sketches" / "ChairV2_Coordinate"
    if pickle_path.exists():
        sketches = list(read_qmul_pickle(pickle_path).values())
        return sketches[:count], f"QMUL-Chair-V2 ({pickle_path.name})"
    rng = np.random.default_rng(0)
    synthetic = []
    for _ in range(count):
        steps = rng.normal(0, 8, size=(110, 2))
        points = np.column_stack([128 + np.cumsum(steps, axis=0), rng.random(110) < 0.1])
        synthetic.append(Sketch(np.clip(points, 0, 256)))
    return synthetic, "synthetic random walks"


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small smoke run, not recorded")
    args = parser.parse_args()
    count = 2 * args.batch if args.quick else 1280
    rounds = 2 if args.quick else args.rounds
    sketches, source = load_sketches(count)
    batches = [sketches[i : i + args.batch] for i in range(0, len(sketches), args.batch)]

    def batched() -> None:
        for batch in batches:
            rasterise(batch, SIZE, LINE_WIDTH)

    methods: dict[str, Callable[[], None]] = {}
    for lines in REFERENCES:

        def reference(lines: str = lines) -> None:
            for sketch in sketches:
                rasterise_reference(sketch, SIZE, LINE_WIDTH, lines=lines)

        methods[f"reference_{lines}"] = reference
    for threads in (1, 2):

        def on_threads(threads: int = threads) -> None:
            torch.set_num_threads(threads)
            batched()

        methods[f"rasterise_cpu_{threads}_threads"] = on_threads
    if torch.cuda.is_available():

        def on_cuda() -> None:
            for batch in batches:
                rasterise(batch, SIZE, LINE_WIDTH, device="cuda")
            torch.cuda.synchronize()

        methods["rasterise_cuda"] = on_cuda

    for work in methods.values():  # warm-up
        work()
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, work in methods.items():
            seconds[name].append(timed(work))

    results: dict[str, object] = {
        "sketches": f"{len(sketches)} {source}, "
        f"{np.mean([len(s.points) for s in sketches]):.0f} points and "
        f"{np.mean([s.num_strokes for s in sketches]):.1f} strokes on average",
        "image": f"{SIZE} x {SIZE}, line width {LINE_WIDTH} px, batch {args.batch}",
        "rounds": rounds,
    }
    for name, times in seconds.items():
        results[name] = {
            "sketches_per_s_median": round(len(sketches) / statistics.median(times)),
            "sketches_per_s_best": round(len(sketches) / min(times)),
            "ms_per_sketch_median": round(1e3 * statistics.median(times) / len(sketches), 4),
        }
    for name in methods:
        for lines in REFERENCES if name.startswith("rasterise") else ():
            baseline = seconds[f"reference_{lines}"]
            results[f"speed-up_{name}_vs_reference_{lines}"] = {
                "median": round(statistics.median(baseline) / statistics.median(seconds[name]), 1),
                "best": round(min(baseline) / min(seconds[name]), 1),
            }
    results["target"] = "rasterise >= 10x faster per sketch than the per-pixel reference (python)"
    for key, value in results.items():
        print(f"{key}: {value}")
    if not args.quick:
        record("rasterise", results)


if __name__ == "__main__":
    main()
