"""What every run leaves behind: config.json, series.csv, summary.json, figures, report.md.

:func:`write_result` fills a directory that the run owns alone (its work area,
:mod:`optsde.results`), which is moved into place only when the run is complete.
An interrupted run (Ctrl-C) still writes what it had recorded, marked
``"status": "interrupted"``; a run in quick mode says so, and what it left out.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from optsde.analysis import DEPARTURE_GAP, Check, checks_summary, checks_table
from optsde.sde import Recording

SERIES_COLUMNS = ("experiment", "panel", "method", "t", "metric", "mean", "stderr")

METHOD_STYLE = {
    "optimizer": {"color": "black", "linestyle": "-", "label": "optimizer"},
    "sde-paper": {"color": "tab:red", "linestyle": "--", "label": "SDE (paper)"},
    "sde-malladi": {"color": "tab:blue", "linestyle": ":", "label": "SDE (Malladi et al.)"},
    "sde-refined": {"color": "tab:green", "linestyle": "-.", "label": "SDE (refined)"},
    "sde-gaussian": {"color": "tab:orange", "linestyle": "--", "label": "SDE (Gaussian form)"},
    "sde-general": {"color": "tab:red", "linestyle": "-.", "label": "SDE (general form, real signs)"},
    "sde-student-t": {"color": "tab:purple", "linestyle": "--", "label": "SDE (Student-t form)"},
    "ode-phase1": {"color": "tab:cyan", "linestyle": "-.", "label": "phase-1 ODE"},
    "sde-phase3": {"color": "tab:olive", "linestyle": ":", "label": "phase-3 SDE"},
}


def method_style(method: str) -> dict[str, str]:
    return dict(METHOD_STYLE.get(method, {"label": method}))


@dataclass
class Result:
    """Everything an experiment produced; filled as it runs so an interrupt keeps what was done."""

    experiment: str
    config: dict[str, Any]
    rows: list[tuple[str, str, str, float, str, float, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    checks: dict[str, list[Check]] = field(default_factory=dict)
    status: str = "complete"

    def add_series(
        self, panel: str, method: str, t: np.ndarray, metric: str, mean: np.ndarray, stderr: np.ndarray
    ) -> None:
        for ti, mi, si in zip(np.asarray(t), np.asarray(mean), np.asarray(stderr), strict=True):
            self.rows.append((self.experiment, panel, method, float(ti), metric, float(mi), float(si)))

    def add_recording(self, panel: str, rec: Recording, metrics: tuple[str, ...] | None = None) -> None:
        """Rows for ``rec``'s means and standard errors; vector metrics become ``name[i]``."""
        for name in metrics or tuple(rec.values):
            mean, stderr = rec.mean(name), rec.stderr(name)
            if mean.ndim == 1:
                self.add_series(panel, rec.method, rec.times, name, mean, stderr)
            else:
                for i in range(mean.shape[1]):
                    self.add_series(panel, rec.method, rec.times, f"{name}[{i}]", mean[:, i], stderr[:, i])

    def say(self, line: str = "") -> None:
        self.report.append(line)

    def add_checks(self, panel: str, checks: list[Check]) -> None:
        """Judged claims of ``panel``: summary.json and report.md are written from them
        (docs/analysis.md: one check type, one tolerance policy)."""
        self.checks.setdefault(panel, []).extend(checks)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(_jsonable(value), indent=2) + "\n")


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_format(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def quick_mode_note(config: dict[str, Any]) -> list[str]:
    """The report's sentence for a run made with ``--quick``: that it was, and what it left out.

    ``config["quick_changes"]`` maps each parameter quick mode changed to its quick and its
    full-run value (see ``optsde run``).
    """
    if not config.get("quick"):
        return []
    changes = config.get("quick_changes", {})
    listed = "; ".join(
        f"{key} = {_format(change['quick'])} (full run: {_format(change['full'])})"
        for key, change in changes.items()
    )
    return [
        "**Made in quick mode (`--quick`)**: smaller sizes than the full experiment, so the numbers "
        "are noisier and some settings are left out"
        + (f" — {listed}." if listed else ".")
        + " Run without `--quick` for the full experiment.",
        "",
    ]


def write_result(result: Result, out: Path) -> Path:
    """Write ``result``'s files into directory ``out`` (created if needed) and return it.

    ``out`` belongs to this run alone: files already there under the same names are replaced.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", result.config)
    with open(out / "series.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SERIES_COLUMNS)
        for row in result.rows:
            writer.writerow([*row[:3], f"{row[3]:.9g}", row[4], f"{row[5]:.9g}", f"{row[6]:.6g}"])
    checks = {panel: checks_summary(panel_checks) for panel, panel_checks in result.checks.items()}
    write_json(
        out / "summary.json",
        {
            "experiment": result.experiment,
            "status": result.status,
            **result.summary,
            **({"checks": checks} if checks else {}),
        },
    )
    for name, figure in result.figures.items():
        figure.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(figure)
    header = [f"# {result.experiment}", ""]
    if result.status != "complete":
        header += [f"**Status: {result.status}** — the numbers below cover what was recorded.", ""]
    header += quick_mode_note(result.config)
    figures = ["", "## Figures", ""] + [f"![{name}]({name}.png)" for name in result.figures]
    (out / "report.md").write_text(
        "\n".join(header + result.report + checks_section(result.checks) + figures) + "\n"
    )
    return out


def checks_section(checks: dict[str, list[Check]]) -> list[str]:
    """report.md's verdicts: per panel a table of checks (value ± SE, target, rule, verdict) and a
    count of what passed, failed or could not be decided."""
    if not checks:
        return []
    lines = ["", "## Checks", ""]
    for panel, panel_checks in checks.items():
        verdicts = [check.verdict for check in panel_checks]
        counts = ", ".join(
            f"{verdicts.count(v)} {v}" for v in ("pass", "fail", "inconclusive") if v in verdicts
        )
        lines += [f"### {panel} ({counts})", "", checks_table(panel_checks), ""]
    return lines


def plot_band(ax: Axes, rec: Recording, metric: str = "loss", index: int | None = None, **style: Any) -> None:
    """Mean over paths with a band of ± one standard deviation across paths (the paper's style).
    A diverged method is drawn up to its last finite record and marked there with ✕."""
    values = rec.values[metric] if index is None else rec.values[metric][..., index]
    mean, spread = values.mean(axis=1), values.std(axis=1)
    kwargs = {**method_style(rec.method), **style}
    if rec.divergence is not None:
        kwargs["label"] = f"{kwargs.get('label', rec.method)} (diverged at step {rec.divergence.step})"
    line = ax.plot(rec.times, mean, **kwargs)[0]
    ax.fill_between(rec.times, mean - spread, mean + spread, color=line.get_color(), alpha=0.15, lw=0)
    if rec.divergence is not None and len(rec.times):
        ax.plot(rec.times[-1], mean[-1], marker="X", ms=9, color=line.get_color(), ls="none")


def plot_mean(
    ax: Axes,
    rec: Recording,
    metric: str = "loss",
    index: int | None = None,
    band: str | None = "sd",
    **style: Any,
) -> Line2D:
    """The mean over paths of ``metric`` (coordinate ``index`` of a vector one) in ``rec``'s method
    style, with a band across paths: ``"sd"``, ± one standard deviation (the paper's style);
    ``"quartiles"``, 25–75% (for a log axis, where mean − sd may be negative); None, no band.
    On a log time axis t = 0 is left out."""
    values = rec.values[metric] if index is None else rec.values[metric][..., index]
    mean = values.mean(axis=1)
    keep = rec.times > 0 if ax.get_xscale() == "log" else np.ones(len(mean), dtype=bool)
    line = ax.plot(rec.times[keep], mean[keep], **{**method_style(rec.method), **style})[0]
    if band is not None:
        sd = values.std(axis=1)
        low, high = (
            np.quantile(values, [0.25, 0.75], axis=1) if band == "quartiles" else (mean - sd, mean + sd)
        )
        ax.fill_between(rec.times[keep], low[keep], high[keep], color=line.get_color(), alpha=0.12, lw=0)
    return line


def two_way_legend(
    ax: Axes, colors: dict[str, str], styles: dict[str, str], extra: Iterable[Any] = (), **legend: Any
) -> None:
    """A legend for curves told apart two ways: one entry per colour (``label → color``) and one
    per line style (``label → linestyle``, drawn in black), then the labelled ``extra`` artists,
    so that every drawn line is named."""
    handles = [Line2D([], [], color=color, lw=2, label=label) for label, color in colors.items()]
    handles += [Line2D([], [], color="black", ls=ls, lw=1, label=label) for label, ls in styles.items()]
    ax.legend(handles=[*handles, *extra], **legend)


def keep_in_view(ax: Axes, recordings: Iterable[Recording], metric: str = "loss", log: bool = True) -> None:
    """Limit ``ax``'s y-range to the methods that did not diverge (with their bands), so that a
    blowing-up method never rescales the panel; it stays visible up to where it leaves the range."""
    kept = [rec.values[metric] for rec in recordings if rec.divergence is None and len(rec.steps)]
    if not kept:
        return
    low = min(float(np.nanmin(v.mean(axis=1) - v.std(axis=1))) for v in kept)
    high = max(float(np.nanmax(v.mean(axis=1) + v.std(axis=1))) for v in kept)
    if log:
        positive = [
            float(np.nanmin(v.mean(axis=1)[v.mean(axis=1) > 0])) for v in kept if (v.mean(axis=1) > 0).any()
        ]
        low = max(low, 0.5 * min(positive)) if positive else low
        ax.set_ylim(low, 2.0 * high)
    else:
        pad = 0.05 * (high - low or abs(high) or 1.0)
        ax.set_ylim(low - pad, high + pad)


def loss_figure(
    recordings: dict[str, Recording], title: str, logy: bool = True, metric: str = "loss"
) -> Figure:
    """``E f`` over time for each method, with a band over paths; diverged methods marked and
    kept from rescaling the panel."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for rec in recordings.values():
        if len(rec.steps):
            plot_band(ax, rec, metric)
    ax.set_xlabel("t = k η")
    ax.set_ylabel("f(x)" if metric == "loss" else metric)
    if logy:
        ax.set_yscale("log")
    keep_in_view(ax, recordings.values(), metric, log=logy)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fidelity_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown table of :func:`optsde.analysis.fidelity_summary`; a model that diverged or left the
    optimizer's range (:func:`optsde.analysis.departure_step`) is named with its step, not a percentage."""
    lines = [
        "| method | max rel. gap of E f | mean rel. gap | stationary loss rel. error |",
        "|---|---|---|---|",
    ]
    for method, numbers in summary.items():
        if "diverged" in numbers:
            lines.append(
                f"| {method} | diverged at step {numbers['diverged_step']} "
                f"({numbers['diverged_paths']} paths, {numbers['diverged']}) | | |"
            )
            continue
        if numbers.get("departure_step") is not None:
            lines.append(
                f"| {method} | not tracked: E f left the optimizer's range (off by more than a factor "
                f"{1 + DEPARTURE_GAP:g}) at step {numbers['departure_step']} | | |"
            )
            continue
        lines.append(
            f"| {method} | {numbers['max_rel_gap']:.1%} ± {numbers['max_rel_gap_se']:.1%} "
            f"| {numbers['mean_rel_gap']:.1%} ± {numbers['mean_rel_gap_se']:.1%} "
            f"| {numbers['stationary_rel_error']:+.1%} ± {numbers['stationary_rel_error_se']:.1%} |"
        )
    return lines
