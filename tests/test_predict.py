"""``optsde predict``'s predictions against simulation of the discrete optimizers (docs/theory.md §8).

Ground truth is the optimizer's own discrete step (``get_optimizer(name).discrete.step``,
itself checked against torch.optim elsewhere) driven by the engine's noise models, with the
paths as a leading dimension in float64.  Each coordinate of ``f = ½ Σ h_i x_i²`` is an
independent 1-d problem with its own ``κ_i = η h_i / s``, so one run covers several κ.
Stationary second moments are per-path averages over every step of the second half (both
parities of SignSGD's lattice), with standard errors over paths.

The claims tested, as the issue states them: the recommended stationary prediction is within
2% of the optimizer (checked as ``|error| ≤ max(2%, 3 SE)`` with the SE required below 2%/3,
so the bound is 2%), and every formula flagged ``valid`` is within 5% (``≤ 5% + 3 SE``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from optsde.cli import main
from optsde.noise import GaussianNoise, StudentTNoise
from optsde.optimizers import get_optimizer
from optsde.theory import sgd
from optsde.theory.predictions import Setting, predictions, recommended, regime_statement
from optsde.theory.signsgd import lattice_offset

RECOMMENDED_TOLERANCE = 0.02
VALID_TOLERANCE = 0.05
Z = 3.0
LR, SIGMA = 0.01, 1.0


def simulate_second_moments(
    setting: Setting, *, paths: int, steps: int, seed: int, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate ``E x_i²`` of the discrete optimizer and its standard error over paths."""
    optimizer = get_optimizer(setting.optimizer).discrete
    scale = setting.sigma / math.sqrt(setting.batch_size)
    noise = (
        GaussianNoise(setting.dim, scale=scale)
        if setting.noise == "gaussian"
        else StudentTNoise(setting.dim, nu=setting.nu, scale=scale)
    )
    h = torch.tensor(setting.hessian, dtype=torch.float64)
    x0 = torch.zeros(setting.dim, dtype=torch.float64) if start is None else torch.tensor(start)
    state = optimizer.init_state(x0.expand(paths, -1).clone())
    generator = torch.Generator().manual_seed(seed)
    hp = setting.hp
    total = torch.zeros(paths, setting.dim, dtype=torch.float64)
    for k in range(1, steps + 1):
        state = optimizer.step(state, h * state.x + noise.sample(state.x, generator), hp, hp.lr)
        if k > steps // 2:
            total += state.x**2
    per_path = (total / (steps - steps // 2)).numpy()
    return per_path.mean(axis=0), per_path.std(axis=0, ddof=1) / math.sqrt(paths)


def check_setting(
    setting: Setting, *, paths: int, steps: int, seed: int, start: np.ndarray | None = None
) -> None:
    """The recommended second moments within 2%, every valid formula within 5%, per coordinate."""
    mean, se = simulate_second_moments(setting, paths=paths, steps=steps, seed=seed, start=start)
    rel_se = se / mean
    assert (Z * rel_se < RECOMMENDED_TOLERANCE).all(), f"simulation too noisy to test 2%: {rel_se}"
    records = [r for r in predictions(setting) if r.quantity == "stationary_second_moment"]
    best = recommended(records, "stationary_second_moment")
    error = np.array(best.per_coordinate) / mean - 1.0
    allowed = np.maximum(RECOMMENDED_TOLERANCE, Z * rel_se)
    assert (np.abs(error) <= allowed).all(), (
        f"{best.formula}: errors {np.round(100 * error, 2)}% at κ = {setting.kappas}"
    )
    for record in records:
        if record.per_coordinate is None:
            continue
        error = np.array(record.per_coordinate) / mean - 1.0
        flagged = np.array(record.valid_per_coordinate)
        off = np.abs(error) > VALID_TOLERANCE + Z * rel_se
        assert not (flagged & off).any(), (
            f"{record.formula} is flagged valid but off by {np.round(100 * error, 1)}% "
            f"at κ = {setting.kappas}"
        )


def curvatures(kappas: tuple[float, ...]) -> tuple[float, ...]:
    """``h_i`` giving ``κ_i = η h_i/s`` at η = 0.01, s = 1."""
    return tuple(k * SIGMA / LR for k in kappas)


@pytest.mark.parametrize(
    ("optimizer", "beta1", "theta", "noise"),
    [("adamw", 0.9, 0.5, "gaussian"), ("adamw", 0.99, 4.0, "student-t"), ("rmspropw", 0.0, 0.0, "gaussian")],
)
def test_adaptive_recommended_within_two_percent(
    optimizer: str, beta1: float, theta: float, noise: str
) -> None:
    setting = Setting(
        optimizer,
        curvatures((0.1, 1.0, 10.0)),
        LR,
        SIGMA,
        noise=noise,
        nu=5.0,
        beta1=beta1,
        weight_decay=theta,
    )
    check_setting(setting, paths=1000, steps=6000, seed=11)


@pytest.mark.parametrize("noise", ["gaussian", "student-t"])
def test_signsgd_lattice_law_at_every_kappa(noise: str) -> None:
    """The lattice law holds where no SDE does; x₀ is off the grid of η so its offset matters."""
    h = curvatures((0.1, 1.0, 10.0))
    x0 = (0.3 * LR, 0.3 * LR, 0.3 * LR)
    setting = Setting("signsgd", h, LR, SIGMA, noise=noise, nu=1.0, x0=x0)
    check_setting(setting, paths=1000, steps=4000, seed=12, start=np.array(x0))


def test_sgd_exact_discrete_formula_up_to_eta_h_1_5() -> None:
    """``η s²/(h(2 − ηh))`` is exact; the SDE's ``η s²/(2h)`` is flagged invalid past ηh = 0.1."""
    h = (10.0, 50.0, 100.0, 150.0)  # ηh = 0.1, 0.5, 1, 1.5
    setting = Setting("sgd", h, LR, SIGMA)
    mean, se = simulate_second_moments(setting, paths=2000, steps=600, seed=13)
    exact = sgd.sgd_discrete_stationary_second_moment(np.array(h), SIGMA, LR)
    assert (np.abs(exact - mean) <= 4.0 * se).all(), f"exact {exact} vs simulated {mean} ± {se}"
    assert (se / mean < 0.01).all()
    sde = next(
        r for r in predictions(setting) if r.quantity == "stationary_second_moment" and "SDE" in r.formula
    )
    assert sde.valid_per_coordinate == [True, False, False, False]


def test_sgd_cauchy_noise_has_a_median_not_a_mean() -> None:
    """Cauchy noise: no stationary mean is printed; x is Cauchy with scale ηs/(1 − |1 − ηh|)."""
    h, lr = (1.0, 15.0), 0.1  # ηh = 0.1 and 1.5
    setting = Setting("sgd", h, lr, SIGMA, noise="student-t", nu=1.0)
    records = predictions(setting)
    assert recommended(records, "stationary_loss").value is None
    median = recommended(records, "median_second_moment").per_coordinate
    noise = StudentTNoise(2, nu=1.0, scale=SIGMA)
    generator = torch.Generator().manual_seed(14)
    x = torch.zeros(4000, 2, dtype=torch.float64)
    hessian = torch.tensor(h, dtype=torch.float64)
    for _ in range(300):
        x = x - lr * (hessian * x + noise.sample(x, generator))
    squares = (x**2).numpy()
    groups = np.array([np.median(g, axis=0) for g in np.array_split(squares, 20)])
    se = groups.std(axis=0, ddof=1) / math.sqrt(20)
    assert (np.abs(np.median(squares, axis=0) - median) <= 4.0 * se).all(), (
        median,
        np.median(squares, 0),
        se,
    )


def test_every_quantity_has_exactly_one_recommended_formula() -> None:
    for optimizer in ("sgd", "signsgd", "rmsprop", "rmspropw", "adam", "adamw"):
        for noise, nu in (("gaussian", 3.0), ("student-t", 1.0), ("student-t", 5.0)):
            theta = 0.5 if optimizer.endswith("w") else 0.0
            records = predictions(
                Setting(optimizer, (1.0, 3.0), 0.01, 0.1, noise=noise, nu=nu, weight_decay=theta)
            )
            for quantity in {r.quantity for r in records}:
                assert sum(r.recommended for r in records if r.quantity == quantity) == 1, (
                    optimizer,
                    quantity,
                )


def test_regime_statement_speaks_of_kappa_and_the_lattice() -> None:
    assert "lattice" in regime_statement("signsgd", 5.0)
    assert "κ = 0.01" in regime_statement("adam", 0.01)
    assert "no variance" in regime_statement("sgd", 0.1, noise="student-t", nu=1.5)


def test_lattice_offset_is_nearest_site_to_zero() -> None:
    assert lattice_offset(1.0 + 0.3 * LR, LR) == pytest.approx(0.3 * LR)
    assert abs(lattice_offset(1.0 - 0.3 * LR, LR)) == pytest.approx(0.3 * LR)


@pytest.mark.parametrize(
    "bad",
    [
        ["--hessian", "1,-2"],
        ["--hessian", "1,x"],
        ["--lr", "-1"],
        ["--beta1", "1.5"],
        ["--sigma", "0"],
        ["--optimizer", "adam", "--weight-decay", "0.1"],
        ["--x0", "1,2,3"],
        ["--noise", "student-t", "--nu", "0"],
        ["--optimizer", "sgd", "--lr", "1", "--hessian", "3"],
        ["--check", "--paths", "3"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", *bad])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1


def test_json_with_check(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["predict", "--optimizer", "rmspropw", "--hessian", "1,3", "--lr", "0.01", "--weight-decay", "0.5"]
    code = main([*args, "--x0", "0,0", "--json", "--check", "--paths", "200", "--steps", "12000"])
    records = json.loads(capsys.readouterr().out)
    assert code == 0
    for record in records:
        assert {"quantity", "formula", "value", "valid", "recommended"} <= record.keys()
    best = next(r for r in records if r["quantity"] == "stationary_loss" and r["recommended"])
    assert best["simulated"] is not None and best["simulated_se"] > 0
    assert abs(best["rel_error"]) <= max(RECOMMENDED_TOLERANCE, Z * best["simulated_se"] / best["simulated"])


KAPPAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["gaussian", "student-t"])
@pytest.mark.parametrize("theta", [0.0, 0.5, 4.0])
@pytest.mark.parametrize(
    ("optimizer", "beta1"), [("adamw", 0.0), ("adamw", 0.9), ("adamw", 0.99), ("rmspropw", 0.0)]
)
def test_adaptive_grid(optimizer: str, beta1: float, theta: float, noise: str) -> None:
    """The issue's grid: κ ∈ [0.01, 10], β₁ ∈ {0, 0.9, 0.99}, θ ∈ {0, 0.5, 4}, Gaussian and Student-t
    (ν = 5: a finite fourth moment, the self-consistent law's assumption)."""
    setting = Setting(
        optimizer, curvatures(KAPPAS), LR, SIGMA, noise=noise, nu=5.0, beta1=beta1, weight_decay=theta
    )
    check_setting(setting, paths=4000, steps=10000, seed=21)


@pytest.mark.slow
@pytest.mark.parametrize(("noise", "nu"), [("gaussian", 3.0), ("student-t", 1.0), ("student-t", 3.0)])
def test_signsgd_grid(noise: str, nu: float) -> None:
    x0 = tuple(0.37 * LR for _ in KAPPAS)
    setting = Setting("signsgd", curvatures(KAPPAS), LR, SIGMA, noise=noise, nu=nu, x0=x0)
    check_setting(setting, paths=4000, steps=10000, seed=22, start=np.array(x0))


@pytest.mark.slow
@pytest.mark.parametrize(("noise", "nu"), [("gaussian", 3.0), ("student-t", 5.0)])
def test_sgd_grid(noise: str, nu: float) -> None:
    setting = Setting("sgd", curvatures((0.01, 0.1, 0.5, 1.0, 1.5)), LR, SIGMA, noise=noise, nu=nu)
    check_setting(setting, paths=4000, steps=10000, seed=23)
