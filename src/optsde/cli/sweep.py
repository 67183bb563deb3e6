"""``optsde sweep FILE``: one experiment over a grid of settings and seeds (docs/sweeps.md)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from optsde.cli.common import positive_int
from optsde.html_report import write_index
from optsde.results import check_collection_dir
from optsde.sweep import FAIL_ENV, LocalPool, RayPool, default_workers, load_sweep, run_sweep

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="an experiment over a grid of settings and seeds, one results directory per cell",
        description="Run every cell (grid point × seed) of a sweep file; complete cells are skipped, "
        "so the same command resumes an interrupted sweep.",
    )
    p.add_argument(
        "file", type=Path, help="sweep file (YAML): experiment, quick, set, grid, seeds, resources"
    )
    p.add_argument("--out", type=Path, default=None, help="sweep directory (default runs/FILE-STEM)")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="cells at once (default: the cores here ÷ each cell's num_cpus); with --ray, the CPUs "
        "of the local Ray instance",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run cells as Ray tasks: alone, on a local Ray instance; with ADDRESS (e.g. auto or "
        "ray://host:10001), on that cluster (write --ray after FILE, or --ray=ADDRESS)",
    )
    p.add_argument(
        "--retries", type=non_negative_int, default=0, help="tries again for a failed cell (default 0)"
    )
    p.set_defaults(handler=sweep)


def resume_command(args: argparse.Namespace, out: Path) -> str:
    words = ["optsde", "sweep", str(args.file), "--out", str(out)]
    words += ["--workers", str(args.workers)] if args.workers else []
    words += ["--ray", *([args.ray] if args.ray else [])] if args.ray is not None else []
    words += ["--retries", str(args.retries)] if args.retries else []
    return shlex.join(words)


def sweep(args: argparse.Namespace) -> int:
    spec = load_sweep(args.file)
    out = check_collection_dir(args.out or Path("runs") / args.file.stem, "--out")
    if args.ray is None:
        workers = args.workers or default_workers(spec.resources)
        backend = f"{workers} local worker processes"

        def make_pool() -> LocalPool:
            return LocalPool(workers)

    else:
        address = args.ray or None
        backend = f"Ray at {address}" if address else "a local Ray instance"
        # Refuse a missing Ray now, in one line, rather than after the skipped cells are listed.
        RayPool.check_installed()

        def make_pool() -> RayPool:
            return RayPool(address, args.workers, spec.resources)

    print(f"sweep {spec.file}: {len(spec.cells)} cells of {spec.experiment} into {out}, on {backend}")
    started = time.perf_counter()
    outcome = run_sweep(spec, out, make_pool, args.retries, fail_spec=os.environ.get(FAIL_ENV))
    print(
        f"sweep: {outcome.total} cells, {outcome.ran} ran, {outcome.skipped} skipped (complete), "
        f"{len(outcome.failed)} failed, {time.perf_counter() - started:.1f} s"
    )
    if outcome.interrupted:
        print(
            f"optsde: sweep interrupted with {outcome.remaining} cells to go; complete cells are kept. "
            f"Resume with: {resume_command(args, out)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if out.is_dir():
        print(f"one page for every run: {write_index(out)}")
    for name, error in outcome.failed.items():
        print(f"optsde: cell {name} failed: {error}", file=sys.stderr)
    return EXIT_FAILED if outcome.failed else 0
