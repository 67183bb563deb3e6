"""The network experiments ``nn-signsgd`` and ``nn-adaptive``, run small through the framework.

Each optimizer must be tracked by its SDEs on the MLP in quick mode (time-averaged relative gap
of E f under 10%, at least 8 paths), checked on the quick settings themselves; the Gaussian
check is validated where its answer is known exactly
(synthetic Gaussian noise: ratio 1).  Nothing downloads.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import Z_TOL
from optsde.analysis import fidelity_summary, median_gap, spike_share, time_averaged_gap
from optsde.errors import OptsdeError
from optsde.experiments.base import Context, ExperimentError, get_experiment
from optsde.experiments.network_panels import (
    KAPPA_LIMIT,
    kappa_by_layer,
    mark_departures,
    tracking_checks,
    warm_starts,
)
from optsde.figures import panels_figure
from optsde.optimizers import get_optimizer
from optsde.problems.network import network_problem
from optsde.report import SERIES_COLUMNS, fidelity_table, write_result
from optsde.sde import Recording


def run_small(name: str, settings: dict[str, str], out: Path, paths: int | None = None) -> dict[str, Any]:
    """Quick parameters with ``settings`` (parsed as ``--set`` would be), run, write, reload."""
    exp = get_experiment(name)
    ctx = Context(name, exp.resolve(True, settings, paths), seed=0)
    exp.run(ctx)
    write_result(ctx.result, out)
    with open(out / "series.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == SERIES_COLUMNS
    for file in ("config.json", "summary.json", "report.md", *(f"{f}.png" for f in ctx.result.figures)):
        assert (out / file).stat().st_size > 0, file
    summary = json.loads((out / "summary.json").read_text())
    summary["_rows"] = rows[1:]
    summary["_report"] = (out / "report.md").read_text()
    return summary


TINY_IMAGES = {"train_size": "32", "batch_size": "8", "steps": "4", "records": "3"}


def test_signsgd_is_tracked_on_the_mlp_in_quick_mode(tmp_path):
    summary = run_small("nn-signsgd", {}, tmp_path)
    ((label, entry),) = summary["panels"].items()
    assert entry["paths"]["optimizer"] >= 8 and entry["problem"]["noise"] == "minibatch"
    assert entry["problem"]["sign_samples"] == 32
    for method in ("sde-gaussian", "sde-general"):
        assert entry["fidelity"][method]["mean_rel_gap"] < 0.10, entry["fidelity"][method]
    checks = summary["checks"][label]
    assert checks["verdict"] == "pass" and checks["pass"] == 2
    assert (
        "tracked by sde-general" in summary["_report"]
        and "General form against Gaussian form" in summary["_report"]
    )
    assert entry["gaussian_check"] and {"loss", "descent_rate_ratio"} <= {row[4] for row in summary["_rows"]}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["panels"][label] == {"model": "mlp", "dataset": "breast-cancer"}


def test_gaussian_check_is_exact_under_synthetic_gaussian_noise(tmp_path):
    """With the paper's protocol the noise is Gaussian, so E sign = erf(∇f/(√2 s)) exactly:
    the descent-rate ratio must be 1 within its standard error at every point."""
    settings = {
        "noise": "synthetic",
        "sigma": "0.5",
        "steps": "30",
        "check_points": "3",
        "check_samples": "2000",
    }
    summary = run_small("nn-signsgd", settings, tmp_path, paths=2)
    (entry,) = summary["panels"].values()
    assert entry["problem"]["noise"] == "synthetic"
    for row in entry["gaussian_check"]:
        assert abs(row["ratio"] - 1.0) <= Z_TOL * row["ratio_se"], row


def test_signsgd_runs_every_image_architecture(tmp_path):
    settings = {**TINY_IMAGES, "models": "cnn,transformer,resnet", "check_points": "2", "check_samples": "8"}
    summary = run_small("nn-signsgd", settings, tmp_path, paths=2)
    assert [e["model"] for e in summary["panels"].values()] == ["cnn", "transformer", "resnet"]
    for entry in summary["panels"].values():
        assert entry["problem"]["dataset"] == "digits" and not entry["divergences"]
        assert {"sde-gaussian", "sde-general"} <= set(entry["fidelity"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert {panel["dataset"] for panel in config["panels"].values()} == {"digits"}


def test_adaptive_runs_the_paper_prior_and_refined_sdes(tmp_path):
    # gap_target 0: no panel is tracked, so each report says why, with its measured evidence.
    settings = {**TINY_IMAGES, "steps": "20", "records": "5", "models": "mlp,transformer", "gap_target": "0"}
    summary = run_small("nn-adaptive", settings, tmp_path, paths=2)
    methods = {label: set(entry["fidelity"]) for label, entry in summary["panels"].items()}
    assert methods == {
        "adamw on mlp (breast-cancer)": {"sde-paper", "sde-malladi", "sde-refined"},
        "adamw on transformer (digits)": {"sde-paper", "sde-malladi", "sde-refined"},
        "rmspropw on mlp (breast-cancer)": {"sde-paper", "sde-malladi"},
        "rmspropw on transformer (digits)": {"sde-paper", "sde-malladi"},
    }
    assert summary["panels"]["adamw on mlp (breast-cancer)"]["hyperparameters"]["weight_decay"] == 0.1
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["panels"]["rmspropw on mlp (breast-cancer)"]["dataset"] == "breast-cancer"
    assert config["panels"]["rmspropw on transformer (digits)"]["dataset"] == "digits"
    assert set(summary["checks"]) == set(methods)
    for entry in summary["panels"].values():
        assert set(entry["robust_fidelity"]) == set(entry["fidelity"])
        assert entry["kappa_by_layer"] and max(r["max"] for r in entry["kappa_by_layer"]) > 0
    assert summary["_report"].count("not tracked here (measured)") == 4
    assert "Gap of the medians over paths" in summary["_report"]


def test_median_gap_and_spikes_against_exact_answers():
    """Paths that agree at each record, a model 10% above them: median gap exactly 0.1 and no
    bootstrap spread.  One path of five spiking 100× at 2 of 10 records: 4% of cells spike, the medians do
    not move, the means do."""
    reference = np.repeat(np.linspace(2.0, 1.0, 10)[:, None], 5, axis=1)
    gap = median_gap(reference, 1.1 * reference)
    assert gap.value == pytest.approx(0.1) and gap.se == pytest.approx(0.0, abs=1e-12)
    spiking = reference.copy()
    spiking[[3, 7], 2] *= 100.0
    assert spike_share(reference, spiking) == pytest.approx(2 / 50)
    assert spike_share(reference, reference) == 0.0
    assert median_gap(reference, spiking).value < 0.01 < 1.0 < time_averaged_gap(reference, spiking).value


def test_kappa_by_layer_groups_the_kappa_profile_by_parameter_tensor():
    problem = network_problem("mlp", "breast-cancer", train_size=40, batch_size=8, variance="per-example")
    x0 = problem.x0(0, dtype=torch.float64)
    layers = kappa_by_layer(problem, 0.01, x0)
    assert [r["layer"] for r in layers] == [n for n, _ in problem.model.named_parameters()]
    assert sum(r["size"] for r in layers) == problem.dim
    assert max(r["max"] for r in layers) == pytest.approx(problem.kappa_profile(0.01, x0)["max"])
    # Brute force: the share above the limit from the same κ, over the coordinates with noise.
    h, s = problem.curvature(x0).abs(), problem.noise_scale(x0[None])[0]
    sizes = [r["size"] for r in layers]
    shares = [
        float((0.01 * hp[sp > 0] / sp[sp > 0] > KAPPA_LIMIT).double().mean())
        for hp, sp in zip(h.split(sizes), s.split(sizes), strict=True)
    ]
    assert [r["share_above"] for r in layers] == pytest.approx(shares)


def blown_up_panel() -> dict[str, Recording]:
    """An optimizer near 1 and an SDE whose E f grows to 100 without overflowing, from step 40."""
    steps = np.arange(0, 101, 10)
    rng = np.random.default_rng(0)
    optimizer = 1.0 + 0.01 * rng.standard_normal((len(steps), 8))
    blown = optimizer * np.where(steps >= 40, 100.0, 1.0)[:, None]
    return {
        method: Recording(method, 0.01, steps, {"loss": values}, np.zeros((len(steps), 1, 2)))
        for method, values in (
            ("optimizer", optimizer),
            ("sde-malladi", blown),
            ("sde-paper", optimizer[:, ::-1]),
        )
    }


def test_a_blown_up_sde_is_not_tracked_from_its_step_and_does_not_rescale_the_panel():
    recordings = blown_up_panel()
    fidelity = fidelity_summary(recordings)
    mark_departures(fidelity, recordings)
    assert fidelity["sde-malladi"]["departure_step"] == 40 and "departure_step" not in fidelity["sde-paper"]
    checks = {c.name: c for c in tracking_checks(fidelity, 0.1)}
    assert checks["sde-malladi: left the optimizer's range at step 40"].verdict == "fail"
    assert checks["sde-paper tracks the optimizer"].verdict == "pass"
    table = "\n".join(fidelity_table(fidelity))
    assert (
        "not tracked" in table
        and "step 40" in table
        and "%" not in table.split("sde-malladi")[1].split("\n")[0]
    )
    figure = panels_figure({"p": recordings}, {"p": "p"}, "heading")
    axis = figure.axes[0]
    assert axis.get_ylim()[1] < 2.0  # the optimizer's range, not the blown-up model's 100
    assert any("left the range at step 40" in text.get_text() for text in axis.get_legend().get_texts())


@pytest.mark.slow
def test_adamw_and_rmspropw_are_tracked_on_the_mlp_in_quick_mode(tmp_path):
    summary = run_small("nn-adaptive", {}, tmp_path)
    adamw = summary["panels"]["adamw on mlp (breast-cancer)"]
    rmspropw = summary["panels"]["rmspropw on mlp (breast-cancer)"]
    assert adamw["paths"]["optimizer"] >= 8
    assert adamw["fidelity"]["sde-refined"]["mean_rel_gap"] < 0.10
    assert rmspropw["fidelity"]["sde-paper"]["mean_rel_gap"] < 0.10
    assert summary["checks"]["adamw on mlp (breast-cancer)"]["verdict"] == "pass"
    assert {"sde-paper", "sde-malladi"} <= set(adamw["fidelity"])  # reported beside the refined one


def test_same_seed_same_numbers(tmp_path):
    settings = {"steps": "10", "records": "3", "check_points": "2", "check_samples": "8"}
    first = run_small("nn-signsgd", settings, tmp_path / "a", paths=2)
    second = run_small("nn-signsgd", settings, tmp_path / "b", paths=2)
    assert first["_rows"] == second["_rows"]


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("nn-signsgd", {"models": "lstm"}, "unknown model"),
        ("nn-signsgd", {"models": "cnn", "dataset": "breast-cancer"}, "image models"),
        ("nn-signsgd", {"variance": "exact"}, "variance"),
        ("nn-adaptive", {"optimizers": "sgd"}, "not one of"),
        ("nn-adaptive", {"sdes": "phase3"}, "SDE models"),
    ],
)
def test_bad_settings_are_refused_before_running(name, settings, message):
    exp = get_experiment(name)
    ctx = Context(name, exp.resolve(True, settings, None), seed=0)
    with pytest.raises(ExperimentError, match=message):
        exp.run(ctx)
    assert not ctx.result.rows


def test_missing_vision_data_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    exp = get_experiment("nn-signsgd")
    ctx = Context("nn-signsgd", exp.resolve(True, {"models": "cnn", "dataset": "mnist"}, None), seed=0)
    with pytest.raises(OptsdeError) as info:
        exp.run(ctx)
    assert "\n" not in str(info.value) and "optsde[vision]" in str(info.value)


def test_warm_start_begins_at_the_second_moment_of_the_gradient_and_only_where_there_is_v():
    """V₀ = ∇f(x₀)² + diag Σ(x₀) with the exact diag C, whatever variance mode the panel uses."""
    problem = network_problem("mlp", "breast-cancer", train_size=40, batch_size=8, variance="projection")
    x0 = problem.x0(0, dtype=torch.float64)
    rmsprop, signsgd = get_optimizer("rmspropw"), get_optimizer("signsgd")
    (warm,) = warm_starts(problem, rmsprop, ("paper",), x0, substeps=1)
    exact = network_problem("mlp", "breast-cancer", train_size=40, batch_size=8)
    expected = exact.grad(x0[None]) ** 2 + exact.noise_variance(x0[None])
    state = warm.init_state(x0.expand(3, -1))
    assert warm.name == "sde-paper-warm" and torch.allclose(state.v, expected.expand(3, -1))
    assert torch.equal(state.x, x0.expand(3, -1))
    assert warm_starts(problem, signsgd, ("gaussian",), x0, substeps=1) == []
