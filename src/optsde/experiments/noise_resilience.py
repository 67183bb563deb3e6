"""``noise-resilience``: asymptotic loss against the noise level σ at one learning rate
(docs/theory.md §5 "noise resilience", §8 the predictions and their regimes).

On ``f = ½ xᵀ diag(h) x`` with Gaussian noise ``Σ = σ²I`` and a fixed η the stationary loss
grows like ``σ^e``, ``e = spec.noise_exponent(hp)``: 2 for SGD, 1 for SignSGD, Adam and RMSprop,
0 (bounded, the paper's eq. 6) for AdamW and RMSpropW with θ > 0.  Every optimizer runs beside
its SDEs at every σ.  ``κ = η·max h/σ`` (docs/theory.md §3) shrinks as σ grows: the slopes are
fitted where ``κ ≤ kappa_fit``; the theory's recommended law (exact for SGD and SignSGD, the
self-consistent discrete law for the adaptive methods) is checked at every σ where it claims to hold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optsde.analysis import (
    AtMost,
    Check,
    Estimate,
    InRange,
    Within,
    check_run_design,
    hyperparameters_for,
    loglog_fit,
    loglog_slope,
    quadratic_setting,
    recommended_laws,
    recording_mean,
    run_steps,
    sde_fidelity_check,
)
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.figures.noise import (
    point_loss,
    point_methods,
    settling_curves,
    settling_figure,
    sigma_figures,
    sigma_table,
)
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.sde import loss_observable, record_steps
from optsde.theory.predictions import FORMULA_TOLERANCE, regime_statement

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
    "sdes": ["primary", "paper"],
    "substeps": 1,
    "paths": 512,
    "settle": 3.0,
    "min_steps": 200,
    "max_steps": 100_000,
    "burn_in": 0.5,
    "kappa_fit": 0.1,
}
"""``sdes``: SDE keys run beside each optimizer that has them (``primary``: the family's choice,
``spec.capabilities.primary_sde``; ``none``: no SDE).  ``settle``: relaxation times per half run
(the second half is the stationary window); ``kappa_fit``: slopes are fitted where ``κ ≤ kappa_fit``."""

QUICK: dict[str, Any] = {
    "sigmas": [0.01, 0.1, 1.0, 3.16, 10.0, 100.0],
    "optimizers": ["sgd", "signsgd", "adam", "adamw"],
    "sdes": ["primary"],
    "paths": 128,
}


def sde_models(spec: OptimizerSpec, wanted: list[str]) -> tuple[str, ...]:
    """The keys of ``wanted`` that ``spec`` has, ``primary`` resolved, each once."""
    keys = [spec.capabilities.primary_sde if key == "primary" else key for key in wanted]
    return tuple(dict.fromkeys(key for key in keys if key in spec.sdes))


def theory(spec: OptimizerSpec, hp: Hyperparameters, h: np.ndarray, x0: np.ndarray, sigma: float) -> dict:
    """The recommended stationary loss and loss bound at σ (docs/theory.md §8), None where none."""
    laws = recommended_laws(spec, hp, h, x0, sigma)
    chosen = {"theory": laws.get("stationary_loss"), "bound": laws.get("stationary_loss_bound")}
    return {
        key: p and {"formula": p.formula, "value": p.value, "valid": p.valid} for key, p in chosen.items()
    }


def sigma_point(
    ctx: Context, spec: OptimizerSpec, hp: Hyperparameters, h: np.ndarray, x0: np.ndarray, sigma: float
) -> tuple[dict[str, Any], Comparison]:
    """One optimizer and its SDEs at one σ: recordings into the series, numbers for the summary."""
    params = ctx.params
    problem = NoisyProblem(Quadratic(ctx.tensor(h)), GaussianNoise(h.size, scale=sigma))
    steps = run_steps(spec, h, sigma, hp, x0, params)
    comparison = compare(
        ctx,
        spec,
        problem,
        hp,
        ctx.tensor(x0),
        steps=steps,
        paths=params["paths"],
        models=sde_models(spec, params["sdes"]),
        substeps=params["substeps"],
        record_at=record_steps(steps, 100),
        observables={"loss": loss_observable},
        label=f"{spec.name}-sigma{sigma:g}",
        burn_in=params["burn_in"],
    )
    entry = {"sigma": sigma, "steps": steps, "steps_capped": steps == params["max_steps"]}
    entry |= theory(spec, hp, h, x0, sigma) | comparison.summary() | {"stationary_loss": {}}
    for method, rec in comparison.recordings.items():
        ctx.result.add_recording(f"{spec.name} sigma={sigma:g}", rec, ("loss",))
        if rec.divergence is None:
            stationary = recording_mean(rec, "loss", params["burn_in"])
            entry["stationary_loss"][method] = {"mean": stationary.value, "stderr": stationary.se}
    return entry, comparison


def fit_laws(
    spec: OptimizerSpec, hp: Hyperparameters, points: list[dict], kappa_fit: float
) -> tuple[dict, list]:
    """The log-log slope over ``κ ≤ kappa_fit`` and the local slope over the two largest σ, checked
    against the σ-law, the recommended law's slope over the same σ and, if bounded, its bound."""
    exponent = spec.noise_exponent(hp)
    usable = [p for p in points if p["kappa"] <= kappa_fit and point_loss(p) is not None]
    laws: dict[str, Any] = {"law_exponent": exponent, "kappa_fit": kappa_fit, "fit": None}
    if len(usable) < 2:
        return laws, []
    sig, loss = [p["sigma"] for p in usable], [point_loss(p) for p in usable]
    fit, top = loglog_fit(sig, loss), loglog_fit(sig[-2:], loss[-2:])
    laws["fit"] = {"slope": fit.slope.value, "slope_se": fit.slope.se, "chi2_per_dof": fit.chi2_per_dof}
    laws["fit"] |= {"points": fit.points, "sigmas": sig}
    laws["top_slope"] = {"slope": top.slope.value, "slope_se": top.slope.se}
    where = f"log-log slope over σ ∈ [{sig[0]:.3g}, {sig[-1]:.3g}] (κ ≤ {kappa_fit:g})"
    near = f"slope between σ = {sig[-2]:.3g} and {sig[-1]:.3g}: nearer σ^{exponent} than any other power"
    checks = [Check("local slope", top.slope, None, InRange(exponent - 0.5, exponent + 0.5), near)]
    if exponent > 0:
        checks.append(
            Check("slope", fit.slope, exponent, Within(FORMULA_TOLERANCE), f"{where}, σ^{exponent} law")
        )
    if all(p["theory"] and p["theory"]["valid"] for p in usable):
        laws["closed_form_slope"] = loglog_slope(sig, [p["theory"]["value"] for p in usable]).value
        # The law is valid within FORMULA_TOLERANCE at each σ, so its slope is good to 2·tol/ln(σ₁/σ₀).
        tol = 2 * FORMULA_TOLERANCE / math.log(sig[-1] / sig[0])
        text = f"{where} minus the recommended law's (its points are good to {FORMULA_TOLERANCE:.0%})"
        checks.append(
            Check("slope vs theory", fit.slope - laws["closed_form_slope"], None, InRange(-tol, tol), text)
        )
    if exponent == 0 and usable[-1]["bound"]:
        bound = usable[-1]["bound"]
        text = f"E f at σ = {sig[-1]:.3g} under {bound['formula']}"
        checks.append(Check("bounded", loss[-1], None, AtMost(bound["value"]), text))
    return laws, checks


def point_checks(spec: OptimizerSpec, points: list[dict[str, Any]], kappa_fit: float) -> list[Check]:
    """At every σ: E f against the recommended law where it claims to hold; the primary SDE's
    stationary loss against the optimizer's where ``κ ≤ kappa_fit``."""
    checks, primary = [], f"sde-{spec.capabilities.primary_sde}"
    for p in points:
        loss, law, fid, at = point_loss(p), p["theory"], p["fidelity"].get(primary, {}), f"σ={p['sigma']:g}"
        if loss is not None and law and law["valid"]:
            text = f"stationary loss (κ = {p['kappa']:.3g}) against {law['formula']}"
            checks.append(Check(f"E f at {at}", loss, law["value"], Within(FORMULA_TOLERANCE), text))
        sde = sde_fidelity_check(
            f"{primary} at {at}", fid, FORMULA_TOLERANCE, f"SDE / optimizer E f (κ = {p['kappa']:.3g})"
        )
        checks += [sde] if sde and p["kappa"] <= kappa_fit else []
    return checks


def add_sigma_series(ctx: Context, name: str, points: list[dict[str, Any]]) -> None:
    """Rows ``stationary_loss`` against σ (in the column t) per method, and the recommended law
    (method ``theory``, SE 0) where it has a value."""
    panel = f"{name} stationary loss vs sigma"
    methods = point_methods(points)
    rows = {m: [(p["sigma"], point_loss(p, m)) for p in points if point_loss(p, m)] for m in methods}
    rows["theory"] = [(p["sigma"], Estimate(p["theory"]["value"], 0.0)) for p in points if p["theory"]]
    for method, kept in rows.items():
        sig, est = np.array([s for s, _ in kept]), [e for _, e in kept]
        values, errors = np.array([e.value for e in est]), np.array([e.se for e in est])
        ctx.result.add_series(panel, method, sig, "stationary_loss", values, errors)


@experiment(
    NAME,
    "asymptotic loss of SGD, SignSGD, RMSprop(W), Adam(W) vs σ over four decades, beside their SDEs",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    """docs/theory.md §5 "noise resilience": the stationary loss against σ, fitted slopes, SDE fidelity."""
    params, result = ctx.params, ctx.result
    h, x0 = quadratic_setting(params["hessian"], params["x0"])
    check_run_design(params)
    sigmas = sorted({float(s) for s in params["sigmas"]})
    if len(sigmas) < 2 or sigmas[0] <= 0:
        raise ExperimentError("--set sigmas=…: give at least two positive noise levels, e.g. 0.01,1,100")
    specs = {name: get_optimizer(name) for name in params["optimizers"]}
    known = {key for spec in specs.values() for key in spec.sdes} | {"primary", "none"}
    if unknown := [key for key in params["sdes"] if key not in known]:
        raise ExperimentError(
            f"--set sdes: unknown SDE {unknown[0]!r}; choose from {', '.join(sorted(known))}"
        )
    hps = {name: hyperparameters_for(spec, params) for name, spec in specs.items()}
    blocks: dict[str, dict[str, Any]] = {}
    setting = {"hessian": h.tolist(), "x0": x0.tolist(), "noise": "gaussian, Σ = σ²I", "sigmas": sigmas}
    result.summary.update({"setting": setting, "optimizers": blocks, "divergences": []})
    curves: dict[str, list] = {}
    for name, spec in specs.items():
        block = blocks[name] = {"hyperparameters": vars(hps[name]).copy(), "points": []}
        block["sde_models"] = list(sde_models(spec, params["sdes"]))
        for sigma in sigmas:
            entry, comparison = sigma_point(ctx, spec, hps[name], h, x0, sigma)
            block["points"].append(entry)
            result.summary["divergences"] += [f"{name} at σ={sigma:g}: {d}" for d in comparison.divergences()]
            if sigma in (sigmas[0], sigmas[-1]):
                title = f"σ = {sigma:g}, κ = {comparison.kappa:.3g}"
                curves.setdefault(title, []).extend(settling_curves(name, comparison.recordings))
        block["laws"], law_checks = fit_laws(spec, hps[name], block["points"], params["kappa_fit"])
        result.add_checks(f"{name}: noise law", law_checks)
        result.add_checks(f"{name}: per σ", point_checks(spec, block["points"], params["kappa_fit"]))
        add_sigma_series(ctx, name, block["points"])
    result.figures.update(sigma_figures(blocks, h, params["lr"], params["kappa_fit"]))
    result.figures["settling"] = settling_figure(curves, params["burn_in"])
    write_report(ctx, blocks, h, x0, sigmas)


def write_report(ctx: Context, blocks: dict, h: np.ndarray, x0: np.ndarray, sigmas: list[float]) -> None:
    """The setting, the laws and the fidelity in words with their numbers; the verdicts are the checks."""
    params, say = ctx.params, ctx.result.say
    kappas = [params["lr"] * float(h.max()) / s for s in sigmas]
    diag, start = ", ".join(f"{v:g}" for v in h), ", ".join(f"{v:g}" for v in x0)
    say(
        f"Quadratic f = ½ xᵀ diag({diag}) x from x₀ = ({start}), Gaussian noise Σ = σ²I, "
        f"η = {params['lr']:g}, β₁ = {params['beta1']:g}, β₂ = {params['beta2']:g}, ε = {params['eps']:g}, "
        f"θ = {params['weight_decay']:g} (decoupled decay only); {params['paths']} paths; σ from "
        f"{sigmas[0]:g} to {sigmas[-1]:g}, so κ = η·max h/σ runs from {kappas[0]:.3g} down to "
        f"{kappas[-1]:.3g}. Each run lasts twice its transient plus {params['settle']:g} relaxation times; "
        f"the stationary loss is the time average after {params['burn_in']:.0%} of the run over pairs of "
        "consecutive steps drawn in strata (a period-2 orbit cannot alias), its SE over paths "
        "(settling.png). In series.csv the panels '… stationary loss vs sigma' carry σ in the column t; "
        "method 'theory' is the recommended law (docs/theory.md §8)."
    )
    say("")
    say(f"## Laws (slopes fitted where κ ≤ {params['kappa_fit']:g})")
    say("")
    for name, block in blocks.items():
        laws, fit, last = block["laws"], block["laws"]["fit"], block["points"][-1]
        if fit is None:
            say(f"- **{name}**: fewer than two σ with κ ≤ {params['kappa_fit']:g} and a result; no slope.")
            continue
        top = Estimate(laws["top_slope"]["slope"], laws["top_slope"]["slope_se"])
        text = (
            f"- **{name}** (law σ^{laws['law_exponent']}): slope {Estimate(fit['slope'], fit['slope_se'])} "
        )
        text += f"(χ²/dof {fit['chi2_per_dof']:.2g}), over the two largest σ {top}"
        if "closed_form_slope" in laws:
            text += f"; the recommended law's slope {laws['closed_form_slope']:.3f}"
        if point_loss(last) and last["theory"]:
            ratio = point_loss(last) / last["theory"]["value"]
            text += f". At σ = {last['sigma']:g}, E f is {ratio} × {last['theory']['formula']}"
        say(text + ".")
    say("")
    say("## Regimes at the smallest and the largest κ (docs/theory.md §8)")
    say("")
    for name in blocks:
        say(f"- {name}: {regime_statement(name, kappas[0])} {regime_statement(name, kappas[-1])}")
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
        for line in sigma_table(block["points"]):
            say(line)
