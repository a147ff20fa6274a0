"""Does joint training with unlabelled photos beat supervised training at equal training time?

For each labelled fraction (and seed) a supervised run and a semi-supervised run get the same
``--budget-s``; the semi-supervised run spends it on its start runs (supervised retrieval on the
labelled pairs; the generator pre-trained on the unlabelled photos' traced edge maps, then trained
on the labelled pairs) and on joint training. The supervised recipe ends well inside the budget,
so each fraction also has the equal-time ``control``: the semi run's start runs and joint time,
but nothing learnt from unlabelled photos (no generated pairs, no distillation) -- the labelled
pairs alone, given the semi run's time. The ablation, at the smallest fraction, reuses the full
semi run's start runs and gives each variant (one part switched off) the joint time the full run
had. Generator faithfulness (issue 3's ``faithful_acc@K``: the greedy generated
sketch of each test photo queries all test photos) is judged before and after joint training by
one fixed model, the supervised run at the largest fraction; the same judge tells whether each
semi run's final discriminator favours the faithful generated pairs (sketches sampled as in joint
training: its probability-weighted MRR against the plain one). Test metrics are only reported:
every model choice is made on the validation split.

``--data shoe-v1``: labelled ``../shared/data/qmul-shoe-v1`` (train), unlabelled
``../shared/data/shoev2-photos`` plus the training photos whose sketches were dropped, test = the
Shoe-V1 test split; results ``semi_shoe_v1``. ``--data synthetic``: the built-in data set, with
200 other synthetic shoe photos as the unlabelled folder; results ``semi_synthetic``.

Finished runs are cached (``results.json`` in a runs folder named by a hash of the settings), so
the table can be filled in over several invocations, also at the same time on different fractions
(e.g. ``--fractions 0.25 --ablations`` beside ``--fractions 0.5 --ablations``), and recorded by a
last one over all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import ROOT, SHARED_DATA, record

from fgsbir.config import DataConfig, RunOptions, config_to_dict
from fgsbir.data.dataset import load_dataset
from fgsbir.data.synthetic import ensure_synthetic
from fgsbir.data.transforms import Preprocessing
from fgsbir.inference import load_embedder, load_generator
from fgsbir.models.generator import GeneratorArch
from fgsbir.train.faithfulness import discriminator_faithfulness, generator_faithfulness
from fgsbir.train.generator import GeneratorConfig
from fgsbir.train.semi import SemiConfig, train_semi
from fgsbir.train.semi_parts import PolicyConfig
from fgsbir.train.supervised import TrainConfig, train

CONTROL = {"generated_weight": 0.0, "distillation": False}
ABLATIONS = {
    "no_disc_weighting": {"disc_weighting": False},
    "no_distillation": {"distillation": False},
    "no_policy_gradient": {"policy": PolicyConfig(policy_gradient=False)},
    "generator_frozen": {"policy": PolicyConfig(frozen=True)},
}
METRICS = ("acc@1", "acc@10", "mrr")
GENERATOR_BUDGET_SHARE = 0.35  # of the semi run's budget: edge-map pre-training, then the pairs


def data_setup(name: str) -> tuple[str, list[str], str]:
    """``(data, unlabelled folders, record name)`` of a benchmark data set."""
    if name == "shoe-v1":
        data, pool = SHARED_DATA / "qmul-shoe-v1", SHARED_DATA / "shoev2-photos"
        if not data.is_dir() or not pool.is_dir():
            raise SystemExit(f"needs {data} and {pool} (see ../shared/data/README.md)")
        return str(data), [str(pool)], "semi_shoe_v1"
    pool = ensure_synthetic(n_photos=200, sketches_per_photo=1, seed=1) / "photo"
    return "synthetic", [str(pool)], "semi_synthetic"


def retrieval_config(
    args: argparse.Namespace, data: str, fraction: float, seed: int
) -> TrainConfig:
    """The supervised recipe (``TrainConfig``'s defaults, chosen on Shoe-V1's validation split),
    for the baseline and for the semi run's start run alike."""
    return TrainConfig(
        data=DataConfig(path=data, labelled_fraction=fraction, seed=seed),
        run=RunOptions(epochs=args.supervised_epochs),
        prep=Preprocessing(image_size=args.image_size),
    )


def semi_config(
    args: argparse.Namespace, data: str, unlabelled: list[str], fraction: float, seed: int,
    out: Path, **changes: Any,
) -> SemiConfig:  # fmt: skip
    return SemiConfig(
        data=DataConfig(path=data, unlabelled=unlabelled, labelled_fraction=fraction, seed=seed),
        run=RunOptions(out=str(out), epochs=args.epochs, time_budget_s=args.budget_s),
        supervised=retrieval_config(args, data, fraction, seed),
        generator=GeneratorConfig(run=RunOptions(epochs=args.generator_epochs),
                                  model=GeneratorArch(hidden=args.generator_hidden),
                                  pretrain_data=unlabelled[0],
                                  pretrain_epochs=args.generator_pretrain_epochs),
        generator_budget_share=GENERATOR_BUDGET_SHARE, **changes,
    )  # fmt: skip


def scores(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one run worth keeping."""
    kept = {key: round(result["test"][key], 4) for key in METRICS}
    kept["val_acc@1"] = round(result["val"]["acc@1"], 4)
    kept["best_epoch"] = result["best_epoch"]
    kept["epochs_trained"] = result["epochs_trained"]
    if "start" in result:  # a semi run: its joint training and its start runs
        kept["steps"] = result["steps"]
        kept["joint_s"] = result["train_s"]
        kept["skipped_generator_steps"] = result["skipped_steps"]
        kept["start_s"] = round(result["start"]["retrieval_s"] + result["start"]["generator_s"], 1)
    return kept


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and, over several seeds, the spread and each seed's value) of the test metrics."""
    out: dict[str, Any] = {}
    for key in METRICS:
        values = [r[key] for r in runs]
        out[key] = round(float(np.mean(values)), 4)
        if len(values) > 1:
            out[f"{key}_std"] = round(float(np.std(values, ddof=1)), 4)
    out["runs"] = runs
    return out


def variant_of_semi(
    args: argparse.Namespace, data: str, unlabelled: list[str], runs: Path, cache: Cache,
    tag: str, fraction: float, seed: int, name: str, changes: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Joint training from the semi run ``tag``'s start runs with ``changes``, given the joint
    time that run had."""
    full = runs / tag / "semi"
    config = semi_config(
        args, data, unlabelled, fraction, seed, runs / tag / name,
        retrieval_run=str(full / "start_retrieval"), generator_run=str(full / "start_generator"),
        **changes,
    )  # fmt: skip
    joint_budget = args.budget_s - cache.items[f"{tag}/semi"]["start_s"]
    return scores(train_semi(replace(config, run=replace(config.run, time_budget_s=joint_budget))))


def settings_digest(template: SemiConfig) -> str:
    """A short hash of everything a run depends on but its fraction, seed and folder (the code's
    defaults included), naming the runs folder: cached results never outlive their settings."""
    settings = config_to_dict(template)
    for config in (settings, settings["supervised"]):
        config["run"].pop("out")
        for key in ("labelled_fraction", "seed"):
            config["data"].pop(key)
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def semi_defaults() -> dict[str, Any]:
    """SemiConfig's own defaults, with those of its data and run settings, as one flat mapping
    (the start runs' settings and the augmentation are recorded elsewhere or not at all)."""
    defaults = asdict(SemiConfig())
    nested = {
        f"{part}.{k}": v for part in ("policy", "critic") for k, v in defaults.pop(part).items()
    }
    flat = {**defaults.pop("data"), **defaults.pop("run"), **nested, **defaults}
    return {
        k: v
        for k, v in flat.items()
        if not isinstance(v, dict) and k not in ("path", "out", "unlabelled")
    }


class Cache:
    """Finished runs' scores, so a later invocation does not train them again."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "results.json"
        self.items: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.used: list[str] = []

    def total_s(self) -> float:
        """Seconds the results used by this invocation took to compute, all together."""
        return round(sum(self.items[key]["wall_s"] for key in set(self.used)), 1)

    def get(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The cached result of ``key``, else ``compute()`` with its ``wall_s`` added."""
        self.used.append(key)
        if key not in self.items:
            began = time.monotonic()
            result = {**compute(), "wall_s": round(time.monotonic() - began, 1)}
            # another invocation (other fractions, say) may have added results meanwhile
            if self.path.exists():
                self.items.update(json.loads(self.path.read_text()))
            self.items[key] = result
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.items, indent=1))
        return self.items[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["shoe-v1", "synthetic"], default="shoe-v1")
    parser.add_argument("--budget-s", type=float, default=None, help="per run (default: 3600 "
                        "for shoe-v1, 240 for synthetic)")  # fmt: skip
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--seeds-at-smallest", type=int, nargs="+", default=None,
                        help="at the smallest fraction, where the 3-point target is")  # fmt: skip
    parser.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS))
    parser.add_argument("--image-size", type=int, default=None, help="retrieval input (default: "
                        f"{Preprocessing.image_size} / 96)")  # fmt: skip
    parser.add_argument("--generator-hidden", type=int, default=256)
    parser.add_argument(
        "--supervised-epochs",
        type=int,
        default=TrainConfig().run.epochs,
        help="supervised baseline and start run (cosine schedule length)",
    )
    parser.add_argument(
        "--generator-pretrain-epochs",
        type=int,
        default=None,
        help="start generator: on the unlabelled photos' traced edge maps (default 10 / 0)",
    )
    parser.add_argument("--generator-epochs", type=int, default=60, help="start generator: pairs")
    parser.add_argument("--epochs", type=int, default=1000, help="joint training: upper bound "
                        "(the budget ends it)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="recorded with the results")
    args = parser.parse_args()
    shoe = args.data == "shoe-v1"
    args.seeds_at_smallest = args.seeds_at_smallest or args.seeds
    args.budget_s = args.budget_s or (3600.0 if shoe else 240.0)
    args.image_size = args.image_size or (Preprocessing.image_size if shoe else 96)
    if args.generator_pretrain_epochs is None:
        args.generator_pretrain_epochs = 10 if shoe else 0
    torch.set_num_threads(args.threads)

    began = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    data, unlabelled, name = data_setup(args.data)
    template = semi_config(args, data, unlabelled, 1.0, 0, Path())  # what every run shares
    runs = ROOT / "runs" / f"bench-{name}-{settings_digest(template)}"
    cache = Cache(runs)
    fractions = sorted(set(args.fractions), reverse=True)
    table: dict[str, Any] = {}
    semi_runs: dict[tuple[float, int], Path] = {}
    for fraction in fractions:
        seeds = args.seeds_at_smallest if fraction == fractions[-1] else args.seeds
        per_method: dict[str, list[dict[str, Any]]] = {"supervised": [], "semi": [], "control": []}
        for seed in seeds:
            tag = f"f{fraction:g}-s{seed}"
            supervised_out = runs / tag / "supervised"

            def supervised(out: Path = supervised_out, f: float = fraction, s: int = seed) -> dict:
                config = retrieval_config(args, data, f, s)
                run = replace(config.run, out=str(out), time_budget_s=args.budget_s)
                return scores(train(replace(config, run=run)))

            semi_out = runs / tag / "semi"

            def semi(out: Path = semi_out, f: float = fraction, s: int = seed) -> dict:
                return scores(train_semi(semi_config(args, data, unlabelled, f, s, out)))

            per_method["supervised"].append(cache.get(f"{tag}/supervised", supervised))
            per_method["semi"].append(cache.get(f"{tag}/semi", semi))
            control = partial(
                variant_of_semi, args, data, unlabelled, runs, cache, tag, fraction, seed,
                "control", CONTROL,
            )  # fmt: skip
            per_method["control"].append(cache.get(f"{tag}/control", control))
            semi_runs[(fraction, seed)] = semi_out
        table[f"{fraction:g}"] = {method: summary(r) for method, r in per_method.items()}

    smallest, seed = fractions[-1], args.seeds_at_smallest[0]
    tag = f"f{smallest:g}-s{seed}"
    ablation: dict[str, Any] = {
        "fraction": smallest, "seed": seed, "full": cache.items[f"{tag}/semi"],
        "control": cache.items[f"{tag}/control"],
    }  # fmt: skip
    for variant in args.ablations:
        ablate = partial(
            variant_of_semi, args, data, unlabelled, runs, cache, tag, smallest, seed,
            f"ablation-{variant}", ABLATIONS[variant],
        )  # fmt: skip
        ablation[variant] = cache.get(f"{tag}/ablation-{variant}", ablate)

    judge_dir = runs / f"f{fractions[0]:g}-s{args.seeds[0]}" / "supervised"
    judge = load_embedder(judge_dir)
    test = load_dataset(data).test
    faithfulness: dict[str, Any] = {"judge": str(judge_dir.relative_to(ROOT)), "temperature": 0}
    discriminator: dict[str, Any] = {"temperature": template.temperature}
    for (fraction, run_seed), folder in semi_runs.items():

        def faithful(folder: Path = folder) -> dict:
            result: dict[str, Any] = {}
            for when, generator_dir in (("before", "start_generator"), ("after", "generator")):
                found = generator_faithfulness(load_generator(folder / generator_dir), judge, test)
                result[when] = {k: round(found["generated"][k], 4) for k in METRICS}
            result["real_sketches"] = {k: round(found["real"][k], 4) for k in METRICS}
            result["chance"] = found["chance"]
            return result

        run_tag = f"f{fraction:g}-s{run_seed}"
        faithfulness[run_tag] = cache.get(
            f"{run_tag}/faithfulness-judged-by-{judge_dir.parent.name}", faithful
        )

        def weighting(folder: Path = folder) -> dict:
            found = discriminator_faithfulness(folder, judge, test, template.temperature)
            return {key: round(value, 4) for key, value in found.items()}

        weighting_tag = f"{run_tag}/discriminator-judged-by-{judge_dir.parent.name}"
        discriminator[run_tag] = cache.get(weighting_tag, weighting)

    results = {
        "data": args.data,
        "budget_s_per_run": args.budget_s,
        "settings": {
            "image_size": args.image_size,
            "supervised_epochs": args.supervised_epochs,
            "generator_pretrain_epochs": args.generator_pretrain_epochs,
            "generator_epochs": args.generator_epochs,
            "generator_model": asdict(template.generator.model),
            "seeds": args.seeds,
            "seeds_at_smallest": args.seeds_at_smallest,
            "semi_defaults": semi_defaults(),
            "threads": args.threads,
        },
        "fractions": table,
        "ablation": ablation,
        "faithfulness": faithfulness,
        "discriminator_weighting": discriminator,
        "load_average": {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "note": args.note,
        "wall_s": cache.total_s(),  # all the runs above, including earlier invocations' ones
        "invocation_wall_s": round(time.monotonic() - began, 1),
    }
    command = "python benchmarks/semi_shoe_v1.py " + shlex.join(sys.argv[1:])
    print(json.dumps(results, indent=2))
    record(name, results, command.strip())


if __name__ == "__main__":
    main()
