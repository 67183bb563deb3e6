"""``optsde predict``: theory's predictions for one setting, each with its regime, optionally checked."""

from __future__ import annotations

import argparse
import json
import math

from optsde.cli.common import add_threads_flag, apply_threads, float_list, positive_int
from optsde.experiments.custom import CUSTOM_DEFAULTS
from optsde.optimizers import OPTIMIZERS
from optsde.theory.check import attach, simulate_stationary
from optsde.theory.predictions import Prediction, Setting, predictions, regime_statement


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="theory's predictions for an optimizer on a quadratic, with their regimes (and --check)",
        description="Every prediction the theory has for the setting (docs/theory.md §8): which formula "
        "holds where, and which is recommended here. --check simulates the optimizer and adds the error.",
    )
    d = CUSTOM_DEFAULTS
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=d["optimizer"])
    p.add_argument(
        "--hessian", type=float_list, default=d["hessian"], help="diagonal curvatures, e.g. 1,3,10"
    )
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--sigma", type=float, default=d["sigma"], help="noise scale s per coordinate")
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"])
    p.add_argument("--noise", choices=("gaussian", "student-t"), default=d["noise"])
    p.add_argument("--nu", type=float, default=d["nu"], help="Student-t degrees of freedom")
    p.add_argument("--beta1", type=float, default=d["beta1"])
    p.add_argument("--beta2", type=float, default=d["beta2"], help="second-moment rate (RMSprop's β)")
    p.add_argument("--eps", type=float, default=d["eps"])
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="decoupled decay θ")
    p.add_argument("--x0", type=float_list, default=None, help="start, e.g. 1,1,1 (default all ones)")
    p.add_argument("--json", action="store_true", help="print the records as a JSON list")
    p.add_argument("--check", action="store_true", help="simulate the optimizer and compare")
    p.add_argument("--paths", type=positive_int, default=d["paths"], help="--check: paths")
    p.add_argument("--steps", type=positive_int, default=d["steps"], help="--check: optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="--check: same seed, same numbers")
    add_threads_flag(p)
    p.set_defaults(handler=predict)


def predict(args: argparse.Namespace) -> int:
    setting = Setting(
        optimizer=args.optimizer,
        hessian=tuple(args.hessian),
        lr=args.lr,
        sigma=args.sigma,
        batch_size=args.batch_size,
        noise=args.noise,
        nu=args.nu,
        beta1=args.beta1,
        beta2=args.beta2,
        eps=args.eps,
        weight_decay=args.weight_decay,
        x0=None if args.x0 is None else tuple(args.x0),
    )
    records = predictions(setting)
    warning = None
    if args.check:
        apply_threads(args)
        measured = simulate_stationary(setting, paths=args.paths, steps=args.steps, seed=args.seed)
        attach(records, measured)
        if measured.diverged:
            warning = f"{measured.diverged}; nothing to compare"
        elif abs(measured.drift) > 4:
            warning = (
                f"the loss still moves between the halves of the averaging window "
                f"({measured.drift:+.1f} SE): not yet stationary; raise --steps"
            )
    if args.json:
        print(json.dumps([r.as_dict() for r in records], indent=1, ensure_ascii=False, default=_json_number))
    else:
        print("\n".join(text_report(setting, records, warning)))
    return 0


def _json_number(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def text_report(setting: Setting, records: list[Prediction], warning: str | None = None) -> list[str]:
    """The human-readable table: per quantity, every formula, the recommended one marked ``→``."""
    noise = setting.noise if setting.noise == "gaussian" else f"student-t ν = {setting.nu:g}"
    lines = [
        f"{setting.optimizer} on ½Σ h x², h = {', '.join(f'{h:g}' for h in setting.hessian)}; "
        f"{noise} noise, s = σ/√B = {setting.scale[0]:g}; η = {setting.lr:g}",
        regime_statement(setting.family, setting.kappa, noise=setting.noise, nu=setting.nu),
    ]
    if warning:
        lines.append(f"warning: {warning}")
    for quantity in dict.fromkeys(r.quantity for r in records):
        lines.append("")
        lines.append(quantity)
        for r in (r for r in records if r.quantity == quantity):
            mark = "→" if r.recommended else " "
            value = "—" if r.value is None else f"{r.value:.5g}"
            status = "valid" if r.valid else "outside its regime"
            line = f" {mark} {value:>11}  {status:<18}  {r.formula}"
            if r.simulated is not None and math.isfinite(r.simulated):
                se = f" ± {r.simulated_se:.2g}" if r.simulated_se is not None else ""
                error = f", error {100 * r.rel_error:+.1f}%" if r.rel_error is not None else ""
                line += f"   [simulated {r.simulated:.5g}{se}{error}]"
            lines.append(line)
            if r.per_coordinate is not None and len(r.per_coordinate) > 1:
                lines.append(f"{'':17}per coordinate: {', '.join(f'{v:.4g}' for v in r.per_coordinate)}")
            lines.append(f"{'':17}regime: {r.regime}")
            if r.note:
                lines.append(f"{'':17}note: {r.note}")
    return lines
