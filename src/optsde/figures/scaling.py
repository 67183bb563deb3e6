"""Figures and report tables of ``scaling-rule-quadratic`` (docs/theory.md §6).

A group is one optimizer configuration run at batch ``B`` (the base) and at ``δB`` under each of
:data:`optsde.scaling.SCALING_VARIANTS`.  Its runs are keyed ``(variant, δ)``; a change is a
method's asymptotic loss over the base run's, minus 1, with its SE, ``(value, se)``, or None where
a run diverged or a method has no value.  Each function takes these plain numbers (and the
optimizer's recordings) and draws or words them; nothing here runs or judges anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from optsde.analysis import Check
from optsde.figures import BASE_VARIANT, SCALING_VARIANT_STYLE
from optsde.scaling import SCALING_VARIANTS
from optsde.sde import Recording

Key = tuple[str, float]
"""``(variant, δ)``; the base run is ``(BASE_VARIANT, 1.0)``."""

Change = tuple[float, float] | None
"""``E f_∞ / E f_∞(base) − 1`` and its SE, or None."""

METHOD_MARKERS = {"optimizer": "o", "closed form": "x", "sde-paper": "^", "sde-refined": "s"}
"""Marker per method in :func:`ratio_figure`: the optimizer filled, its predictions hollow."""


def intro(params: Mapping[str, Any], scale: float, tolerance: float, agreement: float) -> list[str]:
    """The setting every group shares and how the tables read; ``scale`` is ``s = σ/√B`` at the base batch."""
    p = params
    return [
        f"Quadratic f = ½ Σ h_i x_i², h = {[float(h) for h in p['hessian']]}; Gaussian gradient noise of "
        f"per-example scale σ = {p['sigma']:g} at batch B = {p['batch']} (s = σ/√B = {scale:g}); x₀ = "
        f"{p['x0']:g} in every coordinate. Base hyperparameters η = {p['lr']:g}, θ = {p['weight_decay']:g}, "
        f"ε = {p['eps']:g}, β₂ = {p['beta2']:g} (AdamW; RMSpropW {p['rmspropw_beta2']:g}, torch's default, "
        "since RMSprop has no bias correction and its v warms up over 1/(1 − β₂) steps). "
        f"Each run at δB takes {p['steps']} steps for δ ≥ 1 and {p['steps']}/δ for δ < 1; "
        f"{p['paths']} paths per method.",
        "Asymptotic loss: each path's time average after the first "
        f"{p['burn_in']:.0%} of its steps, mean over paths ± SE. Tables: each method's asymptotic loss "
        "at δB over its own base run at B, minus 1 (independent runs, SEs combined). Closed form: the "
        "linearised discrete optimizer (discrete Lyapunov equation, docs/theory.md §5). A variant "
        f"*keeps* the loss when its ratio is within ±{tolerance:.0%} of 1 or within 3 SE, *changes* it when "
        "outside both, and is *unclear* when 3 SE exceed the ratio itself (the checks, docs/analysis.md); a "
        f"prediction agrees when within {agreement:.0%} or 3 SE of the optimizer's ratio.",
        "",
    ]


def pct(change: Change) -> str:
    """A change in percent, ``± SE`` unless exact (a closed form); ``—`` without one."""
    if change is None:
        return "—"
    value, se = change
    return f"{value:+.1%}" if se == 0 else f"{value:+.1%} ± {se:.1%}"


def _change(row: Mapping[str, Any], method: str) -> Change:
    key = f"{method} ratio-1"
    return (row[key], row[f"{key} se"]) if key in row else None


def group_report(
    title: str,
    rows: Mapping[Key, Mapping[str, Any]],
    base: Mapping[str, Any],
    columns: Sequence[str],
    checks: Sequence[Check],
) -> list[str]:
    """One group in words: the base levels, a row per ``(variant, δ)`` with every method's change
    and the optimizer's verdict (``rows``: the group's ``ratios`` in summary.json, by key), the
    verdicts per variant, and the predictions ``checks`` found off the optimizer's ratio.
    ``base``: ``stationary`` (method → value, SE), ``closed_form`` and ``kappa`` of the base run."""
    levels = ", ".join(f"{m} {v:.4g} ± {se:.2g}" for m, (v, se) in base["stationary"].items())
    closed_form = f"{base['closed_form']:.4g}" if base["closed_form"] is not None else "—"
    lines = [
        f"### {title}",
        "",
        f"Base asymptotic loss: {levels}; closed form {closed_form}; κ = {base['kappa']:.3g}.",
        "",
        "| δ | variant | β₁, β₂ after | θ after | κ | " + " | ".join(columns) + " | optimizer keeps it? |",
        "|---" * (len(columns) + 6) + "|",
    ]
    for (variant, delta), row in rows.items():
        hp = row["hyperparameters"]
        lines.append(
            f"| {delta:g} | {variant} | {hp['beta1']:.4g}, {hp['beta2']:.4g} | {hp['weight_decay']:.3g} "
            f"| {row['kappa']:.3g} | "
            + " | ".join(pct(_change(row, m)) for m in columns)
            + f" | {row['verdict']} |"
        )
    lines.append("")
    for variant in sorted({v for v, _ in rows}, key=list(SCALING_VARIANTS).index):
        parts = [
            f"δ = {delta:g}: {pct(_change(row, 'optimizer'))} ({row['verdict']})"
            for (v, delta), row in rows.items()
            if v == variant
        ]
        lines.append(f"- **{SCALING_VARIANT_STYLE[variant]['label']}**: " + "; ".join(parts) + ".")
    off = [f"{c.name}: {c.value} against {c.target_text()}" for c in checks if c.verdict == "fail"]
    lines.append(
        f"- Predicted ratios off the optimizer's ({len(off)} of {len(checks)}): " + "; ".join(off or ["none"])
    )
    return [*lines, ""]


def conclusions(
    groups: Mapping[str, Mapping[Key, Mapping[str, Any]]],
    kappas: Mapping[str, float],
    momenta: Mapping[str, float],
) -> list[str]:
    """Per group and variant, the δ at which the optimizer kept its asymptotic loss (``groups``: slug →
    its :func:`group_report` rows), then why the rules differ, with the groups' κ and ``1 − β₁``."""
    lines = ["### Conclusions", ""]
    for slug, rows in groups.items():
        for variant in SCALING_VARIANTS:
            by_verdict: dict[str, list[str]] = {}
            for (v, delta), row in rows.items():
                if v == variant:
                    by_verdict.setdefault(row["verdict"], []).append(
                        f"δ = {delta:g} ({pct(_change(row, 'optimizer'))})"
                    )
            parts = [f"{word} at {', '.join(items)}" for word, items in by_verdict.items()]
            lines.append(f"- {slug}, {SCALING_VARIANT_STYLE[variant]['label']}: " + "; ".join(parts) + ".")
    lines.append("")
    lines.append(
        "Reading (the closed-form column tests it): near the minimum E x² ≈ ηs/(2(h + θs)) depends on ηs "
        "and θs only; both rules keep them, the variant without θ rescaling does not. Momentum enters "
        "at the next order through κ/(1 − β₁), the averaging time of m over the relaxation time of x: "
        "Malladi et al.'s β rule keeps it, the paper's multiplies it by √δ, so the paper's rule needs "
        "κ ≪ 1 − β₁. Here κ = "
        + ", ".join(f"{k:.3g} ({slug})" for slug, k in kappas.items())
        + (f" and 1 − β₁ = {', '.join(f'{m:.3g}' for m in momenta.values())}." if momenta else ".")
    )
    return lines


def loss_figure(curves: Mapping[Key, tuple[Recording, int]], closed_form: float | None, title: str) -> Figure:
    """The optimizer's ``E f`` against steps (left) and samples seen (right), one row per δ:
    ``curves`` holds each run's recording and batch size, ``closed_form`` the base level."""
    deltas = sorted({d for v, d in curves if v != BASE_VARIANT})
    fig, axes = plt.subplots(len(deltas), 2, figsize=(10, 2.8 * len(deltas)), squeeze=False, sharey=True)
    for row, delta in enumerate(deltas):
        for col, unit in enumerate(("steps", "samples seen")):
            ax = axes[row, col]
            for (variant, d), (rec, batch) in curves.items():
                if d != delta and variant != BASE_VARIANT:
                    continue
                x = rec.steps * (batch if col else 1)
                ax.plot(x, rec.mean("loss"), lw=1.2, **SCALING_VARIANT_STYLE[variant])
            if closed_form is not None:
                ax.axhline(closed_form, color="black", ls=":", lw=0.8, label="closed form, base")
            ax.set_yscale("log")
            ax.set_xlabel(unit)
            ax.set_title(f"δ = {delta:g}: loss vs {unit}", fontsize=9)
            if col == 0:
                ax.set_ylabel("E f(x)")
    axes[0, 1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ratio_figure(
    changes: Mapping[Key, Mapping[str, Change]], methods: Sequence[str], title: str, tolerance: float
) -> Figure:
    """Asymptotic loss over the base run's, per variant and δ, for each of ``methods`` (the optimizer
    first, then its predictions), ± 2 SE; a grey band marks ``1 ± tolerance``."""
    deltas = sorted({d for _, d in changes})
    variants = [v for v in SCALING_VARIANTS if any(key[0] == v for key in changes)]
    fig, axes = plt.subplots(1, len(deltas), figsize=(3.6 * len(deltas), 3.6), squeeze=False, sharey=True)
    for ax, delta in zip(axes[0], deltas, strict=True):
        ax.axhspan(1 - tolerance, 1 + tolerance, color="0.9", lw=0)
        ax.axhline(1.0, color="black", lw=0.8)
        for j, method in enumerate(methods):
            offset = (j - (len(methods) - 1) / 2) * 0.15
            for i, variant in enumerate(variants):
                change = changes[(variant, delta)][method]
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
    fig.suptitle(title + f" (grey band: ±{tolerance:.0%})", fontsize=10)
    fig.tight_layout()
    return fig
