"""Figure helpers shared by experiments: every drawn line in a legend or labelled on the plot.

:mod:`optsde.report` draws recordings (bands, divergence marks, kept ranges); these draw the
numbers an experiment derived from them — estimates with error bars, reference levels, labels at
the ends of curves — so that a figure never shows a line a reader cannot name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from optsde.analysis import Estimate

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
