"""Figures and report tables of the noise experiments, ``noise-resilience`` and ``heavy-tails``
(docs/noise.md).

They take plain data: the experiments' summary blocks (per optimizer, its ``points``, one per
noise level, holding the numbers written to summary.json) and recordings.  A sweep draws
estimates ± SE against a swept parameter, the optimizer filled and its SDEs hollow; a method that
diverged at a point is marked there with ✕ at the top of the panel, never left out silently.
Styles come from what each optimizer family declares (``spec.capabilities.style``) and from the
method table of :mod:`optsde.report`; nothing here knows an optimizer by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from optsde.analysis import Estimate, recording_mean, stationary_values
from optsde.figures import optimizer_style
from optsde.optimizers import get_optimizer
from optsde.report import keep_in_view, method_style, plot_band
from optsde.sde import Recording

# ---------------------------------------------------------------- sweeps of estimates


METHOD_MARKERS = {
    "optimizer": "o",
    "sde-paper": "s",
    "sde-refined": "^",
    "sde-malladi": "v",
    "sde-gaussian": "D",
    "sde-student-t": "o",
}
"""Marker per method in sweep figures: the optimizer filled, its SDEs hollow."""


def sweep(
    ax: Axes,
    x: Sequence[float],
    values: Sequence[Estimate | None],
    *,
    color: str,
    method: str = "optimizer",
    label: str | None = None,
    jitter: float = 1.0,
) -> None:
    """Estimates ± SE against ``x`` (an optimizer filled, an SDE hollow); ``None`` (diverged) as ✕
    at the top of the panel."""
    x = np.asarray(x, dtype=float) * jitter
    kept = [(xi, v) for xi, v in zip(x, values, strict=True) if v is not None]
    filled = method == "optimizer"
    if kept:
        ax.errorbar(
            [xi for xi, _ in kept],
            [v.value for _, v in kept],
            yerr=[v.se for _, v in kept],
            fmt=METHOD_MARKERS.get(method, "x"),
            mfc=None if filled else "none",
            color=color,
            ms=5 if filled else 8,
            lw=0.8,
            capsize=2,
            label=label,
            zorder=3 if filled else 2,
        )
    lost = [xi for xi, v in zip(x, values, strict=True) if v is None]
    if lost:
        ax.plot(lost, [0.97] * len(lost), "X", ms=8, color=color, transform=ax.get_xaxis_transform())


def diverged_handle() -> Line2D:
    """Legend entry for :func:`sweep`'s ✕ marks."""
    return Line2D([], [], marker="X", ls="none", color="gray", label="diverged at this point")


def method_handles(methods: Sequence[str]) -> list[Line2D]:
    """Legend entries (grey, hollow) for the SDE markers of ``methods``."""
    return [
        Line2D([], [], marker=METHOD_MARKERS.get(m, "x"), mfc="none", ls="none", color="gray", **_label(m))
        for m in methods
        if m != "optimizer"
    ]


def _label(method: str) -> dict[str, Any]:
    return {"label": method_style(method)["label"]}


def shade_below(ax: Axes, cut: float, low: float, text: str) -> None:
    """A grey band over ``x ∈ [low, cut]`` labelled ``text`` at its top left (a regime where a
    theory is not expected to hold)."""
    if cut > low:
        ax.axvspan(low, cut, color="tab:gray", alpha=0.12, lw=0)
        ax.text(low * 1.1, 0.93, text, transform=ax.get_xaxis_transform(), fontsize=7)


def reciprocal_top_axis(ax: Axes, scale: float, label: str) -> None:
    """A top axis showing ``scale / x`` (κ = η·max h/σ over a σ axis)."""

    def reciprocal(values: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return scale / np.asarray(values, dtype=float)

    ax.secondary_xaxis("top", functions=(reciprocal, reciprocal)).set_xlabel(label)


@dataclass
class Sweep:
    """One method's estimates against the swept parameter (``None``: diverged there)."""

    x: Sequence[float]
    values: Sequence[Estimate | None]
    color: str
    method: str = "optimizer"
    label: str | None = None
    jitter: float = 1.0


def sweep_figure(
    sweeps: Sequence[Sweep],
    lines: Sequence[tuple[Sequence[float], Sequence[float], dict[str, Any]]] = (),
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = True,
    shade: tuple[float, str] | None = None,
    top_axis: tuple[float, str] | None = None,
    extra_handles: Sequence[Line2D] = (),
) -> Figure:
    """Estimates against a log-scaled parameter: the :class:`Sweep` marks, ``lines`` ``(x, y,
    style)`` (theory), a grey band below ``shade = (cut, text)``, a reciprocal top axis
    ``(scale, label)``; the legend holds every labelled mark, the SDE markers and ✕."""
    fig, ax = plt.subplots(figsize=(7.4, 5.0 if logy else 4.2))
    for s in sweeps:
        sweep(ax, s.x, s.values, color=s.color, method=s.method, label=s.label, jitter=s.jitter)
    for x, y, style in lines:
        ax.plot(x, y, **style)
    xs = np.concatenate([np.asarray(s.x, dtype=float) for s in sweeps])
    low, high = xs.min() / 1.5, xs.max() * 1.5
    if shade is not None:
        shade_below(ax, shade[0], low, shade[1])
    if top_axis is not None:
        reciprocal_top_axis(ax, *top_axis)
    if not logy:
        ax.axhline(0.0, color="black", lw=0.6)
    ax.set(xscale="log", yscale="log" if logy else "linear", xlim=(low, high), xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=9)
    handles, _ = ax.get_legend_handles_labels()
    shown = sorted({s.method for s in sweeps})
    lost = any(v is None for s in sweeps for v in s.values)
    handles += [*extra_handles, *method_handles(shown), *([diverged_handle()] if lost else [])]
    ax.legend(handles=handles, fontsize=7, loc="lower right" if logy else "best", ncol=1 if logy else 2)
    fig.tight_layout()
    return fig


def settling_figure(panels: dict[str, list[tuple[Recording, dict[str, Any]]]], burn_in: float) -> Figure:
    """Per panel, ``E f`` over the run divided by its stationary value for each ``(recording,
    style)``: every curve should sit at 1 from the start of the stationary window on."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        for rec, style in curves:
            if rec.divergence is None and len(rec.steps) > 1:
                level = recording_mean(rec, "loss", burn_in).value
                ax.plot(rec.steps / rec.steps[-1], rec.mean("loss") / level, lw=1.0, **style)
        ax.axvline(burn_in, color="gray", lw=0.8, ls=":", label="stationary window starts")
        ax.axhline(1.0, color="gray", lw=0.5, label="stationary level")
        ax.set(yscale="log", ylim=(0.1, None), xlabel="fraction of the run (k / steps)")
        ax.set_title(title, fontsize=9)
    axes[0][0].set_ylabel("E f / stationary E f")
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def log_histograms(panels: dict[str, dict[str, tuple[np.ndarray, str]]], xlabel: str) -> Figure:
    """One panel per title: for each label, a step histogram of ``log₁₀`` of the positive samples in
    its colour.  Values more than a decade below every 1% quantile are clipped into the first bin
    (a lattice through 0 visits 1e-32 now and then)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False, sharey=True)
    for ax, (title, samples) in zip(axes[0], panels.items(), strict=True):
        logs = {label: (np.log10(v[v > 0]), color) for label, (v, color) in samples.items() if (v > 0).any()}
        if logs:
            low = min(np.quantile(v, 0.01) for v, _ in logs.values()) - 1.0
            high = max(v.max() for v, _ in logs.values())
            for label, (values, color) in logs.items():
                clipped = np.clip(values, low, None)
                ax.hist(
                    clipped,
                    bins=60,
                    range=(low, high),
                    density=True,
                    histtype="step",
                    color=color,
                    label=label,
                )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def band_grid(panels: dict[tuple[str, str], dict[str, Recording]], empty: str, ylabel: str) -> Figure:
    """A grid of :func:`~optsde.report.plot_band` panels keyed ``(row, column)`` (title "row, column"),
    each kept in view of the methods that did not diverge; a panel with a single method says ``empty``."""
    rows, cols = list(dict.fromkeys(r for r, _ in panels)), list(dict.fromkeys(c for _, c in panels))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 2.8 * len(rows)), squeeze=False)
    for (row, col), recordings in panels.items():
        ax = axes[rows.index(row)][cols.index(col)]
        for rec in recordings.values():
            if len(rec.steps):
                plot_band(ax, rec, lw=1.0)
        if len(recordings) < 2:
            ax.text(0.5, 0.5, empty, ha="center", transform=ax.transAxes, fontsize=8)
        ax.set_yscale("log")
        keep_in_view(ax, recordings.values())
        ax.set_title(f"{row}, {col}", fontsize=9)
        ax.set_xlabel("t = kη", fontsize=8)
        ax.legend(fontsize=6)
    for row in axes:
        row[0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the summary's points


def point_loss(point: Mapping[str, Any], method: str = "optimizer") -> Estimate | None:
    """``method``'s stationary loss at a ``noise-resilience`` point (None where it diverged)."""
    numbers = point["stationary_loss"].get(method)
    return None if numbers is None else Estimate(numbers["mean"], numbers["stderr"])


def point_rel_error(point: Mapping[str, Any], method: str) -> Estimate | None:
    """``method``'s stationary loss relative to the optimizer's, minus 1, in percent."""
    f = point["fidelity"].get(method, {})
    if "stationary_rel_error" not in f:
        return None
    return Estimate(f["stationary_rel_error"], f["stationary_rel_error_se"]) * 100


def point_methods(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """``optimizer`` first, then the SDEs, as they appear in the points."""
    found = {m for p in points for m in (*p["stationary_loss"], *p["fidelity"])}
    return sorted(found | {"optimizer"}, key=lambda m: (m != "optimizer", m))


# ---------------------------------------------------------------- noise-resilience


def sigma_figures(
    blocks: Mapping[str, Mapping[str, Any]], h: np.ndarray, lr: float, kappa_fit: float
) -> dict[str, Figure]:
    """``loss_vs_sigma`` (optimizers filled, SDEs hollow, the recommended law as a line, the bound
    of a bounded optimizer dotted, κ > ``kappa_fit`` shaded) and, where an SDE ran,
    ``sde_fidelity`` (κ on the top axis)."""
    sweeps, fidelity, lines = [], [], []
    shade = (lr * float(h.max()) / kappa_fit, f"κ > {kappa_fit:g}")
    for i, (name, block) in enumerate(blocks.items()):
        style, points, fit = optimizer_style(get_optimizer(name)), block["points"], block["laws"]["fit"]
        x, color = [p["sigma"] for p in points], style["color"]
        label = style["label"] + (f" (slope {fit['slope']:.3f} ± {fit['slope_se']:.3f})" if fit else "")
        sweeps.append(Sweep(x, [point_loss(p) for p in points], color, "optimizer", label))
        for method in point_methods(points)[1:]:
            sweeps.append(Sweep(x, [point_loss(p, method) for p in points], color, method))
            values = [point_rel_error(p, method) for p in points]
            tag = f"{style['label']}: {method_style(method)['label']}"
            fidelity.append(Sweep(x, values, color, method, tag, 10 ** (0.025 * (i - len(blocks) / 2))))
        for key, ls in (("theory", "-"), ("bound", ":")):
            known = [(p["sigma"], p[key]["value"]) for p in points if p[key]]
            if known and (key == "theory" or block["laws"]["law_exponent"] == 0):
                tag = (
                    {"label": f"{style['label']}: bound {points[-1]['bound']['formula']}"}
                    if ls == ":"
                    else {}
                )
                lines.append((*zip(*known, strict=True), {"ls": ls, "lw": 0.9, "color": color, **tag}))
    law_line = Line2D([], [], color="gray", lw=0.9, label="theory's recommended law (docs/theory.md §8)")
    title = f"asymptotic loss vs σ at η = {lr:g}, H = diag({', '.join(f'{v:g}' for v in h)})"
    axes = {"xlabel": "noise level σ", "shade": shade}
    figures = {
        "loss_vs_sigma": sweep_figure(
            sweeps, lines, ylabel="stationary E f", title=title, extra_handles=[law_line], **axes
        )
    }
    if fidelity:
        kappa_axis = (lr * float(h.max()), "κ = η·max h/σ")
        ylabel = "SDE / optimizer − 1 (%)\nstationary loss"
        figures["sde_fidelity"] = sweep_figure(
            fidelity, ylabel=ylabel, logy=False, top_axis=kappa_axis, **axes
        )
    return figures


def settling_curves(name: str, recordings: Mapping[str, Recording]) -> list[tuple[Recording, dict[str, Any]]]:
    """``(recording, style)`` per method of optimizer ``name`` for :func:`settling_figure`: the
    optimizer's colour, the method's line style."""
    color = optimizer_style(get_optimizer(name))["color"]
    return [
        (rec, {"color": color, "ls": method_style(m).get("linestyle", "-"), "label": f"{name} {m}"})
        for m, rec in recordings.items()
    ]


def sigma_table(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown rows per σ: κ, steps, E f ± SE, the recommended law, each SDE's relative error."""
    sdes = point_methods(points)[1:]
    header = "| σ | κ | steps | E f ± SE | recommended law | " + " | ".join(f"{m} − 1 (%)" for m in sdes)
    rows = [header + " |", "|" + "---|" * (5 + len(sdes))]
    for p in points:
        law = p["theory"]
        cells = [f"{p['sigma']:.3g}", f"{p['kappa']:.3g}", str(p["steps"]), str(point_loss(p) or "diverged")]
        regime = "" if not law or law["valid"] else " (outside regime)"
        cells.append("—" if not law else f"{law['value']:.4g}{regime}")
        cells += [str(point_rel_error(p, m) or "—") for m in sdes]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


# ---------------------------------------------------------------- heavy-tails


def loss_vs_nu_figure(
    blocks: Mapping[str, Mapping[str, Any]], nus: Sequence[float], quantile_levels: Sequence[float]
) -> Figure:
    """Median (filled; bars: the outer quantiles) and mean (hollow, where it exists) against ν."""
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for i, (name, block) in enumerate(blocks.items()):
        color = optimizer_style(get_optimizer(name))["color"]
        for j, point in enumerate(block["points"]):
            x, stats = j + 0.12 * (i - (len(blocks) - 1) / 2), point["methods"].get("optimizer")
            if stats is None:
                ax.plot(x, 0.97, "X", ms=8, color=color, transform=ax.get_xaxis_transform())
                continue
            q = list(stats["quantiles"].values())
            ax.plot([x, x], [q[0], q[-1]], color=color, lw=1.2)
            ax.plot(x, stats["median"], "o", color=color, label=f"{name} median" if j == 0 else None)
            if stats["mean_finite"]:
                ax.plot(
                    x, stats["mean"], "D", mfc="none", color=color, label=f"{name} mean" if j == 0 else None
                )
            else:
                ax.annotate(
                    "no mean", (x, q[-1]), xytext=(2, 4), textcoords="offset points", fontsize=7, color=color
                )
    handles, _ = ax.get_legend_handles_labels()
    levels = sorted(quantile_levels)
    handles.append(
        Line2D([], [], color="gray", lw=1.2, label=f"bars: pooled quantiles {levels[0]:g} – {levels[-1]:g}")
    )
    if any("optimizer" not in p["methods"] for b in blocks.values() for p in b["points"]):
        handles.append(diverged_handle())
    ax.set_yscale("log")
    ax.set_xticks(range(len(nus)), [f"ν = {nu:g}" for nu in nus])
    ax.set_ylabel("stationary f")
    ax.set_title("stationary loss under Student-t noise s·T_ν", fontsize=9)
    ax.legend(handles=handles, fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def nu_histograms(
    recordings: Mapping[tuple[str, float], Mapping[str, Recording]], nus: Sequence[float], burn_in: float
) -> Figure:
    """Per ν, the stationary loss of each optimizer (recordings keyed ``(optimizer, ν)``) as
    :func:`log_histograms`; an optimizer that diverged is left out of its panel."""
    samples: dict[str, dict[str, tuple[np.ndarray, str]]] = {f"ν = {nu:g}": {} for nu in nus}
    for (name, nu), recs in recordings.items():
        if recs["optimizer"].divergence is None and len(recs["optimizer"].steps) > 1:
            values = stationary_values(recs["optimizer"], "loss", burn_in).ravel()
            samples[f"ν = {nu:g}"][name] = (values, optimizer_style(get_optimizer(name))["color"])
    return log_histograms(samples, "log₁₀ f (stationary; first bin: all below)")


def nu_table(blocks: Mapping[str, Mapping[str, Any]], quantile_levels: Sequence[float]) -> list[str]:
    """Markdown rows per optimizer, ν and method: mean ± SE (where it exists), median ± SE, the
    outer quantiles and the SDE's stationary loss against the optimizer's."""
    quantiles = f"q{quantile_levels[0]:g} – q{quantile_levels[-1]:g}"
    rows = [
        f"| optimizer | ν | method | mean ± SE | median ± SE | {quantiles} | SDE / optimizer − 1 (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, block in blocks.items():
        for p in block["points"]:
            if not p["methods"]:
                rows.append(f"| {name} | {p['nu']:g} | optimizer | diverged | — | — | — |")
            for method, s in p["methods"].items():
                q, f = list(s["quantiles"].values()), p["fidelity"].get(method, {})
                mean = str(Estimate(s["mean"], s["stderr"])) if s["mean_finite"] else "no mean"
                error = (
                    Estimate(f["stationary_rel_error"], f["stationary_rel_error_se"]) * 100
                    if f.get("stationary_rel_error") is not None
                    else "—"
                )
                median = Estimate(s["median"], s["median_se"])
                spread = f"{q[0]:.3g} – {q[-1]:.3g}"
                rows.append(f"| {name} | {p['nu']:g} | {method} | {mean} | {median} | {spread} | {error} |")
    return rows
