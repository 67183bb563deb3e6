"""``optsde list``, ``optsde run NAME`` and ``optsde demo``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from optsde.cli.common import add_run_flags, check_output_dir, positive_int, resolve_device, resolve_dtype
from optsde.errors import OptsdeError
from optsde.experiments.base import Context, Experiment, discover, get_experiment
from optsde.report import write_result


def register(subparsers: argparse._SubParsersAction) -> None:
    lister = subparsers.add_parser("list", help="the experiments, one line each")
    lister.set_defaults(handler=list_experiments)

    runner = subparsers.add_parser("run", help="run one experiment and write its results directory")
    runner.add_argument("name", help="experiment name (see `optsde list`)")
    runner.add_argument("--quick", action="store_true", help="small sizes: seconds, not minutes")
    runner.add_argument("--paths", type=positive_int, default=None, help="number of paths P")
    runner.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a parameter of the experiment (repeatable); lists are comma-separated",
    )
    add_run_flags(runner)
    runner.set_defaults(handler=run_one)

    demo = subparsers.add_parser("demo", help="every experiment in quick mode, on built-in data")
    add_run_flags(demo)
    demo.set_defaults(handler=run_demo)


def list_experiments(args: argparse.Namespace) -> int:
    experiments = discover()
    width = max((len(name) for name in experiments), default=0)
    for name, exp in experiments.items():
        print(f"{name:<{width}}  {exp.description}")
    return 0


def parse_settings(pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptsdeError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set lr=0.01")
        settings[key.strip()] = value.strip()
    return settings


def execute(exp: Experiment, ctx: Context, out: Path) -> int:
    """Run ``exp`` and write its directory; an interrupt or crash keeps what was recorded."""
    started = time.perf_counter()
    try:
        exp.run(ctx)
    except OptsdeError:
        raise  # bad input found late: no directory is written
    except KeyboardInterrupt:
        ctx.result.status = "interrupted"
        write_result(ctx.result, out)
        print(f"optsde: interrupted; what was recorded is in {out}", file=sys.stderr)
        return 130
    except Exception as exc:
        ctx.result.status = f"failed: {type(exc).__name__}: {exc}"
        if ctx.result.rows:
            write_result(ctx.result, out)
            print(f"optsde: {exp.name} failed; what was recorded is in {out}", file=sys.stderr)
        raise
    ctx.result.summary.setdefault("wall_time_s", round(time.perf_counter() - started, 2))
    write_result(ctx.result, out)
    for line in ctx.result.summary.get("divergences", []):
        print(f"warning: {line}", file=sys.stderr)
    print(f"{exp.name}: wrote {out}/report.md ({time.perf_counter() - started:.1f} s)")
    return 0


def make_context(exp: Experiment, args: argparse.Namespace, quick: bool, settings: dict[str, str]) -> Context:
    params = exp.resolve(quick, settings, getattr(args, "paths", None))
    return Context(
        experiment=exp.name,
        params=params,
        seed=args.seed,
        quick=quick,
        device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype),
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def run_one(args: argparse.Namespace) -> int:
    exp = get_experiment(args.name)
    ctx = make_context(exp, args, args.quick, parse_settings(args.settings))
    out = check_output_dir(args.out or Path("runs") / exp.name)
    return execute(exp, ctx, out)


def run_demo(args: argparse.Namespace) -> int:
    """All experiments, quick, into ``OUT/NAME``; then where to look."""
    root = check_output_dir(args.out or Path("runs") / "demo")
    experiments = discover()
    started = time.perf_counter()
    codes = []
    for exp in experiments.values():
        ctx = make_context(exp, args, quick=True, settings={})
        codes.append(execute(exp, ctx, root / exp.name))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; reports:")
    for name in experiments:
        print(f"  {root / name / 'report.md'}")
    return max(codes, default=0)
