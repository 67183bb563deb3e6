"""``heavy-tails``: SGD, SignSGD and AdamW under Student-t gradient noise (docs/theory.md §4, §7 "Beyond
the figures").

The noise is ``Z = s·T_ν`` per coordinate on ``f = ½ xᵀ diag(h) x``.  For ν ≤ 2 it has
no variance: SGD's SDE does not exist, and SGD itself, being linear in the noise,
has iterates without a variance and a loss without a mean.  For ν = 1 (Cauchy) the
stationary SGD iterate is exactly Cauchy with scale ``η s Σ_k |1 − ηh|^k = s/h`` at any
``η ≤ 1/h``, so a smaller learning rate does not shrink it; the experiment checks that
``median |x_i| = s/h_i``.  SignSGD moves by ±η whatever the gradient, and its SDE stays
well defined through ``E sign(∇f + sT_ν) = 2F_ν(∇f/s) − 1`` (docs/theory.md §3, Student-t form);
AdamW's step ``m̂/√v̂`` is bounded too.  Both settle at a bounded loss for every ν.

Because the SGD loss can have no mean, every stationary loss is reported as mean ± SE
*and* median ± SE with quantiles, pooled over the stationary window and the paths.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from optsde.analysis import recording_mean
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.experiments.noise_resilience import (
    OPTIMIZER_COLORS,
    check_common,
    divergence_lines,
    hyperparameters,
    pooled_values,
    run_length,
    stratified_steps,
)
from optsde.noise import StudentTNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.optimizers.signsgd import student_t_sde
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.report import method_style
from optsde.sde import Recording, SDERunner, loss_observable, x_observable
from optsde.theory.sgd import sgd_stationary_loss

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
"""``scale`` is ``s`` in ``Z = s·T_ν``; ``groups``: the paths are split into this many
independent groups to give the quantiles a standard error (batch means)."""

QUICK: dict[str, Any] = {"paths": 256}

LINEAR_IN_NOISE = {"sgd"}
"""Optimizers whose stationary iterate is a linear filter of the noise: their loss has a
mean only if the noise has a variance (ν > 2).  Sign and adaptive steps are bounded by
a constant times η, so their stationary loss has every moment."""


def sde_runners(spec: OptimizerSpec, nu: float) -> tuple[tuple[str, ...], list[SDERunner]]:
    """SDE models to run beside ``spec`` at ν: keys of ``spec.sdes`` and extra runners.

    SignSGD: its Student-t SDE at every ν, and for ν > 2 the Gaussian-form SDE (Cor 3.3)
    with the variance-matched scale, to show what assuming Gaussian noise costs.  SGD and
    the adaptive methods: their SDEs need ``Σ``, so only for ν > 2 (the paper's for SGD,
    the refined one for the adaptive methods, both with Gaussian noise of the same variance).
    """
    finite = nu > 2
    if spec.name == "signsgd":
        return (("gaussian",) if finite else ()), [SDERunner(student_t_sde(nu))]
    key = "paper" if spec.name == "sgd" else "refined"
    return ((key,) if finite and key in spec.sdes else ()), []


def group_quantiles(values: np.ndarray, quantiles: list[float], groups: int) -> dict[str, list[float]]:
    """Quantiles of the pooled stationary values ``(T, P)`` and their standard errors.

    Paths are independent, times within a path are not; so the paths are split into
    ``groups`` groups, each group's pooled quantile is one sample, and the SE is their
    spread over √groups (batch means).  The estimate itself uses every value.
    """
    pooled = np.quantile(values, quantiles)
    parts = np.array_split(np.arange(values.shape[1]), min(groups, values.shape[1]))
    per_group = np.array([np.quantile(values[:, idx], quantiles) for idx in parts])
    se = per_group.std(axis=0, ddof=1) / math.sqrt(len(parts))
    return {"values": pooled.tolist(), "stderr": se.tolist()}


def method_stats(
    rec: Recording, params: dict[str, Any], mean_finite: bool, se_reliable: bool
) -> dict[str, Any]:
    """Mean ± SE (time average after burn-in, SE over paths) and quantiles ± SE of the loss.

    ``se_reliable`` is False where the loss has a mean but no variance: the SE of the mean
    is then computed all the same, but it understates the uncertainty.
    """
    stationary = recording_mean(rec, "loss", params["burn_in"])
    window = pooled_values(rec, "loss", params["burn_in"])
    quant = group_quantiles(window, params["quantiles"], params["groups"])
    median = group_quantiles(window, [0.5], params["groups"])
    return {
        "mean": stationary.value,
        "stderr": stationary.se,
        "mean_finite": mean_finite,
        "se_reliable": se_reliable,
        "median": median["values"][0],
        "median_se": median["stderr"][0],
        "quantiles": dict(zip((f"{q:g}" for q in params["quantiles"]), quant["values"], strict=True)),
        "quantiles_se": dict(zip((f"{q:g}" for q in params["quantiles"]), quant["stderr"], strict=True)),
        "max_path_mean": float(window.mean(axis=0).max()),
    }


def cauchy_check(rec: Recording, h: np.ndarray, scale: float, params: dict[str, Any]) -> dict[str, Any]:
    """SGD at ν = 1: ``median |x_i| · h_i / s`` per coordinate, predicted to be exactly 1.

    ``x = −ηs Σ_k (1 − ηh)^k T_k`` with ``T_k`` standard Cauchy is Cauchy with scale
    ``ηs Σ_k |1 − ηh|^k = s/h`` (for ``ηh ≤ 1``), and the median of ``|Cauchy(c)|`` is ``c``.
    """
    window = np.abs(pooled_values(rec, "x", params["burn_in"])) * (h / scale)
    ratios = [group_quantiles(window[..., i], [0.5], params["groups"]) for i in range(h.size)]
    return {
        "median_abs_x_times_h_over_s": [r["values"][0] for r in ratios],
        "stderr": [r["stderr"][0] for r in ratios],
        "predicted": 1.0,
        "valid": bool((params["lr"] * h <= 1.0).all()),
    }


def nu_point(
    ctx: Context,
    spec: OptimizerSpec,
    hp: Hyperparameters,
    h: np.ndarray,
    x0: np.ndarray,
    nu: float,
) -> tuple[dict[str, Any], Comparison]:
    """One optimizer and its SDEs at one ν: series rows and the numbers of the summary."""
    params = ctx.params
    scale = params["scale"]
    problem = NoisyProblem(Quadratic(ctx.tensor(h)), StudentTNoise(h.size, nu=nu, scale=scale))
    steps = run_length(spec, h, scale, hp, x0, params)
    label = f"{spec.name}-nu{nu:g}"
    models, extra = sde_runners(spec, nu)
    comparison = compare(
        ctx,
        spec,
        problem,
        hp,
        ctx.tensor(x0),
        steps=steps,
        paths=params["paths"],
        models=models,
        extra_models=extra,
        record_at=stratified_steps(ctx, label, steps, 100),
        observables={"loss": loss_observable, "x": x_observable},
        label=label,
        burn_in=params["burn_in"],
    )
    # A linear filter of the noise has as many moments as the noise (ν − ε): E f needs
    # ν > 2, and its standard error needs E f² < ∞, i.e. ν > 4.
    linear = spec.name in LINEAR_IN_NOISE
    mean_finite, se_reliable = nu > 2 or not linear, nu > 4 or not linear
    entry: dict[str, Any] = {"nu": nu, "steps": steps, "mean_finite": mean_finite, **comparison.summary()}
    entry["methods"] = {}
    panel = f"{spec.name} nu={nu:g}"
    for method, rec in comparison.recordings.items():
        ctx.result.add_recording(panel, rec, ("loss",))
        if rec.divergence is None and len(rec.steps) > 1:
            entry["methods"][method] = method_stats(rec, params, mean_finite, se_reliable)
    optimizer = comparison.recordings["optimizer"]
    if spec.name == "sgd" and optimizer.divergence is None:
        if nu > 2:
            matched = scale * math.sqrt(nu / (nu - 2.0))  # the Gaussian scale with the same variance
            entry["closed_form_mean"] = sgd_stationary_loss(h, matched, hp.lr)
        if nu == 1.0:
            entry["cauchy_check"] = cauchy_check(optimizer, h, scale, params)
    return entry, comparison


def loss_vs_nu_figure(blocks: dict[str, dict[str, Any]], nus: list[float]) -> Figure:
    """Median (filled, bars: the outer quantiles) and mean (hollow, where it exists) against ν."""
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    positions = np.arange(len(nus))
    for i, (name, block) in enumerate(blocks.items()):
        offset = 0.12 * (i - (len(blocks) - 1) / 2)
        color = OPTIMIZER_COLORS.get(name)
        for j, point in enumerate(block["points"]):
            stats = point["methods"].get("optimizer")
            if stats is None:
                ax.annotate("diverged", (positions[j] + offset, 1.0), color=color, fontsize=7, rotation=90)
                continue
            q = list(stats["quantiles"].values())
            x = positions[j] + offset
            ax.plot([x, x], [q[0], q[-1]], color=color, lw=1.2)
            ax.plot(x, stats["median"], "o", color=color, label=f"{name} median" if j == 0 else None)
            if stats["mean_finite"]:
                ax.plot(
                    x, stats["mean"], "D", mfc="none", color=color, label=f"{name} mean" if j == 0 else None
                )
            else:
                ax.annotate(
                    "no mean", (x, q[-1]), textcoords="offset points", xytext=(2, 4), fontsize=7, color=color
                )
    ax.set_yscale("log")
    ax.set_xticks(positions, [f"ν = {nu:g}" for nu in nus])
    ax.set_ylabel("stationary f (bars: pooled quantiles)")
    ax.set_title("stationary loss under Student-t noise s·T_ν (bars: outer quantiles)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def distribution_figure(
    curves: dict[tuple[str, float], dict[str, Recording]], nus: list[float], burn_in: float
) -> Figure:
    """Histograms of log₁₀ f over the stationary window, one panel per ν, each optimizer's."""
    fig, axes = plt.subplots(1, len(nus), figsize=(3.2 * len(nus), 3.0), squeeze=False, sharey=True)
    for ax, nu in zip(axes[0], nus, strict=True):
        samples = {}
        for (name, at), recordings in curves.items():
            rec = recordings["optimizer"]
            if at == nu and rec.divergence is None and len(rec.steps) > 1:
                values = pooled_values(rec, "loss", burn_in).ravel()
                samples[name] = np.log10(values[values > 0])
        if not samples:
            continue
        # SignSGD started on the lattice through 0 visits f ≈ 1e-32 now and then: values more
        # than a decade below every 1% quantile are clipped into the first bin.
        low = min(np.quantile(v, 0.01) for v in samples.values()) - 1.0
        high = max(v.max() for v in samples.values())
        for name, values in samples.items():
            ax.hist(
                np.clip(values, low, None),
                bins=60,
                range=(low, high),
                density=True,
                histtype="step",
                color=OPTIMIZER_COLORS.get(name),
                label=name,
            )
        ax.set_title(f"ν = {nu:g}", fontsize=9)
        ax.set_xlabel("log₁₀ f (stationary; first bin: all below)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def signsgd_figure(curves: dict[tuple[str, float], dict[str, Recording]], nus: list[float]) -> Figure:
    """SignSGD against its Student-t SDE (and the Gaussian-form SDE for ν > 2): E f over time ± SE."""
    fig, axes = plt.subplots(1, len(nus), figsize=(3.2 * len(nus), 3.0), squeeze=False)
    for ax, nu in zip(axes[0], nus, strict=True):
        for method, rec in curves.get(("signsgd", nu), {}).items():
            if len(rec.steps) < 2:
                continue
            mean, se = rec.mean("loss"), rec.stderr("loss")
            style = method_style(method)
            line = ax.plot(rec.times, mean, lw=1.0, **style)[0]
            ax.fill_between(rec.times, mean - 2 * se, mean + 2 * se, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_yscale("log")
        ax.set_title(f"SignSGD, ν = {nu:g}", fontsize=9)
        ax.set_xlabel("t = kη", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("E f (band: ± 2 SE)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def loss_cells(stats: dict[str, Any] | None) -> list[str]:
    """Table cells: mean ± SE (or why not), median ± SE, outer quantiles."""
    if stats is None:
        return ["diverged", "—", "—"]
    mean = f"{stats['mean']:.4g} ± {stats['stderr']:.2g}"
    if not stats["mean_finite"]:
        mean = f"no mean (sample mean {stats['mean']:.3g} is meaningless)"
    q = list(stats["quantiles"].values())
    return [mean, f"{stats['median']:.4g} ± {stats['median_se']:.2g}", f"{q[0]:.3g} – {q[-1]:.3g}"]


def write_report(ctx: Context, blocks: dict[str, dict[str, Any]], h: np.ndarray) -> None:
    params, say, report = ctx.params, ctx.result.say, ctx.result.report
    qs = params["quantiles"]
    kappa = params["lr"] * float(h.max()) / params["scale"]
    say(
        f"Quadratic f = ½ xᵀ diag({', '.join(f'{v:g}' for v in h)}) x, Student-t noise s·T_ν with "
        f"s = {params['scale']:g}, η = {params['lr']:g}, κ = η·max h/s = {kappa:.3g}; AdamW with "
        f"β₁ = {params['beta1']:g}, β₂ = {params['beta2']:g}, θ = {params['weight_decay']:g}; "
        f"{params['paths']} paths. Stationary numbers pool the second half of each run: the mean is the "
        f"time average (SE over paths), the median and the {qs[0]:g}/{qs[-1]:g} quantiles are over all "
        f"(time, path) values, their SE from {params['groups']} independent groups of paths."
    )
    say(
        "With Student-t noise the paper's general SignSGD SDE (Thm 3.2) is the Student-t form "
        "(sde-student-t); sde-gaussian is Cor 3.3's erf form with a Gaussian of the same variance "
        "(only for ν > 2). SGD's and AdamW's SDEs need the covariance Σ, so they run only for ν > 2, "
        "with Gaussian noise of the same variance."
    )
    say("")
    say("## What held")
    say("")
    for name, block in blocks.items():
        for line in verdict_lines(name, block):
            say(line)
    if ctx.result.summary["divergences"]:
        say("")
        say("## Divergences (the other methods finished)")
        say("")
        for line in ctx.result.summary["divergences"]:
            say(f"- **{line}**")
    say("")
    say("## Stationary loss per ν")
    say("")
    head = [
        "optimizer",
        "ν",
        "method",
        "mean ± SE",
        "median ± SE",
        f"q{qs[0]:g} – q{qs[-1]:g}",
        "SDE rel. error",
    ]
    report.extend(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)])
    for name, block in blocks.items():
        for point in block["points"]:
            for method in point["methods"] or {"optimizer": None}:
                fid = point["fidelity"].get(method, {})
                error = (
                    f"{fid['stationary_rel_error']:+.1%} ± {fid['stationary_rel_error_se']:.1%}"
                    if "stationary_rel_error" in fid
                    else "—"
                )
                cells = [name, f"{point['nu']:g}", method, *loss_cells(point["methods"].get(method)), error]
                report.append("| " + " | ".join(cells) + " |")


def verdict_lines(name: str, block: dict[str, Any]) -> list[str]:
    """In words, with numbers: bounded or not, what the SDEs did, the SGD checks."""
    lines = []
    medians = [(p["nu"], p["methods"]["optimizer"]) for p in block["points"] if "optimizer" in p["methods"]]
    if medians:
        listing = ", ".join(f"ν={nu:g}: {s['median']:.3g}" for nu, s in medians)
        finite = all(s["mean_finite"] for _, s in medians)
        lines.append(
            f"- **{name}**: median stationary loss {listing}"
            + ("; its mean exists at every ν (bounded steps)." if finite else ".")
        )
    for point in block["points"]:
        nu, stats = point["nu"], point["methods"].get("optimizer")
        if stats is not None and not stats["mean_finite"]:
            lines.append(
                f"  - ν = {nu:g}: the noise has no variance, so {name}'s loss has no mean: the sample mean "
                f"{stats['mean']:.3g} ± {stats['stderr']:.2g} is set by the largest draws (one path's time "
                f"average reached {stats['max_path_mean']:.3g}) and would grow with more samples; the median "
                f"{stats['median']:.3g} ± {stats['median_se']:.2g} is the meaningful number."
            )
        if "closed_form_mean" in point and stats is not None:
            ratio = stats["mean"] / point["closed_form_mean"]
            caveat = (
                ""
                if stats["se_reliable"]
                else " — but at this ν the loss has no variance (E x⁴ = ∞), so the SE understates the error"
            )
            ratio_se = stats["stderr"] / point["closed_form_mean"]
            lines.append(
                f"  - ν = {nu:g}: mean {stats['mean']:.4g} ± {stats['stderr']:.2g}, "
                f"{ratio:.3f} ± {ratio_se:.3f} times {point['closed_form_mean']:.4g}, the SGD SDE's "
                f"Σ ηs²ν/(4(ν−2)) (SGD's second moment sees only the noise variance){caveat}."
            )
        if "cauchy_check" in point:
            check = point["cauchy_check"]
            parts = ", ".join(
                f"{v:.3f} ± {se:.3f}"
                for v, se in zip(check["median_abs_x_times_h_over_s"], check["stderr"], strict=True)
            )
            lines.append(
                f"  - ν = 1: SGD's stationary iterate is Cauchy with scale s/h whatever η (stable law): "
                f"median |x_i|·h_i/s = {parts} per coordinate, predicted 1."
            )
        for method, fid in point["fidelity"].items():
            if "diverged" in fid:
                lines.append(f"  - ν = {nu:g}: {fid['diverged']} diverged at step {fid['diverged_step']}.")
                continue
            lines.append(
                f"  - ν = {nu:g}: {method} stationary loss {fid['stationary_rel_error']:+.1%} ± "
                f"{fid['stationary_rel_error_se']:.1%} relative to the optimizer "
                + (
                    "(within 3 SE)."
                    if abs(fid["stationary_rel_error"]) <= 3 * fid["stationary_rel_error_se"]
                    else "(**more than 3 SE off**)."
                )
            )
    return lines


def add_nu_series(ctx: Context, name: str, points: list[dict[str, Any]]) -> None:
    """Rows ``median_loss`` and ``mean_loss`` against ν (in the column t) per method; no mean
    row where the mean does not exist."""
    methods = dict.fromkeys(m for p in points for m in p["methods"])
    for method in methods:
        stats = [(p["nu"], p["methods"][method]) for p in points if method in p["methods"]]
        for metric, key, se_key in (("median_loss", "median", "median_se"), ("mean_loss", "mean", "stderr")):
            kept = [(nu, s) for nu, s in stats if metric == "median_loss" or s["mean_finite"]]
            ctx.result.add_series(
                f"{name} stationary loss vs nu",
                method,
                np.array([nu for nu, _ in kept]),
                metric,
                np.array([s[key] for _, s in kept]),
                np.array([s[se_key] for _, s in kept]),
            )


@experiment(
    NAME,
    "Student-t noise ν ∈ {1, 2, 3, 10}: SignSGD, AdamW stay bounded; SGD shown honestly (median, quantiles)",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    """docs/theory.md §3-§4: heavy-tailed noise; SignSGD against its Student-t SDE; SGD's missing moments."""
    params = ctx.params
    h, x0 = check_common(params)
    nus = sorted({float(nu) for nu in params["nus"]})
    if not nus or nus[0] <= 0:
        raise ExperimentError("--set nus=…: give positive degrees of freedom, e.g. 1,2,3,10")
    if not params["scale"] > 0:
        raise ExperimentError(f"--set scale={params['scale']}: the noise scale s must be positive")
    if not params["optimizers"]:
        raise ExperimentError("--set optimizers=…: name at least one, e.g. sgd,signsgd,adamw")
    if params["groups"] < 2 or params["groups"] > params["paths"]:
        raise ExperimentError("--set groups=…: need 2 ≤ groups ≤ paths for the quantiles' standard errors")
    if not all(0.0 < q < 1.0 for q in params["quantiles"]):
        raise ExperimentError("--set quantiles=…: give levels strictly between 0 and 1, e.g. 0.1,0.5,0.9")
    specs = {name: get_optimizer(name) for name in params["optimizers"]}
    hps = {name: hyperparameters(params, spec) for name, spec in specs.items()}

    result = ctx.result
    blocks: dict[str, dict[str, Any]] = {}
    result.summary.update(
        {
            "setting": {"hessian": h.tolist(), "x0": x0.tolist(), "noise": "student-t s·T_nu", "nus": nus},
            "optimizers": blocks,
            "divergences": [],
        }
    )
    curves: dict[tuple[str, float], dict[str, Recording]] = {}
    for name, spec in specs.items():
        blocks[name] = {"hyperparameters": hps[name].__dict__.copy(), "points": []}
        for nu in nus:
            entry, comparison = nu_point(ctx, spec, hps[name], h, x0, nu)
            blocks[name]["points"].append(entry)
            result.summary["divergences"] += divergence_lines(f"{name} at ν={nu:g}", comparison)
            curves[(name, nu)] = comparison.recordings
    for name, block in blocks.items():
        add_nu_series(ctx, name, block["points"])
    result.figures["loss_vs_nu"] = loss_vs_nu_figure(blocks, nus)
    result.figures["loss_distribution"] = distribution_figure(curves, nus, params["burn_in"])
    if "signsgd" in specs:
        result.figures["signsgd_vs_sde"] = signsgd_figure(curves, nus)
    write_report(ctx, blocks, h)
