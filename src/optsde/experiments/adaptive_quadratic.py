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

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from optsde.analysis import recording_mean
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, get_optimizer
from optsde.problems.analytic import EmbeddedSaddle, NoisyProblem, Quadratic
from optsde.report import fidelity_table, method_style, plot_band
from optsde.sde import Recording, record_steps
from optsde.theory.adaptive import (
    adamw_stationary_second_moment_discrete,
    adamw_stationary_second_moment_sde,
    adaptive_stationary_second_moment,
    rmspropw_stationary_second_moment_discrete,
    stationary_loss,
)

NAME = "adaptive-quadratic"

OPTIMIZERS = ("adamw", "rmspropw")

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


def _hyperparameters(ctx: Context) -> Hyperparameters:
    """One record for both optimizers (RMSpropW ignores β₁)."""
    return Hyperparameters(
        lr=ctx["lr"], beta1=ctx["beta1"], beta2=ctx["beta2"], eps=ctx["eps"], weight_decay=ctx["weight_decay"]
    )


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
    optimizer: str, models: list[str], h: np.ndarray, s: float, hp: Hyperparameters
) -> dict[str, float]:
    """Stationary loss of each method linearised at the minimum (docs/theory.md §5).

    The optimizer: discrete Lyapunov (the most accurate form).  The AdamW SDEs:
    continuous Lyapunov of their own linearisation.  Both RMSpropW SDEs linearise to
    the same Ornstein–Uhlenbeck process, whose variance is the paper-style formula.
    """
    if optimizer == "adamw":
        predicted = {"optimizer": adamw_stationary_second_moment_discrete(h, s, hp)}
        predicted |= {f"sde-{m}": adamw_stationary_second_moment_sde(h, s, hp, m) for m in models}
    else:
        predicted = {"optimizer": rmspropw_stationary_second_moment_discrete(h, s, hp)}
        paper_style = adaptive_stationary_second_moment(h, s, hp.lr, hp.eps, hp.weight_decay)
        predicted |= {f"sde-{m}": paper_style for m in models}
    return {method: stationary_loss(h, moments) for method, moments in predicted.items()}


def _basin_shares(recordings: dict[str, Recording]) -> dict[str, dict[str, float]]:
    """Share of paths whose double-well coordinate ends at x > 0, with its binomial SE."""
    shares = {}
    for method, rec in recordings.items():
        if rec.divergence is not None or not len(rec.steps):
            continue
        final = rec.values["x"][-1, :, -1] > 0
        share = float(final.mean())
        shares[method] = {"share_positive": share, "se": math.sqrt(share * (1 - share) / final.size)}
    return shares


def _figure(cmp: Comparison, title: str, predicted: dict[str, float] | None) -> Figure:
    """Paths in the plane of the first and last coordinates, ``E x`` over time, and ``f`` over time."""
    fig, (ax_plane, ax_mean, ax_loss) = plt.subplots(1, 3, figsize=(15, 4.2))
    for rec in cmp.recordings.values():
        if not len(rec.steps):
            continue
        style = method_style(rec.method)
        color, label = style.get("color"), style["label"]
        for path in range(rec.snapshots.shape[1]):
            ax_plane.plot(
                rec.snapshots[:, path, 0], rec.snapshots[:, path, -1], color=color, lw=0.6, alpha=0.6
            )
        mean = rec.mean("x")
        ax_plane.plot(mean[:, 0], mean[:, -1], color=color, lw=2.0, linestyle=style["linestyle"], label=label)
        stderr = rec.stderr("x")
        for i in range(mean.shape[1]):
            ax_mean.plot(rec.times, mean[:, i], color=color, linestyle=style["linestyle"])
            ax_mean.fill_between(
                rec.times, mean[:, i] - stderr[:, i], mean[:, i] + stderr[:, i], color=color, alpha=0.2, lw=0
            )
        plot_band(ax_loss, rec, "loss")
    ax_plane.plot(*cmp.recordings["optimizer"].snapshots[0, 0, [0, -1]], "ko", ms=4)
    ax_plane.set_xlabel("x1")
    ax_plane.set_ylabel(f"x{cmp.recordings['optimizer'].snapshots.shape[-1]}")
    ax_plane.set_title("4 paths each (thin) and E x (thick)")
    ax_plane.legend(fontsize=7)
    ax_mean.set_xlabel("t = k η")
    ax_mean.set_ylabel("E x_i (± 1 standard error)")
    ax_mean.set_title("mean of each coordinate")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("t = k η")
    ax_loss.set_ylabel("f(x)")
    ax_loss.set_title("loss (± 1 sd over paths)")
    if predicted:
        for method, level in predicted.items():
            ax_loss.axhline(level, color=method_style(method).get("color", "gray"), lw=0.8, alpha=0.7)
    # A ± sd band reaches below 0 near the minimum; keep the axis on the means.
    lowest = min(rec.mean("loss").min() for rec in cmp.recordings.values() if len(rec.steps))
    ax_loss.set_ylim(bottom=0.3 * lowest)
    ax_loss.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _say_fidelity(cmp: Comparison) -> tuple[list[str], dict[str, str]]:
    """Report lines on which SDE tracks best by each measure, with numbers; and the winners."""
    tracked = {m: f for m, f in cmp.fidelity.items() if "diverged" not in f}
    lines: list[str] = []
    best: dict[str, str] = {}
    if tracked:
        by_gap = sorted(tracked, key=lambda m: tracked[m]["mean_rel_gap"])
        by_level = sorted(tracked, key=lambda m: abs(tracked[m]["stationary_rel_error"]))
        gaps = ", ".join(
            f"{m} {tracked[m]['mean_rel_gap']:.1%} ± {tracked[m]['mean_rel_gap_se']:.1%}" for m in by_gap
        )
        levels = ", ".join(
            f"{m} {tracked[m]['stationary_rel_error']:+.1%} ± {tracked[m]['stationary_rel_error_se']:.1%}"
            for m in by_level
        )
        lines.append(f"- Closest over the whole run (time-averaged |E f gap|): **{by_gap[0]}** — {gaps}.")
        lines.append(f"- Closest stationary loss: **{by_level[0]}** — {levels}.")
        best = {"by_mean_gap": by_gap[0], "by_stationary_loss": by_level[0]}
    lines += [f"- **Diverged:** {line}" for line in cmp.divergences()]
    return lines, best


@experiment(
    NAME,
    "AdamW and RMSpropW vs their SDEs on a quadratic and an embedded saddle: paths and loss (Fig. 3)",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    """Fig. 3 of the paper: four comparisons, each with its fidelity summary and κ."""
    result = ctx.result
    problems = _problems(ctx)
    hp = _hyperparameters(ctx)
    s = ctx["sigma"] / math.sqrt(ctx["batch_size"])
    paths = ctx["paths"]
    verdicts: list[str] = []
    result.say(
        f"AdamW and RMSpropW (η = {ctx['lr']:g}, θ = {ctx['weight_decay']:g}, ε = {ctx['eps']:g}; "
        f"AdamW β = ({ctx['beta1']:g}, {ctx['beta2']:g}), RMSpropW β = {ctx['beta2']:g}) "
        f"with Gaussian noise s = σ/√B = {s:g}, {paths} paths, {ctx['steps']} steps on the quadratic and "
        f"{ctx['saddle_steps']} on the saddle; each SDE integrated by "
        f"Euler–Maruyama with dt = η/{ctx['substeps']}. Gaps are relative to the optimizer, ± one "
        "standard error; the stationary loss is the time average over the last "
        f"{1 - ctx['burn_in']:.0%} of the run."
    )
    result.say("")
    for problem_name, (oracle, x0, description, steps) in problems.items():
        for optimizer in OPTIMIZERS:
            spec = get_optimizer(optimizer)
            models = list(ctx["adamw_sdes"] if optimizer == "adamw" else ctx["rmspropw_sdes"])
            panel = f"{problem_name}-{optimizer}"
            cmp = compare(
                ctx,
                spec,
                oracle,
                hp,
                ctx.tensor(x0),
                steps=steps,
                paths=paths,
                models=models,
                substeps=ctx["substeps"],
                record_at=record_steps(steps, ctx["record_points"]),
                label=panel,
                burn_in=ctx["burn_in"],
            )
            for rec in cmp.recordings.values():
                result.add_recording(panel, rec, ("loss", "x"))
            summary = cmp.summary()
            predicted = None
            result.say(f"## {spec.name} on {description} (κ = η·max h/s = {cmp.kappa:.3g})")
            result.say("")
            lines, best = _say_fidelity(cmp)
            result.report.extend(lines)
            summary["best_sde"] = best
            if best:
                gap = cmp.fidelity[best["by_mean_gap"]]
                verdicts.append(
                    f"- {spec.name} on the {problem_name}: **{best['by_mean_gap']}** "
                    f"(time-averaged gap {gap['mean_rel_gap']:.1%} ± {gap['mean_rel_gap_se']:.1%}); "
                    f"stationary loss closest: {best['by_stationary_loss']}."
                )
            if problem_name == "quadratic":
                predicted = _predicted_losses(optimizer, models, np.asarray(ctx["hessian"]), s, hp)
                measured = {
                    m: recording_mean(rec, "loss", ctx["burn_in"])
                    for m, rec in cmp.recordings.items()
                    if rec.divergence is None
                }
                summary["stationary_loss"] = {
                    m: {
                        "measured": measured[m].value,
                        "measured_se": measured[m].se,
                        "predicted": predicted[m],
                    }
                    for m in measured
                }
                result.say(
                    "- Stationary loss vs its linearisation (docs/theory.md §5; optimizer: discrete "
                    "Lyapunov, SDEs: "
                    "continuous Lyapunov / Ornstein–Uhlenbeck): "
                    + ", ".join(
                        f"{m} {v[0]:.3g} ± {v[1]:.1g} vs {predicted[m]:.3g} ({v[0] / predicted[m] - 1:+.1%})"
                        for m, v in measured.items()
                    )
                    + "."
                )
            else:
                shares = _basin_shares(cmp.recordings)
                summary["basin_share_positive"] = shares
                result.say(
                    "- Share of paths ending in the x > 0 well: "
                    + ", ".join(f"{m} {v['share_positive']:.2f} ± {v['se']:.2f}" for m, v in shares.items())
                    + "."
                )
            result.say("")
            result.report.extend(fidelity_table(cmp.fidelity))
            result.say("")
            result.summary[panel] = summary
            result.figures[f"fig3_{panel}"] = _figure(
                cmp, f"{spec.name} vs its SDEs on {description}, κ = {cmp.kappa:.3g}", predicted
            )
    result.say("## Which SDE tracks its optimizer best")
    result.say("")
    result.report.extend(verdicts or ["- No comparison finished without divergence."])
