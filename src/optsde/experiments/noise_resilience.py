"""``noise-resilience``: asymptotic loss against the noise level σ at one learning rate
(docs/theory.md §5 "noise resilience", §7 "Beyond the figures").

On ``f = ½ xᵀ diag(h) x`` with Gaussian noise ``Σ = σ²I`` and a fixed η, docs/theory.md §5 predicts
that the stationary loss grows like σ² for SGD, like σ for SignSGD, Adam and RMSprop
(the sign, or the preconditioner, divides the noise by its own scale once), and stays
bounded as σ → ∞ for AdamW and RMSpropW with θ > 0 (the paper's eq. 6).  Every
optimizer runs beside its SDE at every σ.  ``κ = η·max h/σ`` (docs/theory.md §3) shrinks as σ
grows: the largest σ are where the SDEs and the closed forms can hold, the smallest
are where SignSGD lives on the lattice ``x₀ + ηℤ`` and its SDE fails.  The slopes are
fitted where ``κ ≤ kappa_fit``.

The helpers above the line "this experiment" (:func:`hyperparameters`, :func:`run_length`,
:func:`stratified_steps`, :func:`check_common`, …) are shared with the ``heavy-tails`` experiment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from optsde.analysis import burn_in_mask, recording_mean
from optsde.errors import OptsdeError
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.report import method_style
from optsde.sde import Recording, loss_observable
from optsde.theory.adaptive import (
    adamw_loss_limit,
    adamw_stationary_second_moment_discrete,
    adaptive_stationary_second_moment,
    rmspropw_stationary_second_moment_discrete,
    stationary_loss,
)
from optsde.theory.sgd import noise_resilience_exponent, sgd_stationary_loss
from optsde.theory.signsgd import signsgd_phase3_stationary_loss

NAME = "noise-resilience"

DEFAULTS: dict[str, Any] = {
    "sigmas": [float(v) for v in np.round(np.logspace(-2, 2, 9), 6)],
    "optimizers": ["sgd", "signsgd", "rmsprop", "rmspropw", "adam", "adamw"],
    "hessian": [1.0, 2.0],
    "x0": [1.0, 1.0],
    "lr": 0.1,
    "beta1": 0.9,
    "beta2": 0.99,
    "eps": 1e-8,
    "weight_decay": 1.0,
    "adaptive_sdes": ["refined", "paper"],  # "none": no SDE beside the adaptive optimizers
    "substeps": 1,
    "paths": 512,
    "settle": 3.0,
    "min_steps": 200,
    "max_steps": 100_000,
    "burn_in": 0.5,
    "kappa_fit": 0.1,
}
"""``settle``: relaxation times per half run (the second half is the stationary window,
``burn_in = 0.5``); ``kappa_fit``: the slope is fitted over the σ with ``κ ≤ kappa_fit``."""

QUICK: dict[str, Any] = {
    "sigmas": [0.01, 0.1, 1.0, 3.16, 10.0, 100.0],
    "optimizers": ["sgd", "signsgd", "adam", "adamw"],
    "adaptive_sdes": ["refined"],
    "paths": 128,
}

OPTIMIZER_COLORS = {
    "sgd": "black",
    "signsgd": "tab:red",
    "rmsprop": "tab:cyan",
    "rmspropw": "tab:blue",
    "adam": "tab:orange",
    "adamw": "tab:green",
}
SDE_MARKERS = {
    "sde-paper": "s",
    "sde-refined": "^",
    "sde-malladi": "v",
    "sde-gaussian": "D",
    "sde-student-t": "o",
}
CLOSED_FORM_LABELS = {
    "sde_ou": "SGD SDE (Ornstein–Uhlenbeck), ησ²/4 per coordinate",
    "phase3": "SignSGD phase-3 SDE",
    "paper_style": "paper-style ηs²/(2p(h+θp))",
    "discrete_lyapunov": "discrete linearisation (Lyapunov)",
}
UNCORRECTED_SECOND_MOMENT = {"rmsprop", "rmspropw"}
"""docs/theory.md §2: RMSprop(W) starts ``v`` at 0 with no bias correction (Adam divides by ``1 − β₂^k``)."""
PRIMARY_CLOSED_FORM = {"sgd": "sde_ou", "signsgd": "phase3"}
"""The most accurate closed form per optimizer; the adaptive ones use ``discrete_lyapunov``."""


# ---------------------------------------------------------------- shared helpers


def hyperparameters(params: dict[str, Any], spec: OptimizerSpec) -> Hyperparameters:
    """One hyperparameter record for ``spec``: θ only where the optimizer has decoupled decay."""
    hp = Hyperparameters(
        lr=params["lr"],
        beta1=params["beta1"],
        beta2=params["beta2"],
        eps=params["eps"],
        weight_decay=params["weight_decay"] if spec.decoupled_decay else 0.0,
    )
    spec.check(hp)
    return hp


def settling_time(
    spec: OptimizerSpec, h: np.ndarray, scale: float, hp: Hyperparameters, x0: np.ndarray
) -> tuple[float, float]:
    """``(transient, relaxation)`` in SDE time ``t = kη`` on the quadratic at noise scale ``scale``.

    - SGD relaxes at rate ``2h`` (its SDE is Ornstein–Uhlenbeck, docs/theory.md §5); the transient
      is the decay of ``f(x₀)`` to 1% of the stationary level ``ηs²/4`` per coordinate.
    - SignSGD crosses to the minimum at unit speed (phase 1) and then relaxes on the
      phase-3 time scale ``1/a = s/(√(2/π) h)`` (docs/theory.md §5).
    - The adaptive methods move at most about one unit per unit time at first; their
      second-moment estimate then forgets the early gradients ``(h x₀)²`` at rate ρ₂
      down to 1% of ``s²`` (RMSprop's, not bias-corrected, first grows from 0 as
      ``(1 − β^k)s²``); near the minimum they relax like SignSGD (rate ``h/s``), or
      at rate ``h/s + θ`` with decoupled decay (docs/theory.md §5, ``p ≈ s``).
    """
    h_min = float(h.min())
    reach = float(np.abs(x0).max())
    if spec.name == "sgd":
        f0 = 0.5 * float((h * x0**2).sum())
        level = sgd_stationary_loss(h, scale, hp.lr)
        return math.log(max(1.0, 100.0 * f0 / level)) / (2.0 * h_min), 1.0 / (2.0 * h_min)
    if spec.name == "signsgd":
        return reach, scale / h_min
    gradient = float(h.max()) * reach
    # v must forget (h x₀)² down to 1% of s²; without bias correction it must first grow from 0.
    floor = 100.0 if spec.name in UNCORRECTED_SECOND_MOMENT else 1.0
    memory = math.log(max(floor, 100.0 * gradient**2 / scale**2)) / hp.rho2
    rate = h_min / scale + hp.weight_decay
    return reach + memory, 1.0 / rate


def run_length(
    spec: OptimizerSpec,
    h: np.ndarray,
    scale: float,
    hp: Hyperparameters,
    x0: np.ndarray,
    params: dict[str, Any],
) -> int:
    """Steps so that the first half of the run covers the transient and ``settle`` relaxation
    times: the second half (after ``burn_in = 0.5``) is then stationary."""
    transient, relaxation = settling_time(spec, h, scale, hp, x0)
    steps = math.ceil(2.0 * (transient + params["settle"] * relaxation) / hp.lr)
    return int(min(max(steps, params["min_steps"]), params["max_steps"]))


def pooled_values(rec: Recording, metric: str, burn_in: float) -> np.ndarray:
    """``(T_window, P, …)`` values after burn-in: samples of the stationary law, correlated in time."""
    return rec.values[metric][burn_in_mask(rec, burn_in)]


def divergence_lines(label: str, comparison: Comparison) -> list[str]:
    """``label: <method> diverged at step k: n path(s) …`` for each diverged method."""
    return [f"{label}: {line}" for line in comparison.divergences()]


def stratified_steps(ctx: Context, label: str, steps: int, points: int) -> list[int]:
    """Step 0 and, in each of ``points // 2`` equal slices of ``[1, steps]``, a uniformly drawn
    pair of consecutive steps ``k, k + 1`` (every step when the run is short).

    A time average over them is unbiased for any periodic motion and exact for period 2.
    A regular grid is not: at κ ≫ 1 SignSGD settles on period-2 orbits of the lattice
    ``x₀ + ηℤ`` (the loss alternates between ≈0 and a fixed value, the same on every
    path), and a grid of even spacing would see one phase only.  The same steps serve
    every method of a comparison.
    """
    slices = points // 2
    if steps <= 2 * slices:
        return list(range(steps + 1))
    edges = np.linspace(0, steps, slices + 1).round().astype(int)
    first, room = edges[:-1] + 1, np.diff(edges) - 1  # k + 1 stays inside the slice
    uniform = torch.rand(slices, generator=ctx.generator(label, "record-steps"), dtype=torch.float64).numpy()
    picks = first + np.minimum((uniform * room).astype(int), room - 1)
    return sorted({0, *picks.tolist(), *(picks + 1).tolist()})


def check_common(params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Curvatures and start point from ``params``, refused with a fix if unusable."""
    h = np.asarray(params["hessian"], dtype=float)
    x0 = np.asarray(params["x0"], dtype=float)
    if h.size == 0 or not (h > 0).all():
        raise ExperimentError("--set hessian=…: give positive curvatures like 1,2 (a convex quadratic)")
    if x0.shape != h.shape:
        raise ExperimentError(f"--set x0=…: give {h.size} values, one per curvature")
    if params["paths"] < 2:
        raise ExperimentError("--paths must be at least 2 for standard errors")
    if not 0.0 <= params["burn_in"] < 1.0:
        raise ExperimentError(f"--set burn_in={params['burn_in']}: give a fraction in [0, 1)")
    if params["settle"] <= 0 or params["min_steps"] < 2 or params["max_steps"] < params["min_steps"]:
        raise ExperimentError("--set settle>0, min_steps≥2 and max_steps≥min_steps")
    return h, x0


def weighted_loglog_fit(x: np.ndarray, y: np.ndarray, y_se: np.ndarray | None = None) -> dict[str, float]:
    """Slope of ``log y`` against ``log x`` by weighted least squares, with its standard error.

    The weights are ``1/Var(log y) = (y/SE)²`` (delta method), so the slope's SE comes from
    the Monte Carlo errors alone; ``chi2_per_dof`` ≫ 1 says a straight line does not fit
    within those errors.  Without ``y_se`` (a closed form) it is ordinary least squares.
    """
    lx, ly = np.log(x), np.log(y)
    # A relative SE below 1e-6 (a deterministic lattice orbit at κ ≫ 1) counts as 1e-6.
    rel_se = np.ones_like(lx) if y_se is None else np.maximum(np.asarray(y_se) / np.asarray(y), 1e-6)
    w = 1.0 / rel_se**2
    design = np.stack([np.ones_like(lx), lx], axis=1)
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    coef = cov @ design.T @ (w * ly)
    dof = len(lx) - 2
    chi2 = float((w * (ly - design @ coef) ** 2).sum() / dof) if dof > 0 and y_se is not None else math.nan
    return {
        "slope": float(coef[1]),
        "slope_se": float(math.sqrt(cov[1, 1])) if y_se is not None else 0.0,
        "intercept": float(coef[0]),
        "chi2_per_dof": chi2,
        "points": len(lx),
    }


# ---------------------------------------------------------------- this experiment


def sde_models(spec: OptimizerSpec, params: dict[str, Any]) -> tuple[str, ...]:
    """The paper's SDE for SGD and SignSGD; for the adaptive ones those of ``adaptive_sdes`` they
    have (RMSprop(W) has no refined SDE: it gets the paper's when none of the list applies)."""
    if spec.name in ("sgd", "signsgd"):
        return ("paper",)
    wanted = [m for m in params["adaptive_sdes"] if m != "none"]
    unknown = [m for m in wanted if m not in ("paper", "malladi", "refined")]
    if unknown:
        raise ExperimentError(
            f"--set adaptive_sdes: unknown SDE {unknown[0]!r}; choose from paper, malladi, refined"
        )
    models = tuple(m for m in wanted if m in spec.sdes)
    return models or (("paper",) if wanted else ())


def closed_forms(
    spec: OptimizerSpec, h: np.ndarray, scale: float, hp: Hyperparameters
) -> dict[str, float | None]:
    """docs/theory.md §5's stationary losses for ``spec``; ``None`` where a form has no stationary law
    (e.g. the discrete linearisation at κ ≫ 1, where it is unstable)."""
    forms: dict[str, Callable[[], float]] = {}
    if spec.name == "sgd":
        forms["sde_ou"] = lambda: sgd_stationary_loss(h, scale, hp.lr)
    elif spec.name == "signsgd":
        forms["phase3"] = lambda: signsgd_phase3_stationary_loss(h, scale, hp.lr)
    else:
        discrete = (
            adamw_stationary_second_moment_discrete
            if spec.name.startswith("adam")
            else rmspropw_stationary_second_moment_discrete
        )
        forms["paper_style"] = lambda: stationary_loss(
            h, adaptive_stationary_second_moment(h, scale, hp.lr, hp.eps, hp.weight_decay)
        )
        forms["discrete_lyapunov"] = lambda: stationary_loss(h, discrete(h, scale, hp))
    values: dict[str, float | None] = {}
    for key, form in forms.items():
        try:
            values[key] = float(form())
        except OptsdeError:
            values[key] = None
    return values


def loss_limit(h: np.ndarray, sigma: float, hp: Hyperparameters) -> float:
    """The paper's eq. (6) bound with ``μ = min h``, ``L = max h``, ``B = 1``."""
    return adamw_loss_limit(float(h.min()), float(h.max()), h.size, sigma, 1, hp.lr, hp.weight_decay)


def sigma_point(
    ctx: Context, spec: OptimizerSpec, hp: Hyperparameters, h: np.ndarray, x0: np.ndarray, sigma: float
) -> tuple[dict[str, Any], Comparison]:
    """One optimizer and its SDEs at one σ: recordings into the series, numbers for the summary."""
    params = ctx.params
    problem = NoisyProblem(Quadratic(ctx.tensor(h)), GaussianNoise(h.size, scale=sigma))
    steps = run_length(spec, h, sigma, hp, x0, params)
    label = f"{spec.name}-sigma{sigma:g}"
    comparison = compare(
        ctx,
        spec,
        problem,
        hp,
        ctx.tensor(x0),
        steps=steps,
        paths=params["paths"],
        models=sde_models(spec, params),
        substeps=params["substeps"],
        record_at=stratified_steps(ctx, label, steps, 100),
        observables={"loss": loss_observable},
        label=label,
        burn_in=params["burn_in"],
    )
    entry: dict[str, Any] = {
        "sigma": sigma,
        "kappa": comparison.kappa,
        "steps": steps,
        "steps_capped": steps == params["max_steps"],
        "closed_forms": closed_forms(spec, h, sigma, hp),
        **comparison.summary(),
    }
    panel = f"{spec.name} sigma={sigma:g}"
    for method, rec in comparison.recordings.items():
        ctx.result.add_recording(panel, rec, ("loss",))
        if rec.divergence is None:
            stationary = recording_mean(rec, "loss", params["burn_in"])
            entry.setdefault("stationary_loss", {})[method] = {
                "mean": stationary.value,
                "stderr": stationary.se,
            }
    return entry, comparison


def fit_laws(spec: OptimizerSpec, points: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """The fitted log-log slope over ``κ ≤ kappa_fit`` beside the law and the closed form's slope."""
    usable = [
        p for p in points if p["kappa"] <= params["kappa_fit"] and "optimizer" in p.get("stationary_loss", {})
    ]
    law = noise_resilience_exponent(spec.name, params["weight_decay"] if spec.decoupled_decay else None)
    out: dict[str, Any] = {"law_exponent": law, "kappa_fit": params["kappa_fit"]}
    if len(usable) < 2:
        out["fit"] = None
        return out
    sig = np.array([p["sigma"] for p in usable])
    loss = np.array([p["stationary_loss"]["optimizer"]["mean"] for p in usable])
    se = np.array([p["stationary_loss"]["optimizer"]["stderr"] for p in usable])
    out["fit"] = weighted_loglog_fit(sig, loss, se)
    out["fit"]["sigmas"] = sig.tolist()
    key = PRIMARY_CLOSED_FORM.get(spec.name, "discrete_lyapunov")
    predicted = [p["closed_forms"].get(key) for p in usable]
    if all(v is not None and v > 0 for v in predicted):
        out["closed_form"] = key
        out["closed_form_slope"] = weighted_loglog_fit(sig, np.array(predicted, dtype=float))["slope"]
    # The local slope over the two largest σ: → 0 for a bounded loss, → the exponent otherwise.
    out["top_slope"] = weighted_loglog_fit(sig[-2:], loss[-2:], se[-2:])
    return out


def law_sentence(
    spec: OptimizerSpec,
    laws: dict[str, Any],
    points: list[dict[str, Any]],
    h: np.ndarray,
    hp: Hyperparameters,
) -> str:
    """One sentence per optimizer: the fitted slope against its law, in numbers."""
    fit = laws.get("fit")
    if fit is None:
        return (
            f"- **{spec.name}**: fewer than two σ with κ ≤ {laws['kappa_fit']:g} and no divergence; no slope."
        )
    law = laws["law_exponent"]
    lo, hi = min(fit["sigmas"]), max(fit["sigmas"])
    text = (
        f"- **{spec.name}**: fitted slope {fit['slope']:.3f} ± {fit['slope_se']:.3f} over "
        f"σ ∈ [{lo:.3g}, {hi:.3g}] (χ²/dof {fit['chi2_per_dof']:.2g})"
    )
    if "closed_form_slope" in laws:
        cf = laws["closed_form_slope"]
        text += f"; the closed form ({laws['closed_form']}) has slope {cf:.3f} over the same σ"
    if law > 0:
        z = (fit["slope"] - law) / fit["slope_se"]
        if abs(z) <= 3:
            verdict = f"the σ^{law} law held (within 3 SE)"
        elif abs(fit["slope"] - law) <= 0.05 * law:
            verdict = (
                f"the σ^{law} law held to {abs(fit['slope'] / law - 1):.1%}, a deviation the Monte Carlo "
                "resolves (finite-κ corrections)"
            )
        else:
            verdict = f"**the σ^{law} law did not hold** (more than 3 SE and 5% away)"
        text += f"; law σ^{law}: {z:+.1f} SE away — {verdict}"
        if "closed_form_slope" in laws:
            z_cf = (fit["slope"] - laws["closed_form_slope"]) / fit["slope_se"]
            text += f"; {z_cf:+.1f} SE from the closed form's slope"
        return text + "." + closed_form_ratio(points[-1], laws)
    top = laws["top_slope"]
    last = next(p for p in reversed(points) if p["sigma"] == hi)
    loss = last["stationary_loss"]["optimizer"]
    limit = loss_limit(h, hi, hp)
    bounded = loss["mean"] <= limit + 3 * loss["stderr"]
    return (
        text + f"; law: bounded. Between the two largest σ the local slope is {top['slope']:.3f} ± "
        f"{top['slope_se']:.3f} (an unbounded σ-law would give 1), and at σ = {hi:.3g} the loss "
        f"{loss['mean']:.4g} ± {loss['stderr']:.2g} is {loss['mean'] / limit:.2f}× the paper's limit "
        f"{limit:.4g} (eq. 6) — "
        + ("the bounded law held." if bounded else "**above the bound**.")
        + closed_form_ratio(last, laws)
    )


def closed_form_ratio(point: dict[str, Any], laws: dict[str, Any]) -> str:
    """`` At σ = …, the loss is r ± se × the closed form.`` (empty if either is missing)."""
    key = laws.get("closed_form")
    loss = point.get("stationary_loss", {}).get("optimizer")
    predicted = point["closed_forms"].get(key) if key else None
    if not (loss and predicted):
        return ""
    return (
        f" At σ = {point['sigma']:.3g} the loss is {loss['mean'] / predicted:.3f} ± "
        f"{loss['stderr'] / predicted:.3f} × the closed form ({CLOSED_FORM_LABELS[key]})."
    )


def fidelity_sentences(name: str, points: list[dict[str, Any]]) -> list[str]:
    """Where the SDE tracked the optimizer's stationary loss, and where it did not."""
    lines = []
    methods = sorted({m for p in points for m in p["fidelity"]})
    for method in methods:
        rows = [(p["kappa"], p["sigma"], p["fidelity"][method]) for p in points if method in p["fidelity"]]
        ok = [(k, s, f) for k, s, f in rows if "stationary_rel_error" in f]
        diverged = [(k, s, f) for k, s, f in rows if "diverged" in f]
        small = [(k, s, f) for k, s, f in ok if k <= 0.1]
        large = [(k, s, f) for k, s, f in ok if k > 1.0]
        parts = []
        if small:
            worst = max(small, key=lambda r: abs(r[2]["stationary_rel_error"]))
            error, error_se = worst[2]["stationary_rel_error"], worst[2]["stationary_rel_error_se"]
            parts.append(
                f"at κ ≤ 0.1 ({len(small)} σ) its stationary loss is within {abs(error):.1%} of the "
                f"optimizer's (worst at σ = {worst[1]:.3g}: {error:+.1%} ± {error_se:.1%})"
            )
        if large:
            worst = max(large, key=lambda r: abs(r[2]["stationary_rel_error"]))
            parts.append(
                f"at κ > 1 it is off by up to {worst[2]['stationary_rel_error']:+.1%} ± "
                f"{worst[2]['stationary_rel_error_se']:.1%} (σ = {worst[1]:.3g}, κ = {worst[0]:.3g})"
            )
        for k, s, f in diverged:
            parts.append(f"diverged at σ = {s:.3g} (κ = {k:.3g}) at step {f['diverged_step']}")
        if parts:
            lines.append(f"- {name} vs {method}: " + "; ".join(parts) + ".")
    return lines


def sweep(points: list[dict[str, Any]], method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """σ, stationary loss and its SE of ``method`` over the σ where it did not diverge."""
    pts = [p for p in points if method in p.get("stationary_loss", {})]
    x = np.array([p["sigma"] for p in pts])
    y = np.array([p["stationary_loss"][method]["mean"] for p in pts])
    e = np.array([p["stationary_loss"][method]["stderr"] for p in pts])
    return x, y, e


def methods_of(points: list[dict[str, Any]]) -> list[str]:
    """``optimizer`` first, then the SDEs, as they appear in the points."""
    found = {m for p in points for m in p.get("stationary_loss", {})}
    return sorted(found, key=lambda m: (m != "optimizer", m))


def shade_large_kappa(ax: Any, params: dict[str, Any], h: np.ndarray, low: float) -> None:
    """Grey band over the σ where ``κ > kappa_fit``: the SDE picture is not expected to hold."""
    cut = params["lr"] * float(h.max()) / params["kappa_fit"]
    if cut > low:
        ax.axvspan(low, cut, color="tab:gray", alpha=0.12, lw=0)
        ax.text(
            low * 1.1, 0.95, f"κ > {params['kappa_fit']:g}", transform=ax.get_xaxis_transform(), fontsize=7
        )


CLOSED_FORM_STYLE = {"sde_ou": "-", "phase3": "-", "discrete_lyapunov": "-", "paper_style": "--"}


def loss_vs_sigma_figure(
    blocks: dict[str, dict[str, Any]], params: dict[str, Any], h: np.ndarray, hps: dict[str, Hyperparameters]
) -> Figure:
    """Stationary loss against σ, log-log: optimizers filled (± SE), SDEs hollow, closed forms as lines."""
    fig, ax = plt.subplots(figsize=(7.4, 5.2))
    sigmas = np.array(params["sigmas"], dtype=float)
    low, high = sigmas.min() / 1.5, sigmas.max() * 1.5
    # Closed forms are drawn where κ ≤ 1 only: beyond, the linearisations break down (the discrete
    # Lyapunov forms even pass through instability) and say nothing about the optimizers.
    start = max(sigmas.min(), params["lr"] * float(h.max()))
    dense = np.geomspace(start, max(sigmas.max(), start), 60)
    for name, block in blocks.items():
        color, spec, hp = OPTIMIZER_COLORS.get(name), get_optimizer(name), hps[name]
        for method in methods_of(block["points"]):
            x, y, e = sweep(block["points"], method)
            if method == "optimizer":
                fit = block.get("laws", {}).get("fit")
                label = name + (f"  (slope {fit['slope']:.3f} ± {fit['slope_se']:.3f})" if fit else "")
                ax.errorbar(x, y, yerr=e, fmt="o", color=color, ms=5, capsize=2, label=label, zorder=3)
            else:
                marker = SDE_MARKERS.get(method, "x")
                ax.errorbar(x, y, yerr=e, fmt=marker, mfc="none", color=color, ms=8, lw=0.8, alpha=0.8)
        curves = [closed_forms(spec, h, float(s), hp) for s in dense]
        for key, style in CLOSED_FORM_STYLE.items():
            values = np.array([math.nan if c.get(key) is None else c[key] for c in curves], dtype=float)
            if np.isfinite(values).any():
                ax.plot(dense, values, style, color=color, lw=0.9, alpha=0.7)
    decoupled = [hps[n] for n in blocks if get_optimizer(n).decoupled_decay and hps[n].weight_decay > 0]
    if decoupled:
        hp = decoupled[0]
        bound = [loss_limit(h, float(s), hp) for s in dense]
        ax.plot(
            dense, bound, ":", color="tab:gray", lw=1.6, label=f"bound with θ = {hp.weight_decay:g} (eq. 6)"
        )
    shade_large_kappa(ax, params, h, low)
    ax.set(xscale="log", yscale="log", xlim=(low, high), xlabel="noise level σ", ylabel="stationary E f")
    diag = ", ".join(f"{v:g}" for v in h)
    ax.set_title(f"asymptotic loss vs σ at η = {params['lr']:g}, H = diag({diag})", fontsize=9)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="gray", lw=0.9, label="closed form, most accurate (κ ≤ 1)"),
        Line2D([], [], color="gray", lw=0.9, ls="--", label="closed form, paper-style (κ ≤ 1)"),
    ]
    shown = {m for b in blocks.values() for m in methods_of(b["points"])}
    handles += [
        Line2D([], [], marker=mk, mfc="none", color="gray", ls="none", label=method_style(m)["label"])
        for m, mk in SDE_MARKERS.items()
        if m in shown
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def fidelity_figure(blocks: dict[str, dict[str, Any]], params: dict[str, Any], h: np.ndarray) -> Figure:
    """Each SDE's stationary loss relative to its optimizer's, against σ (κ on the top axis)."""
    fig, ax = plt.subplots(figsize=(7.4, 4.2))
    sigmas = np.array(params["sigmas"], dtype=float)
    low, high = sigmas.min() / 1.5, sigmas.max() * 1.5
    for i, (name, block) in enumerate(blocks.items()):
        jitter = 10 ** (0.025 * (i - len(blocks) / 2))  # side by side, not on top of each other
        for method in methods_of(block["points"])[1:]:
            pts = [p for p in block["points"] if "stationary_rel_error" in p["fidelity"].get(method, {})]
            if not pts:
                continue
            x = np.array([p["sigma"] for p in pts]) * jitter
            y = np.array([p["fidelity"][method]["stationary_rel_error"] for p in pts]) * 100
            e = np.array([p["fidelity"][method]["stationary_rel_error_se"] for p in pts]) * 100
            ax.errorbar(
                x,
                y,
                yerr=e,
                fmt=SDE_MARKERS.get(method, "x") + "-",
                mfc="none",
                lw=0.7,
                ms=6,
                capsize=2,
                color=OPTIMIZER_COLORS.get(name),
                label=f"{name}: {method_style(method)['label']}",
            )
    ax.axhline(0.0, color="black", lw=0.6)
    shade_large_kappa(ax, params, h, low)
    scale = params["lr"] * float(h.max())

    def reciprocal(values: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return scale / np.asarray(values, dtype=float)

    top = ax.secondary_xaxis("top", functions=(reciprocal, reciprocal))
    top.set_xlabel("κ = η·max h/σ")
    ax.set(xscale="log", xlim=(low, high), xlabel="noise level σ")
    ax.set_ylabel("SDE / optimizer − 1 (%)\nstationary loss")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def settling_figure(curves: dict[tuple[str, float], dict[str, Recording]], params: dict[str, Any]) -> Figure:
    """E f over the run divided by its stationary value, at the smallest and the largest σ:
    every curve should sit at 1 from the start of the stationary window (dotted) on."""
    sigmas = sorted({sigma for _, sigma in curves})
    fig, axes = plt.subplots(1, len(sigmas), figsize=(4.6 * len(sigmas), 3.4), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        for (name, at), recordings in curves.items():
            if at != sigma:
                continue
            for method, rec in recordings.items():
                if rec.divergence is not None or len(rec.steps) < 2:
                    continue
                level = recording_mean(rec, "loss", params["burn_in"]).value
                if level <= 0:
                    continue
                ax.plot(
                    rec.steps / rec.steps[-1],
                    rec.mean("loss") / level,
                    color=OPTIMIZER_COLORS.get(name),
                    ls=method_style(method).get("linestyle", "-"),
                    lw=1.0,
                    label=f"{name} {method}",
                )
        ax.axvline(params["burn_in"], color="gray", lw=0.8, ls=":")
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.set_yscale("log")
        ax.set_ylim(0.1, None)
        ax.set_xlabel("fraction of the run (k / steps)")
        ax.set_title(f"σ = {sigma:g}, κ = {params['lr'] * max(params['hessian']) / sigma:.3g}", fontsize=9)
    axes[0][0].set_ylabel("E f / stationary E f")
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def point_table(name: str, points: list[dict[str, Any]]) -> list[str]:
    """Markdown table: σ, κ, steps, the optimizer's stationary loss, closed forms, SDE errors."""
    sdes = methods_of(points)[1:]
    forms = list(points[0]["closed_forms"]) if points else []
    header = ["σ", "κ", "steps", f"{name} E f ± SE", *forms, *(f"{m} rel. error" for m in sdes)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        opt = p.get("stationary_loss", {}).get("optimizer")
        cells = [f"{p['sigma']:.3g}", f"{p['kappa']:.3g}", str(p["steps"])]
        cells.append(f"{opt['mean']:.4g} ± {opt['stderr']:.2g}" if opt else "diverged")
        cells += ["—" if p["closed_forms"][k] is None else f"{p['closed_forms'][k]:.4g}" for k in forms]
        for m in sdes:
            f = p["fidelity"].get(m, {})
            if "stationary_rel_error" in f:
                cells.append(f"{f['stationary_rel_error']:+.1%} ± {f['stationary_rel_error_se']:.1%}")
            else:
                cells.append(f"diverged at step {f['diverged_step']}" if "diverged" in f else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def add_sigma_series(ctx: Context, name: str, points: list[dict[str, Any]]) -> None:
    """Rows ``stationary_loss`` against σ (in the column t): each method, then each closed form
    (method ``theory-<key>``, SE 0) where it exists."""
    panel = f"{name} stationary loss vs sigma"
    for method in methods_of(points):
        x, y, e = sweep(points, method)
        ctx.result.add_series(panel, method, x, "stationary_loss", y, e)
    for key in points[0]["closed_forms"]:
        pts = [p for p in points if p["closed_forms"][key] is not None]
        values = np.array([p["closed_forms"][key] for p in pts])
        sig = np.array([p["sigma"] for p in pts])
        ctx.result.add_series(panel, f"theory-{key}", sig, "stationary_loss", values, np.zeros_like(values))


@experiment(
    NAME,
    "asymptotic loss of SGD, SignSGD, RMSprop(W), Adam(W) vs σ over four decades, beside their SDEs",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    """docs/theory.md §5 "noise resilience": the stationary loss against σ, fitted slopes, SDE fidelity
    and κ."""
    params = ctx.params
    h, x0 = check_common(params)
    sigmas = sorted({float(s) for s in params["sigmas"]})
    if len(sigmas) < 2 or sigmas[0] <= 0:
        raise ExperimentError("--set sigmas=…: give at least two positive noise levels, e.g. 0.01,1,100")
    if not params["optimizers"]:
        raise ExperimentError("--set optimizers=…: name at least one, e.g. sgd,signsgd,adam,adamw")
    specs = {name: get_optimizer(name) for name in params["optimizers"]}
    hps = {name: hyperparameters(params, spec) for name, spec in specs.items()}
    models = {name: sde_models(spec, params) for name, spec in specs.items()}  # bad input fails here

    result = ctx.result
    blocks: dict[str, dict[str, Any]] = {}
    setting = {"hessian": h.tolist(), "x0": x0.tolist(), "noise": "gaussian, Σ = σ²I", "sigmas": sigmas}
    result.summary.update({"setting": setting, "optimizers": blocks, "divergences": []})
    curves: dict[tuple[str, float], dict[str, Recording]] = {}
    for name, spec in specs.items():
        hp = hps[name]
        block: dict[str, Any] = {"hyperparameters": vars(hp).copy(), "sde_models": list(models[name])}
        block["points"] = []
        blocks[name] = block
        for sigma in sigmas:
            entry, comparison = sigma_point(ctx, spec, hp, h, x0, sigma)
            block["points"].append(entry)
            result.summary["divergences"] += divergence_lines(f"{name} at σ={sigma:g}", comparison)
            if sigma in (sigmas[0], sigmas[-1]):
                curves[(name, sigma)] = comparison.recordings
        block["laws"] = fit_laws(spec, block["points"], params)
        add_sigma_series(ctx, name, block["points"])

    result.figures["loss_vs_sigma"] = loss_vs_sigma_figure(blocks, params, h, hps)
    result.figures["sde_fidelity"] = fidelity_figure(blocks, params, h)
    result.figures["settling"] = settling_figure(curves, params)
    write_report(ctx, blocks, hps, h, x0, sigmas)


def write_report(
    ctx: Context,
    blocks: dict[str, dict[str, Any]],
    hps: dict[str, Hyperparameters],
    h: np.ndarray,
    x0: np.ndarray,
    sigmas: Sequence[float],
) -> None:
    params, say = ctx.params, ctx.result.say
    kappas = [params["lr"] * float(h.max()) / s for s in sigmas]
    diag, start = ", ".join(f"{v:g}" for v in h), ", ".join(f"{v:g}" for v in x0)
    say(
        f"Quadratic f = ½ xᵀ diag({diag}) x from x₀ = ({start}), Gaussian noise Σ = σ²I, "
        f"η = {params['lr']:g}, β₁ = {params['beta1']:g}, β₂ = {params['beta2']:g}, ε = {params['eps']:g}, "
        f"θ = {params['weight_decay']:g} (AdamW, RMSpropW only); {params['paths']} paths; σ from "
        f"{sigmas[0]:g} to {sigmas[-1]:g}, so κ = η·max h/σ runs from {kappas[0]:.3g} "
        f"down to {kappas[-1]:.3g}."
    )
    say(
        f"Each run lasts twice its transient plus {params['settle']:g} relaxation times (SGD 1/(2h), "
        "SignSGD and Adam σ/h, AdamW 1/(h/σ + θ), plus the time Adam's v needs to forget the first "
        f"gradients); the stationary loss is the time average after {params['burn_in']:.0%} of the run, "
        "its SE over paths (see settling.png). In series.csv the panels '… stationary loss vs sigma' "
        "carry σ in the column t."
    )
    say("")
    say(f"## Which law held (slopes fitted where κ ≤ {params['kappa_fit']:g})")
    say("")
    for name, block in blocks.items():
        say(law_sentence(get_optimizer(name), block["laws"], block["points"], h, hps[name]))
    say("")
    say("## SDE fidelity (stationary loss of the SDE against the optimizer's)")
    say("")
    say(
        "docs/theory.md §3: at κ ≲ 0.1 the SDEs and closed forms apply; at κ ≳ 1 SignSGD lives on "
        "the lattice "
        "x₀ + ηℤ and its SDE cannot describe it. Here κ is large at small σ, so the SDE picture is "
        "expected to fail there; the closed forms too (their lines in the figure are drawn throughout)."
    )
    say("")
    for name, block in blocks.items():
        ctx.result.report.extend(fidelity_sentences(name, block["points"]))
    if ctx.result.summary["divergences"]:
        say("")
        say("## Divergences (the other methods finished)")
        say("")
        for line in ctx.result.summary["divergences"]:
            say(f"- **{line}**")
    say("")
    say("## Stationary loss per σ")
    for name, block in blocks.items():
        say("")
        say(f"### {name}")
        say("")
        ctx.result.report.extend(point_table(name, block["points"]))
