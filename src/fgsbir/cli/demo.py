"""``fgsbir demo``: a thin layer over :func:`fgsbir.demo.run_demo`."""

from __future__ import annotations

import argparse

from fgsbir.cli.common import Port, begin_training, checked


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train a small model on the built-in data set, index it and serve the search page",
        description="Train a small model on the built-in synthetic data set (a few minutes on a "
        "CPU), evaluate it, index its test photos and serve the drawing page until Ctrl+C "
        "(--no-serve stops after indexing). Run it again to resume or to serve again.",
    )
    p.add_argument("--out", default="runs/demo", metavar="RUN_DIR", help="run folder to write")
    p.add_argument("--host", default="127.0.0.1", help="address to serve the page on")
    p.add_argument("--port", type=checked(Port), default=8000, help="port to serve the page on")
    p.add_argument("--no-serve", action="store_true", help="stop after training and indexing")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from fgsbir.cli.train import print_summary
    from fgsbir.demo import run_demo
    from fgsbir.train.supervised import demo_config

    if not args.no_serve:  # a busy port is found now, not after minutes of training
        from fgsbir.web.app import listen

        listen(args.host, args.port).close()
    print(f"training a small model on the synthetic data set into {args.out} ...")
    begin_training(demo_config(args.out).run)
    result, index_dir = run_demo(args.out)
    print_summary(result, args.out)
    print(f"index of the test photos: {index_dir}")
    if not args.no_serve:
        from fgsbir.web.app import serve

        serve(index_dir, args.host, args.port)
    return 0
