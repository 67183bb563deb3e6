"""Figures and prose of the ``signsgd-phases`` experiment (paper Fig. 2, docs/theory.md §5).

Each function takes plain data (recordings keyed by method, arrays of theory) and returns a
figure or report lines.  SignSGD and the full SDE are drawn with a band over paths (± 1 sd on a
linear axis, 25–75% on a log one), the phase approximations as their mean; the phase-1 ODE only
until it reaches 0 (after that it hops on the lattice ηℤ and models nothing).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from optsde.analysis import Check, Estimate, restrict
from optsde.optimizers.signsgd import PhaseThresholds
from optsde.report import method_style, plot_mean, two_way_legend
from optsde.sde import Recording

THEORY = {"color": "black", "ls": "--", "lw": 1.2}
PHASE_COLORS = ("tab:red", "tab:orange", "tab:green")
METHOD_LINES = {"optimizer": "-", "sde-paper": "--"}


def setting_line(h: np.ndarray, s: float, lr: float, x0: Sequence[float], paths: int, regime: str) -> str:
    """Report line: the quadratic, the noise scale, the step, the start, the paths and the regime."""
    return (
        f"SignSGD on f = ½xᵀHx, H = diag({', '.join(f'{v:g}' for v in h)}), s = σ/√B = {s:g}, η = {lr:g}, "
        f"x₀ = {tuple(x0)}, {paths} paths. {regime}"
    )


def phase_lines(windows: Sequence[Mapping[str, float | None]], occupancy: float) -> list[str]:
    """Report lines: per coordinate, the time span of each phase (``phase_windows`` of
    :mod:`optsde.theory.signsgd`)."""
    lines = [f"\n**Phases** (while ≥ {occupancy:.0%} of SignSGD's paths are in them):"]
    for i, w in enumerate(windows):
        spans = [f"phase {k} " + _span(w[f"phase{k}_from"], w[f"phase{k}_to"]) for k in (1, 2, 3)]
        lines.append(f"- x[{i}]: {', '.join(spans)}.")
    return lines


def _span(start: float | None, stop: float | None) -> str:
    return "never" if start is None else f"t ∈ [{start:.3g}, {stop:.3g}]"


def schedules_heading(x0: Sequence[float], y0: np.ndarray) -> list[str]:
    """Report lines opening the schedules panel: the start and its ``|Y₀|``, and a warning where it
    is outside phase 3."""
    lines = [f"\n**Schedules** from x₀ = {tuple(x0)} (|Y₀| = {', '.join(f'{v:.2g}' for v in y0)}):"]
    if (y0 >= 1).any():
        lines.append(
            "- `schedule_x0` is outside phase 3 (|Y| ≥ 1): the bound and the prediction need not hold."
        )
    return lines


def schedule_line(name: str, final: Estimate, stationary: float, predicted: float, bound: float) -> str:
    """Report line: a schedule's final loss against the constant-lr level, its prediction and bound."""
    return (
        f"- {name}: final E f = {final} = {final.value / stationary:.2f}× the constant-lr level "
        f"{stationary:.3g}; phase-3 prediction {predicted:.3g}; bound {bound:.3g}."
    )


def checks_headline(checks: Iterable[Check]) -> list[str]:
    """Report lines: how many checks pass, then each one that does not, as its sentence."""
    every = list(checks)
    missed = [f"- {c.sentence()}" for c in every if c.verdict != "pass"]
    head = f"**{len(every) - len(missed)} of {len(every)} checks pass**" + (", not these:" if missed else ".")
    return ["", head, *missed]


def _curve(
    ax: Axes, rec: Recording, metric: str, index: int | None = None, log: bool = False, **style: Any
) -> None:
    if rec.method == "ode-phase1":
        arrived = np.flatnonzero((np.abs(rec.mean("x")) <= rec.lr).all(axis=1))
        rec = restrict(rec, np.arange(len(rec.steps)) <= (arrived[0] if arrived.size else len(rec.steps)))
    band = ("quartiles" if log else "sd") if rec.method in ("optimizer", "sde-paper") else None
    plot_mean(ax, rec, metric, index, band, **style)


def trajectory_figure(
    main: Mapping[str, Recording],
    phase3: Mapping[str, Recording] | None,
    brackets: Sequence[Mapping[str, Any]],
    h: np.ndarray,
    s: float,
) -> Figure:
    """(a) mean paths in the plane, the coordinates over time, the mean inside the phase-2 bracket.

    ``main``: the recordings from x₀; ``phase3``: those from phase-3 entry (None: not reached), of
    which the phase-3 SDE is drawn.

    ``brackets``: per coordinate ``i`` with a phase-2 stretch, its times ``t``, SignSGD's paths
    ``x`` ``(T, P)`` and each path's bracket ``low``, ``high`` ``(T, P)``; drawn as the mean's
    offset from the middle of the bracket (± 2 SE over paths) against the half-width."""
    fig, (plane, coords, bracket) = plt.subplots(1, 3, figsize=(15, 4.2))
    recordings = {**main, **({"sde-phase3": phase3["sde-phase3"]} if phase3 else {})}
    j = min(1, len(h) - 1)
    for rec in recordings.values():
        plane.plot(rec.mean("x")[:, 0], rec.mean("x")[:, j], lw=1.8, **method_style(rec.method))
        for i in range(j + 1):
            _curve(coords, rec, "x", i, label=f"{method_style(rec.method)['label']} x[{i}]", lw=1.6 - 0.7 * i)
    for n, path in enumerate(recordings["optimizer"].snapshots.transpose(1, 0, 2)[:2]):
        plane.plot(
            path[:, 0], path[:, j], lw=0.4, color="gray", label=None if n else "SignSGD, 2 sample paths"
        )
    for level, ls in ((PhaseThresholds().low, ":"), (PhaseThresholds().high, "-.")):
        plane.axvline(level * s / h[0], color="gray", lw=0.7, ls=ls, label=f"|Y| = {level:g}")
        plane.axhline(level * s / h[j], color="gray", lw=0.7, ls=ls)
    for b in brackets:
        t, low, high = b["t"], b["low"], b["high"]
        offset = b["x"] - (high + low) / 2
        paths = offset.shape[1]
        mean, se = offset.mean(axis=1), offset.std(axis=1, ddof=1) / math.sqrt(paths) if paths > 1 else 0 * t
        half = (high - low).mean(1) / 2
        line = bracket.plot(t, mean, lw=1.4, label=f"SignSGD E x[{b['i']}] ± 2 SE")[0]
        bracket.fill_between(t, mean - 2 * se, mean + 2 * se, color=line.get_color(), alpha=0.2, lw=0)
        bracket.plot(t, half, color=line.get_color(), lw=0.8, ls="--", label=f"bracket of x[{b['i']}]")
        bracket.plot(t, -half, color=line.get_color(), lw=0.8, ls="--")
    if not brackets:
        bracket.text(0.5, 0.5, "no stretch in phase 2 recorded", ha="center", transform=bracket.transAxes)
    plane.set(xlabel="x[0]", ylabel=f"x[{j}]", title="mean paths in the plane")
    coords.set(xlabel="t = k η", ylabel="E x[i] (band ± 1 sd)", title="coordinates over time")
    bracket.set(
        xlabel="t = k η",
        ylabel="E x − middle of the bracket",
        title="phase 2: mean in the drift-bound bracket",
    )
    for ax in (plane, coords, bracket) if brackets else (plane, coords):
        ax.legend(fontsize=6)
    fig.suptitle("(a) SignSGD: optimizer, full SDE, phase-1 ODE, phase-3 SDE, phase-2 bracket", fontsize=10)
    fig.tight_layout()
    return fig


def loss_bounds_figure(
    recordings: Mapping[str, Recording],
    bounds: Mapping[str, tuple[np.ndarray, np.ndarray]],
    stationary: float,
) -> Figure:
    """(b) E f with each phase's bound ``bounds["phase1"|"phase3"] = (t, bound)`` drawn over the
    time that phase lasts, and the phase-3 stationary loss."""
    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    ax.set_yscale("log")
    for rec in recordings.values():
        _curve(ax, rec, "loss", log=True)
    for (key, (tb, fb)), color in zip(bounds.items(), ("tab:purple", "tab:brown"), strict=False):
        ax.plot(tb, fb, color=color, lw=1.5, label=f"phase-{key[-1]} bound, over phase {key[-1]}")
    ax.axhline(stationary, label="phase-3 stationary loss", **THEORY)
    ax.set(ylim=(min(1e-6, stationary / 10), None), xlabel="t = k η", ylabel="f(x) (mean; band 25–75%)")
    ax.set_title("(b) loss and the bound of each phase, over that phase", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def moments_figure(recordings: Mapping[str, Recording], laws: Mapping[str, np.ndarray]) -> Figure:
    """(c) E X_t and E X_t² in phase 3: the closed forms ``laws["x"|"x2"]`` ``(T, d)`` on the
    recordings' clock against the simulations, with the stationary ``E X²`` per coordinate
    ``laws["stationary_x2"]``."""
    times = recordings["optimizer"].times
    d = min(laws["x"].shape[1], 2)
    fig, axes = plt.subplots(2, d, figsize=(5.0 * d, 6.4), squeeze=False)
    for (row, metric), i in itertools.product(enumerate(("x", "x2")), range(d)):
        ax, log = axes[row, i], metric == "x2"
        if log:
            ax.set_yscale("log")
            ax.axhline(
                laws["stationary_x2"][i], color="gray", lw=0.6, ls=":", label="stationary E X² (phase 3)"
            )
        for rec in recordings.values():
            _curve(ax, rec, metric, index=i, log=log)
        ax.plot(times, laws[metric][:, i], label="closed form (phase 3)", **THEORY)
        ax.set(
            title=f"E {'X²' if log else 'X'}, x[{i}] (band {'25–75%' if log else '± 1 sd'})", xlabel="t = k η"
        )
        ax.legend(fontsize=7)
    fig.suptitle("(c) moments of X_t in phase 3: closed forms vs simulation", fontsize=10)
    fig.tight_layout()
    return fig


def occupancy_figure(recordings: Mapping[str, Recording], until: float) -> Figure:
    """Fraction of paths in each phase over time, per coordinate (optimizer solid, SDE dashed)."""
    d = min(recordings["optimizer"].values["x"].shape[-1], 4)
    fig, axes = plt.subplots(1, d, figsize=(4.6 * d, 3.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for (method, ls), (k, color) in itertools.product(METHOD_LINES.items(), enumerate(PHASE_COLORS, 1)):
            rec = recordings[method]
            ax.plot(rec.times, rec.mean(f"phase{k}")[:, i], color=color, ls=ls, label=f"phase {k} ({method})")
        ax.set(xlim=(0.0, until), title=f"x[{i}]", xlabel="t = k η", ylabel="fraction of paths")
        ax.legend(fontsize=6)
    fig.suptitle("phase occupancy of Y = ∇f/s (Lemma 3.4 thresholds 1 and 3/2)", fontsize=10)
    fig.tight_layout()
    return fig


def schedules_figure(
    runs: Mapping[str, tuple[Mapping[str, Recording], np.ndarray, np.ndarray]], stationary: float
) -> Figure:
    """(d) the loss under each schedule ``name → (recordings, bound, predicted)`` (log–log):
    optimizer (band), SDE, bound, phase-3 prediction, and the constant-lr stationary loss."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.set(xscale="log", yscale="log", xlabel="t", ylabel="f(x) (mean; band 25–75%)")
    colors = dict(zip(runs, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for name, (recordings, bound, predicted) in runs.items():
        t = recordings["optimizer"].times
        _curve(ax, recordings["optimizer"], "loss", log=True, color=colors[name], lw=1.6)
        _curve(ax, recordings["sde-paper"], "loss", log=True, color=colors[name], linestyle="--", lw=1.0)
        ax.plot(t[t > 0], bound[t > 0], color=colors[name], ls=":", lw=1.2)
        ax.plot(t[t > 0], predicted[t > 0], color=colors[name], ls="-.", lw=0.8)
    level = ax.axhline(stationary, color="gray", lw=0.7, label="constant-lr stationary loss")
    styles = {"optimizer": "-", "SDE": "--", "schedule bound": ":", "phase-3 moments": "-."}
    two_way_legend(ax, colors, styles, [level], fontsize=7, ncol=2, loc="lower left")
    ax.set_xlim(left=1e-2)
    ax.set_title("(d) schedules: loss → 0 only if Φ(∞) = ∞ and φ → 0", fontsize=10)
    fig.tight_layout()
    return fig
