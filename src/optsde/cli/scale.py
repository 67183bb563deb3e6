"""``optsde scale``: hyperparameters for a new batch size under each scaling rule (docs/theory.md §6).

Argument handling only; the rules and the config format are :mod:`optsde.scaling`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from optsde.cli.common import HelpFormatter, finite_float, positive_float, positive_int
from optsde.cli.noise_scale import add_problem_flags
from optsde.errors import OptsdeError
from optsde.noise_scale import problem_noise_scale, regime_warning
from optsde.optimizers import OPTIMIZERS, get_optimizer
from optsde.problems.network import network_problem
from optsde.results import check_new_file
from optsde.scaling import (
    ScalingError,
    config_hyperparameters,
    format_table,
    load_config,
    rescale_config,
    rules,
    save_config,
    scaling_table,
)

EXAMPLE = """examples:
  optsde scale --optimizer adamw --from-batch 256 --to-batch 1024 --lr 1e-3 --weight-decay 0.1
  optsde scale --config adamw.yaml --to-batch 1024 --write adamw-1024.yaml --rule paper
  optsde scale --optimizer signsgd --from-batch 32 --to-batch 512 --lr 1e-3 --noise-scale 300
  optsde scale --optimizer adamw --from-batch 32 --to-batch 128 --lr 1e-3 --model cnn --dataset digits
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scale",
        help="rescale hyperparameters for a new batch size (paper's and Malladi et al.'s rules)",
        description="Rescale an optimizer's hyperparameters from batch size B to B2 (docs/theory.md §6):\n"
        "the paper's rule and Malladi et al.'s for Adam(W)/RMSprop(W), the linear rule for SGD,\n"
        "the square-root rule for SignSGD.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="optimizer family")
    parser.add_argument(
        "--from-batch", type=positive_int, metavar="B", help="batch size B the values were tuned at"
    )
    parser.add_argument(
        "--to-batch", type=positive_int, required=True, metavar="B2", help="new batch size B2"
    )
    parser.add_argument(
        "--lr", type=positive_float, help="learning rate η at batch size B (required, here or in --config)"
    )
    parser.add_argument("--beta1", type=finite_float, help="Adam's β₁ (default: torch.optim's, 0.9)")
    parser.add_argument(
        "--beta2", type=finite_float, help="Adam's β₂ (default 0.999) or RMSprop's alpha (default 0.99)"
    )
    parser.add_argument("--eps", type=finite_float, help="ε (default 1e-8)")
    parser.add_argument(
        "--weight-decay", type=finite_float, help="decoupled weight decay θ (default: AdamW 0.01, RMSpropW 0)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="torch.optim-style JSON/YAML config with lr, betas|alpha, eps, weight_decay, batch_size, "
        "optionally optimizer; flags given beside it override its values",
    )
    parser.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="write the rescaled config to a new file (JSON, or YAML by suffix)",
    )
    parser.add_argument(
        "--rule",
        choices=sorted({rule for spec in OPTIMIZERS.values() for rule in spec.scaling_rules}),
        help="one rule only, also --write's (default: all the optimizer's rules; --write takes the first)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    regime = parser.add_argument_group(
        "regime check",
        "the rules were derived where gradient noise dominates, B2 well below the gradient noise scale "
        "B_simple = tr(C)/|∇f|² (docs/theory.md §9); give B_simple, or a built-in model and data set to "
        "measure it at their initial weights, and a one-line warning says when B2 ≥ B_simple",
    )
    regime.add_argument(
        "--noise-scale", type=positive_float, metavar="B_SIMPLE", help="the gradient noise scale B_simple"
    )
    add_problem_flags(regime, required=False)
    parser.set_defaults(handler=scale_command)


def _noise_scale(args: argparse.Namespace) -> float | None:
    """``B_simple`` as given by ``--noise-scale``, or measured on ``--model``/``--dataset``, or None."""
    measure = args.model is not None or args.dataset is not None
    if args.noise_scale is not None and measure:
        raise ScalingError("give --noise-scale or --model/--dataset to measure it, not both")
    if not measure:
        if args.width is not None or args.train_size is not None:
            raise ScalingError("--width and --train-size describe the network of --model/--dataset")
        return args.noise_scale
    if args.model is None or args.dataset is None:
        raise ScalingError("measuring B_simple needs both --model and --dataset")
    problem = network_problem(
        args.model, args.dataset, width=args.width, train_size=args.train_size, sampling="with-replacement"
    )
    return problem_noise_scale(problem, problem.x0()).b_simple


def _flag_config(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a loaded config, or empty) with the hyperparameter flags written over it."""
    config = dict(base)
    name = args.optimizer or config.get("optimizer")
    if name is None:
        raise ScalingError('give --optimizer (or a config with an "optimizer" field)')
    spec = get_optimizer(str(name))
    if args.optimizer is not None:
        config.setdefault("optimizer", spec.name)
    if args.from_batch is not None:
        if "batch_size" in base and base["batch_size"] != args.from_batch:
            raise ScalingError(
                f"--from-batch {args.from_batch} disagrees with the config's batch_size "
                f"{base['batch_size']}; drop one of them"
            )
        config["batch_size"] = args.from_batch
    elif "batch_size" not in config:
        raise ScalingError("give --from-batch, the batch size the hyperparameters were tuned at")
    if args.lr is not None:
        config["lr"] = args.lr
    elif "lr" not in config:
        raise ScalingError("give --lr, the learning rate tuned at the batch size --from-batch")
    defaults = spec.torch_defaults
    for field in ("beta1", "beta2", "eps", "weight_decay"):
        value = getattr(args, field)
        if value is None:
            continue
        # A decay given to Adam or RMSprop is left to the optimizer's own check, whose message
        # points to the W variant; SGD and SignSGD have none.
        if field not in spec.uses and (field != "weight_decay" or spec.capabilities.decay_variant is None):
            raise ScalingError(f"{spec.name} has no {field}; drop --{field.replace('_', '-')}")
        if field == "beta1" or ("beta1" in spec.uses and field == "beta2"):
            betas = config.get("betas", [defaults["beta1"], defaults["beta2"]])
            if not (isinstance(betas, (list, tuple)) and len(betas) == 2):
                raise ScalingError(f"config field 'betas' must be a pair [beta1, beta2], got {betas!r}")
            betas = list(betas)
            betas[0 if field == "beta1" else 1] = value
            config["betas"] = betas
        elif field == "beta2":
            config["alpha"] = value
        else:
            config[field] = value
    return config


def scale_command(args: argparse.Namespace) -> int:
    if args.write is not None:
        check_new_file(args.write, "--write")
    base = load_config(args.config) if args.config is not None else {}
    config = _flag_config(args, base)
    spec, hp, batch = config_hyperparameters(config, args.optimizer)
    if args.rule is not None and args.rule not in rules(spec):
        raise ScalingError(f"--rule {args.rule}: {spec.name} has the rules {', '.join(rules(spec))}")
    chosen = (args.rule,) if args.rule else rules(spec)
    b_simple = _noise_scale(args)
    try:
        table = scaling_table(spec, hp, batch, args.to_batch, chosen)
    except OptsdeError as exc:
        hint = "" if len(chosen) == 1 else "; --rule NAME shows one rule alone"
        raise ScalingError(f"{exc}{hint}") from None
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    warning = None if b_simple is None else regime_warning(args.to_batch, b_simple)
    if warning is not None:
        print(warning, file=sys.stderr)
    if args.write is not None:
        rescaled = rescale_config(config, args.to_batch, args.rule, args.optimizer)
        args.write.absolute().parent.mkdir(parents=True, exist_ok=True)
        save_config(rescaled, args.write)
        rule = args.rule or rules(spec)[0]
        print(f"wrote {args.write} ({rule} rule, batch {batch} → {args.to_batch})", file=sys.stderr)
    return 0
