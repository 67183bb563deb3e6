"""Every run under a directory as one tidy table: one row per (run, comparison, SDE model).

A run is a directory holding ``config.json`` and ``summary.json`` (what every ``optsde``
run writes; docs/sweeps.md).  Inside a summary, a *comparison* is any block shaped like
:meth:`optsde.experiments.base.Comparison.summary` — a κ (docs/theory.md §3) and a
``fidelity`` mapping from SDE model to its numbers — wherever the experiment nested it;
its place in ``summary.json`` is the row's ``panel``.  A row carries the run's settings
(seed and parameters), κ, the fidelity numbers with their standard errors, and the
stationary loss of the optimizer and of the SDE.  A run with no comparison of an SDE
(an optimizer-only experiment) still gets one row, with its settings alone.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optsde.errors import OptsdeError
from optsde.optimizers import OPTIMIZERS

METRICS = ("mean_rel_gap", "max_rel_gap", "stationary_optimizer", "stationary_sde", "stationary_rel_error")
METRIC_TITLES = {
    "mean_rel_gap": "mean rel. gap",
    "max_rel_gap": "max rel. gap",
    "stationary_optimizer": "stationary loss (optimizer)",
    "stationary_sde": "stationary loss (SDE)",
    "stationary_rel_error": "stationary rel. error",
}
RUN_COLUMNS = ("run", "experiment", "status", "seed")
ROW_COLUMNS = (
    "panel",
    "optimizer",
    "sde",
    "kappa",
    *(f"{m}{s}" for m in METRICS for s in ("", "_se")),
    "note",
)


class ResultsError(OptsdeError):
    """No runs where asked, or a filter that matches nothing."""


@dataclass(frozen=True)
class Run:
    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]

    @property
    def experiment(self) -> str:
        return str(self.config.get("experiment", self.summary.get("experiment", "")))


def find_runs(root: Path) -> list[Run]:
    """Every run directory under ``root`` (``root`` itself may be one), in path order.

    Hidden directories (a sweep's staging, a run's own temporary files) and checkpoints
    are not runs.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"{root}: no such directory")
    runs = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and not d.endswith(".checkpoint"))
        if "config.json" in files and "summary.json" in files:
            subdirs.clear()
            path = Path(directory)
            runs.append(
                Run(
                    path,
                    path.relative_to(root).as_posix(),
                    _read(path / "config.json"),
                    _read(path / "summary.json"),
                )
            )
    return runs


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: not readable as JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def comparisons(summary: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """``(panel, block)`` for every comparison block in ``summary``, depth first."""
    if isinstance(summary, dict):
        if isinstance(summary.get("fidelity"), dict) and "kappa" in summary:
            yield where, summary
        for key, value in summary.items():
            yield from comparisons(value, f"{where}/{key}" if where else str(key))
    elif isinstance(summary, list):
        for index, value in enumerate(summary):
            yield from comparisons(value, f"{where}[{_element_label(value, index)}]")


def _element_label(value: Any, index: int) -> str:
    """A list element named by its first scalar entry (``nu=3``), else by its index."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (int, float, str)) and not isinstance(item, bool):
                return f"{key}={_format(item)}"
    return str(index)


def _optimizer(panel: str, block: dict[str, Any], params: dict[str, Any], experiment: str) -> str:
    """The optimizer a comparison ran: named in the block, its panel, the experiment's name, or
    the run's parameters."""
    if isinstance(block.get("optimizer"), str):
        return block["optimizer"]
    for word in re.split(r"[^a-z0-9]+", f"{panel} {experiment}".lower()):
        if word in OPTIMIZERS:
            return word
    return str(params.get("optimizer", ""))


def _format(value: Any) -> str:
    """A setting in the ``--set`` syntax: lists comma-separated, numbers as Python writes them."""
    if isinstance(value, (list, tuple)):
        return ",".join(_format(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def run_rows(run: Run) -> list[dict[str, Any]]:
    """The rows of one run."""
    params = run.config.get("params", {}) or {}
    base: dict[str, Any] = {
        "run": run.name,
        "experiment": run.experiment,
        "status": run.summary.get("status", ""),
        "seed": run.config.get("seed"),
    }
    for key, value in params.items():
        column = key if key not in RUN_COLUMNS + ROW_COLUMNS else f"param.{key}"
        base[column] = _format(value) if isinstance(value, (list, tuple)) or value is None else value
    rows = []
    for panel, block in comparisons(run.summary):
        for sde, numbers in block["fidelity"].items():
            row = {
                **base,
                "panel": panel,
                "optimizer": _optimizer(panel, block, params, run.experiment),
                "sde": sde,
            }
            row["kappa"] = block.get("kappa")
            if "diverged" in numbers:
                row["note"] = f"diverged at step {numbers.get('diverged_step')}: {numbers['diverged']}"
            for metric in METRICS:
                row[metric] = numbers.get(metric)
                row[f"{metric}_se"] = numbers.get(f"{metric}_se")
            rows.append(row)
    return rows or [{**base, "note": "no SDE comparison in this run"}]


def collect(root: Path) -> list[dict[str, Any]]:
    runs = find_runs(root)
    if not runs:
        raise ResultsError(f"{root}: no runs here (a run is a directory with config.json and summary.json)")
    return [row for run in runs for row in run_rows(run)]


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """All columns of ``rows``: the run's, its parameters (first seen first), then the numbers."""
    seen = dict.fromkeys(RUN_COLUMNS)
    for row in rows:
        seen.update(dict.fromkeys(k for k in row if k not in ROW_COLUMNS))
    return [*seen, *ROW_COLUMNS]


def _matches(value: Any, wanted: str) -> bool:
    if _format(value) == wanted:
        return True
    try:
        return math.isclose(float(value), float(wanted), rel_tol=1e-12)
    except (TypeError, ValueError):
        return False


def where(rows: list[dict[str, Any]], conditions: Sequence[str]) -> list[dict[str, Any]]:
    """Rows whose every ``key=value`` condition holds (numbers compare as numbers: 1e-3 = 0.001)."""
    known = columns(rows)
    for condition in conditions:
        key, sep, wanted = condition.partition("=")
        key, wanted = key.strip(), wanted.strip()
        if not sep or not key:
            raise ResultsError(f"--where {condition!r}: expected KEY=VALUE, e.g. --where seed=0")
        if key not in known:
            raise ResultsError(f"--where {key}: no such column; the columns are {', '.join(known)}")
        kept = [row for row in rows if key in row and _matches(row[key], wanted)]
        if not kept:
            values = sorted({_format(row[key]) for row in rows if key in row})
            raise ResultsError(f"--where {condition}: no row matches; {key} takes {', '.join(values)}")
        rows = kept
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Every column, numbers at full precision; blank where a row has no value."""
    header = columns(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _estimate(value: Any, se: Any) -> str:
    if not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    return f"{value:.3g} ± {se:.2g}" if isinstance(se, (int, float)) else f"{value:.3g}"


def display(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The table a person reads: the settings that differ between runs of one experiment (a
    sweep's axes and seeds), then κ and the estimates."""

    def varies(column: str) -> bool:
        values: dict[str, set[str]] = {}
        for row in rows:
            values.setdefault(row["experiment"], set()).add(_format(row.get(column)))
        return any(len(v) > 1 for v in values.values())

    several = len({row["experiment"] for row in rows}) > 1
    settings = ["experiment"] if several else []
    settings += [c for c in columns(rows) if c not in (*ROW_COLUMNS, "run", "experiment") and varies(c)]
    identity = [c for c in ("panel", "optimizer", "sde") if any(row.get(c) for row in rows)]
    header = ["run", *settings, *identity, "κ", *METRIC_TITLES.values()]
    notes = any(row.get("note") for row in rows)
    header += ["note"] if notes else []
    body = []
    for row in rows:
        kappa = row.get("kappa")
        line = [row["run"], *(_format(row.get(c)) for c in settings + identity)]
        line.append(f"{kappa:.3g}" if isinstance(kappa, (int, float)) else "")
        line += [_estimate(row.get(m), row.get(f"{m}_se")) for m in METRICS]
        line += [row.get("note", "")] if notes else []
        body.append(line)
    return header, body


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    header, body = display(rows)
    lines = [header, ["---"] * len(header), *body]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)
