"""Closed forms of docs/theory.md §5 for RMSprop(W) / Adam(W) against simulation of the optimizers and SDEs.

Ground truth is the discrete optimizer (itself checked against torch.optim elsewhere)
or the SDE integrated with sub-steps.  Stationary second moments are per-path time
averages after burn-in (``optsde.analysis.recording_mean``), so their standard
errors come from independent paths.  A closed form passes if it is within its
stated accuracy plus three standard errors; each check also demands a standard
error small against that accuracy, so a failure of the formula cannot hide in noise.
"""

from __future__ import annotations

import math
import zlib
from functools import cache

import numpy as np
import pytest
import torch

from optsde.analysis import recording_mean
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, State, get_optimizer
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.problems.base import GradientOracle
from optsde.sde import DiscreteRunner, Observable, SDERunner, record_steps, simulate
from optsde.theory.adaptive import (
    AdaptiveTheoryError,
    adamw_loss_limit,
    adamw_stationary_second_moment_discrete,
    adamw_stationary_second_moment_sde,
    adaptive_stationary_second_moment,
    rmspropw_stationary_second_moment_discrete,
    stationary_loss,
)

CLOSED_FORM_TOLERANCE = 0.05
"""The accuracy every closed form must reach inside its regime (κ ≲ 0.1)."""

# Three coordinates, κ = ηh/s = 0.02, 0.04, 0.04 at η = 0.01; different s so that one
# ε is a different fraction of each coordinate's noise.
H = (2.0, 4.0, 8.0)
S = (1.0, 1.0, 2.0)
LR = 0.01


def _coordinate(i: int) -> Observable:
    def observe(state: State, oracle: GradientOracle) -> torch.Tensor:
        return state.x[:, i] ** 2

    return observe


@cache
def stationary_second_moments(
    optimizer: str,
    model: str | None,
    hp: Hyperparameters,
    h: tuple[float, ...] = H,
    s: tuple[float, ...] = S,
    paths: int = 600,
    steps: int = 2000,
    substeps: int = 1,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-coordinate ``E x_i²`` and standard errors, and the stationary loss with its error.

    ``model`` None runs the discrete optimizer, else that SDE.  Starts at the minimum,
    so the burn-in only has to let the variance (and ``v``, ``m``) settle.
    """
    spec = get_optimizer(optimizer)
    runner = DiscreteRunner(spec.discrete) if model is None else SDERunner(spec.sdes[model], substeps)
    problem = NoisyProblem(Quadratic(torch.tensor(h)), GaussianNoise(len(h), scale=torch.tensor(s)))
    observables = {"loss": lambda state, oracle: oracle.loss(state.x)}
    observables |= {f"x2_{i}": _coordinate(i) for i in range(len(h))}
    seed = zlib.crc32(repr((optimizer, model, hp, h, s)).encode())  # str hashes vary per process
    rec = simulate(
        runner,
        problem,
        hp,
        torch.zeros(len(h), dtype=torch.float64),
        paths=paths,
        steps=steps,
        record_at=record_steps(steps, 200),
        observables=observables,
        generator=torch.Generator().manual_seed(seed),
    )
    assert rec.divergence is None
    moments = [recording_mean(rec, f"x2_{i}", burn_in=0.3) for i in range(len(h))]
    loss = recording_mean(rec, "loss", burn_in=0.3)
    return np.array([m.value for m in moments]), np.array([m.se for m in moments]), loss.value, loss.se


def assert_close(measured: np.ndarray, se: np.ndarray, predicted: np.ndarray, tolerance: float) -> None:
    """``|measured/predicted − 1| ≤ tolerance + 3 se/predicted``, with a standard error
    small enough (≤ tolerance/2) for the check to have power."""
    rel_error = measured / predicted - 1.0
    rel_se = se / predicted
    assert (rel_se <= tolerance / 2).all(), f"too few samples: relative standard errors {rel_se}"
    assert (np.abs(rel_error) <= tolerance + 3 * rel_se).all(), (
        f"relative errors {np.round(rel_error, 4)} ± {np.round(rel_se, 4)} exceed {tolerance:.0%}"
    )


# --- the discrete Lyapunov forms: the most accurate closed forms ------------------------------


@pytest.mark.parametrize(
    ("beta1", "theta", "eps"),
    [(0.0, 1.0, 0.0), (0.9, 0.0, 0.0), (0.9, 1.0, 0.5), (0.9, 4.0, 1e-8), (0.99, 0.0, 0.5), (0.99, 4.0, 0.0)],
)
def test_adamw_discrete_lyapunov_matches_optimizer(beta1: float, theta: float, eps: float) -> None:
    hp = Hyperparameters(lr=LR, beta1=beta1, beta2=0.999, eps=eps, weight_decay=theta)
    measured, se, _, _ = stationary_second_moments("adamw", None, hp)
    assert_close(measured, se, adamw_stationary_second_moment_discrete(H, S, hp), CLOSED_FORM_TOLERANCE)


@pytest.mark.parametrize(("theta", "eps"), [(0.0, 1e-8), (1.0, 0.5), (4.0, 0.0)])
def test_rmspropw_closed_forms_match_optimizer(theta: float, eps: float) -> None:
    """Both the AR(1) form and the paper-style formula hold for RMSpropW at κ ≲ 0.1."""
    # RMSprop has no bias correction: v needs ≫ 1/(1 − β₂) steps to settle, hence β₂ = 0.99.
    hp = Hyperparameters(lr=LR, beta2=0.99, eps=eps, weight_decay=theta)
    measured, se, _, _ = stationary_second_moments("rmspropw", None, hp)
    assert_close(measured, se, rmspropw_stationary_second_moment_discrete(H, S, hp), CLOSED_FORM_TOLERANCE)
    paper_style = adaptive_stationary_second_moment(H, S, LR, eps=eps, weight_decay=theta)
    assert_close(measured, se, paper_style, CLOSED_FORM_TOLERANCE)


# --- the paper-style formula for AdamW: where its fast-momentum assumption holds, and where not --


@pytest.mark.parametrize(("beta1", "theta", "eps"), [(0.5, 1.0, 0.0), (0.99, 0.0, 0.5)])
def test_paper_style_formula_matches_adamw_with_fast_momentum(beta1: float, theta: float, eps: float) -> None:
    """Holds when θ ≪ ρ₁ (here θ/ρ₁ = 0.02) and, at θ = 0, for any β₁."""
    hp = Hyperparameters(lr=LR, beta1=beta1, beta2=0.999, eps=eps, weight_decay=theta)
    measured, se, _, _ = stationary_second_moments("adamw", None, hp)
    paper_style = adaptive_stationary_second_moment(H, S, LR, eps=eps, weight_decay=theta)
    assert_close(measured, se, paper_style, CLOSED_FORM_TOLERANCE)


def test_paper_style_formula_misses_slow_momentum_with_decay() -> None:
    """At θ/ρ₁ = 4 (β₁ = 0.99, ηθ = 0.04) the optimizer's E x² is ≈ 1/(1 + θ/ρ₁) = 1/5 of the
    paper-style value; the discrete Lyapunov form sees it (checked above), the paper-style one not."""
    hp = Hyperparameters(lr=LR, beta1=0.99, beta2=0.999, eps=0.0, weight_decay=4.0)
    measured, se, _, _ = stationary_second_moments("adamw", None, hp)
    paper_style = adaptive_stationary_second_moment(H, S, LR, weight_decay=4.0)
    assert (measured + 3 * se < 0.3 * paper_style).all()


# --- the continuous Lyapunov forms against their SDEs -----------------------------------------


@pytest.mark.parametrize("model", ["paper", "refined", "malladi"])
def test_continuous_lyapunov_matches_sde(model: str) -> None:
    """The SDE integrated with dt = η/4 settles where its linearisation says.

    β₁ = 0.9, θ = 1: the paper SDE's value is ≈ β₁² = 0.81 of the refined one's, so
    this also checks that the paper SDE really carries that bias.
    """
    hp = Hyperparameters(lr=LR, beta1=0.9, beta2=0.999, eps=0.5, weight_decay=1.0)
    measured, se, _, _ = stationary_second_moments("adamw", model, hp, paths=600, steps=1000, substeps=4)
    assert_close(measured, se, adamw_stationary_second_moment_sde(H, S, hp, model), CLOSED_FORM_TOLERANCE)


@pytest.mark.parametrize(("beta1", "theta", "eps", "paths"), [(0.9, 0.0, 0.0, 600), (0.99, 4.0, 0.0, 1500)])
def test_refined_sde_tracks_optimizer_stationary_loss(
    beta1: float, theta: float, eps: float, paths: int
) -> None:
    """docs/theory.md §3: the refined SDE (Euler–Maruyama with dt = η, as the experiments run it) has the
    optimizer's stationary loss within 2% plus Monte Carlo error.  (β₁ = 0.99 decorrelates
    slowly, hence more paths.)"""
    hp = Hyperparameters(lr=LR, beta1=beta1, beta2=0.999, eps=eps, weight_decay=theta)
    *_, opt_loss, opt_se = stationary_second_moments("adamw", None, hp, paths=paths)
    *_, sde_loss, sde_se = stationary_second_moments("adamw", "refined", hp, paths=paths)
    ratio = sde_loss / opt_loss
    ratio_se = ratio * math.hypot(sde_se / sde_loss, opt_se / opt_loss)
    assert ratio_se <= 0.01
    assert abs(ratio - 1.0) <= 0.02 + 3 * ratio_se, f"refined/optimizer = {ratio:.4f} ± {ratio_se:.4f}"


# --- the paper's loss limit (eq. 6) -------------------------------------------------------------


@pytest.mark.parametrize("theta", [0.0, 2.0])
def test_adamw_loss_limit_bounds_simulated_loss(theta: float) -> None:
    """μ = min h, L = max h, Σ = σ²I/B: the simulated stationary loss stays below eq. (6)."""
    h, sigma, batch = (1.0, 2.0, 4.0), 2.0, 4
    s = sigma / math.sqrt(batch)
    hp = Hyperparameters(lr=LR, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=theta)
    *_, loss, loss_se = stationary_second_moments("adamw", None, hp, h=h, s=(s, s, s))
    bound = adamw_loss_limit(min(h), max(h), len(h), sigma, batch, LR, theta)
    assert loss_se < 0.02 * loss
    assert loss <= bound + 3 * loss_se


# --- exact properties, no simulation ------------------------------------------------------------


def test_adamw_without_momentum_is_rmspropw() -> None:
    """At β₁ = 0 the 2×2 discrete Lyapunov solution reduces to the AR(1) one."""
    hp = Hyperparameters(lr=0.03, beta1=0.0, eps=0.2, weight_decay=2.0)
    np.testing.assert_allclose(
        adamw_stationary_second_moment_discrete(H, S, hp),
        rmspropw_stationary_second_moment_discrete(H, S, hp),
        rtol=1e-10,
    )


def test_fast_momentum_limit_of_the_sdes() -> None:
    """ρ₁ → ∞ at fixed β₁ (η → 0): the refined and Malladi SDEs reach the paper-style formula,
    the paper SDE β₁² of it (docs/theory.md §3: the bias of the missing fresh momentum noise)."""
    hp = Hyperparameters(lr=1e-7, beta1=0.9, eps=0.3, weight_decay=1.5)
    paper_style = adaptive_stationary_second_moment(H, S, hp.lr, eps=0.3, weight_decay=1.5)
    for model, factor in (("refined", 1.0), ("malladi", 1.0), ("paper", 0.81)):
        np.testing.assert_allclose(
            adamw_stationary_second_moment_sde(H, S, hp, model), factor * paper_style, rtol=1e-4
        )


def test_malladi_sde_momentum_factor() -> None:
    """Solving the 2×2 Lyapunov equation of dX = −M/p − θX, dM = ρ(hX − M) + ρ√η s dW by hand
    gives the paper-style value times ρ/(ρ + θ), at any ρ."""
    hp = Hyperparameters(lr=0.01, beta1=0.97, eps=0.1, weight_decay=4.0)
    paper_style = adaptive_stationary_second_moment(H, S, hp.lr, eps=0.1, weight_decay=4.0)
    expected = paper_style * hp.rho1 / (hp.rho1 + 4.0)
    np.testing.assert_allclose(adamw_stationary_second_moment_sde(H, S, hp, "malladi"), expected, rtol=1e-9)


def test_loss_limit_is_the_paper_style_loss_when_mu_equals_l() -> None:
    h, sigma, batch, lr, theta = 3.0, 0.7, 5, 0.01, 2.0
    s = sigma / math.sqrt(batch)
    paper_style = adaptive_stationary_second_moment([h] * 4, s, lr, weight_decay=theta)
    assert adamw_loss_limit(h, h, 4, sigma, batch, lr, theta) == pytest.approx(
        stationary_loss([h] * 4, paper_style), rel=1e-12
    )


def test_loss_limit_bounded_in_sigma_only_with_decay() -> None:
    mu, big_l, d, lr = 0.5, 4.0, 3, 0.01
    ceiling = lr * big_l * d / (4 * mu) * 2 * mu * big_l / (2.0 * (big_l + mu))
    assert adamw_loss_limit(mu, big_l, d, 1e9, 1, lr, 2.0) == pytest.approx(ceiling, rel=1e-6)
    low, high = (adamw_loss_limit(mu, big_l, d, sigma, 1, lr, 0.0) for sigma in (1.0, 10.0))
    assert high == pytest.approx(10 * low)


def test_stationary_loss_is_half_curvature_weighted_sum() -> None:
    assert stationary_loss([1.0, 4.0], [0.2, 0.05]) == pytest.approx(0.5 * (0.2 + 0.2))


@pytest.mark.parametrize(
    "call",
    [
        lambda: adaptive_stationary_second_moment([1.0], [-1.0], 0.01),
        lambda: adaptive_stationary_second_moment([1.0], [0.0], 0.01),
        lambda: adaptive_stationary_second_moment([-1.0], [1.0], 0.01),
        lambda: adamw_stationary_second_moment_sde([1.0], [1.0], Hyperparameters(lr=0.01), "other"),
        lambda: adamw_stationary_second_moment_sde([-1.0], [1.0], Hyperparameters(lr=0.01)),
        lambda: adamw_stationary_second_moment_discrete([1.0], [0.001], Hyperparameters(lr=0.1, eps=0.0)),
        lambda: rmspropw_stationary_second_moment_discrete([1.0], [0.01], Hyperparameters(lr=0.1, eps=0.0)),
        lambda: adamw_loss_limit(2.0, 1.0, 2, 1.0, 1, 0.01, 1.0),
    ],
)
def test_bad_input_is_refused_with_a_message(call) -> None:
    with pytest.raises(AdaptiveTheoryError, match=r"\w"):
        call()


# --- the experiments built on these closed forms ------------------------------------------------------


def _run_experiment(name: str, **overrides: object):
    from optsde.experiments.base import Context, get_experiment

    exp = get_experiment(name)
    params = exp.resolve(quick=True, settings={}, paths=None) | overrides
    ctx = Context(experiment=name, params=params, seed=0)
    exp.run(ctx)
    return ctx.result


def test_family_capabilities_give_the_closed_forms() -> None:
    """The families declare the closed forms the experiments use instead of dispatching on names."""
    hp = Hyperparameters(lr=LR, beta1=0.9, beta2=0.99, weight_decay=1.0)
    for name, discrete in (
        ("adamw", adamw_stationary_second_moment_discrete),
        ("rmspropw", rmspropw_stationary_second_moment_discrete),
    ):
        caps = get_optimizer(name).capabilities
        np.testing.assert_array_equal(caps.linearised_second_moment(H, S, hp), discrete(H, S, hp))
    sde = get_optimizer("adamw").capabilities.sde_linearised_second_moment(H, S, hp, "refined")
    np.testing.assert_array_equal(sde, adamw_stationary_second_moment_sde(H, S, hp, "refined"))
    paper_style = adaptive_stationary_second_moment(H, S, LR, hp.eps, 1.0)
    np.testing.assert_array_equal(
        get_optimizer("rmspropw").capabilities.sde_linearised_second_moment(H, S, hp, "malladi"), paper_style
    )
    assert get_optimizer("sgd").capabilities.linearised_second_moment is None


def test_asymptotic_loss_checks_hold_and_fig5a_draws_every_configuration() -> None:
    """Quick asymptotic-loss, fixed seed: (a) and (b)'s checks pass — the discrete Lyapunov form
    predicts every level within 5% (or 3 SE), the paper's rule keeps E f, NR moves it as predicted
    (by ≈ +12% and +24%, far from 1) — and fig5a gives each configuration its own marker and line
    style, with only drawn series in its legend."""
    result = _run_experiment("asymptotic-loss", basin_steps=300, basin_beta1=[0.9], basin_beta2=[0.99])
    for panel in ("(a) asymptotic loss", "(b) scaling rule"):
        assert {c.verdict for c in result.checks[panel]} == {"pass"}, panel
    nr = [c for c in result.checks["(b) scaling rule"] if "NR" in c.name]
    assert all(c.value.value - 3 * c.value.se > 1.05 for c in nr)  # leaving θ unscaled changes E f
    ax = result.figures["fig5a_asymptotic_loss"].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == [
        f"{c}: measured, discrete Lyapunov" for c in ("AdamW β₁=0.9", "AdamW β₁=0.99", "RMSpropW")
    ]
    styles = {(h.get_marker(), str(h.get_linestyle())) for h in ax.get_legend().legend_handles[:3]}
    assert len(styles) == 3


def test_adaptive_quadratic_checks_and_fig3_axes() -> None:
    """Quick adaptive-quadratic at a reduced size: every method's stationary loss on the quadratic
    matches its own linearisation, and fig3 names its axes x[0] and x[last] as other figures do."""
    result = _run_experiment("adaptive-quadratic", paths=100, saddle_steps=1500)
    for panel in ("quadratic-adamw", "quadratic-rmspropw"):
        assert [c.verdict for c in result.checks[panel]] == ["pass"] * len(result.checks[panel]), panel
        assert len(result.checks[panel]) == {"quadratic-adamw": 4, "quadratic-rmspropw": 3}[panel]
    plane = result.figures["fig3_saddle-adamw"].axes[0]
    assert (plane.get_xlabel(), plane.get_ylabel()) == ("x[0]", "x[1]")
