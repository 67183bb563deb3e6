"""Figure helpers shared by experiments: every drawn line in a legend or labelled on the plot.

:mod:`optsde.report` draws recordings (bands, divergence marks, kept ranges); these draw the
numbers an experiment derived from them — estimates with error bars, reference levels, labels at
the ends of curves — so that a figure never shows a line a reader cannot name.  Styles come from
what each optimizer family declares (``spec.capabilities.style``) and from the method table of
:mod:`optsde.report`; nothing here knows an optimizer by name.  ``panels_figure`` draws ``E f``
per panel; a method that diverged, or left its optimizer's range without overflowing
(:func:`optsde.analysis.departure_step`), is drawn up to there, marked in the legend with its
step, and kept from rescaling the panel.  Drawing that belongs to one topic lives in a module
named after it (:mod:`optsde.figures.noise`: sweeps of estimates, settling, histograms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from optsde.analysis import Estimate, departure_step
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


def optimizer_style(spec: OptimizerSpec) -> dict[str, str]:
    """``color`` and ``label`` of ``spec`` as its family declares them."""
    return dict(spec.capabilities.style)


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
