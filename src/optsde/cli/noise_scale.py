"""``optsde noise-scale``: the gradient noise scale ``B_simple`` and κ along a training run
(docs/theory.md §9).  Argument handling only; the computation is :mod:`optsde.noise_scale`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from optsde.cli.common import (
    add_threads_flag,
    apply_threads,
    non_negative_float,
    positive_float,
    positive_int,
    seed,
)
from optsde.noise_scale import NoiseScaleError, format_run, noise_scale_run, regime_warning
from optsde.optimizers import OPTIMIZERS, Hyperparameters
from optsde.problems.datasets import DATASETS
from optsde.problems.models import ARCHITECTURES
from optsde.problems.network import network_problem
from optsde.results import check_new_file, write_new_file

EXAMPLE = """examples:
  optsde noise-scale --model mlp --dataset breast-cancer --batch-size 32
  optsde noise-scale --model cnn --dataset digits --batch-size 64 --steps 300 --every 100 --lr 1e-3
"""


def add_problem_flags(parser: argparse.ArgumentParser, required: bool) -> None:
    """``--model --dataset --width --train-size``: the built-in network whose ``B_simple`` is measured."""
    parser.add_argument("--model", choices=ARCHITECTURES, required=required, help="built-in architecture")
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=required, help="built-in data set")
    parser.add_argument("--width", type=positive_int, default=None, help="model width (default: quick size)")
    parser.add_argument(
        "--train-size", type=positive_int, default=None, help="training examples (default: all)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "noise-scale",
        help="gradient noise scale B_simple = tr(C)/|∇f|² and κ along a training run",
        description="The gradient noise scale B_simple = tr(C)/|∇f|² (per-example covariance C, exact\n"
        "over the training set) and κ = η|h|/s (median, 99th percentile, maximum) at the start\n"
        "and every --every steps of one run of the optimizer on real minibatches (docs/theory.md §9).\n"
        "Batches well below B_simple are noise-dominated, where the SDEs and the scaling rules hold.",
        epilog=EXAMPLE,
    )
    add_problem_flags(parser, required=True)
    parser.add_argument("--batch-size", type=positive_int, default=32, help="minibatch size B of the run")
    parser.add_argument(
        "--optimizer", choices=sorted(OPTIMIZERS), default="adamw", help="optimizer of the run"
    )
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate η (also κ's)")
    parser.add_argument(
        "--weight-decay", type=non_negative_float, default=0.0, help="decoupled weight decay θ"
    )
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps of the run (0: the start only)")
    parser.add_argument("--every", type=positive_int, default=100, help="measure every this many steps")
    parser.add_argument(
        "--kappa-samples", type=positive_int, default=16, help="Hutchinson probes for κ's Hessian diagonal"
    )
    parser.add_argument("--seed", type=seed, default=0, help="initial weights, data subset and minibatches")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the records as JSON to a new file"
    )
    add_threads_flag(parser)
    parser.set_defaults(handler=noise_scale_command)


def noise_scale_command(args: argparse.Namespace) -> int:
    if args.json is not None:
        check_new_file(args.json, "--json")
    if args.steps < 0:
        raise NoiseScaleError(f"--steps must be 0 or a positive integer, got {args.steps}")
    apply_threads(args)
    problem = network_problem(
        args.model,
        args.dataset,
        width=args.width,
        train_size=args.train_size,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    hp = Hyperparameters(lr=args.lr, weight_decay=args.weight_decay)
    with torch.no_grad():
        records = noise_scale_run(
            problem,
            args.optimizer,
            hp,
            args.steps,
            args.every,
            seed=args.seed,
            kappa_samples=args.kappa_samples,
        )
    print(format_run(records, args.batch_size))
    # The run's smallest B_simple: the batch leaves the noise-dominated regime first there.
    lowest = min(records, key=lambda r: r["b_simple"])
    warning = regime_warning(args.batch_size, lowest["b_simple"], f" at step {lowest['step']}")
    if warning is not None:
        print(warning)
    if args.json is not None:
        write_new_file(args.json, json.dumps(records, indent=2), "--json")
        print(f"wrote {args.json}")
    return 0
