"""Figure helpers shared by more than one experiment (:mod:`optsde.report` holds the basic ones).

``panels_figure`` draws ``E f`` per panel in the paper's style (mean, band of ± one s.d. over
paths); a method that diverged, or that left its optimizer's range without overflowing
(:func:`optsde.analysis.departure_step`), is drawn up to there, marked in the legend with its
step, and kept from rescaling the panel (:func:`optsde.report.keep_in_view`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from optsde.analysis import departure_step
from optsde.report import keep_in_view, method_style, plot_band
from optsde.sde import Recording

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
