"""Figure helpers shared by experiments: every drawn line in a legend or labelled on the plot.

:mod:`optsde.report` draws recordings (bands, divergence marks, kept ranges); these draw the
numbers an experiment derived from them — estimates with error bars, reference levels, labels at
the ends of curves, sweeps of estimates, shaded regimes — so that a figure never shows a line a
reader cannot name.  Styles come from what each optimizer family declares
(``spec.capabilities.style``) and from the method table of :mod:`optsde.report`; nothing here
knows an optimizer by name.  A method that diverged at a sweep point is marked there with ✕ at
the top of the panel, never left out silently.  ``panels_figure`` draws ``E f`` per panel; a
method that diverged, or left its optimizer's range without overflowing
(:func:`optsde.analysis.departure_step`), is drawn up to there, marked in the legend with its
step, and kept from rescaling the panel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from optsde.analysis import Estimate, departure_step, recording_mean
from optsde.optimizers import OptimizerSpec
from optsde.report import keep_in_view, method_style, plot_band
from optsde.sde import Recording

MARKERS = ("o", "s", "^", "D", "v", "P")
LINE_STYLES = ("-", "-.", ":", (0, (5, 2)), (0, (1, 1)), (0, (3, 1, 1, 1)))


def series_style(index: int, color: str | None = None) -> dict[str, Any]:
    """Marker, line style and fill for the ``index``-th series sharing an axis: neighbours differ
    in all three, so a series drawn over another stays visible even in one colour."""
    return {
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
        "mfc": "none" if index % 2 else color,
        "color": color,
    }


def dodge(index: int, count: int, factor: float = 1.06) -> float:
    """A multiplicative x offset for series ``index`` of ``count`` on a log axis, so that
    markers at the same x do not cover each other."""
    return factor ** (index - (count - 1) / 2)


def errorbars(ax: Axes, x: Sequence[float], estimates: Sequence[Estimate], **style: Any) -> None:
    """Estimates at ``x`` with ± one standard error, markers only (the style's line is not drawn)."""
    values = np.array([e.value for e in estimates])
    ax.errorbar(np.asarray(x), values, [e.se for e in estimates], **{**style, "linestyle": "none"})


def legend_entry(ax: Axes, label: str, **style: Any) -> None:
    """A legend entry for lines drawn without a label (one entry standing for several)."""
    ax.plot([], [], label=label, **style)


def reference_line(ax: Axes, level: float, label: str | None = None, **style: Any) -> None:
    """A horizontal reference level (a prediction, a bound); ``label`` puts it in the legend."""
    ax.axhline(level, **{"lw": 0.8, **style}, label=label)


def label_curves(
    ax: Axes, curves: Iterable[tuple[str, np.ndarray, np.ndarray]], index: int = -1, **text: Any
) -> None:
    """Write each ``(label, x, y)`` curve's label beside its point ``index`` (default the last; 0
    puts it left of the first).  Where curves meet at one end, label them where they are apart."""
    shift, align = (-4, "right") if index == 0 else (4, "left")
    for label, x, y in curves:
        ax.annotate(
            label,
            (float(x[index]), float(y[index])),
            xytext=(shift, 0),
            textcoords="offset points",
            va="center",
            ha=align,
            **{"fontsize": 7, **text},
        )


METHOD_MARKERS = {
    "optimizer": "o",
    "sde-paper": "s",
    "sde-refined": "^",
    "sde-malladi": "v",
    "sde-gaussian": "D",
    "sde-student-t": "o",
}
"""Marker per method in sweep figures: the optimizer filled, its SDEs hollow."""


def optimizer_style(spec: OptimizerSpec) -> dict[str, str]:
    """``color`` and ``label`` of ``spec`` as its family declares them."""
    return dict(spec.capabilities.style)


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


BASE_VARIANT = "base"
"""The run at batch ``B`` that every scaling variant is compared with."""

SCALING_VARIANT_STYLE: dict[str, dict[str, str]] = {
    BASE_VARIANT: {"color": "black", "label": "base (batch B)"},
    "paper": {"color": "tab:red", "label": "paper's rule"},
    "malladi": {"color": "tab:blue", "label": "Malladi et al.'s β rule"},
    "paper-fixed-theta": {"color": "tab:orange", "label": "paper's rule, θ not rescaled"},
    "none": {"color": "tab:gray", "label": "no rescaling"},
}
"""How the scaling experiments draw the base run and each of :data:`optsde.scaling.SCALING_VARIANTS`."""


def departures(recordings: Mapping[str, Recording]) -> dict[str, int]:
    """Method → the step at which it left the ``optimizer`` recording's range (finite but blown up)."""
    optimizer = recordings.get("optimizer")
    if optimizer is None or len(optimizer.steps) == 0:
        return {}
    out = {}
    for method, rec in recordings.items():
        if method != "optimizer" and rec.divergence is None and len(rec.steps):
            step = departure_step(optimizer, rec)
            if step is not None:
                out[method] = step
    return out


def panels_figure(
    panels: Mapping[str, Mapping[str, Recording]], titles: Mapping[str, str], heading: str
) -> Figure:
    """``E f`` over time, one panel per entry of ``panels`` (label → method → recording)."""
    count = len(panels)
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, (label, recordings) in zip(axes.flat, panels.items(), strict=False):
        left = departures(recordings)
        for method, rec in recordings.items():
            if not len(rec.steps):
                continue
            style = {}
            if method in left:
                style["label"] = f"{method_style(method)['label']} (left the range at step {left[method]})"
            plot_band(ax, rec, "loss", **style)
        keep_in_view(ax, [rec for m, rec in recordings.items() if m not in left], "loss", log=False)
        ax.set_title(titles[label], fontsize=9)
        ax.set_xlabel("t = k η", fontsize=8)
        ax.set_ylabel("f(x)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return fig
