"""``optsde simulate``: one custom comparison of an optimizer and its SDE models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optsde.cli.common import (
    add_threads_flag,
    apply_threads,
    check_output_dir,
    float_list,
    positive_int,
    resolve_device,
    resolve_dtype,
)
from optsde.cli.run import execute, prepare_checkpoints
from optsde.experiments.base import Context, Experiment
from optsde.experiments.custom import CUSTOM_DEFAULTS, custom_comparison
from optsde.optimizers import OPTIMIZERS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="an optimizer beside its SDE models on a quadratic or saddle, with a fidelity summary",
    )
    d = CUSTOM_DEFAULTS
    p.add_argument("--problem", choices=("quadratic", "saddle"), default=d["problem"])
    p.add_argument(
        "--hessian",
        type=float_list,
        default=d["hessian"],
        help="diagonal curvatures, e.g. 1,3,10 (saddle: its quadratic coordinates)",
    )
    p.add_argument("--noise", choices=("gaussian", "student-t"), default=d["noise"])
    p.add_argument("--sigma", type=float, default=d["sigma"], help="noise scale s per coordinate")
    p.add_argument("--nu", type=float, default=d["nu"], help="Student-t degrees of freedom")
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"])
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=d["optimizer"])
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--beta1", type=float, default=d["beta1"])
    p.add_argument("--beta2", type=float, default=d["beta2"], help="second-moment rate (RMSprop's β)")
    p.add_argument("--eps", type=float, default=d["eps"])
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="decoupled decay θ")
    p.add_argument("--x0", type=float_list, default=None, help="start, e.g. 1,1,1 (default all ones)")
    p.add_argument("--steps", type=positive_int, default=d["steps"])
    p.add_argument("--paths", type=positive_int, default=d["paths"])
    p.add_argument(
        "--sde",
        type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
        default=d["sde"],
        help="SDE models beside the optimizer: paper,malladi,refined or none",
    )
    p.add_argument("--substeps", type=positive_int, default=d["substeps"], help="EM steps per optimizer step")
    p.add_argument(
        "--records",
        type=positive_int,
        default=d["records"],
        help="record points, stratified (one random step per equal stratum, so no periodic orbit aliases)",
    )
    p.add_argument(
        "--burn-in",
        type=float,
        default=d["burn_in"],
        help="fraction of the run discarded before the stationary loss is estimated",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/simulate)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--no-progress", action="store_true")
    add_threads_flag(p)
    p.set_defaults(handler=simulate)


def simulate(args: argparse.Namespace) -> int:
    params = {key: getattr(args, key) for key in CUSTOM_DEFAULTS}
    apply_threads(args)
    ctx = Context(
        experiment="simulate",
        params=params,
        seed=args.seed,
        device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype),
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    out = check_output_dir(args.out or Path("runs") / "simulate")
    prepare_checkpoints(ctx, out, resume=False)
    outcome: list[int] = []
    exp = Experiment("simulate", "custom comparison", lambda c: outcome.append(custom_comparison(c)), {}, {})
    code = execute(exp, ctx, out)
    return code or (outcome[0] if outcome else 0)
