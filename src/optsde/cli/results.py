"""``optsde results DIR``: every run under DIR as one table (docs/sweeps.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from optsde.errors import OptsdeError
from optsde.results_table import collect, markdown, where, write_csv


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "results",
        help="every run under a directory as one table: Markdown on stdout, CSV with --csv",
    )
    p.add_argument("dir", type=Path, help="a sweep, a demo, or any directory holding runs")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep rows whose column KEY equals VALUE (repeatable; all must hold), e.g. seed=0 sde=sde-paper",
    )
    p.add_argument("--csv", type=Path, default=None, metavar="FILE", help="also write every column as CSV")
    p.set_defaults(handler=results)


def results(args: argparse.Namespace) -> int:
    rows = where(collect(args.dir), args.where)
    if args.csv is not None:
        if args.csv.is_dir() or not args.csv.resolve().parent.is_dir():
            raise OptsdeError(f"--csv {args.csv}: give a file path in an existing directory")
        write_csv(rows, args.csv)
    print(markdown(rows))
    if args.csv is not None:
        print(f"\nwrote {len(rows)} rows to {args.csv}")
    return 0
