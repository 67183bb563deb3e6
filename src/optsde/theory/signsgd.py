"""SignSGD's closed forms (docs/theory.md §5) and its phase diagnostics (docs/theory.md §3, paper Lemma 3.4).

On ``f = ½ Σ h_i x_i²`` with noise scale ``s_i``, write ``Y = ∇f/s``.  In phase 3
(``|Y| < 1``) the linearised SDE ``dX = −a X dt + √η sqrt(1 − (2/π)(hX/s)²) dW``,
``a = √(2/π) h/s``, has explicit first and second moments.  They are exact for that
SDE; for SignSGD itself the drift is ``erf(Y/√2) ≤ √(2/π)Y``, weaker by a relative
``≈ Y²/6``, so the moments hold within 5% once ``|Y| ≲ 0.5`` (the mean lags by a factor
``≈ e^{Y₀²/12}`` when started at ``Y₀``).

The loss bounds are for a μ-strongly convex, L-smooth ``f`` with ``Σ = σ²I/B``,
each derived by Itô's formula on ``f`` along the phase's model:

- phase 1, the ODE ``dX = −sign ∇f dt``: ``df/dt = −|∇f|₁ ≤ −|∇f|₂ ≤ −√(2μf)``, so
  ``√f`` falls at least at rate ``√(μ/2)`` (exact for ``d = 1``);
- phase 3: ``dE f ≤ −c E f dt + (ηLd/2) dt`` with ``c = 2μ√(2/π)√B/σ``;
- phase 3 under a schedule φ (drift and diffusion both scaled by φ, as
  ``lr → η φ``): ``dE f ≤ −cφ E f dt + (ηLd/2) φ² dt``.

``f*`` is taken as 0 (``f0`` is the initial gap).  Phase 2 has no loss bound of its
own; there the drift lies between two lines (``phase2_drift_bounds``), which bound
the mean path (:func:`signsgd_phase2_mean_bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from optsde.optimizers.base import State
from optsde.optimizers.signsgd import PhaseThresholds, phase2_drift_bounds
from optsde.problems.base import GradientOracle
from optsde.sde import Observable, Recording
from optsde.theory.sgd import TheoryError, check_gap, check_problem, positive, relaxation, times

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

DEFAULT_THRESHOLDS = PhaseThresholds()
"""Lemma 3.4's thresholds ``|Y| = 1`` and ``3/2``."""

TimeSchedule = Callable[[np.ndarray], ArrayLike]
"""A learning-rate schedule as a function of SDE time ``t`` (not of the step ``k = t/η``)."""


def student_t_sign_slope(nu: float) -> float:
    """``2 f_ν(0) = 2Γ((ν+1)/2) / (√(νπ) Γ(ν/2))``: the slope of ``2F_ν − 1`` at 0 (docs/theory.md §8).

    Student-t noise ``s·T_ν`` gives ``E sign(g) = 2F_ν(∇f/s) − 1``; near the minimum it is
    linear in ``∇f/s`` with this slope, which takes the place of Gaussian noise's
    ``√(2/π)`` in every phase-3 law (``2/π`` for Cauchy noise, ν = 1; → ``√(2/π)`` as ν → ∞).
    """
    nu = float(positive("degrees of freedom nu", nu))
    return 2.0 * math.exp(math.lgamma((nu + 1.0) / 2.0) - math.lgamma(nu / 2.0)) / math.sqrt(nu * math.pi)


def sign_slope(noise: str, nu: float | None = None) -> float:
    """The phase-3 slope of ``E sign(g)`` in ``∇f/s``: ``√(2/π)`` (Gaussian) or ``2f_ν(0)`` (Student-t)."""
    if noise == "gaussian":
        return SQRT_2_OVER_PI
    if noise == "student-t" and nu is not None:
        return student_t_sign_slope(nu)
    raise TheoryError(f"no sign slope for noise {noise!r} (nu={nu}); choose gaussian, or student-t with nu")


def signsgd_phase3_rate(h: ArrayLike, s: ArrayLike, *, slope: float = SQRT_2_OVER_PI) -> np.ndarray:
    """``a = c h/s``: the mean's decay rate in phase 3 (docs/theory.md §5), ``c = √(2/π)`` or
    :func:`sign_slope`."""
    return slope * positive("curvature h", h) / positive("noise scale s", s)


def signsgd_phase3_mean(
    t: ArrayLike, x0: ArrayLike, h: ArrayLike, s: ArrayLike, *, slope: float = SQRT_2_OVER_PI
) -> np.ndarray:
    """``E X_t = e^{−a t} X₀`` per coordinate (docs/theory.md §5); ``t`` of shape ``(T,)`` gives ``(T,
    d)``."""
    rate = signsgd_phase3_rate(h, s, slope=slope)
    return np.exp(-np.multiply.outer(times(t), rate)) * np.asarray(x0, dtype=float)


def _second_moment_rates(
    h: ArrayLike, s: ArrayLike, lr: float, slope: float = SQRT_2_OVER_PI
) -> tuple[np.ndarray, np.ndarray]:
    """``(2a, η c²(h/s)²)``: ``dE x²/dt = −(2a + η c²(h/s)²) E x² + η``, ``c`` the slope."""
    h, s, lr = positive("curvature h", h), positive("noise scale s", s), positive("lr", lr)
    return 2.0 * slope * h / s, lr * slope**2 * (h / s) ** 2


def signsgd_phase3_second_moment(
    t: ArrayLike,
    x0: ArrayLike,
    h: ArrayLike,
    s: ArrayLike,
    lr: float,
    *,
    second_moment0: ArrayLike | None = None,
    slope: float = SQRT_2_OVER_PI,
) -> np.ndarray:
    """``E X_t²`` solving ``dE x²/dt = −2a E x² + η(1 − c²(h/s)² E x²)`` exactly (docs/theory.md §5, §8).

    Starts from ``x0²``, or from ``second_moment0`` (``E X₀²`` of a random start);
    ``c = √(2/π)`` for Gaussian noise, :func:`student_t_sign_slope` for Student-t.
    """
    drift, diffusion = _second_moment_rates(h, s, lr, slope)
    start = np.asarray(x0, dtype=float) ** 2 if second_moment0 is None else np.asarray(second_moment0)
    rate = drift + diffusion
    return relaxation(t, start, rate, lr / rate)


def signsgd_phase3_stationary_second_moment(
    h: ArrayLike, s: ArrayLike, lr: float, *, slope: float = SQRT_2_OVER_PI
) -> np.ndarray:
    """``E x_i² → η / (2a_i + η c²(h_i/s_i)²)`` (docs/theory.md §5, §8); ``≈ η s/(2c h)`` at small κ."""
    drift, diffusion = _second_moment_rates(h, s, lr, slope)
    return lr / (drift + diffusion)


def signsgd_phase3_stationary_loss(
    h: ArrayLike, s: ArrayLike, lr: float, *, slope: float = SQRT_2_OVER_PI
) -> float:
    """``E f = ½ Σ h_i E x_i²`` at stationarity: ``≈ Σ η s_i/(4c)``, linear in the noise scale."""
    h_arr = positive("curvature h", h)
    moment = signsgd_phase3_stationary_second_moment(h_arr, s, lr, slope=slope)
    return float(np.sum(0.5 * h_arr * moment, axis=-1))


def noise_log_cdf(noise: str, nu: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``log F`` of the standardised noise law: ``log Φ`` (Gaussian) or ``log F_ν`` (Student-t)."""
    from scipy.special import log_ndtr
    from scipy.stats import t as student_t

    if noise == "gaussian":
        return log_ndtr
    if noise == "student-t" and nu is not None:
        return lambda y: student_t.logcdf(y, positive("degrees of freedom nu", nu))
    raise TheoryError(f"no noise law {noise!r} (nu={nu}); choose gaussian, or student-t with nu")


def lattice_offset(x0: ArrayLike, lr: float) -> np.ndarray:
    """``r = x₀ − η·round(x₀/η)``: SignSGD's iterates are ``x₀ + ηℤ = r + ηℤ``, ``|r| ≤ η/2``
    (docs/theory.md §8)."""
    x0 = np.asarray(x0, dtype=float)
    return x0 - lr * np.round(x0 / lr)


MAX_LATTICE_SITES = 10_000_001
"""The largest lattice :func:`signsgd_lattice_stationary_second_moment` sums over (κ ≈ 1e-11)."""


def _lattice_second_moment(
    h: float, s: float, lr: float, offset: float, log_cdf: Callable, slope: float
) -> float:
    # Sites out to 40 phase-3 standard deviations (in lattice units √(1/(2cκ))) hold all the mass;
    # the loop widens the window if they do not.
    half = math.ceil(40.0 * math.sqrt(s / (2.0 * slope * lr * h)) + 10.0)
    while 2 * half + 1 <= MAX_LATTICE_SITES:
        x = offset + lr * np.arange(-half, half + 1)
        y = h * x / s
        # Detailed balance of the birth–death chain: π(n+1) F(y_{n+1}) = π(n) F(−y_n).
        log_pi = np.concatenate([[0.0], np.cumsum(log_cdf(-y[:-1]) - log_cdf(y[1:]))])
        pi = np.exp(log_pi - log_pi.max())
        pi /= pi.sum()
        if max(pi[0], pi[-1]) < 1e-16:
            return float(np.sum(pi * x * x))
        half *= 2
    raise TheoryError(f"κ = ηh/s = {lr * h / s:.3g} is too small for the lattice law; use the phase-3 law")


def signsgd_lattice_stationary_second_moment(
    h: ArrayLike, s: ArrayLike, lr: float, x0: ArrayLike, *, noise: str = "gaussian", nu: float | None = None
) -> np.ndarray:
    """``E x_i²`` of SignSGD's exact stationary law on its lattice ``x₀ + ηℤ`` (docs/theory.md §8), any κ.

    On ``f = ½ Σ h_i x_i²`` with independent symmetric noise ``s ζ`` per coordinate,
    each coordinate of SignSGD is a birth–death chain on ``r + ηℤ`` (``r`` from
    :func:`lattice_offset`): from ``x`` it steps to ``x − η`` with probability
    ``F(hx/s)`` and to ``x + η`` otherwise.  Its stationary law follows from detailed
    balance, ``π(x + η) F(h(x + η)/s) = π(x) F(−hx/s)``, and is exact for every κ;
    the chain has period 2, so this is the law of the time average (what a recorder
    on stratified steps sees).  For κ ≳ 2 nearly all its mass sits on the two sites
    around 0, and the loss depends on ``x₀ mod η``; for small κ it tends to the
    phase-3 law.
    """
    h_arr, s_arr, offset = np.broadcast_arrays(
        positive("curvature h", h),
        positive("noise scale s", s),
        lattice_offset(x0, float(positive("lr", lr))),
    )
    log_cdf, slope = noise_log_cdf(noise, nu), sign_slope(noise, nu)
    out = np.empty(h_arr.shape)
    for index in np.ndindex(h_arr.shape):
        out[index] = _lattice_second_moment(h_arr[index], s_arr[index], lr, offset[index], log_cdf, slope)
    return out


def noise_log_sf(noise: str, nu: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``log(1 − F)`` of the standardised noise law (``log F(−y)`` by symmetry)."""
    log_cdf = noise_log_cdf(noise, nu)
    return lambda y: log_cdf(-np.asarray(y))


def signsgd_sde_stationary_second_moment(
    h: ArrayLike, s: ArrayLike, lr: float, *, noise: str = "gaussian", nu: float | None = None
) -> np.ndarray:
    """``E X_i²`` under the stationary law of SignSGD's SDE (docs/theory.md §3: Cor 3.3, or its Student-t
    form).

    Per coordinate, in ``y = hX/s``, the SDE ``dX = −b(hX/s) dt + √η √(1 − b²) dW`` with
    ``b = 2F − 1`` (``erf(y/√2)`` for Gaussian noise) is a 1-d diffusion, whose stationary
    density is ``π(y) ∝ exp(−(2/κ)∫₀ʸ b/(1 − b²)) / (1 − b²)``, ``κ = ηh/s`` (zero flux).
    Integrated by the trapezoid rule on a grid of 40 phase-3 standard deviations.  This is
    what the SDE itself predicts, with no linearisation; at small κ it is the phase-3 law.
    """
    h_arr, s_arr = np.broadcast_arrays(positive("curvature h", h), positive("noise scale s", s))
    lr = float(positive("lr", lr))
    log_sf, slope = noise_log_sf(noise, nu), sign_slope(noise, nu)
    # Gaussian tails underflow past y ≈ 38; by y = 30 the density is below e^{-400/κ}.
    cap = 30.0 if noise == "gaussian" else math.inf
    out = np.empty(h_arr.shape)
    for index in np.ndindex(h_arr.shape):
        kappa = lr * h_arr[index] / s_arr[index]
        y = np.linspace(0.0, min(40.0 * math.sqrt(kappa / (2.0 * slope)), cap), 20001)
        log_tail = log_sf(y)
        tail = np.exp(log_tail)
        drift = (1.0 - 2.0 * tail) / (4.0 * tail * (1.0 - tail))  # b/(1 − b²), 1 − b² = 4F(−y)F(y)
        integral = np.concatenate([[0.0], np.cumsum(0.5 * (drift[1:] + drift[:-1]) * np.diff(y))])
        log_density = -log_tail - np.log1p(-tail) - 2.0 * integral / kappa
        weight = np.exp(log_density - log_density.max())
        out[index] = (
            (s_arr[index] / h_arr[index]) ** 2 * np.trapezoid(weight * y * y, y) / np.trapezoid(weight, y)
        )
    return out


def signsgd_lattice_loss_floor(h: ArrayLike, lr: float, x0: ArrayLike) -> float:
    """``Σ ½ h_i r_i²``, ``r = x₀ mod η`` nearest 0: no iterate of SignSGD has a lower loss
    (docs/theory.md §8)."""
    return float(
        np.sum(0.5 * positive("curvature h", h) * lattice_offset(x0, float(positive("lr", lr))) ** 2)
    )


def signsgd_phase1_loss_bound(t: ArrayLike, f0: float, mu: float) -> np.ndarray:
    """``√(f(X_t) − f*) ≤ √(f₀ − f*) − √(μ/2)·t`` (docs/theory.md §5), squared and clipped at 0.

    Holds along the phase-1 ODE, i.e. while every coordinate has ``|Y| > 3/2``;
    the bound reaches 0 at ``t = √(2f₀/μ)``, after which it says nothing.
    """
    mu = positive("mu", mu)
    check_gap(f0)
    return np.clip(math.sqrt(f0) - np.sqrt(mu / 2.0) * times(t), 0.0, None) ** 2


def signsgd_phase3_loss_rate(
    mu: float, sigma: float, batch_size: int = 1, *, slope: float = SQRT_2_OVER_PI
) -> float:
    """``c = 2μ√(2/π)√B/σ``, the rate of the phase-3 loss bound (docs/theory.md §5); ``2f_ν(0)`` for
    Student-t."""
    return float(2.0 * positive("mu", mu) * slope * math.sqrt(batch_size) / positive("sigma", sigma))


def signsgd_phase3_loss_limit(
    mu: float, L: float, d: int, sigma: float, batch_size: int, lr: float, *, slope: float = SQRT_2_OVER_PI
) -> float:
    """``ηLd√(π/2)σ/(4μ√B) = (ηLd/2)/c``: the phase-3 bound's asymptote (docs/theory.md §5, poster eq. 4)."""
    rate = signsgd_phase3_loss_rate(mu, sigma, batch_size, slope=slope)
    return float(positive("lr", lr) * L * d / (2.0 * rate))


def signsgd_phase3_loss_bound(
    t: ArrayLike, f0: float, mu: float, L: float, d: int, sigma: float, batch_size: int, lr: float
) -> np.ndarray:
    """docs/theory.md §5: ``E f ≤ f₀ e^{−ct} + (1 − e^{−ct}) ηLd√(π/2)σ/(4μ√B)`` in phase 3.

    Itô on ``f`` along the phase-3 SDE: the drift contributes
    ``−√(2/π)(√B/σ)|∇f|² ≤ −c f``, the diffusion ``(η/2) tr(∇²f (I − (2/π)diag(Y)²)) ≤ ηLd/2``.
    """
    check_problem(f0, positive("mu", mu), positive("L", L), d, batch_size)
    rate = signsgd_phase3_loss_rate(mu, sigma, batch_size)
    return relaxation(t, f0, rate, signsgd_phase3_loss_limit(mu, L, d, sigma, batch_size, lr))


def signsgd_schedule_loss_bound(
    t: ArrayLike,
    schedule: TimeSchedule,
    f0: float,
    mu: float,
    L: float,
    d: int,
    sigma: float,
    batch_size: int,
    lr: float,
) -> np.ndarray:
    """The phase-3 bound under a schedule φ(t) (paper's Lemma on schedulers, docs/theory.md §5):

    ``E f(t) ≤ f₀ e^{−cΦ(t)} + (ηLd/2) ∫₀ᵗ φ(u)² e^{−c(Φ(t) − Φ(u))} du``,  ``Φ = ∫₀ᵗ φ``.

    The constant ``ηLd/2`` of docs/theory.md §5 is consistent: Itô on ``f`` along the
    scheduled phase-3 SDE (``lr → ηφ`` scales the drift by φ and the diffusion
    coefficient by φ, its Itô term by φ²) gives ``dE f ≤ −cφ E f + (ηLd/2)φ²``, of which
    the bound is the solution; with φ ≡ 1 the integral is ``(1 − e^{−ct})/c`` and the
    bound is :func:`signsgd_phase3_loss_bound`.  The loss is driven to 0 when
    ``Φ(∞) = ∞`` and the integral vanishes (e.g. ``φ = (1 + t)^{−p}``, ``0 < p ≤ 1``);
    a summable φ freezes the dynamics at a positive loss.

    ``schedule`` maps an array of SDE times to multipliers (a scalar function is
    accepted and applied element-wise); ``t`` is in SDE time.
    """
    check_problem(f0, positive("mu", mu), positive("L", L), d, batch_size)
    c = signsgd_phase3_loss_rate(mu, sigma, batch_size)
    noise = positive("lr", lr) * L * d / 2.0

    def rate(u: np.ndarray) -> np.ndarray:
        return c * schedule_values(schedule, u)

    def source(u: np.ndarray) -> np.ndarray:
        return noise * schedule_values(schedule, u) ** 2

    return solve_linear_ode(t, rate, source, np.asarray(float(f0)))


def signsgd_phase3_second_moment_scheduled(
    t: ArrayLike,
    x0: ArrayLike,
    h: ArrayLike,
    s: ArrayLike,
    lr: float,
    schedule: TimeSchedule,
    *,
    second_moment0: ArrayLike | None = None,
) -> np.ndarray:
    """``E X_t²`` of the phase-3 SDE under a schedule φ: the exact moment equation
    ``dE x²/dt = −(2aφ + η(2/π)(h/s)²φ²) E x² + ηφ²``, solved numerically.

    Sharper than :func:`signsgd_schedule_loss_bound` (no μ, L): per coordinate, and
    its limit says what the loss tends to.  With a summable φ it stays above
    ``E X₀² e^{−2aΦ(∞)} > 0``.
    """
    drift, diffusion = _second_moment_rates(h, s, lr)
    start = np.asarray(x0, dtype=float) ** 2 if second_moment0 is None else np.asarray(second_moment0)

    def rate(u: np.ndarray) -> np.ndarray:
        phi = schedule_values(schedule, u)[:, None]
        return drift * phi + diffusion * phi**2

    def source(u: np.ndarray) -> np.ndarray:
        return np.broadcast_to(lr * schedule_values(schedule, u)[:, None] ** 2, (len(u), *drift.shape))

    return solve_linear_ode(t, rate, source, np.broadcast_to(start, drift.shape))


def schedule_values(schedule: TimeSchedule, u: np.ndarray) -> np.ndarray:
    """``φ(u)`` for an array of times: vectorised if ``schedule`` takes arrays, element-wise if not."""
    try:
        values = np.asarray(schedule(u), dtype=float)
    except (TypeError, ValueError):
        values = np.array([float(schedule(float(v))) for v in u])  # type: ignore[arg-type]
    values = np.broadcast_to(values, u.shape)
    if not (np.isfinite(values).all() and (values >= 0).all()):
        raise TheoryError("a learning-rate schedule must give finite, non-negative multipliers")
    return values


MAX_DECAY_PER_STEP = 0.005
"""Grid resolution of :func:`solve_linear_ode`: ``∫ rate`` over one grid interval stays below this."""


def solve_linear_ode(
    t: ArrayLike,
    rate: Callable[[np.ndarray], np.ndarray],
    source: Callable[[np.ndarray], np.ndarray],
    start: np.ndarray,
) -> np.ndarray:
    """``y(t)`` for ``dy/dt = −rate(u) y + source(u)``, ``y(0) = start``, with ``rate ≥ 0``.

    Exponential trapezoid rule on a uniform grid fine enough that ``rate·Δu ≤ 0.005``
    (relative error ``O((rate·Δu)²)``) that contains every requested time.  The
    recursion ``y_{n+1} = y_n e^{−R_n} + kick_n`` is summed in closed form over blocks
    in which ``Σ R`` stays below 600, so it is vectorised and never overflows.
    ``rate`` and ``source`` map a ``(N,)`` array of times to ``(N, *start.shape)``.
    """
    t = times(t)
    end = float(t.max()) if t.size else 0.0
    coarse = np.linspace(0.0, end, 2001)
    fastest = float(np.max(rate(coarse))) if end > 0 else 0.0
    points = int(np.clip(math.ceil(end * fastest / MAX_DECAY_PER_STEP) + 1, 2001, 4_000_001))
    grid = np.union1d(np.linspace(0.0, end, points), t.ravel())
    rates, sources = np.asarray(rate(grid), dtype=float), np.asarray(source(grid), dtype=float)
    widths = np.diff(grid).reshape(-1, *([1] * (rates.ndim - 1)))
    decay = 0.5 * (rates[1:] + rates[:-1]) * widths
    kick = 0.5 * widths * (sources[:-1] * np.exp(-decay) + sources[1:])
    cumulative = np.cumsum(decay, axis=0)
    y = np.empty((len(grid), *start.shape))
    y[0] = start
    first = 0
    while first < len(decay):
        # Decay from the block's start to the end of each interval in it.
        local = cumulative[first:] - (cumulative[first - 1] if first else 0.0)
        worst = local.reshape(len(local), -1).max(axis=1)
        last = first + max(int(np.searchsorted(worst, 600.0)), 1)
        local = local[: last - first]
        y[first + 1 : last + 1] = np.exp(-local) * (
            y[first] + np.cumsum(kick[first:last] * np.exp(local), axis=0)
        )
        first = last
    return y[np.searchsorted(grid, t)]


def signsgd_phase2_mean_bounds(
    t: ArrayLike,
    x_entry: ArrayLike,
    h: ArrayLike,
    s: ArrayLike,
    thresholds: PhaseThresholds = DEFAULT_THRESHOLDS,
    *,
    lr: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds on ``E X`` a time ``t`` after a coordinate enters phase 2 at ``x_entry``.

    Lemma 3.4: in phase 2, ``mY + q₋ ≤ erf(Y/√2) ≤ mY + q₊`` (``phase2_drift_bounds``),
    so ``d|E X|/dt`` lies between ``−(r|X| + q₊)`` and ``−(r|X| + q₋)``, ``r = m h/s``, whose
    solutions ``(|x_e| + q/r) e^{−rt} − q/r`` bracket the mean.  Valid while every path
    has that coordinate in phase 2; shapes as in :func:`signsgd_phase3_mean`.

    The bracket is narrow (``(q₊ − q₋)t ≈ 0.014 t``, less than one step η over a typical
    phase 2), so discreteness matters: with ``lr = η`` it is the bracket of the recursion
    ``x_{k+1} = x_k − η(r x_k + q)``, ``e^{−rt}`` becoming ``(1 − ηr)^{t/η}``, which SignSGD's
    mean (``E x_{k+1} = E x_k − η E erf(Y_k/√2)``) and its SDE's Euler–Maruyama mean obey exactly.
    """
    slope, q_low, q_high = phase2_drift_bounds(thresholds)
    r = slope * positive("curvature h", h) / positive("noise scale s", s)
    x_entry = np.asarray(x_entry, dtype=float)
    elapsed = times(t)
    if lr is None:
        decay = np.exp(-np.multiply.outer(elapsed, r))
    else:
        lr = float(positive("lr", lr))
        if (lr * r >= 1).any():
            raise TheoryError(f"lr = {lr} is too large for a phase-2 bracket: need η·m·h/s < 1")
        decay = np.exp(np.multiply.outer(elapsed / lr, np.log1p(-lr * r)))
    magnitude = np.abs(x_entry)
    slow = (magnitude + q_low / r) * decay - q_low / r
    fast = (magnitude + q_high / r) * decay - q_high / r
    positive_side = x_entry >= 0
    return np.where(positive_side, fast, -slow), np.where(positive_side, slow, -fast)


def normalised_gradient(oracle: GradientOracle, x: Tensor) -> Tensor:
    """``Y = ∇f(x)/s(x)`` per coordinate, the quantity SignSGD's phases are read from (docs/theory.md §3)."""
    return oracle.grad(x) / oracle.noise_scale(x)


def phase_indicator(phase: int, thresholds: PhaseThresholds = DEFAULT_THRESHOLDS) -> Observable:
    """An integrator observable: 1 where a path's coordinate is in ``phase`` (1, 2 or 3), else 0.

    Its mean over paths, ``Recording.mean(name)`` of shape ``(T, d)``, is the
    fraction of paths in that phase, per coordinate.
    """
    if phase not in (1, 2, 3):
        raise TheoryError(f"SignSGD has phases 1, 2 and 3, not {phase}")

    def indicator(state: State, oracle: GradientOracle) -> Tensor:
        return (thresholds.phase(normalised_gradient(oracle, state.x)) == phase).to(state.x.dtype)

    return indicator


def phase_observables(thresholds: PhaseThresholds = DEFAULT_THRESHOLDS) -> dict[str, Observable]:
    """``{"phase1": …, "phase2": …, "phase3": …}``: occupancy observables to pass to ``simulate``."""
    return {f"phase{k}": phase_indicator(k, thresholds) for k in (1, 2, 3)}


def phase_occupancy(y: Tensor, thresholds: PhaseThresholds = DEFAULT_THRESHOLDS) -> Tensor:
    """Fractions of paths in phases 1, 2, 3 per coordinate, ``(3, d)``, from ``Y`` of shape ``(P, d)``."""
    phase = thresholds.phase(y)
    return torch.stack([(phase == k).to(torch.float64).mean(dim=0) for k in (1, 2, 3)])


# ---------------------------------------------------------------- Fig. 2: named schedules, phase windows


@dataclass(frozen=True)
class NamedSchedule:
    """A learning-rate schedule φ of SDE time, by name, and what docs/theory.md §5 predicts for it."""

    name: str
    phi: Callable[[np.ndarray], np.ndarray]
    total: float
    """``Φ(∞) = ∫₀^∞ φ`` (``inf`` when not summable)."""
    to_zero: bool
    """``Φ(∞) = ∞`` and ``∫₀ᵗ φ² e^{−c(Φ(t)−Φ(u))} du → 0`` (≈ φ(t)/c): φ → 0 without being summable."""


def parse_schedule(text: str) -> NamedSchedule:
    """``constant``, ``power:p`` (φ = (1+t)^{−p}) or ``exp:λ`` (φ = e^{−λt}), ``t`` in SDE time."""
    kind, _, value = text.partition(":")
    try:
        rate = float(value) if value else math.nan
    except ValueError:
        rate = math.nan
    if kind == "constant" and not value:
        return NamedSchedule(text, np.ones_like, math.inf, to_zero=False)
    if kind == "power" and math.isfinite(rate) and rate > 0:
        total = math.inf if rate <= 1 else 1.0 / (rate - 1.0)
        return NamedSchedule(text, lambda u: (1.0 + u) ** -rate, total, to_zero=rate <= 1)
    if kind == "exp" and math.isfinite(rate) and rate > 0:
        return NamedSchedule(text, lambda u: np.exp(-rate * u), 1.0 / rate, to_zero=False)
    raise TheoryError(
        f"schedule {text!r}: use constant, power:P (φ = (1+t)^-P, P > 0) or exp:L (φ = e^(-L t), L > 0)"
    )


def signsgd_schedule_loss_floor(x0: ArrayLike, h: ArrayLike, s: ArrayLike, total: float) -> float:
    """``Σ ½ h_i x0_i² e^{−2a_iΦ(∞)}``: the scheduled phase-3 moment equation without its noise
    term, so no schedule with ``Φ(∞) = total`` brings ``E f`` below it (docs/theory.md §5)."""
    h_arr = positive("curvature h", h)
    decay = np.exp(-2.0 * signsgd_phase3_rate(h_arr, s) * total)
    return float(np.sum(0.5 * h_arr * np.asarray(x0, dtype=float) ** 2 * decay))


def signsgd_schedule_laws(
    t: ArrayLike,
    schedule: TimeSchedule,
    x0: ArrayLike,
    h: ArrayLike,
    sigma: float,
    batch_size: int,
    lr: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The schedule bound (:func:`signsgd_schedule_loss_bound`, ``μ = min h``, ``L = max h``) and the
    loss ``½ Σ h_i E x_i²`` by the scheduled phase-3 moment equation, from ``x0`` on
    ``f = ½ Σ h_i x_i²`` with ``Σ = σ²I/B`` (docs/theory.md §5)."""
    h_arr, x0 = positive("curvature h", h), np.asarray(x0, dtype=float)
    f0, s = float(0.5 * np.sum(h_arr * x0**2)), sigma / math.sqrt(batch_size)
    args = (f0, float(h_arr.min()), float(h_arr.max()), h_arr.size, sigma, batch_size, lr)
    bound = signsgd_schedule_loss_bound(t, schedule, *args)
    moments = signsgd_phase3_second_moment_scheduled(t, x0, h_arr, s, lr, schedule)
    return bound, (0.5 * h_arr * moments).sum(axis=-1)


def phase2_steps(
    x0: ArrayLike, h: ArrayLike, s: ArrayLike, lr: float, thresholds: PhaseThresholds = DEFAULT_THRESHOLDS
) -> range:
    """The steps during which some coordinate may be in phase 2, starting from ``x0``.

    Phase 1 moves each coordinate at speed 1 (the phase-1 ODE), so ``|x_i|`` reaches the
    phase-2 edge ``high·s/h`` at ``t = |x0_i| − high·s/h``; phase 2 is ``(high − low)·s/h``
    of travel at a speed above 0.6 (``erf(1/√2) ≈ 0.68``).  A margin of 0.02 in time on both
    sides; empty when no coordinate starts in phase 1.
    """
    h_arr, s_arr = positive("curvature h", h), positive("noise scale s", s)
    travel = np.abs(np.asarray(x0, dtype=float)) - thresholds.high * s_arr / h_arr
    if not (travel > 0).any():
        return range(0)
    stay = (thresholds.high - thresholds.low) * s_arr / h_arr / 0.6
    first = max(int((travel[travel > 0].min() - 0.02) / lr), 0)
    last = int(((travel + stay)[travel > 0].max() + 0.02) / lr)
    return range(first, last + 1)


def phase3_settling_time(
    x2_entry: ArrayLike, h: ArrayLike, s: ArrayLike, lr: float, tol: float = 0.01
) -> float:
    """How long after phase-3 entry ``E x²`` takes to come within ``tol`` of its stationary value
    in every coordinate, by the phase-3 moment equation (docs/theory.md §5) from ``x2_entry``."""
    stationary = signsgd_phase3_stationary_second_moment(h, s, lr)
    rate = lr / stationary  # the moment equation relaxes at rate 2a + η c²(h/s)² = η / stationary
    excess = np.abs(np.asarray(x2_entry, dtype=float) / stationary - 1.0)
    return float(np.max(np.log(np.maximum(excess / tol, 1.0)) / rate))


def first_stretch(mask: np.ndarray) -> np.ndarray:
    """Indices of the first run of consecutive ``True`` in ``mask`` (empty if none)."""
    hits = np.flatnonzero(mask)
    breaks = np.flatnonzero(np.diff(hits) != 1)
    return hits[: breaks[0] + 1] if breaks.size else hits


def phase_windows(rec: Recording, occupancy: float) -> list[dict[str, float | None]]:
    """Per coordinate and phase ``k``: ``phase{k}_from``/``_to``, the first and last recorded
    time at which at least ``occupancy`` of the paths are in phase ``k`` (None: never).

    ``rec`` must carry the :func:`phase_observables`.
    """
    t = rec.times
    windows = []
    for i in range(rec.values["x"].shape[-1]):
        entry: dict[str, float | None] = {}
        for k in (1, 2, 3):
            held = t[rec.mean(f"phase{k}")[:, i] >= occupancy]
            entry[f"phase{k}_from"] = float(held[0]) if held.size else None
            entry[f"phase{k}_to"] = float(held[-1]) if held.size else None
        windows.append(entry)
    return windows


def phase_stretch(rec: Recording, occupancy: float, phase: int, coordinate: int | None = None) -> np.ndarray:
    """Record indices of the first stretch during which at least ``occupancy`` of ``rec``'s paths
    are in phase ``phase``: in coordinate ``coordinate``, or in every coordinate at once (None).

    ``rec`` must carry the :func:`phase_observables`.
    """
    held = rec.mean(f"phase{phase}") >= occupancy
    return first_stretch(held.all(axis=1) if coordinate is None else held[:, coordinate])


def signsgd_phase3_moments(
    tau: ArrayLike, mean0: ArrayLike, second_moment0: ArrayLike, h: ArrayLike, s: ArrayLike, lr: float
) -> tuple[np.ndarray, np.ndarray]:
    """``E X`` and ``E X²`` a time ``tau`` after phase-3 entry from the moments there, ``E X₀`` and
    ``E X₀²`` (a random start; docs/theory.md §5): :func:`signsgd_phase3_mean` and
    :func:`signsgd_phase3_second_moment`, each ``(T, d)``."""
    second = signsgd_phase3_second_moment(tau, mean0, h, s, lr, second_moment0=second_moment0)
    return signsgd_phase3_mean(tau, mean0, h, s), second
