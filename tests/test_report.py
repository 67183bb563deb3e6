"""The report writer: checks become summary.json entries and report.md tables; a diverged method
is marked and never rescales a panel."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np

from optsde.analysis import Check, Estimate, Within
from optsde.report import Result, loss_figure, write_result
from optsde.sde import Divergence, Recording


def recording(method: str, level: float, divergence: Divergence | None = None) -> Recording:
    steps = np.arange(0, 50, 5)
    loss = level * np.ones((len(steps), 8)) + 0.01 * level * np.random.default_rng(0).standard_normal(
        (len(steps), 8)
    )
    return Recording(method, 0.1, steps, {"loss": loss}, np.zeros((len(steps), 1, 1)), divergence)


def test_checks_are_written_to_the_summary_and_the_report(tmp_path):
    result = Result("demo", {"experiment": "demo"})
    result.add_checks(
        "main",
        [
            Check("stationary loss", Estimate(1.01, 0.01), 1.0, Within(0.05)),
            Check("slope", Estimate(1.5, 0.01), 1.0, Within(0.05)),
        ],
    )
    write_result(result, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    verdicts = [c["verdict"] for c in summary["checks"]["main"]["checks"]]
    assert verdicts == ["pass", "fail"]
    report = (tmp_path / "report.md").read_text()
    assert "## Checks" in report and "### main (1 pass, 1 fail)" in report
    assert "| stationary loss |" in report and "**fail**" in report


def test_a_diverged_method_is_marked_and_does_not_rescale_the_panel():
    recordings = {
        "optimizer": recording("optimizer", 1.0),
        "sde-malladi": recording("sde-malladi", 1e12, Divergence(step=45, paths=8)),
    }
    fig = loss_figure(recordings, "test")
    ax = fig.axes[0]
    _, high = ax.get_ylim()
    assert high < 10  # set by the method that stayed finite, not by the one that blew up
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any("diverged at step 45" in label for label in labels)
    plt.close(fig)
