"""``optsde report DIR``: DIR/index.html, one self-contained page for every run under DIR."""

from __future__ import annotations

import argparse
from pathlib import Path

from optsde.html_report import write_index
from optsde.results_table import collect


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="DIR/index.html: every run's table row, report and figures on one page"
    )
    p.add_argument("dir", type=Path, help="a sweep, a demo, or any directory holding runs")
    p.set_defaults(handler=report)


def report(args: argparse.Namespace) -> int:
    collect(args.dir)  # no runs there: a one-line error, and no page written
    print(f"wrote {write_index(args.dir)}")
    return 0
