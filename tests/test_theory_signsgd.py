"""Closed forms of docs/theory.md §5 for SGD and SignSGD against simulation of the optimizers (and, where a
bound is derived for one, of the phase's own model).

Ground truth is the discrete optimizer (SGD, SignSGD; themselves checked against torch.optim
elsewhere) or the SDE of the phase a bound is derived for, never the code under test.  A closed
form passes inside its regime of validity if it is within 5% (``MODEL``, the accuracy docs/theory.md §5
asks for) plus ``Z_TOL`` Monte Carlo standard errors of the data; a bound passes if the
simulated mean is below it within ``Z_TOL`` standard errors.  Where a bound is an equality
(``f = ½μ|x|²`` in one dimension) it is also checked to be tight, so that a wrong constant
cannot hide behind a loose bound.  Every run has a fixed seed and float64.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch

from optsde.errors import OptsdeError
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, State
from optsde.optimizers.sgd import SGD_SPEC
from optsde.optimizers.signsgd import SIGNSGD_SPEC, PhaseThresholds
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.sde import DEFAULT_OBSERVABLES, DiscreteRunner, Recording, SDERunner, record_steps, simulate
from optsde.theory.sgd import (
    noise_resilience_exponent,
    sgd_loss_bound,
    sgd_stationary_loss,
    sgd_stationary_second_moment,
)
from optsde.theory.signsgd import (
    first_stretch,
    parse_schedule,
    phase2_steps,
    phase3_settling_time,
    phase_indicator,
    phase_observables,
    phase_occupancy,
    phase_stretch,
    phase_windows,
    signsgd_phase1_loss_bound,
    signsgd_phase2_mean_bounds,
    signsgd_phase3_loss_bound,
    signsgd_phase3_mean,
    signsgd_phase3_moments,
    signsgd_phase3_rate,
    signsgd_phase3_second_moment,
    signsgd_phase3_second_moment_scheduled,
    signsgd_phase3_stationary_loss,
    signsgd_phase3_stationary_second_moment,
    signsgd_schedule_laws,
    signsgd_schedule_loss_bound,
    signsgd_schedule_loss_floor,
)

MODEL = 0.05
"""The modelling tolerance of docs/theory.md §5: a closed form holds within 5% inside its regime."""

Z_TOL = 4.0
"""Standard errors allowed: one comparison fails by chance with probability 6e-5 at 4 SE."""


def _problem(h, s, batch_size=1) -> NoisyProblem:
    h = torch.tensor(h, dtype=torch.float64)
    return NoisyProblem(Quadratic(h), GaussianNoise(len(h), scale=s, batch_size=batch_size))


def _run(runner, problem, lr, x0, *, paths, steps, seed, record_at=None, observables=None, schedule=None):
    extra = {} if schedule is None else {"schedule": schedule}
    return simulate(
        runner,
        problem,
        Hyperparameters(lr=lr),
        torch.tensor(x0, dtype=torch.float64),
        paths=paths,
        steps=steps,
        record_at=record_at,
        observables=observables,
        generator=torch.Generator().manual_seed(seed),
        **extra,
    )


def _optimizer(spec):
    return DiscreteRunner(spec.discrete)


def _stationary(rec: Recording, metric: str, t_from: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-path time average of ``metric`` for ``t ≥ t_from``: mean over paths and its SE."""
    per_path = rec.values[metric][rec.times >= t_from].mean(axis=0)
    return per_path.mean(axis=0), per_path.std(axis=0, ddof=1) / math.sqrt(per_path.shape[0])


def assert_close(mean, se, predicted, what: str, relative: float = MODEL) -> None:
    """``|mean − predicted| ≤ relative·|predicted| + Z_TOL·se`` everywhere."""
    mean, se, predicted = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (mean, se, predicted)))
    excess = np.abs(mean - predicted) - relative * np.abs(predicted) - Z_TOL * se
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (
        f"{what}: {mean[worst]:.6g} ± {se[worst]:.2g} vs {predicted[worst]:.6g} at index {worst} "
        f"({mean[worst] / predicted[worst] - 1:+.2%}) exceeds {relative:.0%} + {Z_TOL} SE"
    )


def assert_below(mean, se, bound, what: str) -> None:
    """``mean ≤ bound + Z_TOL·se`` everywhere (with float round-off where the SE is 0)."""
    mean, se, bound = (np.asarray(v, dtype=float) for v in (mean, se, bound))
    excess = mean - bound - Z_TOL * se - 1e-12 * np.abs(bound)
    worst = int(np.argmax(excess))
    assert excess[worst] <= 0, (
        f"{what}: E f = {mean[worst]:.6g} ± {se[worst]:.2g} is above the bound {bound[worst]:.6g} "
        f"at record {worst}"
    )


# SGD -------------------------------------------------------------------------------------------


def test_sgd_stationary_second_moment_matches_discrete_sgd():
    """``E x² = ηs²/(2h)``; the discrete SGD has ``1/(1 − ηh/2)`` more, here ≤ 0.75%."""
    h, s, lr = [1.0, 3.0], [0.5, 1.0], 0.005
    rec = _run(_optimizer(SGD_SPEC), _problem(h, s), lr, [1.0, 1.0], paths=2000, steps=3000, seed=1)
    # Relaxation time of E x² is 1/(2h) ≤ 0.5: from t = 5 on, the start is forgotten (e^{-10}).
    mean, se = _stationary(rec, "x2", 5.0)
    assert_close(mean, se, sgd_stationary_second_moment(h, s, lr), "SGD stationary E x²")
    loss, loss_se = _stationary(rec, "loss", 5.0)
    assert_close(loss, loss_se, sgd_stationary_loss(h, s, lr), "SGD stationary loss")


@pytest.mark.parametrize(
    ("h", "batch_size", "tight"),
    [([2.0, 2.0], 4, True), ([1.0, 3.0], 1, False)],
    ids=["mu-equals-L-tight", "mu-below-L"],
)
def test_sgd_loss_bound(h, batch_size, tight):
    """docs/theory.md §5's SGD bound holds, and is an equality when ``H = μI`` (up to ``ηh`` of
    discreteness)."""
    sigma, lr, x0 = 1.0, 0.002, [1.0, 1.0]
    problem = _problem(h, sigma, batch_size)
    rec = _run(
        _optimizer(SGD_SPEC),
        problem,
        lr,
        x0,
        paths=2000,
        steps=3000,
        seed=2,
        record_at=record_steps(3000, 60),
    )
    f0 = 0.5 * float(np.dot(h, np.square(x0)))
    bound = sgd_loss_bound(rec.times, f0, min(h), max(h), len(h), sigma, batch_size, lr)
    mean, se = rec.mean("loss"), rec.stderr("loss")
    assert_below(mean, se, bound * (1 + lr * max(h)), "SGD loss bound")  # ηh: discrete vs SDE
    if tight:
        assert_close(mean, se, bound, "SGD loss bound at H = μI (an equality)")


# SignSGD phase 3: moments, stationary law, loss bound ------------------------------------------

PHASE3 = {"h": [1.0, 2.0], "s": 0.1, "lr": 0.001, "x0": [0.05, 0.025]}
"""κ = ηh/s = 0.02; |Y₀| = 0.5 in both coordinates, where erf(Y/√2) is within 4% of √(2/π)Y."""


@cache
def _phase3_optimizer_run() -> Recording:
    problem = _problem(PHASE3["h"], PHASE3["s"])
    return _run(
        _optimizer(SIGNSGD_SPEC),
        problem,
        PHASE3["lr"],
        PHASE3["x0"],
        paths=4000,
        steps=1500,
        seed=3,
        record_at=record_steps(1500, 100),
    )


def test_signsgd_phase3_moments_over_time_match_discrete_signsgd():
    h, s, lr, x0 = PHASE3["h"], PHASE3["s"], PHASE3["lr"], PHASE3["x0"]
    rec = _phase3_optimizer_run()
    assert_close(rec.mean("x"), rec.stderr("x"), signsgd_phase3_mean(rec.times, x0, h, s), "phase-3 E X_t")
    predicted = signsgd_phase3_second_moment(rec.times, x0, h, s, lr)
    assert_close(rec.mean("x2"), rec.stderr("x2"), predicted, "phase-3 E X_t²")


def test_signsgd_phase3_stationary_law_matches_discrete_signsgd():
    h, s, lr = PHASE3["h"], PHASE3["s"], PHASE3["lr"]
    rec = _phase3_optimizer_run()
    # E x² relaxes at rate ≥ 2a = 16 from 40× its limit: within 1% of it by t = ln(4000)/16 ≈ 0.52.
    mean, se = _stationary(rec, "x2", 0.6)
    assert_close(mean, se, signsgd_phase3_stationary_second_moment(h, s, lr), "phase-3 stationary E x²")
    loss, loss_se = _stationary(rec, "loss", 0.6)
    assert_close(loss, loss_se, signsgd_phase3_stationary_loss(h, s, lr), "phase-3 stationary loss")


def test_signsgd_phase3_loss_bound_holds_for_signsgd():
    h, s, lr, x0 = PHASE3["h"], PHASE3["s"], PHASE3["lr"], PHASE3["x0"]
    rec = _phase3_optimizer_run()
    f0 = 0.5 * float(np.dot(h, np.square(x0)))
    bound = signsgd_phase3_loss_bound(rec.times, f0, min(h), max(h), len(h), s, 1, lr)
    assert_below(rec.mean("loss"), rec.stderr("loss"), bound, "SignSGD phase-3 bound")


def test_signsgd_phase3_loss_bound_is_tight_in_one_dimension():
    """``f = ½μx²``: the bound differs from the phase-3 SDE's ``E f`` only by ``η(2/π)(h/s)²E x²/2``
    (a relative ``κ√(2/π)/2 ≈ 1%``), so it must be within 5% of the simulated loss."""
    h, s, lr, x0 = [1.0], 0.1, 0.001, [0.05]
    rec = _run(
        SDERunner(SIGNSGD_SPEC.sdes["phase3"]),
        _problem(h, s),
        lr,
        x0,
        paths=4000,
        steps=800,
        seed=4,
        record_at=record_steps(800, 40),
    )
    bound = signsgd_phase3_loss_bound(rec.times, 0.5 * x0[0] ** 2, 1.0, 1.0, 1, s, 1, lr)
    assert_below(rec.mean("loss"), rec.stderr("loss"), bound, "phase-3 bound on the phase-3 SDE")
    assert_close(rec.mean("loss"), rec.stderr("loss"), bound, "phase-3 bound at d = 1 (nearly an equality)")


# SignSGD phase 1 -------------------------------------------------------------------------------


def test_signsgd_phase1_loss_bound_is_exact_for_one_coordinate_far_away():
    """``d = 1``, ``h = μ``: SignSGD moves at speed 1 while ``|Y| ≳ 3`` (a sign flips with probability
    ``Φ(−3) ≈ 0.1%``), so ``√f`` falls exactly at rate ``√(μ/2)``."""
    h, s, lr = [1.0], 0.1, 0.001
    rec = _run(
        _optimizer(SIGNSGD_SPEC),
        _problem(h, s),
        lr,
        [1.0],
        paths=1000,
        steps=700,
        seed=5,
        record_at=range(0, 701, 20),
    )  # x ≥ 0.3, i.e. Y ≥ 3, until t = 0.7
    bound = signsgd_phase1_loss_bound(rec.times, 0.5, 1.0)
    assert_close(rec.mean("loss"), rec.stderr("loss"), bound, "phase-1 bound at d = 1, |Y| ≥ 3")


def test_signsgd_phase1_loss_bound_holds_while_every_coordinate_is_in_phase1():
    h, s, lr, x0 = [1.0, 2.0], 0.1, 0.001, [0.5, 0.5]
    observables = {**DEFAULT_OBSERVABLES, **phase_observables()}
    rec = _run(
        _optimizer(SIGNSGD_SPEC),
        _problem(h, s),
        lr,
        x0,
        paths=1000,
        steps=450,
        seed=6,
        record_at=range(0, 451, 5),
        observables=observables,
    )
    in_phase1 = (rec.mean("phase1") == 1.0).all(axis=1)
    # The phase-1 ODE reaches |Y| = 3/2 in coordinate 0 at t = 0.5 − 0.15 = 0.35.
    assert 0.3 < rec.times[in_phase1].max() < 0.36
    bound = signsgd_phase1_loss_bound(rec.times, 0.5 * float(np.dot(h, np.square(x0))), min(h))
    assert_below(
        rec.mean("loss")[in_phase1], rec.stderr("loss")[in_phase1], bound[in_phase1], "phase-1 bound"
    )


def test_signsgd_phase1_loss_bound_is_clipped_at_zero():
    t = np.array([0.0, 1.0, 2.0, 10.0])
    bound = signsgd_phase1_loss_bound(t, f0=1.0, mu=2.0)  # √f falls at rate 1: zero from t = 1
    np.testing.assert_allclose(bound, [1.0, 0.0, 0.0, 0.0], atol=1e-15)


# SignSGD phase 2 -------------------------------------------------------------------------------


def test_signsgd_mean_stays_between_the_phase2_bounds():
    """Lemma 3.4: in phase 2 the drift lies between two lines, which bracket ``E X``.  The bracket is
    affine in the entry point, so each path gets its own and the margins are averaged."""
    h, s, lr = [1.0], 0.1, 0.001
    observables = {**DEFAULT_OBSERVABLES, "phase2": phase_indicator(2)}
    rec = _run(
        _optimizer(SIGNSGD_SPEC),
        _problem(h, s),
        lr,
        [0.148],  # Y = 1.48: just inside phase 2
        paths=4000,
        steps=80,
        seed=7,
        record_at=range(81),
        observables=observables,
    )
    window = rec.mean("phase2")[:, 0] >= 0.95
    stop = int(np.argmin(window)) if not window.all() else len(window)
    assert stop > 30, "the run should spend at least 30 steps in phase 2"
    x = rec.values["x"][:stop, :, 0]
    # The discrete-time bracket: SignSGD's mean follows E x_{k+1} = E x_k − η E erf(Y_k/√2) exactly,
    # and the bracket (< η wide) is as narrow as the gap between the recursion and its ODE.
    lower, upper = signsgd_phase2_mean_bounds(rec.times[:stop], x[0], np.full(x.shape[1], h[0]), s, lr=lr)
    for name, margin in (("lower", x - lower), ("upper", upper - x)):
        mean, se = margin.mean(axis=1), margin.std(axis=1, ddof=1) / math.sqrt(x.shape[1])
        assert (mean[1:] >= -Z_TOL * se[1:]).all(), f"E X crosses the phase-2 {name} bound"
    width = (upper - lower).mean(axis=1)[-1]
    assert 0 < width < lr, "the bracket should be open but narrower than one step"
    continuous = signsgd_phase2_mean_bounds(rec.times[:stop], x[0].mean(), h[0], s)
    np.testing.assert_allclose(continuous[0], lower.mean(axis=1), atol=0.2 * width)  # η-close to the ODE


# Schedules ---------------------------------------------------------------------------------------

SCHEDULED = {"h": [1.0, 2.0], "s": 1.0, "lr": 0.01, "x0": [0.4, 0.2]}
"""κ = 0.02, |Y₀| = 0.4; the rates a = 0.8, 1.6 make a run of t = 40 (4000 steps) long enough."""


def _scheduled_run(phi, seed):
    h, s, lr, x0 = SCHEDULED["h"], SCHEDULED["s"], SCHEDULED["lr"], SCHEDULED["x0"]
    rec = _run(
        _optimizer(SIGNSGD_SPEC),
        _problem(h, s),
        lr,
        x0,
        paths=2000,
        steps=4000,
        seed=seed,
        record_at=record_steps(4000, 40, "log"),
        schedule=lambda k: float(phi(np.array([k * lr]))[0]),  # φ is a function of SDE time
    )
    f0 = 0.5 * float(np.dot(h, np.square(x0)))
    bound = signsgd_schedule_loss_bound(rec.times, phi, f0, min(h), max(h), len(h), s, 1, lr)
    predicted = (
        0.5 * np.asarray(h) * signsgd_phase3_second_moment_scheduled(rec.times, x0, h, s, lr, phi)
    ).sum(-1)
    laws = signsgd_schedule_laws(rec.times, phi, x0, h, s, 1, lr)  # the experiment's one call, same numbers
    np.testing.assert_allclose(laws, (bound, predicted), rtol=1e-12)
    return rec, bound, predicted


def test_schedule_with_infinite_integral_drives_the_loss_to_zero():
    """φ = (1+t)^{−0.6}: Φ(∞) = ∞ and ∫φ²e^{−c(Φ(t)−Φ(u))}du ≈ φ(t)/c → 0."""
    h, s, lr = SCHEDULED["h"], SCHEDULED["s"], SCHEDULED["lr"]
    phi = lambda u: (1.0 + u) ** -0.6  # noqa: E731
    rec, bound, predicted = _scheduled_run(phi, seed=8)
    mean, se = rec.mean("loss"), rec.stderr("loss")
    assert_below(mean, se, bound, "schedule bound, φ = (1+t)^-0.6")
    assert_close(mean, se, predicted, "phase-3 moments under φ = (1+t)^-0.6")
    # Still falling at the end, and far below the level a constant learning rate settles at.
    quarter = int(np.searchsorted(rec.times, rec.times[-1] / 4))
    assert mean[-1] + Z_TOL * se[-1] < 0.7 * (mean[quarter] - Z_TOL * se[quarter])  # φ ratio 0.45
    assert mean[-1] + Z_TOL * se[-1] < 0.2 * signsgd_phase3_stationary_loss(h, s, lr)
    later = signsgd_schedule_loss_bound([40.0, 4000.0], phi, 0.1, min(h), max(h), len(h), s, 1, lr)
    assert later[1] < 0.1 * later[0], "the bound itself must go to 0"


def test_summable_schedule_freezes_the_loss_above_zero():
    """φ = e^{−t}: Φ(∞) = 1, so ``E x_i² ≥ x0_i² e^{−2a_iΦ(∞)}`` (the moment equation without its
    noise term) and the loss cannot reach 0."""
    h, s, lr, x0 = (np.asarray(SCHEDULED[k]) for k in ("h", "s", "lr", "x0"))
    phi = lambda u: np.exp(-u)  # noqa: E731
    rec, bound, predicted = _scheduled_run(phi, seed=9)
    mean, se = rec.mean("loss"), rec.stderr("loss")
    assert_below(mean, se, bound, "schedule bound, φ = e^-t")
    assert_close(mean, se, predicted, "phase-3 moments under φ = e^-t")
    floor = float((0.5 * h * x0**2 * np.exp(-2 * math.sqrt(2 / math.pi) * h / s * 1.0)).sum())
    assert mean[-1] - Z_TOL * se[-1] > floor
    assert signsgd_schedule_loss_floor(x0, h, s, 1.0) == pytest.approx(floor, rel=1e-12)
    assert floor > 2 * signsgd_phase3_stationary_loss(h, s, lr), "frozen above even the constant-lr level"
    half = int(np.searchsorted(rec.times, rec.times[-1] / 2))
    assert abs(mean[-1] - mean[half]) < Z_TOL * math.hypot(se[-1], se[half]) + 1e-3 * mean[-1], "frozen"


def test_schedule_bound_with_constant_schedule_is_the_phase3_bound():
    """SPEC's constant ``ηLd/2`` in the schedule bound is consistent: at φ ≡ 1 the integral is
    ``(1 − e^{−ct})/c`` and the bound must equal the phase-3 bound (limit ``ηLd√(π/2)σ/(4μ√B)``)."""
    t = np.linspace(0.0, 3.0, 31)
    args = (0.02, 1.0, 2.0, 2, 0.1, 4, 0.001)
    scheduled = signsgd_schedule_loss_bound(t, lambda u: np.ones_like(u), *args)
    np.testing.assert_allclose(scheduled, signsgd_phase3_loss_bound(t, *args), rtol=1e-5)
    limit = 0.001 * 2.0 * 2 * math.sqrt(math.pi / 2) * 0.1 / (4 * 1.0 * math.sqrt(4))
    np.testing.assert_allclose(scheduled[-1], limit, rtol=1e-5)


def test_scheduled_moments_with_constant_schedule_are_the_closed_form():
    t = np.linspace(0.0, 1.0, 11)
    h, s, lr, x0 = [1.0, 2.0], 0.1, 0.001, [0.05, -0.02]
    scheduled = signsgd_phase3_second_moment_scheduled(t, x0, h, s, lr, lambda u: 1.0)  # a scalar φ works too
    np.testing.assert_allclose(scheduled, signsgd_phase3_second_moment(t, x0, h, s, lr), rtol=1e-5)


# Noise resilience, phases, input checks ------------------------------------------------------------


def test_noise_resilience_exponents_are_the_slopes_of_the_closed_forms():
    h, lr = [1.0, 3.0], 1e-4
    for name, loss in (("sgd", sgd_stationary_loss), ("signsgd", signsgd_phase3_stationary_loss)):
        slope = math.log10(loss(h, 1.0, lr) / loss(h, 0.1, lr))
        assert slope == pytest.approx(noise_resilience_exponent(name), abs=0.01), name
    assert [noise_resilience_exponent(n) for n in ("adam", "rmsprop", "adamw", "rmspropw")] == [1, 1, 0, 0]
    assert noise_resilience_exponent("AdamW", weight_decay=0.0) == 1
    with pytest.raises(OptsdeError, match="choose one of"):
        noise_resilience_exponent("lion")


def test_phase_occupancy_and_indicators():
    y = torch.tensor([[0.5, 1.2, 2.0], [-0.99, -1.6, 1.49], [1.0, 1.5, -3.0]], dtype=torch.float64)
    expected_phase = np.array([[3, 2, 1], [3, 1, 2], [2, 2, 1]])  # thresholds 1 and 3/2, both in phase 2
    occupancy = phase_occupancy(y).numpy()
    for k in (1, 2, 3):
        np.testing.assert_allclose(occupancy[k - 1], (expected_phase == k).mean(axis=0))
    problem = _problem([2.0, 2.0, 2.0], 2.0)  # Y = ∇f/s = x·h/s = x, exactly
    for k in (1, 2, 3):
        indicator = phase_indicator(k, PhaseThresholds())(State(x=y), problem).numpy()
        np.testing.assert_array_equal(indicator, (expected_phase == k).astype(float))


@pytest.mark.parametrize(
    "call",
    [
        lambda: sgd_stationary_second_moment([1.0], [0.1], -0.01),
        lambda: signsgd_phase3_rate([0.0], [0.1]),
        lambda: signsgd_phase3_mean([-1.0], [1.0], [1.0], [0.1]),
        lambda: signsgd_phase3_loss_bound([0.0], 1.0, 2.0, 1.0, 2, 0.1, 1, 0.001),
        lambda: signsgd_phase1_loss_bound([0.0], -1.0, 1.0),
        lambda: signsgd_schedule_loss_bound([1.0], lambda u: -u, 1.0, 1.0, 1.0, 1, 0.1, 1, 0.001),
        lambda: phase_indicator(4),
    ],
    ids=[
        "negative-lr",
        "zero-curvature",
        "negative-time",
        "mu-above-L",
        "negative-gap",
        "negative-schedule",
        "phase-4",
    ],
)
def test_bad_input_is_refused_with_a_message(call):
    with pytest.raises(OptsdeError):
        call()


def test_named_schedules_and_their_integrals():
    """``Φ(∞)`` of each named schedule against numerical quadrature of its φ; malformed names refused."""
    from scipy.integrate import quad

    for text, to_zero in (("power:0.6", True), ("power:1", True), ("power:2.5", False), ("exp:4", False)):
        schedule = parse_schedule(text)
        assert schedule.name == text and schedule.to_zero is to_zero

        def integral(end: float, phi=schedule.phi) -> float:
            return quad(lambda u: float(phi(np.array([u]))[0]), 0.0, end, limit=500)[0]

        if math.isfinite(schedule.total):
            assert schedule.total == pytest.approx(integral(np.inf), rel=1e-6), text
        else:  # Φ(t) grows without bound: at least like log t
            assert integral(1e6) > 2.5 * integral(1e2) > 10, text
    constant = parse_schedule("constant")
    assert constant.total == math.inf and not constant.to_zero
    np.testing.assert_array_equal(constant.phi(np.array([0.0, 5.0])), [1.0, 1.0])
    for bad in ("power:-1", "power:nan", "exp:", "exp:0", "linear", "constant:1", "power:x"):
        with pytest.raises(OptsdeError, match="schedule"):
            parse_schedule(bad)


def test_phase3_settling_time_is_when_the_moment_equation_is_within_tolerance():
    h, s, lr, x2 = np.array([1.0, 2.0]), 0.1, 0.001, np.array([5e-3, 1e-3])
    settle = phase3_settling_time(x2, h, s, lr)
    stationary = signsgd_phase3_stationary_second_moment(h, s, lr)
    gap = lambda t: np.abs(  # noqa: E731
        signsgd_phase3_second_moment([t], [0.0, 0.0], h, s, lr, second_moment0=x2)[0] / stationary - 1
    )
    assert gap(settle).max() == pytest.approx(0.01, rel=1e-6)
    assert gap(0.9 * settle).max() > 0.01
    assert phase3_settling_time(stationary, h, s, lr) == 0.0


def test_signsgd_phase3_moments_start_at_the_entry_moments_and_settle():
    """From the measured moments at entry: E X relaxes to 0, E X² to its stationary value."""
    h, s, lr, mean0, second0 = (
        np.array([1.0, 2.0]),
        0.1,
        0.001,
        np.array([0.07, 0.04]),
        np.array([0.006, 0.002]),
    )
    mean, second = signsgd_phase3_moments(np.array([0.0, 50.0]), mean0, second0, h, s, lr)
    assert mean[0] == pytest.approx(mean0) and second[0] == pytest.approx(second0)
    assert mean[1] == pytest.approx(0.0, abs=1e-12)
    assert second[1] == pytest.approx(signsgd_phase3_stationary_second_moment(h, s, lr), rel=1e-9)


def test_phase2_steps_cover_the_simulated_phase2_window():
    """The phase-1 ODE's estimate of when phase 2 comes brackets where SignSGD's paths are in it."""
    h, s, lr, x0 = [1.0, 2.0], 0.1, 0.001, [0.5, 0.5]
    rec = _run(
        _optimizer(SIGNSGD_SPEC),
        _problem(h, s),
        lr,
        x0,
        paths=100,
        steps=600,
        seed=12,
        record_at=list(range(0, 601, 2)),
        observables={**DEFAULT_OBSERVABLES, **phase_observables()},
    )
    window = phase2_steps(x0, h, s, lr)
    in_phase2 = rec.steps[(rec.mean("phase2") > 0).any(axis=1)]
    assert in_phase2.size > 10 and window.start <= in_phase2.min() and in_phase2.max() <= window.stop - 1
    assert len(window) < 200, "and stays short: it is recorded at every step"
    windows = phase_windows(rec, 0.95)
    for i, entry in enumerate(windows):
        assert (
            entry["phase1_from"] == 0.0 and entry["phase1_to"] < entry["phase2_from"] < entry["phase3_from"]
        )
        held = rec.times[rec.mean("phase2")[:, i] >= 0.95]
        assert (entry["phase2_from"], entry["phase2_to"]) == (held[0], held[-1])
        stretch = phase_stretch(rec, 0.95, 2, i)
        assert rec.times[stretch[0]] == held[0] and (np.diff(stretch) == 1).all()
    together = phase_stretch(rec, 0.95, 1)  # every coordinate in phase 1: until the first one leaves
    assert together[0] == 0 and rec.times[together[-1]] == min(w["phase1_to"] for w in windows)
    assert phase2_steps([0.01, 0.01], h, s, lr) == range(0), "no coordinate starts in phase 1"


def test_first_stretch():
    assert first_stretch(np.array([0, 1, 1, 0, 1, 1, 1], dtype=bool)).tolist() == [1, 2]
    assert first_stretch(np.array([1, 1, 1], dtype=bool)).tolist() == [0, 1, 2]
    assert first_stretch(np.zeros(4, dtype=bool)).tolist() == []


def _phases_run(settings: dict[str, str]):
    from optsde.experiments.base import Context, get_experiment

    experiment = get_experiment("signsgd-phases")
    ctx = Context("signsgd-phases", experiment.resolve(False, settings, None))
    experiment.run(ctx)
    return ctx


def test_signsgd_phases_small_run_draws_each_bound_over_its_phase():
    """Issue 8: fig2b draws the phase-1 bound only while every coordinate is in phase 1, the
    phase-3 bound only from phase-3 entry; every axes with lines has a legend, with no warning."""
    import warnings

    settings = {"paths": "40", "steps": "700", "record_points": "70", "schedules": "constant"}
    settings |= {"schedule_steps": "40", "schedule_paths": "20"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ctx = _phases_run(settings)
    summary, figures = ctx.result.summary, ctx.result.figures
    (phase1_from, phase1_to), (phase3_from, phase3_to) = summary["loss_bounds"].values()
    occupancy = summary["phases"]["per_coordinate"]["optimizer"]
    assert phase1_to == min(c["phase1_to"] for c in occupancy)
    assert phase3_from == max(c["phase3_from"] for c in occupancy) and phase3_to == pytest.approx(0.7)
    drawn = {line.get_label(): line.get_xdata() for line in figures["fig2b_loss_bounds"].axes[0].lines}
    phase1 = drawn["phase-1 bound, over phase 1"]
    assert phase1.min() == phase1_from == 0.0 and phase1.max() == phase1_to < phase3_from
    assert drawn["phase-3 bound, over phase 3"].min() == phase3_from
    for figure in figures.values():
        for ax in figure.axes:
            assert not ax.lines or ax.get_legend() is not None
    verdicts = {c.name: c.verdict for panel in ctx.result.checks.values() for c in panel}
    assert verdicts["phase-1 bound"] == verdicts["phase-3 bound"] == "pass"


def test_signsgd_phases_too_short_run_says_so(tmp_path, capsys):
    """Issue 8: a run too short to reach a phase window answers "inconclusive" and says why,
    never a traceback (this exact command raised ValueError: zero-size array)."""
    import json

    from optsde.cli import main

    args = [
        "run",
        "signsgd-phases",
        "--quick",
        "--paths=2",
        "--no-progress",
        "--seed=4",
        "--out",
        str(tmp_path / "r"),
    ]
    for setting in ("steps=7", "record_points=4", "schedule_steps=10", "schedule_paths=2", "lr=0.08151"):
        args += ["--set", setting]
    assert main([*args, "--set", "sigma=0.5692"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    checks = json.loads((tmp_path / "r" / "summary.json").read_text())["checks"]
    short = [c for panel in checks.values() for c in panel["checks"] if "too short" in c["description"]]
    names = {c["name"] for c in short}
    assert {"phase-1 bound", "phase-3 bound", "phase-3 moments", "ode-phase1 in phase 1"} <= names
    assert all(c["verdict"] == "inconclusive" for c in short)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "the run is too short (raise `steps`)" in report and "**inconclusive**" in report


@pytest.mark.slow
def test_signsgd_phases_experiment_quick_run_makes_its_claims():
    """The ``signsgd-phases`` experiment in quick mode: every check it reports passes (fixed seed), and
    the schedules it says go to 0 end below the constant-lr level while the summable one does not."""
    from optsde.experiments.base import Context, get_experiment

    experiment = get_experiment("signsgd-phases")
    ctx = Context("signsgd-phases", experiment.resolve(True, {}, None), quick=True)
    experiment.run(ctx)
    summary = ctx.result.summary
    assert summary["main"]["kappa"] == pytest.approx(0.02)
    checks = {c.name: c for panel in ctx.result.checks.values() for c in panel}
    expected = {"phase-1 bound", "phase-3 bound", "ode-phase1 in phase 1", "SignSGD E X_t", "SignSGD E X_t²"}
    expected |= {f"x[{i}] {side} its phase-2 bracket" for i in (0, 1) for side in "≤≥"}
    expected |= {
        f"{m} stationary E x[{i}]²" for m in ("optimizer", "sde-paper", "sde-phase3") for i in (0, 1)
    }
    expected |= {f"{name}: {what}" for name in ctx["schedules"] for what in ("bound", "final E f")}
    expected |= {"power:0.6: to 0", "power:1: to 0", "exp:4: floor"}
    assert expected <= set(checks)
    assert [c.sentence() for c in checks.values() if c.verdict != "pass"] == []
    schedules = summary["schedules"]
    constant = schedules["constant"]["final_loss"]
    assert schedules["power:1"]["final_loss"] < 0.5 * constant
    assert schedules["exp:4"]["final_loss"] > schedules["exp:4"]["loss_floor_from_Phi"]
    assert set(ctx.result.figures) >= {
        "fig2a_trajectories",
        "fig2b_loss_bounds",
        "fig2c_moments",
        "fig2d_schedules",
    }
