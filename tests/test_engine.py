"""The engine's contracts as a user meets them through ``optsde simulate`` (docs/simulate.md).

- Stratified recording gets a periodic orbit's stationary loss right whatever ``--steps`` is,
  where a regular grid sees one phase of the orbit.
- SGD under Cauchy noise has no stationary mean; ``simulate`` says so instead of printing one.
- ``--sigma 0``: the optimizer runs noise-free, the SDE models run as their ODEs, and a model
  undefined without noise is refused in one line.
- Equations are named terms: the prior and refined AdamW SDEs differ from the paper's by terms
  one can name, and every model's oracle needs are declared.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from optsde.cli import main
from optsde.optimizers import OPTIMIZERS
from optsde.optimizers.adam import ADAMW_SPEC
from optsde.sde import record_steps

# SignSGD on f = ½x², η = 0.1, x₀ = 0.03, negligible noise: κ = η h / s ≫ 2, the iterates live
# on the lattice x₀ + ηℤ and settle into the period-2 orbit {0.03, −0.07} (docs/theory.md §8).
ORBIT = (0.03, -0.07)
ORBIT_LOSS = 0.25 * sum(x**2 for x in ORBIT)  # the time average of ½x² over the orbit


def simulate_summary(tmp_path, name: str, *flags: str) -> dict:
    out = tmp_path / name
    assert main(["simulate", *flags, "--out", str(out), "--no-progress"]) in (0, 1)
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("steps", [1000, 1001, 1200, 2001])
def test_period_two_orbit_gets_the_right_stationary_loss_whatever_the_steps(tmp_path, steps):
    flags = ["--optimizer", "signsgd", "--hessian", "1", "--lr", "0.1", "--sigma", "1e-9", "--x0", "0.03"]
    flags += ["--sde", "none", "--paths", "4", "--steps", str(steps)]
    summary = simulate_summary(tmp_path, f"orbit{steps}", *flags)
    estimate = summary["stationary_loss"]["optimizer"]["mean"]
    # Every path runs the same orbit, so the estimate's only error is the share of records that
    # fall on each phase.  Stratified records come in consecutive pairs (one per parity), so the
    # window's records are balanced up to the one pair its start may cut: an imbalance of at most
    # one record in ``in_window``.
    in_window = sum(k > steps // 2 for k in record_steps(steps, 200))
    spread = 0.5 * abs(ORBIT[0] ** 2 - ORBIT[1] ** 2)
    tolerance = spread / in_window + 1e-12
    assert estimate == pytest.approx(ORBIT_LOSS, abs=tolerance)
    # A regular grid of even spacing would have seen one phase only: off by 69%.
    for phase in ORBIT:
        assert abs(0.5 * phase**2 - ORBIT_LOSS) > 0.5 * ORBIT_LOSS


def test_sgd_under_cauchy_noise_reports_no_stationary_mean(tmp_path):
    flags = ["--optimizer", "sgd", "--noise", "student-t", "--nu", "1", "--sigma", "0.1", "--lr", "0.01"]
    summary = simulate_summary(
        tmp_path, "cauchy", *flags, "--sde", "none", "--paths", "400", "--steps", "400"
    )
    numbers = summary["stationary_loss"]["optimizer"]
    assert numbers["mean"] is None and numbers["mean_exists"] is False
    assert "no finite stationary mean" in numbers["verdict"] and "ν ≤ 2" in numbers["verdict"]
    assert np.isfinite(numbers["median"]) and numbers["median"] > 0
    report = (tmp_path / "cauchy" / "report.md").read_text()
    assert "no finite stationary mean" in report
    # SignSGD under the same noise keeps a finite mean (docs/theory.md §8).
    flags[1] = "signsgd"
    signsgd = simulate_summary(
        tmp_path, "cauchy-sign", *flags, "--sde", "none", "--paths", "400", "--steps", "400"
    )
    assert signsgd["stationary_loss"]["optimizer"]["mean"] is not None


def test_zero_noise_runs_the_optimizer_and_the_odes(tmp_path):
    flags = ["--optimizer", "signsgd", "--hessian", "1,2", "--lr", "0.01", "--sigma", "0", "--x0", "1,1"]
    flags += ["--sde", "paper,gaussian,phase1", "--paths", "3", "--steps", "50"]
    out = tmp_path / "ode"
    assert main(["simulate", *flags, "--out", str(out), "--no-progress"]) == 0
    series = {}
    for line in (out / "series.csv").read_text().splitlines()[1:]:
        _, _, method, t, metric, mean, stderr = line.split(",")
        if metric == "x[0]":
            series.setdefault(method, []).append((float(t), float(mean), float(stderr)))
    # Sign-gradient flow from x₀ = 1 at speed 1, exactly what SignSGD does with exact gradients.
    for method in ("optimizer", "sde-paper", "sde-gaussian", "ode-phase1"):
        for t, mean, stderr in series[method]:
            assert mean == pytest.approx(1.0 - t, abs=1e-12) and stderr < 1e-12


def test_zero_noise_refuses_a_model_undefined_without_noise(tmp_path, capsys):
    out = tmp_path / "phase3"
    code = main(["simulate", "--optimizer", "signsgd", "--sigma", "0", "--sde", "phase3", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "phase3" in err and "--sigma" in err
    assert not out.exists()


def test_adamw_models_differ_by_named_terms():
    paper, malladi, refined, uncorrected = (
        ADAMW_SPEC.sdes[k] for k in ("paper", "malladi", "refined", "uncorrected")
    )
    terms = set(paper.term_names())
    assert set(refined.term_names()) - terms == {"momentum_noise_on_x"}
    assert terms - set(uncorrected.term_names()) == {"momentum_correction"}
    assert terms - set(malladi.term_names()) == {"momentum_correction", "v_relaxation"}
    assert set(malladi.term_names()) - terms == {"v_relaxation_noise_only"}


def test_every_model_declares_what_it_needs_of_the_oracle():
    for spec in OPTIMIZERS.values():
        for model in spec.sdes.values():
            assert model.needs, model.name
            assert set(model.order) >= {term.component for term in model.terms}


def test_a_family_names_its_models_and_its_noise_exponent():
    sgd, adamw = OPTIMIZERS["sgd"], OPTIMIZERS["adamw"]
    assert adamw.sde("refined") is adamw.sdes["refined"]
    with pytest.raises(Exception, match="choose from: paper, malladi, refined, uncorrected"):
        adamw.sde("nope")
    from optsde.optimizers import Hyperparameters

    assert sgd.noise_exponent(Hyperparameters(lr=0.1)) == 2
    assert adamw.noise_exponent(Hyperparameters(lr=0.1, weight_decay=0.5)) == 0
    assert adamw.noise_exponent(Hyperparameters(lr=0.1)) == 1
