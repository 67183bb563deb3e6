"""``optsde simulate``: one custom comparison of an optimizer and its SDE models."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from optsde.cli.common import (
    add_run_flags,
    apply_threads,
    finite_float,
    float_list,
    non_negative_float,
    positive_float,
    positive_int,
    resolve_device,
    resolve_dtype,
    show_progress,
)
from optsde.cli.run import execute, in_run_directory, prepare_checkpoints
from optsde.errors import OptsdeError
from optsde.experiments.base import Context, Experiment
from optsde.experiments.custom import CUSTOM_DEFAULTS, X0_HELP, custom_comparison
from optsde.optimizers import OPTIMIZERS
from optsde.results import RunDirectory

SIMULATE_OUT = Path("runs") / "simulate"


def _models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError(f"expected model names like paper,malladi, or none; got {text!r}")
    return models


def register(subparsers: argparse._SubParsersAction) -> None:
    models = "; ".join(f"{name}: {','.join(spec.sdes)}" for name, spec in OPTIMIZERS.items())
    p = subparsers.add_parser(
        "simulate",
        help="an optimizer beside its SDE models on a quadratic or saddle, with a fidelity summary",
        description="Run an optimizer and SDE models of it from one start, on a quadratic or an "
        "embedded saddle with Gaussian or Student-t noise, and compare them (docs/theory.md §3–§5). "
        "Negative numbers and lists are written with '=', e.g. --x0=-1,2.",
    )
    d = CUSTOM_DEFAULTS
    p.add_argument("--problem", choices=("quadratic", "saddle"), default=d["problem"], help="the landscape")
    p.add_argument(
        "--hessian",
        type=float_list,
        default=d["hessian"],
        help="diagonal curvatures, e.g. 1,3,10 (saddle: its quadratic coordinates)",
    )
    p.add_argument("--noise", choices=("gaussian", "student-t"), default=d["noise"], help="gradient noise")
    p.add_argument(
        "--sigma",
        type=non_negative_float,
        default=d["sigma"],
        help="noise scale s per coordinate; 0: no noise, the SDEs run as their ODEs",
    )
    p.add_argument(
        "--nu",
        type=positive_float,
        default=d["nu"],
        help="Student-t degrees of freedom (with --noise student-t)",
    )
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"], help="minibatch size B")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=d["optimizer"], help="the optimizer")
    p.add_argument("--lr", type=positive_float, default=d["lr"], help="learning rate η")
    p.add_argument("--beta1", type=finite_float, default=d["beta1"], help="first-moment rate β₁, in [0, 1)")
    p.add_argument(
        "--beta2",
        type=finite_float,
        default=d["beta2"],
        help="second-moment rate β₂ (RMSprop's β), in [0, 1)",
    )
    p.add_argument("--eps", type=finite_float, default=d["eps"], help="ε, ≥ 0")
    p.add_argument(
        "--weight-decay", type=finite_float, default=d["weight_decay"], help="decoupled weight decay θ, ≥ 0"
    )
    p.add_argument(
        "--x0",
        type=float_list,
        default=None,
        help=X0_HELP,
    )
    p.add_argument("--steps", type=positive_int, default=d["steps"], help="optimizer steps")
    p.add_argument("--paths", type=positive_int, default=d["paths"], help="independent paths")
    p.add_argument(
        "--sde",
        type=_models,
        default=d["sde"],
        help=f"SDE models beside the optimizer, comma-separated, or none; per optimizer: {models}",
    )
    p.add_argument(
        "--substeps", type=positive_int, default=d["substeps"], help="Euler–Maruyama steps per optimizer step"
    )
    add_run_flags(p, default_out=str(SIMULATE_OUT))
    p.add_argument(
        "--records",
        type=positive_int,
        default=d["records"],
        help="record points, stratified: consecutive pairs at random steps, so no periodic orbit aliases",
    )
    p.add_argument(
        "--burn-in",
        type=finite_float,
        default=d["burn_in"],
        help="fraction of the run, in [0, 1), discarded before the stationary loss is estimated",
    )
    p.set_defaults(handler=simulate)


def simulate(args: argparse.Namespace) -> int:
    params = {key: getattr(args, key) for key in CUSTOM_DEFAULTS}
    apply_threads(args)
    dtype = resolve_dtype(args.dtype)
    if not torch.isfinite(torch.tensor(args.sigma, dtype=dtype) ** 2):
        # The noise variance σ² must exist in the run's precision, or every model sees inf.
        raise OptsdeError(f"--sigma {args.sigma:g}: σ² overflows {args.dtype}; give a smaller noise scale")
    ctx = Context(
        experiment="simulate",
        params=params,
        seed=args.seed,
        device=resolve_device(args.device),
        dtype=dtype,
        progress=show_progress(args),
    )
    run = RunDirectory.open(args.out or SIMULATE_OUT, overwrite=args.overwrite, resume=args.resume)
    exp = Experiment("simulate", "custom comparison", custom_comparison, {}, {})

    def body() -> int:
        prepare_checkpoints(ctx, run.checkpoints("simulate"), args.resume)
        return execute(exp, ctx, run.work)

    return in_run_directory(run, args.argv, args.resume, body, "simulate")
