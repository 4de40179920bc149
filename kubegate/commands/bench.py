"""``kubegate bench``: run the benchmark harness (the same as ``python -m benchmarks``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from benchmarks.harness import build_arg_parser

    parser = subparsers.add_parser(
        "bench",
        help="measure kubegate against the sandbox reached directly, in one run",
        description=(
            "Start the sandbox cluster and kubegate (pinned to CPU 0; load on CPU 1), then measure the same "
            "load directly and through kubegate: GET one pod and LIST 500 pods at 1/16/64 clients over "
            "HTTP/1.1 and h2 (req/s, p50/p99, kubegate CPU µs per request), kubegate memory per idle watch "
            "(1,000 and 10,000), exec stdout relay MB/s and CPU-seconds per GB, watch event relay CPU. "
            "Prints a table and writes benchmarks/results/<time>.json."
        ),
    )
    build_arg_parser(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.harness import run_and_print, settings_from_args

    return run_and_print(settings_from_args(args), update_readme=args.update_readme)
