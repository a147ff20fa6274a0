"""``fgsbir index``, ``fgsbir search`` and ``fgsbir serve``: a photo gallery searched by sketch."""

from __future__ import annotations

import argparse
import json

from fgsbir.cli.common import Port, checked, copy_bias_option, device_option
from fgsbir.config import Count

INDEX_KINDS = ("exact", "hnsw", "ivf")  # fgsbir.index.INDEX_KINDS, without importing faiss


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index",
        help="embed a folder of photos into a searchable index",
        description="Embed every photo under PHOTO_DIR with the model of RUN_DIR. An existing "
        "INDEX_DIR gets only the photos it does not hold yet (so this also resumes an "
        "interrupted run); it must have been made by the same model.",
    )
    index.add_argument("run_dir", metavar="RUN_DIR", help="run folder of 'fgsbir train'")
    index.add_argument("photo_dir", metavar="PHOTO_DIR", help="folder of photos (recursive)")
    index.add_argument("--out", required=True, metavar="INDEX_DIR", help="index folder to write")
    index.add_argument(
        "--kind", choices=INDEX_KINDS,
        help="exact search, or an approximate faiss index (hnsw, ivf) for large galleries "
        "(default: the existing index's kind; exact for a new index)",
    )  # fmt: skip
    index.add_argument(
        "--batch-size", type=checked(Count), default=32, metavar="N", help="photos per batch"
    )
    device_option(index)
    index.add_argument(
        "--on-error", choices=["raise", "warn"], default="raise",
        help="stop at an unreadable photo (raise) or skip it with a warning (warn)",
    )  # fmt: skip
    index.set_defaults(func=run_index)

    search = subparsers.add_parser(
        "search",
        help="rank the photos of an index by a sketch",
        description="Print the K photos of INDEX_DIR that best match SKETCH, best first, with "
        "their scores (cosine similarity).",
    )
    search.add_argument("index_dir", metavar="INDEX_DIR", help="index folder of 'fgsbir index'")
    search.add_argument("sketch", metavar="SKETCH", help="an SVG, stroke JSON or PNG drawing")
    search.add_argument(
        "-k", type=checked(Count), default=10, metavar="K", help="how many photos to show"
    )
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _model_options(search)
    search.set_defaults(func=run_search)

    serve = subparsers.add_parser(
        "serve",
        help="serve the drawing page for an index",
        description="Serve a web page to draw on: the best-matching photos of INDEX_DIR update "
        "after every stroke. Runs until Ctrl+C.",
    )
    serve.add_argument("index_dir", metavar="INDEX_DIR", help="index folder of 'fgsbir index'")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=checked(Port), default=8000, help="port to listen on")
    serve.add_argument(
        "--threads", type=checked(Count), metavar="N",
        help="CPU threads for embedding sketches; 1 is best on busy cores "
        "(default: torch's choice)",
    )  # fmt: skip
    serve.add_argument(
        "--generator", metavar="RUN_DIR",
        help="a generator run (of 'fgsbir train-generator', or a semi run's generator/ folder) "
        "that shows how a person would sketch a clicked photo (default: the generator of the "
        "index's run, if it is a semi-supervised run)",
    )  # fmt: skip
    copy_bias_option(serve)
    _model_options(serve)
    serve.set_defaults(func=run_serve)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", metavar="RUN_DIR",
        help="the model's run folder, if it moved since indexing (default: the one the index "
        "recorded)",
    )  # fmt: skip
    device_option(parser)


def run_index(args: argparse.Namespace) -> None:
    from fgsbir.index import build_index
    from fgsbir.inference import load_embedder

    embedder = load_embedder(args.run_dir, args.device)
    index = build_index(
        embedder,
        args.photo_dir,
        args.out,
        kind=args.kind,
        batch_size=args.batch_size,
        run_dir=args.run_dir,
        on_error=args.on_error,
    )
    print(f"{args.out}: {len(index)} photos, {index.kind} index, model {index.model_identity}")


def run_search(args: argparse.Namespace) -> None:
    from fgsbir.index import open_index
    from fgsbir.inference import load_gallery_model
    from fgsbir.sketch.io import load_sketch

    embedder = load_gallery_model(args.index_dir, args.run, args.device)
    index = open_index(args.index_dir, embedder)
    query = embedder.embed_sketches([load_sketch(args.sketch)])[0]
    results = index.search(query, args.k)
    if args.json:
        rows = [{"rank": r.rank, "photo": str(r.photo), "score": r.score} for r in results]
        print(json.dumps({"results": rows}, indent=2))
        return
    for r in results:
        print(f"{r.rank:>4}  {r.score:7.4f}  {r.photo}")


def run_serve(args: argparse.Namespace) -> None:
    from fgsbir.web.app import serve  # FastAPI and uvicorn only when serving

    serve(
        args.index_dir,
        args.host,
        args.port,
        run_dir=args.run,
        device=args.device,
        threads=args.threads,
        generator_dir=args.generator,
        copy_bias=args.copy_bias,
    )
