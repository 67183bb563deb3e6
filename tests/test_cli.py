"""The command line's contract: one-line errors with exit code 2 and no directory left behind;
every run writes the five outputs; same seed, same numbers; interrupted runs resume exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from optsde.cli import main
from optsde.noise import GaussianNoise
from optsde.optimizers import OPTIMIZERS, Hyperparameters
from optsde.problems import NoisyProblem, Quadratic
from optsde.results import RunDirectory
from optsde.sde import DiscreteRunner, FileCheckpoint, loss_observable, simulate

SMALL = ["--steps", "300", "--paths", "32", "--no-progress"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "bad",
    [
        ["simulate", "--lr", "-0.1"],
        ["simulate", "--beta1", "1.0"],
        ["simulate", "--beta2", "-0.5"],
        ["simulate", "--optimizer", "lion"],
        ["simulate", "--hessian", "1,,x"],
        ["simulate", "--x0", "1,2,3"],
        ["simulate", "--sde", "refined", "--optimizer", "rmspropw"],
        ["simulate", "--optimizer", "adam", "--weight-decay", "0.1"],
        ["simulate", "--device", "cuda"] if not torch.cuda.is_available() else ["simulate", "--paths", "0"],
        ["run", "no-such-experiment"],
        ["run", "no-such-experiment", "--set", "lr"],
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    bad: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli([*bad, "--out", str(out)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_list_names_every_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for line in out.strip().splitlines():
        _name, description = line.split(maxsplit=1)
        assert description.strip()


def test_simulate_writes_the_five_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--optimizer", "adamw", "--sde", "paper,malladi,refined", "--weight-decay", "1"]
    code, _, _ = run_cli([*args, *SMALL, "--out", str(out)], capsys)
    assert code == 0
    assert {"config.json", "series.csv", "summary.json", "report.md", "loss.png"} <= {
        p.name for p in out.iterdir()
    }
    with open(out / "series.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["experiment", "panel", "method", "t", "metric", "mean", "stderr"]
    assert {r["method"] for r in rows} == {"optimizer", "sde-paper", "sde-malladi", "sde-refined"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kappa"] == pytest.approx(0.001 * 2 / 0.1)
    for method in ("sde-paper", "sde-malladi", "sde-refined"):
        fidelity = summary["fidelity"][method]
        for key in ("max_rel_gap", "mean_rel_gap", "stationary_rel_error"):
            assert np.isfinite(fidelity[key]) and fidelity[f"{key}_se"] >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]


def test_same_seed_same_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        run_cli(
            ["simulate", "--optimizer", "signsgd", *SMALL, "--seed", seed, "--out", str(tmp_path / name)],
            capsys,
        )
        tables.append((tmp_path / name / "series.csv").read_text())
    assert tables[0] == tables[1]
    assert tables[0] != tables[2]


def test_single_method_divergence_is_reported_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "div"
    args = ["simulate", "--optimizer", "sgd", "--lr", "2.5", "--hessian", "1", "--x0", "1", "--sde", "none"]
    code, _, err = run_cli([*args, *SMALL, "--out", str(out)], capsys)
    assert code == 1
    assert "diverged at step" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["divergences"] and "optimizer diverged" in summary["divergences"][0]


def test_comparison_continues_past_a_diverged_method(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The prior RMSprop SDE starts with V ≈ (1−β)σ² ≪ (∇f)² and is stiff at dt = η (docs/theory.md §3):
    # it blows up where the optimizer and the paper's SDE do not.
    out = tmp_path / "cmp"
    args = [
        "simulate",
        "--optimizer",
        "rmspropw",
        "--hessian",
        "10",
        "--x0",
        "1",
        "--lr",
        "0.05",
        "--beta2",
        "0.99",
        "--sde",
        "paper,malladi",
    ]
    code, _, err = run_cli([*args, *SMALL, "--out", str(out)], capsys)
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0
    assert summary["fidelity"]["sde-malladi"]["diverged"] == "sde-malladi"
    assert summary["fidelity"]["sde-malladi"]["diverged_paths"] > 0
    assert np.isfinite(summary["fidelity"]["sde-paper"]["mean_rel_gap"])
    assert "sde-malladi diverged at step" in err
    assert "sde-malladi diverged" in (out / "report.md").read_text()


class InterruptAfter:
    """An observable that raises KeyboardInterrupt on its n-th call, like Ctrl-C mid-run."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def __call__(self, state, oracle):  # type: ignore[no-untyped-def]
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return loss_observable(state, oracle)


def test_interrupted_simulation_resumes_with_identical_numbers(tmp_path: Path) -> None:
    problem = NoisyProblem(Quadratic(torch.tensor([1.0, 3.0])), GaussianNoise(2, scale=0.2))
    hp = Hyperparameters(lr=0.01, weight_decay=0.5)
    runner = DiscreteRunner(OPTIMIZERS["adamw"].discrete)
    x0 = torch.ones(2, dtype=torch.float64)
    kwargs = {"paths": 16, "steps": 200, "record_at": list(range(0, 201, 20))}

    reference = simulate(runner, problem, hp, x0, generator=torch.Generator().manual_seed(5), **kwargs)

    checkpoint = FileCheckpoint(tmp_path / "ckpt.pt", every_s=1e9)
    with pytest.raises(KeyboardInterrupt):
        simulate(
            runner,
            problem,
            hp,
            x0,
            generator=torch.Generator().manual_seed(5),
            observables={"loss": InterruptAfter(6)},
            checkpoint=checkpoint,
            **kwargs,
        )
    assert checkpoint.load()["step"] == 100
    resumed = simulate(
        runner,
        problem,
        hp,
        x0,
        generator=torch.Generator().manual_seed(5),
        observables={"loss": loss_observable},
        checkpoint=checkpoint,
        **kwargs,
    )
    np.testing.assert_array_equal(resumed.steps, reference.steps)
    np.testing.assert_array_equal(resumed.values["loss"], reference.values["loss"])


def test_interrupted_run_resumes_to_the_uninterrupted_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the middle of an experiment keeps what was recorded; ``--resume`` with the same
    flags then gives exactly the series of a run that was never interrupted."""
    flags = ["run", "heavy-tails", "--quick", "--paths", "16", "--set", "nus=2,10", "--no-progress"]
    run_cli([*flags, "--out", str(tmp_path / "whole")], capsys)

    original_advance = DiscreteRunner.advance
    calls = {"n": 0}

    def interrupting_advance(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1500:  # inside a later method, well after some were finished
            raise KeyboardInterrupt
        return original_advance(self, *args, **kwargs)

    monkeypatch.setattr(DiscreteRunner, "advance", interrupting_advance)
    cut = [*flags, "--out", str(tmp_path / "cut")]
    code, _, err = run_cli(cut, capsys)
    assert code == 130 and "--resume" in err
    work = tmp_path / ".cut.optsde-work"
    assert json.loads((work / "summary.json").read_text())["status"] == "interrupted"
    assert any(work.glob(".checkpoints/heavy-tails/*.pt"))
    assert not (tmp_path / "cut").exists()

    monkeypatch.setattr(DiscreteRunner, "advance", original_advance)
    code, _, _ = run_cli([*cut, "--resume"], capsys)
    assert code == 0
    assert (tmp_path / "cut" / "series.csv").read_text() == (tmp_path / "whole" / "series.csv").read_text()
    assert not work.exists() and not (tmp_path / "cut" / ".checkpoints").exists()


def test_resume_refuses_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    flags = ["run", "heavy-tails", "--quick", "--out", str(out)]
    run = RunDirectory.open(out)
    (run.checkpoints("heavy-tails")).mkdir(parents=True)
    (run.checkpoints("heavy-tails") / "config.json").write_text("{}")
    code, _, err = run_cli([*flags, "--resume"], capsys)
    assert code == 2 and "other settings" in err
    assert not out.exists() and (run.checkpoints("heavy-tails") / "config.json").read_text() == "{}"
