"""What every run leaves behind: config.json, series.csv, summary.json, figures, report.md.

A run directory is written whole or not at all: files go to a hidden sibling
directory that is renamed into place at the end, so bad input or a crash before
the first result never leaves a half-written directory.  An interrupted run
(Ctrl-C) still writes what it had recorded, marked ``"status": "interrupted"``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from optsde.sde import Recording

SERIES_COLUMNS = ("experiment", "panel", "method", "t", "metric", "mean", "stderr")

METHOD_STYLE = {
    "optimizer": {"color": "black", "linestyle": "-", "label": "optimizer"},
    "sde-paper": {"color": "tab:red", "linestyle": "--", "label": "SDE (paper)"},
    "sde-malladi": {"color": "tab:blue", "linestyle": ":", "label": "SDE (Malladi et al.)"},
    "sde-refined": {"color": "tab:green", "linestyle": "-.", "label": "SDE (refined)"},
    "sde-gaussian": {"color": "tab:orange", "linestyle": "--", "label": "SDE (Gaussian form)"},
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


def write_result(result: Result, out: Path) -> Path:
    """Write ``result`` to directory ``out`` (replacing an earlier run there) and return it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_json(staging / "config.json", result.config)
        with open(staging / "series.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(SERIES_COLUMNS)
            for row in result.rows:
                writer.writerow([*row[:3], f"{row[3]:.9g}", row[4], f"{row[5]:.9g}", f"{row[6]:.6g}"])
        write_json(
            staging / "summary.json",
            {"experiment": result.experiment, "status": result.status, **result.summary},
        )
        for name, figure in result.figures.items():
            figure.savefig(staging / f"{name}.png", dpi=120, bbox_inches="tight")
            plt.close(figure)
        header = [f"# {result.experiment}", ""]
        if result.status != "complete":
            header += [f"**Status: {result.status}** — the numbers below cover what was recorded.", ""]
        figures = ["", "## Figures", ""] + [f"![{name}]({name}.png)" for name in result.figures]
        (staging / "report.md").write_text("\n".join(header + result.report + figures) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def plot_band(ax: Axes, rec: Recording, metric: str = "loss", index: int | None = None, **style: Any) -> None:
    """Mean over paths with a band of ± one standard deviation across paths (the paper's style)."""
    values = rec.values[metric] if index is None else rec.values[metric][..., index]
    mean, spread = values.mean(axis=1), values.std(axis=1)
    kwargs = {**method_style(rec.method), **style}
    line = ax.plot(rec.times, mean, **kwargs)[0]
    ax.fill_between(rec.times, mean - spread, mean + spread, color=line.get_color(), alpha=0.15, lw=0)


def loss_figure(
    recordings: dict[str, Recording], title: str, logy: bool = True, metric: str = "loss"
) -> Figure:
    """``E f`` over time for each method, with a band over paths."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for rec in recordings.values():
        if len(rec.steps):
            plot_band(ax, rec, metric)
    ax.set_xlabel("t = k η")
    ax.set_ylabel("f(x)" if metric == "loss" else metric)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fidelity_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown table of :func:`optsde.analysis.fidelity_summary`."""
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
        lines.append(
            f"| {method} | {numbers['max_rel_gap']:.1%} ± {numbers['max_rel_gap_se']:.1%} "
            f"| {numbers['mean_rel_gap']:.1%} ± {numbers['mean_rel_gap_se']:.1%} "
            f"| {numbers['stationary_rel_error']:+.1%} ± {numbers['stationary_rel_error_se']:.1%} |"
        )
    return lines
