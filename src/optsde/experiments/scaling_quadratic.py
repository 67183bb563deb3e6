"""Experiment ``scaling-rule-quadratic``: does a batch-size scaling rule keep AdamW's and RMSpropW's
asymptotic loss? (docs/theory.md §6, §7 item 5; the paper's Fig. 5.)

On ``f = ½ Σ h_i x_i²`` with Gaussian gradient noise of per-example scale ``σ`` at batch
``B`` (``s = σ/√B``), each optimizer runs at ``B`` and at ``δB`` for every ``δ`` under the
four :data:`optsde.scaling.SCALING_VARIANTS`: the paper's rule, Malladi et al.'s β rule, the
paper's rule without rescaling θ, and no rescaling.  The asymptotic loss of each run is
compared with the base run's — for the optimizer, for each SDE model run with the same
hyperparameters, and for the closed form of the linearised discrete optimizer
(:mod:`optsde.theory.adaptive`, the most accurate one we have).

Why the rules can differ: near the minimum ``E x² ≈ η s/(2(h + θs))`` depends on
``η s`` and ``θ s`` only, and both rules keep these (``η, θ → √δ``, ``s → s/√δ``).  The
momentum enters at the next order, through how the averaging time ``1/(1 − β₁)`` compares
with the relaxation time ``1/(η(h/s + θ))``: both shrink by ``δ`` under Malladi et al.'s β
rule, but the first only by ``√δ`` under the paper's, so the paper's rule holds only while
``κ ≪ 1 − β₁``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from optsde.analysis import Check, Estimate, Within, ratio, recording_mean
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.figures import BASE_VARIANT
from optsde.figures import scaling as figures
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.scaling import SCALING_VARIANTS, variant_hyperparameters
from optsde.sde import loss_observable, record_steps
from optsde.theory.adaptive import linearised_loss
from optsde.theory.predictions import FORMULA_TOLERANCE

TOLERANCE = FORMULA_TOLERANCE
"""A rule "keeps" the asymptotic loss when its ratio to the base run's is within ±5% (or the checks'
z SE): the accuracy theory claims for a valid closed form (docs/theory.md §8)."""

AGREEMENT = 0.02
"""A prediction of the ratio agrees with the optimizer's within 2 points (or z SE): the discrete
Lyapunov form's accuracy on a level (docs/theory.md §5)."""

WORDS = {"pass": "kept", "fail": "changed", "inconclusive": "unclear"}
"""What a rule did to the asymptotic loss, by the verdict of its check against 1."""


@dataclass(frozen=True)
class QuadraticSetup:
    """The landscape, the noise, the start, and how long and how many paths each run takes."""

    hessian: tuple[float, ...]
    sigma: float
    batch: int
    x0: float
    steps: int
    paths: int
    burn_in: float
    record_points: int = 60

    def noise_scale(self, batch: int) -> np.ndarray:
        """``s = σ/√B`` per coordinate."""
        return np.full(len(self.hessian), self.sigma / math.sqrt(batch))

    def problem(self, batch: int) -> NoisyProblem:
        noise = GaussianNoise(len(self.hessian), self.sigma, batch_size=batch)
        return NoisyProblem(Quadratic(torch.tensor(self.hessian)), noise)

    def steps_at(self, delta: float) -> int:
        """``steps`` at ``δ ≥ 1``, ``steps/δ`` below: every run sees at least the base run's samples
        and at least its number of relaxation times (a rule slows each step down by ``δ`` there)."""
        return math.ceil(self.steps / min(delta, 1.0))

    def batch_at(self, delta: float) -> int:
        batch = self.batch * delta
        if abs(batch - round(batch)) > 1e-9 or round(batch) < 1:
            raise ExperimentError(f"δ = {delta:g} times batch {self.batch} is not a whole batch size")
        return round(batch)


Rows = dict[tuple[str, float], dict[str, Any]]
"""A group's ratio rows by ``(variant, δ)``: the ``ratios`` of summary.json."""


@dataclass
class VariantRun:
    """One (variant, δ) configuration: its hyperparameters, the comparison, the closed form."""

    variant: str
    delta: float
    batch: int
    hp: Hyperparameters
    comparison: Comparison
    closed_form: float | None
    stationary: dict[str, tuple[float, float]] = field(default_factory=dict)


Runs = dict[tuple[str, float], VariantRun]
"""A group's runs by ``(variant, δ)``; the base run is ``(BASE_VARIANT, 1.0)``."""


def run_group(
    ctx: Context,
    spec: OptimizerSpec,
    setup: QuadraticSetup,
    hp: Hyperparameters,
    deltas: Sequence[float],
    variants: Sequence[str],
    models: Sequence[str],
    label: str,
) -> Runs:
    """The base run and every (variant, δ) run; keys ``(variant, δ)``, the base is ``("base", 1.0)``."""
    configs = [(BASE_VARIANT, 1.0)] + [(variant, delta) for delta in deltas for variant in variants]
    runs: Runs = {}
    for variant, delta in configs:
        batch = setup.batch_at(delta)
        scaled = (
            hp if variant == BASE_VARIANT else variant_hyperparameters(spec, hp, setup.batch, batch, variant)
        )
        steps = setup.steps_at(delta)
        comparison = compare(
            ctx,
            spec,
            setup.problem(batch),
            scaled,
            ctx.tensor([setup.x0] * len(setup.hessian)),
            steps=steps,
            paths=setup.paths,
            models=models,
            record_at=record_steps(steps, setup.record_points),
            observables={"loss": loss_observable},
            label=f"{label}/{variant}/delta={delta:g}",
            burn_in=setup.burn_in,
        )
        closed_form = linearised_loss(spec, setup.hessian, setup.noise_scale(batch), scaled)
        run = VariantRun(variant, delta, batch, scaled, comparison, closed_form)
        for method, rec in comparison.recordings.items():
            if rec.divergence is None:
                stationary = recording_mean(rec, "loss", setup.burn_in)
                run.stationary[method] = (stationary.value, stationary.se)
        runs[(variant, delta)] = run
    return runs


def loss_ratio(runs: Runs, key: tuple[str, float], method: str) -> tuple[float, float] | None:
    """``E f_∞(variant)/E f_∞(base) − 1`` for ``method`` and its SE (independent runs), or None."""
    run, base = runs[key], runs[(BASE_VARIANT, 1.0)]
    if method == "closed form":
        if run.closed_form is None or base.closed_form is None:
            return None
        return run.closed_form / base.closed_form - 1.0, 0.0
    if method not in run.stationary or method not in base.stationary:
        return None
    change = ratio(Estimate(*run.stationary[method]), Estimate(*base.stationary[method])) - 1.0
    return change.value, change.se


def keeps(name: str, change: tuple[float, float]) -> Check:
    """Whether a rule keeps the asymptotic loss: its ratio to the base run's against 1.  A description
    of the rule (a rule may rightly change the loss), so it words the tables, not the checks."""
    return Check(name, Estimate(1.0 + change[0], change[1]), 1.0, Within(TOLERANCE), "E f_∞ / E f_∞(base)")


def verdict(change: tuple[float, float] | None) -> str:
    """``kept``, ``changed`` or ``unclear``: :func:`keeps`'s verdict in words (``n/a`` without a ratio)."""
    return "n/a" if change is None else WORDS[keeps("", change).verdict]


def _methods(runs: Runs) -> list[str]:
    """The optimizer, its closed form, then its SDE models: the methods whose ratios are reported."""
    sdes = [m for m in runs[(BASE_VARIANT, 1.0)].comparison.recordings if m != "optimizer"]
    return ["optimizer", "closed form", *sdes]


def report_group(ctx: Context, title: str, runs: Runs, slug: str) -> Rows:
    """Ratios, checks and figures of one optimizer group into ``ctx.result``; returns its ratio rows
    by ``(variant, δ)``."""
    result, columns, base = ctx.result, _methods(runs), runs[(BASE_VARIANT, 1.0)]
    changes = {key: {m: loss_ratio(runs, key, m) for m in columns} for key in runs if key[0] != BASE_VARIANT}
    rows: Rows = {}
    checks: list[Check] = []
    for (variant, delta), change in changes.items():
        run = runs[(variant, delta)]
        rows[(variant, delta)] = {
            "batch": run.batch,
            "hyperparameters": vars(run.hp),
            "kappa": run.comparison.kappa,
            "verdict": verdict(change["optimizer"]),
            **{f"{m} ratio-1": c[0] for m, c in change.items() if c is not None},
            **{f"{m} ratio-1 se": c[1] for m, c in change.items() if c is not None},
        }
        ratios = {m: Estimate(1.0 + c[0], c[1]) for m, c in change.items() if c is not None}
        if (measured := ratios.pop("optimizer", None)) is not None:
            name = f"{variant}, δ = {delta:g}"
            checks += [Check(f"{m}, {name}", r, measured, Within(AGREEMENT)) for m, r in ratios.items()]
    result.add_checks(slug, checks)
    numbers = {"stationary": base.stationary, "closed_form": base.closed_form, "kappa": base.comparison.kappa}
    result.report.extend(figures.group_report(title, rows, numbers, columns, checks))
    result.summary.setdefault("groups", {})[slug] = {
        "ratios": {f"{v}/delta={d:g}": row for (v, d), row in rows.items()},
        "base_stationary": base.stationary,
        "base_closed_form": base.closed_form,
        "comparisons": {f"{v}/delta={d:g}": run.comparison.summary() for (v, d), run in runs.items()},
    }
    curves = {key: (run.comparison.recordings["optimizer"], run.batch) for key, run in runs.items()}
    loss = figures.loss_figure(curves, base.closed_form, f"{title}: optimizer, loss vs steps and samples")
    result.figures[f"{slug}-loss"] = loss
    result.figures[f"{slug}-ratios"] = figures.ratio_figure(
        changes, columns, f"{title}: asymptotic loss ratio", TOLERANCE
    )
    return rows


def add_series(ctx: Context, runs: Runs, slug: str) -> None:
    """series.csv: every method's ``E f`` against steps and against samples seen."""
    for (variant, delta), run in runs.items():
        for method, rec in run.comparison.recordings.items():
            mean, se = rec.mean("loss"), rec.stderr("loss")
            for unit, scale in (("steps", 1), ("samples", run.batch)):
                panel = f"{slug}/{variant}/delta={delta:g}/{unit}"
                ctx.result.add_series(panel, method, rec.steps * scale, "loss", mean, se)


def conclusions(ctx: Context, groups: dict[str, Runs], rows: dict[str, Rows]) -> None:
    """At which δ each group's optimizer kept its asymptotic loss under each variant: summary.json's
    ``verdicts`` and the report's conclusions."""
    ctx.result.summary["verdicts"] = {
        slug: {
            f"{v}/delta={d:g}": group[(v, d)]["verdict"] for v in SCALING_VARIANTS for w, d in group if w == v
        }
        for slug, group in rows.items()
    }
    kappas = {slug: runs[(BASE_VARIANT, 1.0)].comparison.kappa for slug, runs in groups.items()}
    momenta = {
        slug: 1 - runs[(BASE_VARIANT, 1.0)].hp.beta1 for slug, runs in groups.items() if "beta1" in slug
    }
    ctx.result.report.extend(figures.conclusions(rows, kappas, momenta))


@experiment(
    "scaling-rule-quadratic",
    "batch-size scaling rules for AdamW/RMSpropW on a quadratic: paper's vs Malladi's vs no θ rescaling",
    defaults={
        "optimizers": ["adamw", "rmspropw"],
        "beta1": [0.9, 0.99],
        "beta2": 0.999,
        "rmspropw_beta2": 0.99,
        "lr": 0.0025,
        "weight_decay": 1.0,
        "eps": 1e-8,
        "hessian": [1.0, 2.0],
        "sigma": 2.0,
        "batch": 4,
        "deltas": [0.5, 2.0, 4.0],
        "x0": 0.2,
        "steps": 3000,
        "paths": 1000,
        "burn_in": 0.4,
        "sde": ["paper", "refined"],
    },
    quick={"lr": 0.005, "deltas": [2.0, 4.0], "steps": 1000, "paths": 1000, "burn_in": 0.5},
)
def run(ctx: Context) -> None:
    """Each optimizer group at B and at δB under every variant; ratios, checks, verdicts in summary.json."""
    p = ctx.params
    for name in p["optimizers"]:
        spec = get_optimizer(name)
        if not spec.decoupled_decay or spec.capabilities.linearised_second_moment is None:
            raise ExperimentError(f"optimizers: {name!r} has no decoupled decay θ; use adamw or rmspropw")
    for delta in p["deltas"]:
        if not delta > 0:
            raise ExperimentError(f"deltas: batch-size ratios must be positive, got {delta}")
    sizes = {key: p[key] for key in ("sigma", "batch", "x0", "steps", "paths", "burn_in")}
    setup = QuadraticSetup(hessian=tuple(float(h) for h in p["hessian"]), **sizes)
    for delta in p["deltas"]:
        setup.batch_at(delta)
    s = setup.noise_scale(setup.batch)[0]
    ctx.result.report.extend(figures.intro(p, s, TOLERANCE, AGREEMENT))
    groups: dict[str, Runs] = {}
    rows: dict[str, Rows] = {}
    for name in p["optimizers"]:
        spec = get_optimizer(name)
        models = [m for m in p["sde"] if m in spec.sdes]
        adam = "beta1" in spec.uses
        for beta1 in p["beta1"] if adam else [None]:
            betas = (beta1, p["beta2"]) if adam else (Hyperparameters.beta1, p["rmspropw_beta2"])
            hp = Hyperparameters(p["lr"], *betas, p["eps"], p["weight_decay"])
            slug = name if beta1 is None else f"{name}-beta1={beta1:g}"
            title = spec.name if beta1 is None else f"{spec.name}, β₁ = {beta1:g}"
            runs = run_group(ctx, spec, setup, hp, p["deltas"], list(SCALING_VARIANTS), models, slug)
            groups[slug] = runs
            add_series(ctx, runs, slug)
            rows[slug] = report_group(ctx, title, runs, slug)
    conclusions(ctx, groups, rows)
