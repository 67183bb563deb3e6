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

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from optsde.analysis import Check, Estimate, Within, ratio, recording_mean
from optsde.errors import OptsdeError
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.figures import BASE_VARIANT, SCALING_VARIANT_STYLE
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.scaling import SCALING_VARIANTS, variant_hyperparameters
from optsde.sde import loss_observable, record_steps
from optsde.theory.adaptive import stationary_loss
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
        dim = len(self.hessian)
        return NoisyProblem(
            Quadratic(torch.tensor(self.hessian)), GaussianNoise(dim, self.sigma, batch_size=batch)
        )

    def steps_at(self, delta: float) -> int:
        """``steps`` at ``δ ≥ 1``, ``steps/δ`` below: every run sees at least the base run's samples
        and at least its number of relaxation times (a rule slows each step down by ``δ`` there)."""
        return math.ceil(self.steps / min(delta, 1.0))

    def batch_at(self, delta: float) -> int:
        batch = self.batch * delta
        if abs(batch - round(batch)) > 1e-9 or round(batch) < 1:
            raise ExperimentError(f"δ = {delta:g} times batch {self.batch} is not a whole batch size")
        return round(batch)


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


def closed_form_loss(
    spec: OptimizerSpec, setup: QuadraticSetup, hp: Hyperparameters, batch: int
) -> float | None:
    """The linearised discrete optimizer's stationary ``E f`` (its family's closed form, docs/theory.md
    §5; None where it has none or no stationary law)."""
    closed_form = spec.capabilities.linearised_second_moment
    if closed_form is None:
        return None
    try:
        return stationary_loss(setup.hessian, closed_form(setup.hessian, setup.noise_scale(batch), hp))
    except OptsdeError:
        return None


def run_group(
    ctx: Context,
    spec: OptimizerSpec,
    setup: QuadraticSetup,
    hp: Hyperparameters,
    deltas: Sequence[float],
    variants: Sequence[str],
    models: Sequence[str],
    label: str,
) -> dict[tuple[str, float], VariantRun]:
    """The base run and every (variant, δ) run; keys ``(variant, δ)``, the base is ``("base", 1.0)``."""
    configs = [(BASE_VARIANT, 1.0)] + [(variant, delta) for delta in deltas for variant in variants]
    runs: dict[tuple[str, float], VariantRun] = {}
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
        run = VariantRun(
            variant, delta, batch, scaled, comparison, closed_form_loss(spec, setup, scaled, batch)
        )
        for method, rec in comparison.recordings.items():
            if rec.divergence is None:
                stationary = recording_mean(rec, "loss", setup.burn_in)
                run.stationary[method] = (stationary.value, stationary.se)
        runs[(variant, delta)] = run
    return runs


def loss_ratio(
    runs: dict[tuple[str, float], VariantRun], key: tuple[str, float], method: str
) -> tuple[float, float] | None:
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


def _pct(change: tuple[float, float] | None) -> str:
    if change is None:
        return "—"
    value, se = change
    return f"{value:+.1%}" if se == 0 else f"{value:+.1%} ± {se:.1%}"


def _methods(runs: dict[tuple[str, float], VariantRun]) -> list[str]:
    return list(runs[(BASE_VARIANT, 1.0)].comparison.recordings)


def report_group(ctx: Context, title: str, runs: dict[tuple[str, float], VariantRun], slug: str) -> None:
    """Table, verdicts and disagreements of one optimizer group into ``ctx.result``."""
    result = ctx.result
    methods = _methods(runs)
    columns = ["optimizer", "closed form", *[m for m in methods if m != "optimizer"]]
    result.say(f"### {title}")
    result.say("")
    base = runs[(BASE_VARIANT, 1.0)]
    levels = ", ".join(
        f"{m} {base.stationary[m][0]:.4g} ± {base.stationary[m][1]:.2g}" for m in base.stationary
    )
    cf = f"{base.closed_form:.4g}" if base.closed_form is not None else "—"
    result.say(f"Base asymptotic loss: {levels}; closed form {cf}; κ = {base.comparison.kappa:.3g}.")
    result.say("")
    result.say(
        "| δ | variant | β₁, β₂ after | θ after | κ | " + " | ".join(columns) + " | optimizer keeps it? |"
    )
    result.say("|---" * (len(columns) + 6) + "|")
    table: dict[str, Any] = {}
    checks: list[Check] = []
    for (variant, delta), run in runs.items():
        if variant == BASE_VARIANT:
            continue
        changes = {m: loss_ratio(runs, (variant, delta), m) for m in columns}
        table[f"{variant}/delta={delta:g}"] = {
            "batch": run.batch,
            "hyperparameters": vars(run.hp),
            "kappa": run.comparison.kappa,
            "verdict": verdict(changes["optimizer"]),
            **{f"{m} ratio-1": c[0] for m, c in changes.items() if c is not None},
            **{f"{m} ratio-1 se": c[1] for m, c in changes.items() if c is not None},
        }
        result.say(
            f"| {delta:g} | {variant} | {run.hp.beta1:.4g}, {run.hp.beta2:.4g} | {run.hp.weight_decay:.3g} "
            f"| {run.comparison.kappa:.3g} | "
            + " | ".join(_pct(changes[m]) for m in columns)
            + f" | {verdict(changes['optimizer'])} |"
        )
        optimizer = changes["optimizer"]
        if optimizer is None:
            continue
        measured = Estimate(1.0 + optimizer[0], optimizer[1])
        checks += [
            Check(f"{m}, {variant}, δ = {delta:g}", Estimate(1.0 + c[0], c[1]), measured, Within(AGREEMENT))
            for m, c in ((m, changes[m]) for m in columns[1:])
            if c is not None
        ]
    result.say("")
    for variant in sorted({v for v, _ in runs} - {BASE_VARIANT}, key=list(SCALING_VARIANTS).index):
        parts = [
            f"δ = {delta:g}: {_pct(loss_ratio(runs, (variant, delta), 'optimizer'))} "
            f"({verdict(loss_ratio(runs, (variant, delta), 'optimizer'))})"
            for (v, delta) in runs
            if v == variant
        ]
        result.say(f"- **{SCALING_VARIANT_STYLE[variant]['label']}**: " + "; ".join(parts) + ".")
    result.add_checks(slug, checks)
    off = [f"{c.name}: {c.value} against {c.target_text()}" for c in checks if c.verdict == "fail"]
    result.say(
        f"- Predicted ratios off the optimizer's ({len(off)} of {len(checks)}): " + "; ".join(off or ["none"])
    )
    result.say("")
    result.summary.setdefault("groups", {})[slug] = {
        "ratios": table,
        "base_stationary": base.stationary,
        "base_closed_form": base.closed_form,
        "comparisons": {f"{v}/delta={d:g}": run.comparison.summary() for (v, d), run in runs.items()},
    }


def loss_figure(runs: dict[tuple[str, float], VariantRun], title: str) -> Figure:
    """The optimizer's ``E f`` against steps (left) and samples seen (right), one row per δ."""
    deltas = sorted({d for v, d in runs if v != BASE_VARIANT})
    fig, axes = plt.subplots(len(deltas), 2, figsize=(10, 2.8 * len(deltas)), squeeze=False, sharey=True)
    base = runs[(BASE_VARIANT, 1.0)]
    for row, delta in enumerate(deltas):
        for col, unit in enumerate(("steps", "samples seen")):
            ax = axes[row, col]
            for (variant, d), run in runs.items():
                if d != delta and variant != BASE_VARIANT:
                    continue
                rec = run.comparison.recordings["optimizer"]
                x = rec.steps * (run.batch if col else 1)
                ax.plot(x, rec.mean("loss"), lw=1.2, **SCALING_VARIANT_STYLE[variant])
            if base.closed_form is not None:
                ax.axhline(base.closed_form, color="black", ls=":", lw=0.8, label="closed form, base")
            ax.set_yscale("log")
            ax.set_xlabel(unit)
            ax.set_title(f"δ = {delta:g}: loss vs {unit}", fontsize=9)
            if col == 0:
                ax.set_ylabel("E f(x)")
    axes[0, 1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


METHOD_MARKERS = {"optimizer": "o", "closed form": "x", "sde-paper": "^", "sde-refined": "s"}


def ratio_figure(runs: dict[tuple[str, float], VariantRun], title: str) -> Figure:
    """Asymptotic loss over the base run's, per variant and δ, for the optimizer and each prediction."""
    deltas = sorted({d for v, d in runs if v != BASE_VARIANT})
    variants = [v for v in SCALING_VARIANTS if any(key[0] == v for key in runs)]
    methods = ["optimizer", "closed form", *[m for m in _methods(runs) if m != "optimizer"]]
    fig, axes = plt.subplots(1, len(deltas), figsize=(3.6 * len(deltas), 3.6), squeeze=False, sharey=True)
    for ax, delta in zip(axes[0], deltas, strict=True):
        ax.axhspan(1 - TOLERANCE, 1 + TOLERANCE, color="0.9", lw=0)
        ax.axhline(1.0, color="black", lw=0.8)
        for j, method in enumerate(methods):
            offset = (j - (len(methods) - 1) / 2) * 0.15
            for i, variant in enumerate(variants):
                change = loss_ratio(runs, (variant, delta), method)
                if change is None:
                    continue
                ax.errorbar(
                    i + offset,
                    1 + change[0],
                    yerr=2 * change[1],
                    fmt=METHOD_MARKERS.get(method, "d"),
                    color="black" if method == "optimizer" else SCALING_VARIANT_STYLE[variant]["color"],
                    mfc="none" if method != "optimizer" else None,
                    ms=5,
                    capsize=2,
                )
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"δ = {delta:g}", fontsize=9)
    axes[0, 0].set_ylabel("asymptotic loss / base (±2 SE)")
    handles = [
        Line2D([], [], ls="", marker=METHOD_MARKERS.get(m, "d"), color="black", mfc="none" if j else None)
        for j, m in enumerate(methods)
    ]
    axes[0, -1].legend(handles, methods, fontsize=7, title="colour: variant", title_fontsize=7)
    fig.suptitle(title + " (grey band: ±5%)", fontsize=10)
    fig.tight_layout()
    return fig


def add_series(ctx: Context, runs: dict[tuple[str, float], VariantRun], slug: str) -> None:
    """series.csv: every method's ``E f`` against steps and against samples seen."""
    for (variant, delta), run in runs.items():
        for method, rec in run.comparison.recordings.items():
            mean, se = rec.mean("loss"), rec.stderr("loss")
            for unit, scale in (("steps", 1), ("samples", run.batch)):
                panel = f"{slug}/{variant}/delta={delta:g}/{unit}"
                ctx.result.add_series(panel, method, rec.steps * scale, "loss", mean, se)


def conclusions(ctx: Context, groups: dict[str, dict[tuple[str, float], VariantRun]]) -> None:
    """One line per optimizer group and variant: at which δ the optimizer's asymptotic loss was kept."""
    ctx.result.say("### Conclusions")
    ctx.result.say("")
    verdicts: dict[str, dict[str, str]] = {}
    for slug, runs in groups.items():
        verdicts[slug] = {}
        for variant in SCALING_VARIANTS:
            found = {d: loss_ratio(runs, (v, d), "optimizer") for v, d in runs if v == variant}
            by_verdict: dict[str, list[str]] = {}
            for delta, change in found.items():
                verdicts[slug][f"{variant}/delta={delta:g}"] = verdict(change)
                by_verdict.setdefault(verdict(change), []).append(f"δ = {delta:g} ({_pct(change)})")
            parts = [f"{word} at {', '.join(items)}" for word, items in by_verdict.items()]
            ctx.result.say(f"- {slug}, {SCALING_VARIANT_STYLE[variant]['label']}: " + "; ".join(parts) + ".")
    ctx.result.say("")
    kappas = {slug: runs[(BASE_VARIANT, 1.0)].comparison.kappa for slug, runs in groups.items()}
    momenta = {
        slug: 1 - runs[(BASE_VARIANT, 1.0)].hp.beta1 for slug, runs in groups.items() if "beta1" in slug
    }
    ctx.result.say(
        "Reading (the closed-form column tests it): near the minimum E x² ≈ ηs/(2(h + θs)) depends on ηs "
        "and θs only; both rules keep them, the variant without θ rescaling does not. Momentum enters "
        "at the next order through κ/(1 − β₁), the averaging time of m over the relaxation time of x: "
        "Malladi et al.'s β rule keeps it, the paper's multiplies it by √δ, so the paper's rule needs "
        "κ ≪ 1 − β₁. Here κ = "
        + ", ".join(f"{k:.3g} ({slug})" for slug, k in kappas.items())
        + (f" and 1 − β₁ = {', '.join(f'{m:.3g}' for m in momenta.values())}." if momenta else ".")
    )
    ctx.result.summary["verdicts"] = verdicts


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
    p = ctx.params
    for name in p["optimizers"]:
        spec = get_optimizer(name)
        if not spec.decoupled_decay or spec.capabilities.linearised_second_moment is None:
            raise ExperimentError(f"optimizers: {name!r} has no decoupled decay θ; use adamw or rmspropw")
    for delta in p["deltas"]:
        if not delta > 0:
            raise ExperimentError(f"deltas: batch-size ratios must be positive, got {delta}")
    setup = QuadraticSetup(
        hessian=tuple(float(h) for h in p["hessian"]),
        sigma=p["sigma"],
        batch=p["batch"],
        x0=p["x0"],
        steps=p["steps"],
        paths=p["paths"],
        burn_in=p["burn_in"],
    )
    for delta in p["deltas"]:
        setup.batch_at(delta)
    s = setup.noise_scale(setup.batch)[0]
    ctx.result.say(
        f"Quadratic f = ½ Σ h_i x_i², h = {list(setup.hessian)}; Gaussian gradient noise of per-example "
        f"scale σ = {setup.sigma:g} at batch B = {setup.batch} (s = σ/√B = {s:g}); x₀ = {setup.x0:g} "
        f"in every coordinate. Base hyperparameters η = {p['lr']:g}, θ = {p['weight_decay']:g}, "
        f"ε = {p['eps']:g}, β₂ = {p['beta2']:g} (AdamW; RMSpropW {p['rmspropw_beta2']:g}, torch's default, "
        "since RMSprop has no bias correction and its v warms up over 1/(1 − β₂) steps). "
        f"Each run at δB takes {setup.steps} steps for δ ≥ 1 and {setup.steps}/δ for δ < 1; "
        f"{setup.paths} paths per method."
    )
    ctx.result.say(
        "Asymptotic loss: each path's time average after the first "
        f"{setup.burn_in:.0%} of its steps, mean over paths ± SE. Tables: each method's asymptotic loss "
        "at δB over its own base run at B, minus 1 (independent runs, SEs combined). Closed form: the "
        "linearised discrete optimizer (discrete Lyapunov equation, docs/theory.md §5). A variant "
        f"*keeps* the loss when its ratio is within ±{TOLERANCE:.0%} of 1 or within 3 SE, *changes* it when "
        "outside both, and is *unclear* when 3 SE exceed the ratio itself (the checks, docs/analysis.md); a "
        f"prediction agrees when within {AGREEMENT:.0%} or 3 SE of the optimizer's ratio."
    )
    ctx.result.say("")
    groups: dict[str, dict[tuple[str, float], VariantRun]] = {}
    for name in p["optimizers"]:
        spec = get_optimizer(name)
        models = [m for m in p["sde"] if m in spec.sdes]
        adam = "beta1" in spec.uses
        for beta1 in p["beta1"] if adam else [None]:
            hp = Hyperparameters(
                lr=p["lr"],
                beta1=beta1 if beta1 is not None else Hyperparameters.beta1,
                beta2=p["beta2"] if adam else p["rmspropw_beta2"],
                eps=p["eps"],
                weight_decay=p["weight_decay"],
            )
            slug = name if beta1 is None else f"{name}-beta1={beta1:g}"
            title = spec.name if beta1 is None else f"{spec.name}, β₁ = {beta1:g}"
            runs = run_group(ctx, spec, setup, hp, p["deltas"], list(SCALING_VARIANTS), models, slug)
            groups[slug] = runs
            add_series(ctx, runs, slug)
            report_group(ctx, title, runs, slug)
            figures = ctx.result.figures
            figures[f"{slug}-loss"] = loss_figure(runs, f"{title}: optimizer, loss vs steps and samples")
            figures[f"{slug}-ratios"] = ratio_figure(runs, f"{title}: asymptotic loss ratio")
    conclusions(ctx, groups)
