"""``optsde list``, ``optsde run NAME`` and ``optsde demo``.

A run writes into its work area and is moved into ``--out`` when complete
(:mod:`optsde.results`); Ctrl-C keeps the work area and prints the command that
continues from the checkpoints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from optsde.cli.common import (
    add_run_flags,
    apply_threads,
    parse_settings,
    positive_int,
    resolve_device,
    resolve_dtype,
    resume_command,
    show_progress,
)
from optsde.errors import OptsdeError
from optsde.experiments.base import Context, Experiment, ExperimentError, discover, get_experiment
from optsde.html_report import write_index
from optsde.report import _jsonable, write_result
from optsde.results import RunDirectory

DEMO_OUT = Path("runs") / "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    lister = subparsers.add_parser("list", help="the experiments, one line each")
    lister.set_defaults(handler=list_experiments)

    runner = subparsers.add_parser(
        "run",
        help="run one experiment and write its results directory",
        description="Run one experiment (see `optsde list`) and write config.json, series.csv, "
        "summary.json, figures and report.md into --out.",
    )
    runner.add_argument("name", help="experiment name (see `optsde list`)")
    runner.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes: seconds to minutes; the report says what it left out",
    )
    runner.add_argument(
        "--paths", type=positive_int, default=None, help="number of paths P (default: the experiment's)"
    )
    runner.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a parameter of the experiment (repeatable; lists are comma-separated; "
        "an unknown KEY lists the known ones)",
    )
    add_run_flags(runner, default_out="runs/NAME")
    runner.set_defaults(handler=run_one)

    demo = subparsers.add_parser(
        "demo",
        help="every experiment in quick mode, on built-in data",
        description="Every experiment in quick mode, each into its own directory under --out, "
        "then the list of reports.  Ctrl-C stops the demo; --resume continues it.",
    )
    demo.add_argument(
        "--only",
        type=_names,
        default=None,
        metavar="NAMES",
        help="run only these experiments, comma-separated (default: all of `optsde list`)",
    )
    add_run_flags(demo, default_out=str(DEMO_OUT))
    demo.set_defaults(handler=run_demo)


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected experiment names like heavy-tails,signsgd-phases; got {text!r}"
        )
    return names


def list_experiments(args: argparse.Namespace) -> int:
    experiments = discover()
    width = max((len(name) for name in experiments), default=0)
    for name, exp in experiments.items():
        print(f"{name:<{width}}  {exp.description}")
    return 0


def make_context(exp: Experiment, args: argparse.Namespace, quick: bool, settings: dict[str, str]) -> Context:
    """The run's context, every parameter resolved and checked; config records what quick changed."""
    paths = getattr(args, "paths", None)
    params = exp.resolve(quick, settings, paths)
    apply_threads(args)
    ctx = Context(
        experiment=exp.name,
        params=params,
        seed=args.seed,
        quick=quick,
        device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype),
        progress=show_progress(args),
    )
    if quick:
        ctx.result.config["quick_changes"] = {
            key: {"quick": params[key], "full": exp.defaults[key]}
            for key in exp.quick
            if params[key] != exp.defaults[key] and key not in settings and not (key == "paths" and paths)
        }
    return ctx


def _config_text(ctx: Context) -> str:
    return json.dumps(_jsonable(ctx.result.config), sort_keys=True)


def prepare_checkpoints(ctx: Context, directory: Path, resume: bool) -> None:
    """Point ``ctx`` at ``directory``; ``--resume`` needs checkpoints made with the same config."""
    config_file = directory / "config.json"
    if resume and config_file.exists():
        if config_file.read_text() != _config_text(ctx):
            raise ExperimentError(
                f"--resume: the interrupted {ctx.experiment} run was made with other settings; "
                "repeat its command's flags exactly, or run without --resume"
            )
    else:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        config_file.write_text(_config_text(ctx))
    ctx.checkpoint_dir = directory


def execute(exp: Experiment, ctx: Context, target: Path) -> int:
    """Run ``exp`` and write its files into ``target``; on Ctrl-C or a crash, write what was recorded.

    Returns the experiment's exit code (0, or 1 for a documented divergence); bad input found
    late and Ctrl-C propagate to :func:`in_run_directory`.
    """
    started = time.perf_counter()
    code = 0
    try:
        code = exp.run(ctx) or 0
    except OptsdeError:
        raise
    except BaseException as exc:
        if ctx.result.rows:
            interrupted = isinstance(exc, KeyboardInterrupt)
            ctx.result.status = "interrupted" if interrupted else f"failed: {type(exc).__name__}: {exc}"
            write_result(ctx.result, target)
        raise
    ctx.result.summary.setdefault("wall_time_s", round(time.perf_counter() - started, 2))
    write_result(ctx.result, target)
    for line in ctx.result.summary.get("divergences", []):
        print(f"warning: {line}", file=sys.stderr)
    print(f"{exp.name}: done ({time.perf_counter() - started:.1f} s)")
    return code


def in_run_directory(
    run: RunDirectory, argv: Sequence[str], resume: bool, body: Callable[[], int], what: str
) -> int:
    """Run ``body`` in ``run``'s work area, then move it into place.

    Ctrl-C keeps the work area and prints the command that continues; bad input found
    after the start removes the work area (unless it holds an earlier run being resumed).
    """
    try:
        code = body()
    except KeyboardInterrupt:
        print(
            f"optsde: interrupted; what was recorded so far is in {run.work}; "
            f"to continue: {resume_command(argv)}",
            file=sys.stderr,
        )
        return 130
    except OptsdeError:
        if not resume:
            run.abandon()
        raise
    except BaseException:
        if any(run.work.rglob("summary.json")):
            print(f"optsde: {what} failed; what was recorded is in {run.work}", file=sys.stderr)
        else:  # a failed start: nothing to keep
            run.abandon()
        raise
    out = run.commit()
    print(f"wrote {out}/report.md" if (out / "report.md").exists() else f"wrote {out}")
    return code


def run_one(args: argparse.Namespace) -> int:
    exp = get_experiment(args.name)
    ctx = make_context(exp, args, args.quick, parse_settings(args.settings))
    run = RunDirectory.open(args.out or Path("runs") / exp.name, overwrite=args.overwrite, resume=args.resume)

    def body() -> int:
        prepare_checkpoints(ctx, run.checkpoints(exp.name), args.resume)
        return execute(exp, ctx, run.work)

    return in_run_directory(run, args.argv, args.resume, body, exp.name)


def _finished(directory: Path, ctx: Context) -> bool:
    """``directory`` holds a complete run made with ``ctx``'s config (a demo being resumed)."""
    try:
        summary = json.loads((directory / "summary.json").read_text())
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") == "complete" and config == json.loads(_config_text(ctx))


def run_demo(args: argparse.Namespace) -> int:
    """All experiments (or ``--only``), quick, into ``OUT/NAME``; then where to look.

    Ctrl-C stops the whole demo; ``--resume`` skips the experiments already complete and
    continues the interrupted one from its checkpoints.
    """
    experiments = discover()
    chosen = args.only if args.only is not None else list(experiments)
    unknown = [name for name in chosen if name not in experiments]
    if unknown:
        raise ExperimentError(f"--only {','.join(unknown)}: choose among {', '.join(experiments)}")
    contexts = {name: make_context(experiments[name], args, quick=True, settings={}) for name in chosen}
    run = RunDirectory.open(args.out or DEMO_OUT, overwrite=args.overwrite, resume=args.resume)

    def body() -> int:
        started = time.perf_counter()
        codes = []
        for name, ctx in contexts.items():
            target = run.work / name
            if args.resume and _finished(target, ctx):
                print(f"{name}: complete already, skipped")
                continue
            prepare_checkpoints(ctx, run.checkpoints(name), args.resume)
            codes.append(execute(experiments[name], ctx, target))
        print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; reports:")
        for name in chosen:
            print(f"  {run.out / name / 'report.md'}")
        write_index(run.work)
        print(f"all of them on one page: {run.out / 'index.html'}")
        return max(codes, default=0)

    return in_run_directory(run, args.argv, args.resume, body, "demo")
