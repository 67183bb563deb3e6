"""Figures and report tables of ``asymptotic-loss`` (Fig. 5, docs/theory.md §5–§7).

Each function takes the plain data the experiment keeps per panel — the ``a_d_sweep``,
``b_scaling`` and ``c_basins`` entries of its summary, the (b) and (c) ones still holding
their recordings — and draws it or words it; nothing here runs or judges anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from optsde.analysis import Estimate
from optsde.figures import dodge, errorbars, label_curves, legend_entry, reference_line, series_style
from optsde.optimizers import get_optimizer
from optsde.sde import Recording
from optsde.theory.adaptive import LYAPUNOV, PAPER_STYLE, PREDICTIONS

VARIANT_STYLE = {
    "original": {"color": "black", "linestyle": "-"},
    "R": {"color": "tab:green", "linestyle": "--"},
    "NR": {"color": "tab:red", "linestyle": ":"},
}
"""Panel (b): the original run, the run rescaled by the paper's rule (R), and θ not rescaled (NR)."""


def row(*cells: object) -> str:
    """One markdown table row."""
    return "| " + " | ".join(map(str, cells)) + " |"


def relative(value: Estimate, target: float) -> str:
    """``value/target − 1 ± SE`` in percent."""
    return f"{value.value / target - 1:+.1%} ± {value.se / target:.1%}"


def _floats(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


def intro(params: Mapping[str, Any]) -> list[str]:
    """What every run of the experiment shares."""
    return [
        f"All runs: the discrete optimizers, {params['paths']} paths each, Gaussian noise; stationary values "
        f"are per-path time averages over the last {1 - params['burn_in']:.0%} of each run, ± one standard "
        "error over paths.  κ = η·max h/s (docs/theory.md §3).",
        "",
    ]


def sweep_report(sweep: dict[str, dict[str, Any]], params: Mapping[str, Any]) -> list[str]:
    """Panels (a), (d) in words: per configuration and σ the measured ``E f`` against both
    predictions and eq. (6)'s bound, then each configuration's error over its coordinates."""
    lr, theta, hessian = params["sweep_lr"], params["sweep_weight_decay"], _floats(params["sweep_hessian"])
    lines = [
        f"## (a), (d) Asymptotic loss and variance vs σ (η = {lr:g}, θ = {theta:g}, h = {hessian})",
        "",
        "Predictions (docs/theory.md §5): **discrete Lyapunov** (the optimizer linearised at the minimum, "
        "momentum included) and **paper-style** `η s²/(2p(h + θp))` (fast momentum, the same for every "
        "configuration).  Errors: measured/predicted − 1 ± SE; the last column is E f over eq. (6)'s bound.",
        "",
        row("optimizer", "σ", "κ max", "measured E f", *(f"vs {n}" for n in PREDICTIONS), "/ bound"),
        "|---" * 7 + "|",
    ]
    variance: list[str] = []
    for label, entry in sweep.items():
        if "divergence" in entry:
            lines.append(row(label, f"diverged: {entry['divergence']}", *[""] * 5))
            continue
        for r in entry["per_sigma"]:
            loss, sigma = Estimate(r["loss"], r["loss_se"]), r["sigma"]
            cells = (relative(loss, r[n]) for n in PREDICTIONS)
            ratio = f"{loss.value / r['eq6_bound']:.2f}"
            lines.append(row(label, f"{sigma:g}", f"{lr * max(hessian) / sigma:.3g}", loss, *cells, ratio))
        errors, count = entry["variance_errors"], len(entry["coordinates"])
        mean, worst = Estimate(**errors["mean"]), Estimate(**errors["largest"])
        variance.append(f"- {label}: mean error {mean}, largest {worst} over {count} coordinates.")
    factors = ", ".join(f"β₁ = {b:g}: θ/ρ₁ = {theta * lr / (1 - b):.2g}" for b in params["sweep_beta1"])
    return [
        *lines,
        "",
        "- With θ > 0 the loss stops growing with σ: E x² → η/(2θ) per coordinate, eq. (6)'s bounded "
        "asymptote (loose: it uses L/μ).  With decay, momentum lowers E x² by about 1/(1 + θ/ρ₁), "
        f"ρ₁ = (1 − β₁)/η ({factors}): the discrete Lyapunov form includes it, the paper-style one does not.",
        "- (d) E x_i² of every coordinate against discrete Lyapunov (measured/predicted − 1):",
        *variance,
        "",
    ]


def scaling_report(scaling: dict[str, dict[str, Any]], params: Mapping[str, Any]) -> list[str]:
    """Panel (b) in words: the original's ``E f`` and the R and NR runs over it, measured (paired)
    and predicted."""
    p = params
    lines = [
        f"## (b) Scaling rule, δ = {p['delta']:g} (η = {p['scaling_lr']:g}, β = {p['beta1']:g}, "
        f"{p['beta2']:g}, σ = {p['scaling_sigma']:g}, h = {_floats(p['scaling_hessian'])})",
        "",
        "R: batch δB with η, β₁, β₂, θ rescaled by the paper's rule (docs/theory.md §6); NR: the same but θ "
        "left as it was.  The three runs of a row share their noise draws, so their ratios are measured "
        "far more precisely than the levels (paired SEs).  Predicted: discrete Lyapunov, paper-style.",
        "",
        row("run", "measured E f (original)", "R / original", "NR / original"),
        "|---" * 4 + "|",
    ]
    for key, entry in scaling.items():
        cells = []
        for variant in ("R", "NR"):
            over = entry.get(f"{variant}_over_original")
            if over is None:
                cells.append("diverged")
                continue
            predicted = " and ".join(f"{over[n]:.3f}" for n in PREDICTIONS)
            cells.append(f"{Estimate(over['measured'], over['se'])} (predicted {predicted})")
        original = entry["original"].get("loss")
        lines.append(row(key, Estimate(**original) if original else "diverged", *cells))
    return [*lines, ""]


def basin_report(
    basins: dict[str, dict[str, Any]], params: Mapping[str, Any], well_distance: float
) -> list[str]:
    """Panel (c) in words: per (β₁, β₂) the share ending in the x > 0 well, the settling time and
    the level in the well against the discrete Lyapunov prediction."""
    optimizer = get_optimizer(params["basin_optimizer"]).capabilities.style["label"]
    lines = [
        f"## (c) β₁, β₂ and the basin ({optimizer}, θ = 0, η = {params['basin_lr']:g}, "
        f"σ = {params['basin_sigma']:g}, x₀ = {tuple(params['basin_x0'])} on the embedded saddle)",
        "",
        row("β₁, β₂", "share in the x > 0 well", "settling time", "loss in the well", "vs discrete Lyapunov"),
        "|---" * 5 + "|",
    ]
    for label, entry in basins.items():
        rec: Recording = entry["recording"]
        if rec.divergence is not None:
            lines.append(row(label, f"diverged: {rec.divergence.describe(label)}", "", "", ""))
            continue
        share, settle, level = (Estimate(**entry[k]) for k in ("share_positive_well", "settle_time", "loss"))
        lines.append(row(label, share, settle, level, relative(level, entry["predicted"][LYAPUNOV])))
    levels = [e["loss"]["value"] for e in basins.values() if "loss" in e]
    if levels:
        lines += [
            "",
            "- The well (share ending at x > 0) and the settling time (last exit from the final well's "
            f"±{well_distance:g}) change with β₁, β₂; the level inside the well spreads over only "
            f"{min(levels):.4g}–{max(levels):.4g}, around the β-independent paper-style "
            f"{next(iter(basins.values()))['predicted'][PAPER_STYLE]:.4g}.",
        ]
    return [*lines, ""]


def sweep_figures(sweep: dict[str, dict[str, Any]]) -> tuple[Figure, Figure]:
    """(a) E f vs σ; (d) E x_i² per h vs σ and the error per coordinate vs κ.  Each configuration has
    its own marker, line style and σ offset (its family's colour), so none hides another; the
    paper-style formula and the eq. (6) bound are the same for all and drawn once."""
    fig_a, ax = plt.subplots(figsize=(6.5, 4.5))
    fig_d, (ax_var, ax_err) = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = {k: e for k, e in sweep.items() if "per_sigma" in e}
    for i, (label, entry) in enumerate(drawn.items()):
        style = series_style(i, get_optimizer(entry["optimizer"]).capabilities.style["color"])
        shift, rows, coords = dodge(i, len(drawn)), entry["per_sigma"], entry["coordinates"]
        sig = np.array([r["sigma"] for r in rows])
        ax.plot(sig, [r[LYAPUNOV] for r in rows], **style, ms=0, lw=1.2)
        errorbars(ax, sig * shift, [Estimate(r["loss"], r["loss_se"]) for r in rows], **style)
        legend_entry(ax, f"{label}: measured, discrete Lyapunov", **style)
        legend_entry(ax_var, label, **style)
        for h in sorted({c["h"] for c in coords}):
            sel = [c for c in coords if c["h"] == h]
            sig_h = np.array([c["sigma"] for c in sel])
            errorbars(
                ax_var, sig_h * shift, [Estimate(c["measured"], c["measured_se"]) for c in sel], **style, ms=4
            )
            ax_var.plot(sig_h, [c[LYAPUNOV] for c in sel], **style, ms=0, lw=0.8)
            if i == 0:
                ax_var.plot(sig_h, [c[PAPER_STYLE] for c in sel], color="gray", ls="--", lw=0.8)
                label_curves(ax_var, [(f"h = {h:g}", sig_h, np.array([c[LYAPUNOV] for c in sel]))], index=0)
        kappa, values = np.array([c["kappa"] for c in coords]), np.array([c["measured"] for c in coords])
        for name, fill, nudge in ((LYAPUNOV, style["color"], 1.0), (PAPER_STYLE, "none", 1.04)):
            predicted = np.array([c[name] for c in coords])
            errors = [
                Estimate(v / p - 1, c["measured_se"] / p)
                for v, p, c in zip(values, predicted, coords, strict=True)
            ]
            errorbars(
                ax_err, kappa * nudge, errors, **{**style, "mfc": fill}, ms=5, label=f"{label} vs {name}"
            )
    if drawn:
        rows = next(iter(drawn.values()))["per_sigma"]
        sig = np.array([r["sigma"] for r in rows])
        ax.plot(sig, [r[PAPER_STYLE] for r in rows], color="gray", ls="--", label="paper-style (all)")
        ax.plot(sig, [r["eq6_bound"] for r in rows], "k:", label="eq. (6) bound")
        legend_entry(ax_var, "paper-style (all)", color="gray", ls="--")
    for a in (ax, ax_var):
        a.set(xscale="log", yscale="log", xlabel="σ (noise scale, B = 1)")
        a.legend(fontsize=7)
    ax.set(ylabel="asymptotic E f", title="(a) asymptotic loss vs prediction")
    ax_var.set(
        ylabel="stationary E x_i²", title="(d) stationary variance per h: markers measured, lines predicted"
    )
    ax_var.margins(x=0.15)  # room for the h labels left of the curves
    ax_err.axhline(0, color="gray", lw=0.8)
    ax_err.set(xscale="log", xlabel="κ_i = η h_i / s_i", ylabel="measured / predicted − 1")
    ax_err.set_title("(d) relative error per coordinate (filled: discrete Lyapunov, open: paper-style)")
    ax_err.legend(fontsize=6)
    for a in (ax_var, ax_err):
        a.title.set_fontsize(9)
    fig_a.tight_layout()
    fig_d.tight_layout()
    return fig_a, fig_d


def scaling_figure(scaling: dict[str, dict[str, Any]], delta: float) -> Figure:
    """(b) E f over steps of the original, R and NR runs, with each run's predicted levels."""
    columns = max(1, len(scaling) // 2)
    fig, axes = plt.subplots(2, columns, figsize=(5.5 * columns, 7.5), squeeze=False)
    for ax, (key, entry) in zip(axes.T.ravel(), scaling.items(), strict=False):
        for variant, style in VARIANT_STYLE.items():
            rec: Recording = entry[variant]["recording"]
            ax.plot(
                rec.steps, rec.mean("loss"), label=f"{variant} (B = {entry[variant]['batch_size']})", **style
            )
            reference_line(ax, entry[variant]["predicted"][LYAPUNOV], color=style["color"])
            reference_line(ax, entry[variant]["predicted"][PAPER_STYLE], color=style["color"], ls=(0, (1, 3)))
        legend_entry(ax, "discrete Lyapunov level", color="gray", lw=0.8)
        legend_entry(ax, "paper-style level", color="gray", lw=0.8, ls=(0, (1, 3)))
        levels = [entry[v]["predicted"][LYAPUNOV] for v in VARIANT_STYLE]
        ax.set(yscale="log", xlabel="step k", ylabel="E f", title=f"{key}: δ = {delta:g}")
        ax.set_ylim(0.5 * min(levels), 10 * max(levels))  # zoom on the levels; the start is off the top
        ax.legend(fontsize=7)
    fig.suptitle("(b) scaling rule B → δB: R rescales η, β, θ by the paper's rule; NR leaves θ", fontsize=10)
    fig.tight_layout()
    return fig


def basin_figure(basins: dict[str, dict[str, Any]]) -> Figure:
    """(c) E f with the predicted level in the well, and the double-well coordinate: mean and 4 paths."""
    fig, (ax_loss, ax_well) = plt.subplots(1, 2, figsize=(12, 4.3))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (label, entry) in zip(colors, basins.items(), strict=False):
        rec: Recording = entry["recording"]
        ax_loss.plot(rec.times, rec.mean("loss"), color=color, label=label)
        reference_line(ax_loss, entry["predicted"][LYAPUNOV], color=color, ls="--")
        ax_well.plot(rec.times, rec.mean("x")[:, -1], color=color, lw=2, label=label)
        ax_well.plot(rec.times, rec.snapshots[:, :, -1], color=color, lw=0.5, alpha=0.4)
    legend_entry(ax_loss, "predicted level in the well (discrete Lyapunov)", color="gray", lw=0.8, ls="--")
    legend_entry(ax_well, "4 paths each", color="gray", lw=0.5)
    ax_loss.set(yscale="log", xlabel="t = k η", ylabel="E f", title="(c) on the embedded saddle: loss")
    ax_well.set(
        xlabel="t = k η", ylabel="double-well coordinate x[-1]", title="(c) which well: β₁, β₂ decide"
    )
    for a in (ax_loss, ax_well):
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig
