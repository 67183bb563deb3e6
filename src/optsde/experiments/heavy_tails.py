"""``heavy-tails``: optimizers under Student-t gradient noise (docs/theory.md §4, §8 "heavy tails").

The noise is ``Z = s·T_ν`` per coordinate on ``f = ½ xᵀ diag(h) x``.  For ν ≤ 2 it has no
variance: an optimizer whose step is linear in the gradient (SGD; ``spec.capabilities.
mean_under_heavy_tails`` is False) has iterates without a variance and a loss without a mean,
and its SDE does not exist.  For ν = 1 (Cauchy) SGD's stationary iterate is exactly Cauchy with
scale ``ηs/(1 − |1 − ηh|)`` (``s/h`` for ``ηh ≤ 1``), so a smaller η does not shrink it.  Sign
and adaptive steps are bounded: their loss has every moment for every ν, and SignSGD's SDE stays
defined through ``E sign(∇f + sT_ν) = 2F_ν(∇f/s) − 1`` (docs/theory.md §3, Student-t form).

Every stationary loss is reported as mean ± SE *and* median ± SE with quantiles; whether the
mean exists is said by the theory and measured from the tail (:func:`optsde.analysis.mean_exists`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from optsde.analysis import (
    AtMost,
    Check,
    Estimate,
    Matches,
    Within,
    check_run_design,
    grouped_quantile,
    hyperparameters_for,
    mean_exists,
    per_path,
    quadratic_setting,
    recommended_laws,
    recording_mean,
    run_steps,
    sde_fidelity_check,
    stationary_values,
)
from optsde.experiments.base import Context, ExperimentError, compare, experiment
from optsde.figures.noise import band_grid, loss_vs_nu_figure, nu_histograms, nu_table
from optsde.noise import StudentTNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.sde import Recording, loss_observable, record_steps, x_observable
from optsde.theory.predictions import FORMULA_TOLERANCE
from optsde.theory.signsgd import sign_slope

NAME = "heavy-tails"

DEFAULTS: dict[str, Any] = {
    "nus": [1.0, 2.0, 3.0, 10.0],
    "scale": 1.0,
    "optimizers": ["sgd", "signsgd", "adamw"],
    "hessian": [1.0, 2.0],
    "x0": [1.0, 1.0],
    "lr": 0.01,
    "beta1": 0.9,
    "beta2": 0.99,
    "eps": 1e-8,
    "weight_decay": 1.0,
    "paths": 1024,
    "settle": 3.0,
    "min_steps": 200,
    "max_steps": 100_000,
    "burn_in": 0.5,
    "quantiles": [0.1, 0.5, 0.9],
    "groups": 16,
}
"""``scale`` is ``s`` in ``Z = s·T_ν``; ``settle``: relaxation times per half run (a bounded step
relaxes at rate ``2f_ν(0)·h/s``, 0.64 h/s under Cauchy noise); ``groups``: the paths are split into
this many groups to give the quantiles a standard error."""

QUICK: dict[str, Any] = {"paths": 256}

SDE_KEYS = ("primary", "gaussian")
"""SDEs run beside each optimizer that has them: its primary model (``spec.capabilities.primary_sde``)
and SignSGD's Gaussian form of the same variance (Cor 3.3), to show what assuming Gaussian noise costs."""


def sde_models(spec: OptimizerSpec, nu: float) -> tuple[str, ...]:
    """The keys of :data:`SDE_KEYS` that ``spec`` has and that exist at ν: a model driven by the
    noise's covariance (``noise`` or ``variance``) needs ν > 2."""
    keys = dict.fromkeys(spec.capabilities.primary_sde if k == "primary" else k for k in SDE_KEYS)
    return tuple(
        k for k in keys if k in spec.sdes and (nu > 2 or not {"noise", "variance"} & spec.sdes[k].needs)
    )


def method_stats(
    rec: Recording, params: dict[str, Any], mean_finite: bool, se_reliable: bool
) -> dict[str, Any]:
    """Mean ± SE (time average after burn-in, SE over paths), quantiles ± SE (groups of paths) and
    whether the tail of the loss, one record per path, supports a finite mean."""
    stationary = recording_mean(rec, "loss", params["burn_in"])
    window = stationary_values(rec, "loss", params["burn_in"])
    groups, levels = min(params["groups"], window.shape[1]), params["quantiles"]
    quant = [grouped_quantile(window, q, groups) for q in (*levels, 0.5)]
    tail = mean_exists(per_path(rec, "loss")[-1])
    return {
        "mean": stationary.value,
        "stderr": stationary.se,
        "mean_finite": mean_finite,
        "se_reliable": se_reliable,
        "median": quant[-1].value,
        "median_se": quant[-1].se,
        "max_path_mean": float(window.mean(axis=0).max()),
        "quantiles": {f"{q:g}": e.value for q, e in zip(levels, quant, strict=False)},
        "quantiles_se": {f"{q:g}": e.se for q, e in zip(levels, quant, strict=False)},
        "mean_exists": asdict(tail),
    }


def nu_point(
    ctx: Context, spec: OptimizerSpec, hp: Hyperparameters, h: np.ndarray, x0: np.ndarray, nu: float
) -> tuple[dict[str, Any], dict[str, Recording], list[Check]]:
    """One optimizer and its SDEs at one ν: series rows, the summary's numbers and the checks."""
    params = ctx.params
    problem = NoisyProblem(Quadratic(ctx.tensor(h)), StudentTNoise(h.size, nu=nu, scale=params["scale"]))
    steps = run_steps(spec, h, params["scale"], hp, x0, params, slope=sign_slope("student-t", nu))
    label, at = f"{spec.name}-nu{nu:g}", f"ν={nu:g}"
    comparison = compare(
        ctx,
        spec,
        problem,
        hp,
        ctx.tensor(x0),
        steps=steps,
        paths=params["paths"],
        models=sde_models(spec, nu),
        record_at=record_steps(steps, 100),
        observables={"loss": loss_observable, "x": x_observable},
        label=label,
        burn_in=params["burn_in"],
    )
    # A linear filter of the noise has as many moments as the noise (ν − ε): E f needs ν > 2,
    # and the SE of its mean needs E f² < ∞, i.e. ν > 4.
    bounded = spec.capabilities.mean_under_heavy_tails
    mean_finite, se_reliable = bounded or nu > 2, bounded or nu > 4
    entry: dict[str, Any] = {"nu": nu, "steps": steps, "mean_finite": mean_finite, **comparison.summary()}
    laws = recommended_laws(spec, hp, h, x0, params["scale"], noise="student-t", nu=nu)
    entry["methods"], checks = {}, []
    for method, rec in comparison.recordings.items():
        ctx.result.add_recording(f"{spec.name} nu={nu:g}", rec, ("loss",))
        if rec.divergence is None and len(rec.steps) > 1:
            entry["methods"][method] = method_stats(rec, params, mean_finite, se_reliable)
    optimizer, stats = comparison.recordings["optimizer"], entry["methods"].get("optimizer")
    if stats is None:
        return entry, comparison.recordings, checks
    if not mean_finite:  # the theory says no mean: the tail must not contradict it
        index = Estimate(**stats["mean_exists"]["tail_index"])
        what = "tail index of f (Hill, one record per path), ≤ 1 without a finite mean"
        checks.append(Check(f"tail at {at}", index, None, AtMost(1.0), what))
    loss = Estimate(stats["mean"], stats["stderr"])
    if mean_finite and "stationary_loss" in laws and laws["stationary_loss"].valid:
        law = laws["stationary_loss"]
        entry["closed_form_mean"] = law.value
        text = f"mean against {law.formula}"
        checks.append(Check(f"E f at {at}", loss, law.value, Within(FORMULA_TOLERANCE), text))
    if "median_second_moment" in laws:  # the exact Cauchy law: median |x_i| = ηs/(1 − |1 − ηh_i|)
        window = np.abs(stationary_values(optimizer, "x", params["burn_in"]))
        for i, target in enumerate(np.sqrt(laws["median_second_moment"].per_coordinate)):
            median = grouped_quantile(window[..., i], 0.5, min(params["groups"], window.shape[1]))
            text = "against the exact Cauchy law's scale ηs/(1 − |1 − ηh|)"
            checks.append(Check(f"median |x_{i + 1}| at {at}", median, float(target), Matches(), text))
    if "median_loss" in laws:
        median, law = Estimate(stats["median"], stats["median_se"]), laws["median_loss"]
        checks.append(Check(f"median f at {at}", median, law.value, Matches(), law.formula))
    # The SDE is held to the optimizer where the theory claims a stationary law under this noise (an
    # adaptive method's v fluctuates under ν ≤ 4 noise, which its SDE's Gaussian noise does not).
    primary, valid = (
        f"sde-{spec.capabilities.primary_sde}",
        "stationary_loss" in laws and laws["stationary_loss"].valid,
    )
    fid = entry["fidelity"].get(primary, {}) if valid else {}
    sde = sde_fidelity_check(f"{primary} at {at}", fid, FORMULA_TOLERANCE, "SDE / optimizer mean loss")
    checks += [sde] if sde else []
    return entry, comparison.recordings, checks


def add_nu_series(ctx: Context, name: str, points: list[dict[str, Any]]) -> None:
    """Rows ``median_loss`` and ``mean_loss`` against ν (in the column t) per method; no mean
    row where the mean does not exist."""
    for method in dict.fromkeys(m for p in points for m in p["methods"]):
        stats = [(p["nu"], p["methods"][method]) for p in points if method in p["methods"]]
        for metric, key, se_key in (("median_loss", "median", "median_se"), ("mean_loss", "mean", "stderr")):
            rows = [(nu, s[key], s[se_key]) for nu, s in stats if metric == "median_loss" or s["mean_finite"]]
            nu, mean, se = (np.array([row[i] for row in rows]) for i in range(3))
            ctx.result.add_series(f"{name} stationary loss vs nu", method, nu, metric, mean, se)


@experiment(
    NAME,
    "Student-t noise ν ∈ {1, 2, 3, 10}: SignSGD, AdamW stay bounded; SGD shown honestly (median, quantiles)",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    """docs/theory.md §3-§4: heavy-tailed noise; optimizers beside their SDEs; SGD's missing moments."""
    params, result = ctx.params, ctx.result
    h, x0 = quadratic_setting(params["hessian"], params["x0"])
    check_run_design(params)
    nus = sorted({float(nu) for nu in params["nus"]})
    if not nus or nus[0] <= 0:
        raise ExperimentError("--set nus=…: give positive degrees of freedom, e.g. 1,2,3,10")
    if not params["scale"] > 0:
        raise ExperimentError(f"--set scale={params['scale']}: the noise scale s must be positive")
    if params["groups"] < 2 or params["groups"] > params["paths"]:
        raise ExperimentError("--set groups=…: need 2 ≤ groups ≤ paths for the quantiles' standard errors")
    if not all(0.0 < q < 1.0 for q in params["quantiles"]):
        raise ExperimentError("--set quantiles=…: give levels strictly between 0 and 1, e.g. 0.1,0.5,0.9")
    specs = {name: get_optimizer(name) for name in params["optimizers"]}
    hps = {name: hyperparameters_for(spec, params) for name, spec in specs.items()}
    blocks: dict[str, dict[str, Any]] = {}
    setting = {"hessian": h.tolist(), "x0": x0.tolist(), "noise": "student-t s·T_nu", "nus": nus}
    result.summary.update({"setting": setting, "optimizers": blocks, "divergences": []})
    curves: dict[tuple[str, float], dict[str, Recording]] = {}
    for name, spec in specs.items():
        blocks[name] = {"hyperparameters": vars(hps[name]).copy(), "points": []}
        for nu in nus:
            entry, curves[(name, nu)], checks = nu_point(ctx, spec, hps[name], h, x0, nu)
            blocks[name]["points"].append(entry)
            result.summary["divergences"] += [f"{name} at ν={nu:g}: {line}" for line in entry["divergences"]]
            result.add_checks(name, checks)
        add_nu_series(ctx, name, blocks[name]["points"])
    result.figures["loss_vs_nu"] = loss_vs_nu_figure(blocks, nus, params["quantiles"])
    result.figures["loss_distribution"] = nu_histograms(curves, nus, params["burn_in"])
    with_sde = {
        (name, f"ν = {nu:g}"): recs for (name, nu), recs in curves.items() if sde_models(specs[name], 10)
    }
    if with_sde:
        empty = "no SDE: the noise has\nno variance (ν ≤ 2)"
        result.figures["sde_vs_optimizer"] = band_grid(with_sde, empty, "f (mean, band ± std)")
    write_report(ctx, blocks, h)


def write_report(ctx: Context, blocks: dict[str, dict[str, Any]], h: np.ndarray) -> None:
    """The setting, what held in words with numbers (the verdicts: the checks) and a table per ν."""
    params, say, qs = ctx.params, ctx.result.say, ctx.params["quantiles"]
    kappa = params["lr"] * float(h.max()) / params["scale"]
    say(
        f"Quadratic f = ½ xᵀ diag({', '.join(f'{v:g}' for v in h)}) x, Student-t noise s·T_ν with "
        f"s = {params['scale']:g}, η = {params['lr']:g}, κ = η·max h/s = {kappa:.3g}; "
        f"β₁ = {params['beta1']:g}, β₂ = {params['beta2']:g}, θ = {params['weight_decay']:g} (decoupled "
        f"decay only); {params['paths']} paths. Stationary numbers pool the second half of each run: the "
        f"mean is the time average (SE over paths), the median and the {qs[0]:g}/{qs[-1]:g} quantiles are "
        f"over all (time, path) values, their SE from {params['groups']} groups of paths. SDEs driven by "
        "the noise's covariance run only for ν > 2 (with Gaussian noise of the same variance); SignSGD's "
        "SDE (Thm 3.2) takes E sign from the noise itself, the Student-t form 2F_ν(∇f/s) − 1, at every ν; "
        "sde-gaussian is Cor 3.3's form with the same variance."
    )
    say("")
    say("## What held")
    for name, block in blocks.items():
        stats = [(p["nu"], p["methods"]["optimizer"]) for p in block["points"] if "optimizer" in p["methods"]]
        say("")
        say(
            f"- **{name}**: median stationary loss "
            + ", ".join(f"ν={nu:g}: {s['median']:.3g}" for nu, s in stats)
        )
        for nu, s in stats:
            mean, median = Estimate(s["mean"], s["stderr"]), Estimate(s["median"], s["median_se"])
            if not s["mean_finite"]:
                say(
                    f"  - ν = {nu:g}: the noise has no variance and {name}'s step is linear in it, so its "
                    f"loss has no mean; measured: {s['mean_exists']['reason']}. The sample mean {mean} is "
                    f"set by the largest draws (one path's time average reached {s['max_path_mean']:.3g}); "
                    f"the median {median} is the meaningful number."
                )
            elif not s["se_reliable"]:
                say(
                    f"  - ν = {nu:g}: the mean {mean} exists; f has no variance (E x⁴ = ∞), so its SE is low."
                )
    if ctx.result.summary["divergences"]:
        say("")
        say("## Divergences (the other methods finished)")
        say("")
        for line in ctx.result.summary["divergences"]:
            say(f"- **{line}**")
    say("")
    say("## Stationary loss per ν")
    say("")
    for line in nu_table(blocks, qs):
        say(line)
