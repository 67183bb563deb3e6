"""``adaptive-quadratic``: AdamW and RMSpropW beside their SDEs (paper Fig. 3, docs/theory.md §7 item 3).

Two landscapes: a convex quadratic ``½ Σ h_i x_i²`` and the embedded saddle (quadratic
coordinates plus the double well ``x⁴/4 − x²/2``, saddle at 0, minima at ±1).  On
each, AdamW runs beside the paper's SDE, Malladi et al.'s and our refined one, and
RMSpropW beside the paper's and Malladi et al.'s (docs/theory.md §3).  Recorded: ``f(x)``,
``E x`` per coordinate and a few paths in the plane.  Every comparison reports its
fidelity summary and κ; on the quadratic the stationary loss of each method is also
set against its linearisation (docs/theory.md §5: discrete Lyapunov for the optimizer,
continuous Lyapunov for the SDEs); on the saddle, the share of paths that end in
each well is compared.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from optsde.analysis import Check, Estimate, Matches, Within, recording_mean, sample_mean
from optsde.errors import OptsdeError
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.figures import label_curves, legend_entry, reference_line
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.analytic import EmbeddedSaddle, NoisyProblem, Quadratic
from optsde.report import fidelity_table, keep_in_view, method_style, plot_band
from optsde.sde import Recording, record_steps
from optsde.theory.adaptive import stationary_loss
from optsde.theory.predictions import FORMULA_TOLERANCE, regime_statement

NAME = "adaptive-quadratic"

OPTIMIZERS = ("adamw", "rmspropw")
"""The optimizers compared; each reads its SDE models from the parameter ``<name>_sdes``."""

DEFAULTS: dict[str, Any] = {
    "lr": 0.001,
    "beta1": 0.9,
    "beta2": 0.99,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "sigma": 0.1,
    "batch_size": 1,
    "hessian": [1.0, 4.0],
    "x0": [1.0, 1.0],
    "saddle_hessian": [2.0],
    "saddle_x0": [1.0, 0.01],
    "adamw_sdes": ["paper", "malladi", "refined"],
    "rmspropw_sdes": ["paper", "malladi"],
    "substeps": 1,
    "steps": 4000,
    "saddle_steps": 6000,
    "paths": 1000,
    "record_points": 200,
    "burn_in": 0.5,
}
"""``beta2`` is AdamW's β₂ and RMSpropW's β (torch's ``alpha``).  At 0.999 ``v`` would remember
the large gradients of the start for ~7000 steps and no run of this length would reach its
stationary regime.  θ = 0.1 keeps the decayed minimum of the double well near 1: with
normalised steps of size ≤ η, decoupled decay alone confines |x| ≲ 1/θ.  ``saddle_x0`` lists
the quadratic coordinates, then the double-well one, started just off the saddle so that the
share of paths reaching each well is a fidelity measure of its own; leaving the saddle takes
longer than the quadratic's transient, hence ``saddle_steps``.  ``burn_in``: the stationary
window is the last ``1 − burn_in`` of each run; it must start after the transient (t ≈ 1.5 on
the quadratic, ≈ 2.5 on the saddle at the defaults)."""

QUICK: dict[str, Any] = {
    "paths": 200,
    "steps": 2500,
    "saddle_steps": 3500,
    "burn_in": 0.7,
    "record_points": 100,
}


def _problems(ctx: Context) -> dict[str, tuple[NoisyProblem, list[float], str, int]]:
    """Name ↦ (oracle, x₀, description, steps), after checking the parameters once."""
    hessian, saddle_hessian = ctx["hessian"], ctx["saddle_hessian"]
    if not hessian or any(h <= 0 for h in hessian):
        raise ExperimentError("hessian: give positive curvatures like 1,4 (a convex quadratic)")
    if len(ctx["x0"]) != len(hessian):
        raise ExperimentError(f"x0 has {len(ctx['x0'])} values for {len(hessian)} coordinates")
    if len(ctx["saddle_x0"]) != len(saddle_hessian) + 1:
        raise ExperimentError(
            f"saddle_x0 needs {len(saddle_hessian) + 1} values: the quadratic coordinates, then the well"
        )
    if not ctx["sigma"] > 0:
        raise ExperimentError(f"sigma must be positive, got {ctx['sigma']}")
    sigma, batch = ctx["sigma"], ctx["batch_size"]
    quadratic = NoisyProblem(
        Quadratic(ctx.tensor(hessian)), GaussianNoise(len(hessian), scale=sigma, batch_size=batch)
    )
    saddle = NoisyProblem(
        EmbeddedSaddle(ctx.tensor(saddle_hessian), wells=1),
        GaussianNoise(len(saddle_hessian) + 1, scale=sigma, batch_size=batch),
    )
    return {
        "quadratic": (
            quadratic,
            ctx["x0"],
            f"the quadratic H = diag({', '.join(map(str, hessian))})",
            ctx["steps"],
        ),
        "saddle": (
            saddle,
            ctx["saddle_x0"],
            f"the embedded saddle (quadratic h = {', '.join(map(str, saddle_hessian))} × one double well)",
            ctx["saddle_steps"],
        ),
    }


def _predicted_losses(
    spec: OptimizerSpec, models: list[str], h: np.ndarray, s: float, hp: Hyperparameters
) -> dict[str, float]:
    """Stationary loss of each method linearised at the minimum (docs/theory.md §5): the optimizer by
    its family's discrete Lyapunov form, each SDE by its own continuous one (where the family has them)."""
    caps, scale = spec.capabilities, np.full(len(h), s)
    out = {}
    if caps.linearised_second_moment is not None:
        out["optimizer"] = stationary_loss(h, caps.linearised_second_moment(h, scale, hp))
    for key in models if caps.sde_linearised_second_moment is not None else []:
        with contextlib.suppress(OptsdeError):  # a model without a linearisation has no prediction
            out[spec.sdes[key].name] = stationary_loss(
                h, caps.sde_linearised_second_moment(h, scale, hp, key)
            )
    return out


def _basin_shares(recordings: dict[str, Recording]) -> dict[str, Estimate]:
    """Share of paths whose double-well coordinate ends at x > 0, with its SE."""
    return {
        method: sample_mean(rec.values["x"][-1, :, -1] > 0)
        for method, rec in recordings.items()
        if rec.divergence is None and len(rec.steps)
    }


def _figure(cmp: Comparison, title: str, predicted: dict[str, float]) -> Figure:
    """Paths in the plane of the first and last coordinates, ``E x_i`` over time, and ``f`` over time."""
    fig, (ax_plane, ax_mean, ax_loss) = plt.subplots(1, 3, figsize=(15, 4.2))
    last = cmp.recordings["optimizer"].snapshots.shape[-1] - 1
    for rec in (r for r in cmp.recordings.values() if len(r.steps)):
        style = method_style(rec.method)
        color, line = style.get("color"), style.get("linestyle", "-")
        ax_plane.plot(rec.snapshots[:, :, 0], rec.snapshots[:, :, -1], color=color, lw=0.6, alpha=0.6)
        mean, stderr = rec.mean("x"), rec.stderr("x")
        ax_plane.plot(mean[:, 0], mean[:, -1], lw=2.0, **style)
        for i in range(mean.shape[1]):
            ax_mean.plot(
                rec.times, mean[:, i], color=color, linestyle=line, label=style["label"] if i == 0 else None
            )
            ax_mean.fill_between(
                rec.times, mean[:, i] - stderr[:, i], mean[:, i] + stderr[:, i], color=color, alpha=0.2, lw=0
            )
        if rec.method == "optimizer":
            apart = int(np.argmax(mean.std(axis=1)))  # where the coordinates' means differ most
            label_curves(ax_mean, [(f"x[{i}]", rec.times, mean[:, i]) for i in range(mean.shape[1])], apart)
        plot_band(ax_loss, rec, "loss")
    for method, level in predicted.items():
        reference_line(ax_loss, level, color=method_style(method).get("color", "gray"), ls=(0, (1, 2)))
    if predicted:
        legend_entry(ax_loss, "linearised levels (dotted, by colour)", color="gray", lw=0.8, ls=(0, (1, 2)))
    ax_plane.plot(*cmp.recordings["optimizer"].snapshots[0, 0, [0, -1]], "ko", ms=4, label="start")
    legend_entry(ax_plane, "4 paths each (thin)", color="gray", lw=0.6)
    ax_plane.set(xlabel="x[0]", ylabel=f"x[{last}]", title="4 paths each (thin) and E x (thick)")
    ax_mean.set(xlabel="t = k η", ylabel="E x[i] (± 1 standard error)", title="mean of each coordinate")
    ax_loss.set(yscale="log", xlabel="t = k η", ylabel="f(x)", title="loss (± 1 sd over paths)")
    keep_in_view(ax_loss, cmp.recordings.values())
    for ax in (ax_plane, ax_mean, ax_loss):
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _panel(ctx: Context, problem: str, spec: OptimizerSpec, hp: Hyperparameters, s: float) -> str | None:
    """One comparison: run, checks, report lines, figure; returns the verdict line on the closest SDE."""
    result, (oracle, x0, description, steps) = ctx.result, _problems(ctx)[problem]
    models = list(ctx[f"{spec.name}_sdes"])
    panel = f"{problem}-{spec.name}"
    cmp = compare(
        ctx,
        spec,
        oracle,
        hp,
        ctx.tensor(x0),
        steps=steps,
        paths=ctx["paths"],
        models=models,
        substeps=ctx["substeps"],
        record_at=record_steps(steps, ctx["record_points"]),
        label=panel,
        burn_in=ctx["burn_in"],
    )
    for rec in cmp.recordings.values():
        result.add_recording(panel, rec, ("loss", "x"))
    summary = cmp.summary()
    result.say(f"## {spec.name} on {description}")
    result.say()
    result.say(regime_statement(spec.name, cmp.kappa))
    result.say()
    tracked = {m: f for m, f in cmp.fidelity.items() if "diverged" not in f}
    verdict = None
    if tracked:
        best = {
            "by_mean_gap": min(tracked, key=lambda m: tracked[m]["mean_rel_gap"]),
            "by_stationary_loss": min(tracked, key=lambda m: abs(tracked[m]["stationary_rel_error"])),
        }
        summary["best_sde"] = best
        gap = tracked[best["by_mean_gap"]]
        verdict = (
            f"- {spec.name} on the {problem}: closest over the run **{best['by_mean_gap']}** "
            f"(time-averaged gap {gap['mean_rel_gap']:.1%} ± {gap['mean_rel_gap_se']:.1%}); closest "
            f"stationary loss {best['by_stationary_loss']}."
        )
    checks: list[Check] = []
    predicted: dict[str, float] = {}
    measured = {m: rec for m, rec in cmp.recordings.items() if rec.divergence is None and len(rec.steps)}
    if problem == "quadratic":
        predicted = _predicted_losses(spec, models, np.asarray(ctx["hessian"]), s, hp)
        levels = {m: recording_mean(rec, "loss", ctx["burn_in"]) for m, rec in measured.items()}
        summary["stationary_loss"] = {
            m: {"measured": v.value, "measured_se": v.se, "predicted": predicted.get(m)}
            for m, v in levels.items()
        }
        checks = [
            Check(f"{m}: stationary loss vs its linearisation", v, predicted[m], Within(FORMULA_TOLERANCE))
            for m, v in levels.items()
            if m in predicted
        ]
    else:
        shares = _basin_shares(measured)
        summary["basin_share_positive"] = {m: v.to_dict() for m, v in shares.items()}
        if "optimizer" in shares:
            checks = [
                Check(
                    f"{m}: share ending in the x > 0 well",
                    v,
                    shares["optimizer"],
                    Matches(resolution=1.0),
                    "the optimizer's share",
                )
                for m, v in shares.items()
                if m != "optimizer"
            ]
        result.say(
            "- Share of paths ending in the x > 0 well: "
            + ", ".join(f"{m} {v}" for m, v in shares.items())
            + "."
        )
    result.add_checks(panel, checks)
    result.report.extend(f"- **Diverged:** {line}" for line in cmp.divergences())
    result.say()
    result.report.extend(fidelity_table(cmp.fidelity))
    result.say()
    result.summary[panel] = summary
    title = f"{spec.name} vs its SDEs on {description}, κ = {cmp.kappa:.3g}"
    result.figures[f"fig3_{panel}"] = _figure(cmp, title, predicted)
    return verdict


@experiment(
    NAME,
    "AdamW and RMSpropW vs their SDEs on a quadratic and an embedded saddle: paths and loss (Fig. 3)",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    """Fig. 3 of the paper: four comparisons, each with its fidelity summary, κ and checks."""
    _problems(ctx)  # refuse bad parameters before anything runs
    hp = Hyperparameters(ctx["lr"], ctx["beta1"], ctx["beta2"], ctx["eps"], ctx["weight_decay"])
    s = ctx["sigma"] / math.sqrt(ctx["batch_size"])
    ctx.result.say(
        f"η = {ctx['lr']:g}, θ = {ctx['weight_decay']:g}, ε = {ctx['eps']:g}, β = ({ctx['beta1']:g}, "
        f"{ctx['beta2']:g}) (RMSpropW's β is β₂), Gaussian noise s = σ/√B = {s:g}, {ctx['paths']} paths, "
        f"{ctx['steps']} steps on the quadratic and {ctx['saddle_steps']} on the saddle; SDEs by "
        f"Euler–Maruyama with dt = η/{ctx['substeps']}.  Gaps are relative to the optimizer, ± one standard "
        f"error; the stationary loss is the time average over the last {1 - ctx['burn_in']:.0%} of the run.  "
        "Checks: "
        "each method's stationary loss against its own linearisation (docs/theory.md §5: the optimizer's "
        "discrete Lyapunov form, each SDE's continuous one), and on the saddle each SDE's share of paths in "
        "the x > 0 well against the optimizer's."
    )
    ctx.result.say()
    verdicts = [
        _panel(ctx, problem, get_optimizer(name), hp, s)
        for problem in ("quadratic", "saddle")
        for name in OPTIMIZERS
    ]
    ctx.result.say("## Which SDE tracks its optimizer best")
    ctx.result.say()
    ctx.result.report.extend([v for v in verdicts if v] or ["- No comparison finished without divergence."])
