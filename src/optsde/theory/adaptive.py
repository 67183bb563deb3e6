"""Stationary moments and loss limits of RMSprop(W) and Adam(W) near a minimum (docs/theory.md §5).

Every formula here is for a diagonal quadratic ``f = ½ Σ h_i x_i²`` with additive
noise of per-coordinate standard deviation ``s_i`` (batch size included, i.e.
``s = σ/√B``), in the regime where the second-moment estimate has settled at
``v ≈ s²`` and ``κ = η·max h/s ≲ 0.1`` (docs/theory.md §3).  Coordinates are independent, so
each function works coordinate by coordinate and broadcasts ``h`` against ``s``.

Three levels of approximation, from the paper's to the most accurate:

1. :func:`adaptive_stationary_second_moment` — the paper-style formula
   ``η s²/(2p(h + θp))``, ``p = s + ε``: the Ornstein–Uhlenbeck limit of the
   RMSpropW SDE (exact for that SDE with ``V`` frozen), and the fast-momentum
   limit (``κ ≪ 1 − β₁``) of AdamW.
2. :func:`adamw_stationary_second_moment_sde` — the paper's (or the refined, or
   Malladi et al.'s) AdamW SDE linearised into a 2-d linear SDE for ``(X, M)``;
   its stationary covariance solves a continuous Lyapunov equation.  It keeps the
   momentum, and with it the paper SDE's ≈β₁² bias that the refined SDE removes.
3. :func:`adamw_stationary_second_moment_discrete` and
   :func:`rmspropw_stationary_second_moment_discrete` — the same linearisation of
   the discrete optimizer itself: a linear recursion whose stationary covariance
   solves a discrete Lyapunov equation.  The most accurate closed form we know
   (docs/theory.md §5: within ≈2% of the optimizer for every β₁, θ, ε at κ ≲ 0.1).

:func:`stationary_loss` turns second moments into ``E f``; :func:`adamw_loss_limit`
is the paper's upper bound (eq. 6) on the asymptotic loss of a μ-strongly convex,
L-smooth function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import solve_continuous_lyapunov, solve_discrete_lyapunov

from optsde.errors import OptsdeError
from optsde.optimizers.base import Hyperparameters, OptimizerSpec

SDE_MODELS = ("paper", "refined", "malladi")
"""Linearised AdamW SDEs :func:`adamw_stationary_second_moment_sde` knows (docs/theory.md §3)."""


class AdaptiveTheoryError(OptsdeError):
    """Inputs outside the closed forms' domain, or a setting with no stationary distribution."""


def _coordinates(h: ArrayLike, s: ArrayLike, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``h``, ``s`` broadcast to one shape, and ``p = s + ε`` (the settled preconditioner)."""
    h_arr, s_arr = np.broadcast_arrays(np.asarray(h, dtype=float), np.asarray(s, dtype=float))
    if not (np.isfinite(h_arr).all() and np.isfinite(s_arr).all()):
        raise AdaptiveTheoryError("curvatures h and noise scales s must be finite numbers")
    if (s_arr < 0).any():
        raise AdaptiveTheoryError("noise scales s must be non-negative (s = σ/√B per coordinate)")
    p = s_arr + eps
    if (p <= 0).any():
        raise AdaptiveTheoryError("s + eps must be positive: with no noise (s = 0) give eps > 0")
    return h_arr, s_arr, p


def _check_stable(h: np.ndarray, p: np.ndarray, weight_decay: float) -> None:
    if (h + weight_decay * p <= 0).any():
        raise AdaptiveTheoryError(
            "no stationary distribution: need h + θ(s + ε) > 0 in every coordinate "
            "(a flat or concave direction needs weight decay θ > 0)"
        )


def adaptive_stationary_second_moment(
    h: ArrayLike, s: ArrayLike, lr: float, eps: float = 0.0, weight_decay: float = 0.0
) -> np.ndarray:
    """Paper-style ``E x_i² = η s_i² / (2 p_i (h_i + θ p_i))``, ``p = s + ε`` (docs/theory.md §5).

    The stationary variance of the RMSpropW SDE with ``V`` frozen at ``s²``,
    ``dX = −(h/p + θ) X dt − √η (s/p) dW`` (an Ornstein–Uhlenbeck process); at
    ``ε = 0`` it is ``η s/(2(h + θ s))``.  For AdamW it is the fast-momentum limit
    ``κ ≪ 1 − β₁``.  It neglects the discreteness of the optimizer (a relative
    error ≈ ``η(h/p + θ)/2``) and the momentum; the discrete Lyapunov forms
    (:func:`rmspropw_stationary_second_moment_discrete`,
    :func:`adamw_stationary_second_moment_discrete`) are more accurate.
    """
    h_arr, s_arr, p = _coordinates(h, s, eps)
    _check_stable(h_arr, p, weight_decay)
    return lr * s_arr**2 / (2.0 * p * (h_arr + weight_decay * p))


def _paper_linearisation(
    h: float, s: float, p: float, hp: Hyperparameters, model: str
) -> tuple[np.ndarray, np.ndarray]:
    """Drift matrix ``A`` and diffusion ``B`` of the linearised AdamW SDE for ``(X, M)``.

    docs/theory.md §3 with ``V = s²``, ``ι₁ = ι₂ = 1``, ``∇f = hX``; ``β₁ = 1 − ηρ₁``:
    ``dX = −(1/p)(β₁M + (1−β₁)hX) dt − θX dt [− ((1−β₁)/p) √η s dW]`` (refined term),
    ``dM = ρ₁(hX − M) dt + √η ρ₁ s dW``.  Malladi et al. drop the momentum
    correction: ``dX = −(1/p) M dt − θX dt``.
    """
    beta1, rho1, root_lr, theta = hp.beta1, hp.rho1, math.sqrt(hp.lr), hp.weight_decay
    # The paper's ``M + ηρ₁(∇f − M)`` is ``β₁M + (1−β₁)hX``; Malladi et al. use ``M``.
    drift_x = [-theta, -1.0 / p] if model == "malladi" else [-(1.0 - beta1) * h / p - theta, -beta1 / p]
    a = np.array([drift_x, [rho1 * h, -rho1]])
    x_noise = -(1.0 - beta1) * root_lr * s / p if model == "refined" else 0.0
    b = np.array([[x_noise], [root_lr * rho1 * s]])
    return a, b


def adamw_stationary_second_moment_sde(
    h: ArrayLike, s: ArrayLike, hp: Hyperparameters, model: str = "paper"
) -> np.ndarray:
    """``E X_i²`` of the linearised AdamW SDE, from ``A C + C Aᵀ + B Bᵀ = 0`` (docs/theory.md §5).

    ``model``: ``"paper"`` (the paper's SDE), ``"refined"`` (ours, docs/theory.md §3: the
    momentum noise also drives X), or ``"malladi"`` (Malladi et al.'s).  ``V`` is
    frozen at ``s²`` and ``ι → 1``.  Unlike the paper-style formula this keeps the
    momentum: the paper SDE's stationary loss comes out low by ≈ β₁² in the
    fast-momentum limit, the refined SDE's does not.  Continuous time, so it
    describes the SDE, not the optimizer's discreteness; for the optimizer use
    :func:`adamw_stationary_second_moment_discrete`.
    """
    _check_model(model)
    h_arr, s_arr, p = _coordinates(h, s, hp.eps)
    out = np.empty(h_arr.shape)
    for index in np.ndindex(h_arr.shape):
        out[index] = _adamw_sde_at(h_arr[index], s_arr[index], p[index], hp, model)
    return out


def _check_model(model: str) -> None:
    if model not in SDE_MODELS:
        raise AdaptiveTheoryError(
            f"unknown AdamW SDE model {model!r}; choose one of: {', '.join(SDE_MODELS)}"
        )


def _adamw_sde_at(h: float, s: float, p: float, hp: Hyperparameters, model: str) -> float:
    """``E X²`` of one coordinate of the linearised AdamW SDE ``model`` with ``V`` frozen at ``(p − ε)²``."""
    a, b = _paper_linearisation(h, s, p, hp, model)
    if np.linalg.eigvals(a).real.max() >= 0:
        raise AdaptiveTheoryError(
            f"the linearised {model} SDE has no stationary distribution at h={h:g}, "
            f"s={s:g}: its drift matrix is not stable (need h + θ(s + ε) > 0)"
        )
    return float(solve_continuous_lyapunov(a, -b @ b.T)[0, 0])


def adamw_stationary_second_moment_sde_self_consistent(
    h: ArrayLike, s: ArrayLike, hp: Hyperparameters, model: str = "paper"
) -> np.ndarray:
    """:func:`adamw_stationary_second_moment_sde` with ``V`` at ``s² + h² E X²`` (docs/theory.md §8).

    The paper's and the refined SDE relax ``V`` to ``(∇f)² + diag Σ``, so ``P`` settles at
    the self-consistent ``p = √(s² + h² E X²) + ε`` (:func:`self_consistent_preconditioner`);
    Malladi et al.'s ``V`` relaxes to ``diag Σ`` alone, and its value is the frozen one.
    """
    _check_model(model)
    if model == "malladi":
        return adamw_stationary_second_moment_sde(h, s, hp, model)
    return _self_consistent(h, s, hp.eps, lambda hi, si, p: _adamw_sde_at(hi, si, p, hp, model))[1]


def _solve_recursion(f: np.ndarray, g: np.ndarray, what: str) -> float:
    """``E x²`` of ``z ← F z + G ξ``: ``C = F C Fᵀ + G Gᵀ``, ``x`` the first component."""
    radius = np.abs(np.linalg.eigvals(f)).max()
    if radius >= 1.0:
        raise AdaptiveTheoryError(
            f"the linearised {what} recursion is unstable (spectral radius {radius:.4g} ≥ 1): "
            "no stationary distribution; reduce the learning rate"
        )
    return float(solve_discrete_lyapunov(f, g @ g.T)[0, 0])


def _adamw_discrete_at(h: float, s: float, p: float, hp: Hyperparameters) -> float:
    """``E x²`` of one coordinate of the discrete AdamW linearised with preconditioner ``p``."""
    beta1, lr, theta, c = hp.beta1, hp.lr, hp.weight_decay, hp.lr / p
    f = np.array([[1.0 - lr * theta - c * (1.0 - beta1) * h, -c * beta1], [(1.0 - beta1) * h, beta1]])
    g = np.array([[-c * (1.0 - beta1) * s], [(1.0 - beta1) * s]])
    return _solve_recursion(f, g, "AdamW")


def adamw_stationary_second_moment_discrete(h: ArrayLike, s: ArrayLike, hp: Hyperparameters) -> np.ndarray:
    """``E x_i²`` of the discrete AdamW linearised at the minimum (docs/theory.md §5), ``p = s + ε``.

    With ``v`` frozen at ``s²`` and the bias corrections at 1, the update of docs/theory.md §2
    is linear in ``(x, m)``, ``c = η/p``:
    ``m' = β₁m + (1−β₁)(hx + sξ)``, ``x' = (1 − ηθ)x − c m'``,
    and the stationary covariance solves the discrete Lyapunov equation
    ``C = F C Fᵀ + G Gᵀ``.  Within ≈2% of the optimizer for every β₁, θ, ε at
    κ ≲ 0.1; past that ``v`` settles at ``s² + h² E x²`` rather than ``s²``, which
    :func:`adamw_stationary_second_moment_self_consistent` accounts for.
    Adam is ``θ = 0``.  ``E x²`` is at step boundaries, as the optimizer is recorded.
    """
    h_arr, s_arr, p = _coordinates(h, s, hp.eps)
    out = np.empty(h_arr.shape)
    for index in np.ndindex(h_arr.shape):
        out[index] = _adamw_discrete_at(h_arr[index], s_arr[index], p[index], hp)
    return out


def _rmspropw_discrete_at(h: np.ndarray, s: np.ndarray, p: np.ndarray, hp: Hyperparameters) -> np.ndarray:
    """``(η s/p)² / (1 − a²)``, ``a = 1 − η(h/p + θ)``: the AR(1) recursion's stationary variance."""
    rate = hp.lr * (h / p + hp.weight_decay)
    if ((rate <= 0) | (rate >= 2)).any():
        raise AdaptiveTheoryError(
            "the linearised RMSpropW recursion has no stationary distribution: need "
            "0 < η(h/p + θ) < 2 in every coordinate; reduce the learning rate or add weight decay"
        )
    return (hp.lr * s / p) ** 2 / (1.0 - (1.0 - rate) ** 2)


def rmspropw_stationary_second_moment_discrete(h: ArrayLike, s: ArrayLike, hp: Hyperparameters) -> np.ndarray:
    """``E x_i²`` of the discrete RMSpropW linearised at the minimum (docs/theory.md §5), ``p = s + ε``.

    With ``v`` frozen at ``s²`` the update ``x' = x − η(hx + sξ)/p − ηθx`` is an
    AR(1) recursion ``x' = a x − (η s/p) ξ``, ``a = 1 − η(h/p + θ)``, so
    ``E x² = (η s/p)² / (1 − a²)``: the paper-style formula divided by
    ``1 − η(h/p + θ)/2``.  RMSprop is ``θ = 0``.
    """
    h_arr, s_arr, p = _coordinates(h, s, hp.eps)
    return _rmspropw_discrete_at(h_arr, s_arr, p, hp)


SecondMomentAt = Callable[[float, float, float], float]
"""``(h, s, p) ↦ E x²`` of one coordinate with the preconditioner frozen at ``p``."""


def self_consistent_preconditioner(h: float, s: float, eps: float, second_moment_at: SecondMomentAt) -> float:
    """The root ``p`` of ``p = √(s² + h² m(p)) + ε``, ``m(p) = second_moment_at(h, s, p)``
    (docs/theory.md §8).

    Near the minimum ``v`` settles at ``E g² = s² + h² E x²``, not at ``s²``; the
    stationary ``E x²`` in turn depends on ``p = √v + ε``.  ``m`` decreases as ``p``
    grows (a larger ``p`` is a smaller step), so ``p − √(s² + h² m(p)) − ε`` increases
    and has one root, at or above ``s + ε``; below some ``p`` the linear recursion is
    unstable (``m = ∞``, the function is negative there too).  Bisection on the sign,
    in ``log p``, needs nothing more.
    """

    def above(p: float) -> bool:
        try:
            moment = second_moment_at(h, s, p)
        except AdaptiveTheoryError:  # unstable: E x² = ∞, so p is below the root
            return False
        return p >= math.sqrt(s * s + h * h * moment) + eps

    low = s + eps
    if above(low):
        return low
    high = 2.0 * low
    while not above(high):
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = math.sqrt(low * high)
        if middle in (low, high):
            break
        low, high = (low, middle) if above(middle) else (middle, high)
        if high / low - 1.0 < 1e-13:
            break
    return high


def _self_consistent(
    h: ArrayLike, s: ArrayLike, eps: float, second_moment_at: SecondMomentAt
) -> tuple[np.ndarray, np.ndarray]:
    """Per coordinate: the self-consistent ``p`` and ``E x² = m(p)``."""
    h_arr, s_arr, _ = _coordinates(h, s, eps)
    p = np.empty(h_arr.shape)
    moment = np.empty(h_arr.shape)
    for index in np.ndindex(h_arr.shape):
        p[index] = self_consistent_preconditioner(h_arr[index], s_arr[index], eps, second_moment_at)
        moment[index] = second_moment_at(h_arr[index], s_arr[index], p[index])
    return p, moment


def rmspropw_stationary_second_moment_self_consistent(
    h: ArrayLike, s: ArrayLike, hp: Hyperparameters
) -> np.ndarray:
    """``E x_i²`` of the discrete RMSpropW with the self-consistent ``p = √(s² + h² E x²) + ε``
    (docs/theory.md §8).

    The AR(1) form of :func:`rmspropw_stationary_second_moment_discrete` with ``p``
    solved together with ``E x²`` (:func:`self_consistent_preconditioner`).  Measured
    within 1% of the optimizer for κ up to 10 (docs/theory.md §8).
    """

    def at(hi: float, si: float, p: float) -> float:
        return float(_rmspropw_discrete_at(np.array(hi), np.array(si), np.array(p), hp))

    return _self_consistent(h, s, hp.eps, at)[1]


def adamw_stationary_second_moment_self_consistent(
    h: ArrayLike, s: ArrayLike, hp: Hyperparameters
) -> np.ndarray:
    """``E x_i²`` of the discrete AdamW with the self-consistent ``p = √(s² + h² E x²) + ε``
    (docs/theory.md §8).

    The 2×2 ``(x, m)`` discrete Lyapunov equation of
    :func:`adamw_stationary_second_moment_discrete` with ``p`` solved together with
    ``E x²`` (:func:`self_consistent_preconditioner`).  Measured within 2% of the
    optimizer for κ up to 10, every β₁ and θ (docs/theory.md §8).
    """
    return _self_consistent(h, s, hp.eps, lambda hi, si, p: _adamw_discrete_at(hi, si, p, hp))[1]


def adaptive_stationary_second_moment_self_consistent(
    h: ArrayLike, s: ArrayLike, lr: float, eps: float = 0.0, weight_decay: float = 0.0
) -> np.ndarray:
    """The paper-style ``η s²/(2p(h + θp))`` with the self-consistent ``p`` (docs/theory.md §8).

    The stationary variance of the paper's RMSpropW SDE, whose ``V`` relaxes to
    ``(∇f)² + diag Σ`` and so settles at ``s² + h² E x²`` (the fluctuations of ``V``
    neglected); continuous time, so it misses the optimizer's discreteness.
    """

    def at(hi: float, si: float, p: float) -> float:
        if hi + weight_decay * p <= 0:
            raise AdaptiveTheoryError("no stationary distribution: need h + θp > 0")
        return lr * si * si / (2.0 * p * (hi + weight_decay * p))

    return _self_consistent(h, s, eps, at)[1]


def stationary_loss(h: ArrayLike, second_moment: ArrayLike) -> float:
    """``E f = ½ Σ_i h_i E x_i²`` on the diagonal quadratic (``f* = 0``)."""
    return float(0.5 * np.sum(np.asarray(h, dtype=float) * np.asarray(second_moment, dtype=float)))


LYAPUNOV, PAPER_STYLE = PREDICTIONS = ("discrete Lyapunov", "paper-style")
"""Names of the two stationary predictions :func:`predicted_second_moments` gives."""


def predicted_second_moments(
    spec: OptimizerSpec, h: ArrayLike, s: ArrayLike, hp: Hyperparameters
) -> dict[str, np.ndarray]:
    """Per-coordinate ``E x_i²`` of ``spec``'s optimizer by each of :data:`PREDICTIONS`
    (docs/theory.md §5): its family's discrete Lyapunov linearisation (momentum included) and
    the paper-style :func:`adaptive_stationary_second_moment` (fast momentum).  ``spec`` must
    declare ``linearised_second_moment``."""
    closed_form = spec.capabilities.linearised_second_moment
    if closed_form is None:
        raise AdaptiveTheoryError(f"{spec.name} declares no linearised closed form")
    return {
        LYAPUNOV: closed_form(h, s, hp),
        PAPER_STYLE: adaptive_stationary_second_moment(h, s, hp.lr, hp.eps, hp.weight_decay),
    }


def predicted_losses(
    spec: OptimizerSpec, h: ArrayLike, s: ArrayLike, hp: Hyperparameters
) -> dict[str, float]:
    """Stationary ``E f`` by each of :data:`PREDICTIONS` (:func:`predicted_second_moments`)."""
    return {name: stationary_loss(h, v) for name, v in predicted_second_moments(spec, h, s, hp).items()}


def linearised_loss(spec: OptimizerSpec, h: ArrayLike, s: ArrayLike, hp: Hyperparameters) -> float | None:
    """The linearised discrete optimizer's stationary ``E f`` (its family's closed form,
    docs/theory.md §5); None where it has none or no stationary law."""
    closed_form = spec.capabilities.linearised_second_moment
    if closed_form is None:
        return None
    try:
        return stationary_loss(h, closed_form(h, s, hp))
    except OptsdeError:
        return None


def adamw_loss_limit(
    mu: float, L: float, d: int, sigma: float, batch_size: int, lr: float, weight_decay: float
) -> float:
    """The paper's eq. (6): ``lim E[f − f*] ≤ ηLd/(4μ) · σ/(√B + σθ(L+μ)/(2μL))`` (docs/theory.md §5).

    For a μ-strongly convex, L-smooth ``f`` with ``Σ = σ² I/B``, AdamW at ``ε = 0``
    (paper-style, fast momentum).  An upper bound, bounded for every σ when
    ``θ > 0`` (→ ``ηLd/(4μ) · 2μL/(θ(L+μ))`` as σ → ∞).  On a diagonal quadratic
    it equals ``stationary_loss`` of :func:`adaptive_stationary_second_moment`
    when every ``h_i = μ = L``, and exceeds it otherwise.
    """
    if not (0 < mu <= L and math.isfinite(L)):
        raise AdaptiveTheoryError(f"need 0 < μ ≤ L < ∞, got μ={mu}, L={L}")
    if d < 1 or batch_size < 1:
        raise AdaptiveTheoryError(f"need dimension d ≥ 1 and batch size B ≥ 1, got d={d}, B={batch_size}")
    if not (sigma >= 0 and lr > 0 and weight_decay >= 0):
        raise AdaptiveTheoryError(f"need σ ≥ 0, η > 0, θ ≥ 0, got σ={sigma}, η={lr}, θ={weight_decay}")
    shrink = sigma * weight_decay * (L + mu) / (2.0 * mu * L)
    return lr * L * d / (4.0 * mu) * sigma / (math.sqrt(batch_size) + shrink)
