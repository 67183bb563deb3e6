"""``optsde results``: every run under a directory, one row per (run, comparison, SDE), with the
numbers of each run's summary.json unchanged; filters; CSV; one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from optsde.cli import main
from optsde.results_table import collect, comparisons, markdown

FLAGS = ["--steps", "100", "--paths", "8", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs made by hand: two simulate runs (one with two SDE models) and a nested summary."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["simulate", *FLAGS, "--out", str(root / "a")]) == 0
    two_sdes = ["--optimizer", "rmspropw", "--sde", "paper,malladi", "--lr", "0.002", "--seed", "1"]
    assert main(["simulate", *FLAGS, *two_sdes, "--out", str(root / "deeper/b")]) == 0
    # An experiment's summary nests its comparisons; no SDE in the first point, two in the second.
    fidelity = json.loads((root / "a/summary.json").read_text())["fidelity"]
    nested = root / "nested"
    nested.mkdir()
    (nested / "config.json").write_text(
        json.dumps({"experiment": "made-up", "seed": 4, "params": {"nus": [1, 3]}})
    )
    summary = {
        "experiment": "made-up",
        "status": "complete",
        "optimizers": {
            "signsgd": {
                "points": [
                    {"nu": 1.0, "kappa": 0.5, "fidelity": {}},
                    {"nu": 3.0, "kappa": 0.25, "fidelity": {"sde-x": fidelity["sde-paper"], "sde-y": {}}},
                ]
            }
        },
    }
    (nested / "summary.json").write_text(json.dumps(summary))
    # Not runs: a hidden staging directory, a checkpoint.
    for skipped in (".c.staging/run", "a.checkpoint"):
        (root / skipped).mkdir(parents=True)
        (root / skipped / "config.json").write_text("{}")
        (root / skipped / "summary.json").write_text("{}")
    return root


def test_one_row_per_run_comparison_and_sde_with_the_summary_numbers(runs: Path) -> None:
    rows = collect(runs)
    assert [(r["run"], r["panel"], r["sde"]) for r in rows] == [
        ("a", "", "sde-paper"),
        ("deeper/b", "", "sde-paper"),
        ("deeper/b", "", "sde-malladi"),
        ("nested", "optimizers/signsgd/points[nu=3.0]", "sde-x"),
        ("nested", "optimizers/signsgd/points[nu=3.0]", "sde-y"),
    ]
    b_summary = json.loads((runs / "deeper/b/summary.json").read_text())
    b = rows[2]
    assert (b["optimizer"], b["seed"], b["lr"], b["kappa"]) == ("rmspropw", 1, 0.002, b_summary["kappa"])
    for key, value in b_summary["fidelity"]["sde-malladi"].items():
        if not key.endswith("_t"):
            assert b[key] == value, key
    assert rows[3]["optimizer"] == "signsgd" and rows[3]["kappa"] == 0.25 and rows[3]["nus"] == "1,3"
    assert rows[4]["mean_rel_gap"] is None  # an SDE without numbers stays blank, not zero


def test_comparisons_are_found_wherever_they_are_nested() -> None:
    summary = {"kappa": 1, "fidelity": {}, "x": [{"sigma": 0.1, "kappa": 2, "fidelity": {}}, {"kappa": 3}]}
    assert [(panel, block["kappa"]) for panel, block in comparisons(summary)] == [
        ("", 1),
        ("x[sigma=0.1]", 2),
    ]


def test_cli_prints_markdown_filters_and_writes_csv(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "table.csv"
    assert (
        main(["results", str(runs), "--where", "experiment=simulate", "--where", "seed=1", "--csv", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 2  # header, rule, two SDE models of run b
    assert lines[0].startswith("| run | optimizer | sde | κ | mean rel. gap")
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["sde"] for row in table] == ["sde-paper", "sde-malladi"]
    expected = json.loads((runs / "deeper/b/summary.json").read_text())["fidelity"]["sde-paper"]
    assert float(table[0]["stationary_rel_error_se"]) == expected["stationary_rel_error_se"]


def test_markdown_shows_the_settings_that_differ_within_an_experiment(runs: Path) -> None:
    header = markdown(collect(runs)).splitlines()[0]
    # lr, optimizer and seed differ between the two simulate runs; steps does not.
    assert "| lr |" in header and "| seed |" in header and "| steps |" not in header


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--where", "lr=5"], "--where lr=5: no row matches; lr takes 0.001, 0.002"),
        (["--where", "speed=1"], "--where speed: no such column"),
        (["--where", "lr"], "expected KEY=VALUE"),
    ],
)
def test_bad_filters_are_one_line(
    runs: Path, args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["results", str(runs), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and complaint in err, err


def test_a_directory_without_runs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", str(tmp_path)]) == 2
    assert "no runs here" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert not (tmp_path / "index.html").exists()
