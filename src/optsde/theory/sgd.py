"""SGD on a diagonal quadratic, its loss bound, and the pieces docs/theory.md §5's closed forms share.

SGD's SDE (Li et al., docs/theory.md §3) on ``f = ½ Σ h_i x_i²`` with noise scale ``s_i`` is an
Ornstein–Uhlenbeck process per coordinate, ``dX = −hX dt + √η s dW``, so its
stationary law and its loss are explicit.  For a μ-strongly convex, L-smooth ``f``
with ``Σ = σ²I/B``, Itô's formula on ``f`` gives the bound of docs/theory.md §5 (the
poster's eq. 3).  The noise-resilience law (how the asymptotic loss grows with σ)
compares SGD with the adaptive methods, so it lives here beside the baseline.

Arrays follow numpy broadcasting: ``h`` and ``s`` are per-coordinate (the last
axis); a time argument ``t`` may be a scalar or an array.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from optsde.errors import OptsdeError


class TheoryError(OptsdeError):
    """An argument outside a closed form's domain; the message says which and how to fix it."""


def positive(name: str, value: ArrayLike) -> np.ndarray:
    """``value`` as a float array, refused unless every entry is finite and positive."""
    array = np.asarray(value, dtype=float)
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise TheoryError(f"{name} must be finite and positive, got {value!r}")
    return array


def times(t: ArrayLike) -> np.ndarray:
    """Times as a float array, refused if any is negative (the closed forms start at t = 0)."""
    array = np.asarray(t, dtype=float)
    if not (np.isfinite(array).all() and (array >= 0).all()):
        raise TheoryError(f"times must be finite and non-negative, got {t!r}")
    return array


def relaxation(t: ArrayLike, start: ArrayLike, rate: ArrayLike, limit: ArrayLike) -> np.ndarray:
    """``start·e^{−rate·t} + (1 − e^{−rate·t})·limit``: the solution of ``dF/dt = −rate(F − limit)``.

    Every constant-rate loss bound of docs/theory.md §5 has this form (the comparison ODE
    that Itô's formula on ``f`` yields); with ``t`` of shape ``(T,)`` and per-coordinate
    ``rate``, the result is ``(T, d)``.
    """
    decay = np.exp(-np.multiply.outer(times(t), np.asarray(rate, dtype=float)))
    return np.asarray(start) * decay + (1.0 - decay) * np.asarray(limit)


def sgd_stationary_second_moment(h: ArrayLike, s: ArrayLike, lr: float) -> np.ndarray:
    """docs/theory.md §5: ``E x_i² = η s_i² / (2 h_i)``, the Ornstein–Uhlenbeck variance of SGD's SDE.

    The discrete SGD has ``η s²/(h(2 − ηh))`` instead: the SDE's relative error is
    ``ηh/2``, below 5% while ``ηh < 0.1``.
    """
    h, s, lr = positive("curvature h", h), positive("noise scale s", s), positive("lr", lr)
    return lr * s**2 / (2.0 * h)


def sgd_stationary_loss(h: ArrayLike, s: ArrayLike, lr: float) -> float:
    """docs/theory.md §5: ``E f = ½ Σ h_i E x_i² = Σ η s_i²/4`` (independent of the curvatures)."""
    h_arr = positive("curvature h", h)
    return float(np.sum(0.5 * h_arr * sgd_stationary_second_moment(h_arr, s, lr), axis=-1))


def sgd_discrete_stationary_second_moment(h: ArrayLike, s: ArrayLike, lr: float) -> np.ndarray:
    """docs/theory.md §8: ``E x_i² = η s_i² / (h_i (2 − η h_i))``, exact for the discrete SGD.

    ``x ← (1 − ηh)x − η s ξ`` is an AR(1) recursion, whose stationary variance is
    ``η² s² / (1 − (1 − ηh)²)``; it exists for ``0 < ηh < 2`` and needs only the noise
    variance ``s²`` (any noise law with a variance).  Its ``ηh → 0`` limit is the SDE's
    :func:`sgd_stationary_second_moment`.
    """
    h, s, lr = positive("curvature h", h), positive("noise scale s", s), positive("lr", lr)
    if (lr * h >= 2).any():
        raise TheoryError(
            f"SGD diverges for ηh ≥ 2 (here max ηh = {float(np.max(lr * h)):.3g}); reduce the learning rate"
        )
    return lr * s**2 / (h * (2.0 - lr * h))


def sgd_discrete_stationary_loss(h: ArrayLike, s: ArrayLike, lr: float) -> float:
    """docs/theory.md §8: ``E f = Σ_i η s_i² / (2(2 − η h_i))``, exact for the discrete SGD."""
    h_arr = positive("curvature h", h)
    return float(np.sum(0.5 * h_arr * sgd_discrete_stationary_second_moment(h_arr, s, lr), axis=-1))


def sgd_cauchy_stationary_scale(h: ArrayLike, s: ArrayLike, lr: float) -> np.ndarray:
    """Scale of the stationary law of the discrete SGD under Cauchy noise of scale ``s`` (docs/theory.md §8).

    ``x_∞ = −η s Σ_j (1 − ηh)^j T_j`` with ``T_j`` standard Cauchy; a weighted sum of
    Cauchy variables is Cauchy with the sum of the absolute weights as scale,
    ``η s / (1 − |1 − ηh|)``: ``s/h`` for every ``ηh ≤ 1``, ``η s/(2 − ηh)`` above.
    ``E x²`` and ``E f`` are infinite; the median of ``x²`` is the scale squared.
    """
    h, s, lr = positive("curvature h", h), positive("noise scale s", s), positive("lr", lr)
    if (lr * h >= 2).any():
        raise TheoryError(
            f"SGD diverges for ηh ≥ 2 (here max ηh = {float(np.max(lr * h)):.3g}); reduce the learning rate"
        )
    return lr * s / (1.0 - np.abs(1.0 - lr * h))


def sgd_loss_bound(
    t: ArrayLike, f0: float, mu: float, L: float, d: int, sigma: float, batch_size: int, lr: float
) -> np.ndarray:
    """docs/theory.md §5 (poster eq. 3): ``E[f − f*] ≤ (f₀ − f*)e^{−2μt} + (1 − e^{−2μt}) ηLdσ²/(4μB)``.

    Itô on ``f`` along ``dX = −∇f dt + √η σ/√B dW``:
    ``dE f = −E|∇f|² dt + (η/2) tr(∇²f) σ²/B dt ≤ −2μ E(f − f*) dt + ηLdσ²/(2B) dt``
    (strong convexity gives ``|∇f|² ≥ 2μ(f − f*)``, smoothness ``tr ∇²f ≤ Ld``).
    Equality for ``f = ½μ|x|²``.  ``f0`` is the initial gap ``f(x₀) − f*``.
    """
    mu, L, sigma, lr = (positive(n, v) for n, v in (("mu", mu), ("L", L), ("sigma", sigma), ("lr", lr)))
    check_problem(f0, mu, L, d, batch_size)
    limit = lr * L * d * sigma**2 / (4.0 * mu * batch_size)
    return relaxation(t, f0, 2.0 * mu, limit)


def check_gap(f0: float) -> None:
    """``f0 = f(x₀) − f*`` must be a finite non-negative number."""
    if not (math.isfinite(f0) and f0 >= 0):
        raise TheoryError(f"f0 is the initial gap f(x0) − f* and must be ≥ 0, got {f0}")


def check_problem(f0: float, mu: np.ndarray, L: np.ndarray, d: int, batch_size: int) -> None:
    """The setting of docs/theory.md §5's bounds: a gap ``f0 ≥ 0``, ``0 < μ ≤ L``, integers ``d, B ≥ 1``."""
    check_gap(f0)
    if mu > L:
        raise TheoryError(f"need mu ≤ L (strong convexity below smoothness), got mu={mu}, L={L}")
    if int(d) != d or d < 1 or int(batch_size) != batch_size or batch_size < 1:
        raise TheoryError(f"d and batch_size must be positive integers, got d={d}, batch_size={batch_size}")


NOISE_RESILIENCE_EXPONENTS = {"sgd": 2, "signsgd": 1, "adam": 1, "rmsprop": 1, "adamw": 0, "rmspropw": 0}
"""docs/theory.md §5: the asymptotic loss at fixed η grows like ``σ^exponent`` for large σ."""


def noise_resilience_exponent(optimizer_name: str, weight_decay: float | None = None) -> int:
    """How the asymptotic loss grows with the noise level σ at fixed η: ``∝ σ^exponent`` (docs/theory.md §5).

    2 for SGD (``ηLdσ²/(4μB)``), 1 for SignSGD, Adam and RMSprop (the
    preconditioner divides the noise by its own scale once), 0 for AdamW and
    RMSpropW with decoupled decay θ > 0: their limit ``ηLd/(4μ)·σ/(√B + σθ(L+μ)/(2μL))``
    stays bounded as σ → ∞ (at small σ it is still ∝ σ).  With ``weight_decay=0``
    AdamW and RMSpropW are Adam and RMSprop, exponent 1.
    """
    name = optimizer_name.lower()
    if name not in NOISE_RESILIENCE_EXPONENTS:
        known = ", ".join(NOISE_RESILIENCE_EXPONENTS)
        raise TheoryError(f"no noise-resilience law for {optimizer_name!r}; choose one of: {known}")
    if weight_decay is not None and weight_decay < 0:
        raise TheoryError(f"weight_decay must be ≥ 0, got {weight_decay}")
    if name in ("adamw", "rmspropw") and weight_decay == 0:
        return 1
    return NOISE_RESILIENCE_EXPONENTS[name]
