"""``optsde list``, ``optsde run NAME`` and ``optsde demo``."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from optsde.cli.common import (
    add_run_flags,
    apply_threads,
    check_output_dir,
    positive_int,
    resolve_device,
    resolve_dtype,
)
from optsde.errors import OptsdeError
from optsde.experiments.base import Context, Experiment, discover, get_experiment
from optsde.html_report import write_index
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
    runner.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its checkpoint (same numbers as an uninterrupted run)",
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
    ctx.checkpoint_dir = checkpoint_dir(out)
    try:
        exp.run(ctx)
    except OptsdeError:
        # Bad input found late: no run directory, and no checkpoint unless one is being resumed.
        if not any(ctx.checkpoint_dir.glob("*.pt")):
            shutil.rmtree(ctx.checkpoint_dir, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        ctx.result.status = "interrupted"
        write_result(ctx.result, out)
        print(
            f"optsde: interrupted; what was recorded is in {out}; "
            f"`optsde run {exp.name} --resume` with the same flags continues",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        ctx.result.status = f"failed: {type(exc).__name__}: {exc}"
        if ctx.result.rows:
            write_result(ctx.result, out)
            print(f"optsde: {exp.name} failed; what was recorded is in {out}", file=sys.stderr)
        raise
    ctx.result.summary.setdefault("wall_time_s", round(time.perf_counter() - started, 2))
    write_result(ctx.result, out)
    shutil.rmtree(ctx.checkpoint_dir, ignore_errors=True)
    for line in ctx.result.summary.get("divergences", []):
        print(f"warning: {line}", file=sys.stderr)
    print(f"{exp.name}: wrote {out}/report.md ({time.perf_counter() - started:.1f} s)")
    return 0


def make_context(exp: Experiment, args: argparse.Namespace, quick: bool, settings: dict[str, str]) -> Context:
    params = exp.resolve(quick, settings, getattr(args, "paths", None))
    apply_threads(args)
    return Context(
        experiment=exp.name,
        params=params,
        seed=args.seed,
        quick=quick,
        device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype),
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def checkpoint_dir(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint")


def prepare_checkpoints(ctx: Context, out: Path, resume: bool) -> None:
    """A fresh run forgets old checkpoints; ``--resume`` needs one made with the same config."""
    directory = checkpoint_dir(out)
    config_file = directory / "config.json"
    config = json.dumps(ctx.result.config, sort_keys=True, default=str)
    if resume:
        if not config_file.exists():
            raise OptsdeError(f"--resume: no checkpoint in {directory}; run without --resume to start afresh")
        if config_file.read_text() != config:
            raise OptsdeError(
                f"--resume: the checkpoint in {directory} was made with other settings; "
                "repeat the interrupted command's flags, or run without --resume"
            )
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    config_file.write_text(config)


def run_one(args: argparse.Namespace) -> int:
    exp = get_experiment(args.name)
    ctx = make_context(exp, args, args.quick, parse_settings(args.settings))
    out = check_output_dir(args.out or Path("runs") / exp.name)
    prepare_checkpoints(ctx, out, args.resume)
    return execute(exp, ctx, out)


def run_demo(args: argparse.Namespace) -> int:
    """All experiments, quick, into ``OUT/NAME``; then where to look."""
    root = check_output_dir(args.out or Path("runs") / "demo")
    experiments = discover()
    started = time.perf_counter()
    codes = []
    for exp in experiments.values():
        ctx = make_context(exp, args, quick=True, settings={})
        prepare_checkpoints(ctx, root / exp.name, resume=False)
        codes.append(execute(exp, ctx, root / exp.name))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; reports:")
    for name in experiments:
        print(f"  {root / name / 'report.md'}")
    print(f"all of them on one page: {write_index(root)}")
    return max(codes, default=0)
