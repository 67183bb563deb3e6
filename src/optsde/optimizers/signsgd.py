"""SignSGD: discrete update (docs/theory.md §2), its SDEs and phase approximations (docs/theory.md §3).

The SDE is driven by ``E sign ∇f_γ`` and ``Cov sign ∇f_γ`` (paper Thm 3.2); the
three noise forms differ only in how ``E sign`` is computed, so each is one
:func:`sign_sde` with its own ``expected_sign``.  Phase 1 (the SignGD ODE)
and phase 3 (the linearised SDE) are the approximations of paper Lemma 3.4.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from optsde.noise import gaussian_sign_mean, student_t_cdf
from optsde.optimizers.base import Capabilities, Hyperparameters, OptimizerSpec, State
from optsde.optimizers.terms import SDE, StepView, Term


class SignSGD:
    name = "signsgd"

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone())

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float | Tensor) -> State:
        """``x ← x − η sign(g)``."""
        return State(x=state.x - lr * torch.sign(gradient), step=state.step + 1)


ExpectedSign = Callable[[StepView], Tensor]


def general_expected_sign(view: StepView) -> Tensor:
    """``1 − 2 P(∇f_γ < 0)`` as the oracle's noise model gives it (Thm 3.2)."""
    return view.at.expected_sign


def gaussian_expected_sign(view: StepView) -> Tensor:
    """``erf(∇f / (√2 s))`` with ``s² = diag Σ`` (Cor 3.3): Gaussian noise assumed."""
    return gaussian_sign_mean(view.at.grad, view.at.variance.sqrt())


def student_t_expected_sign(nu: float) -> ExpectedSign:
    """``2 F_ν(∇f / s) − 1`` with ``s`` the oracle's noise scale (docs/theory.md §3, Student-t form)."""

    def expected_sign(view: StepView) -> Tensor:
        return 2.0 * student_t_cdf(view.at.grad / view.at.scale, nu) - 1.0

    return expected_sign


def sign_sde(name: str, expected_sign: ExpectedSign, needs: frozenset[str], compilable: bool = True) -> SDE:
    """``dX = −E sign(∇f_γ) dt + √η sqrt(I − diag(E sign ∇f_γ)²) dW`` (docs/theory.md §3).

    The diffusion is ``Cov(sign ∇f_γ)^{1/2}`` for independent coordinates, driven by a
    standard Wiener process (not by the gradient noise); ``expected_sign`` is the form of
    ``E sign ∇f_γ`` (general, Gaussian or Student-t).  Without noise ``E sign = sign ∇f``
    and the diffusion vanishes: sign-gradient flow.
    """

    def sign_noise(view: StepView) -> Tensor:
        std = (1.0 - expected_sign(view) ** 2).clamp_min(0.0).sqrt()
        return -math.sqrt(view.hp.lr) * std * view.dw

    return SDE(
        name,
        order=("x",),
        terms=(
            Term("expected_sign", "x", "drift", lambda view: -expected_sign(view), needs),
            Term("sign_noise", "x", "diffusion", sign_noise, needs, wiener="standard"),
        ),
        compilable=compilable,
    )


def _phase3_ratio(view: StepView) -> Tensor:
    return view.at.grad / view.at.scale


def _phase3_noise(view: StepView) -> Tensor:
    # Outside phase 3 the variance turns negative: the model no longer applies, and we
    # clamp instead of producing NaNs.
    std = (1.0 - (2.0 / math.pi) * _phase3_ratio(view) ** 2).clamp_min(0.0).sqrt()
    return -math.sqrt(view.hp.lr) * std * view.dw


_GRAD_AND_SCALE = frozenset({"grad", "scale"})

SIGNGD_ODE = SDE(
    "ode-phase1",
    order=("x",),
    terms=(Term("sign_gradient", "x", "drift", lambda view: -torch.sign(view.at.grad), frozenset({"grad"})),),
    description="Phase 1 (Lemma 3.4, |∇f/s| > 3/2): dX = −sign(∇f(X)) dt",
)

LINEARISED_SIGN_SDE = SDE(
    "sde-phase3",
    order=("x",),
    terms=(
        Term(
            "linear_drift",
            "x",
            "drift",
            lambda view: -math.sqrt(2.0 / math.pi) * _phase3_ratio(view),
            _GRAD_AND_SCALE,
        ),
        Term("linearised_sign_noise", "x", "diffusion", _phase3_noise, _GRAD_AND_SCALE, wiener="standard"),
    ),
    description="Phase 3 (Lemma 3.4, |∇f/s| < 1): dX = −√(2/π) ∇f/s dt + √η sqrt(I − (2/π) diag(∇f/s)²) dW",
    requires_noise=True,
)


@dataclass(frozen=True)
class PhaseThresholds:
    """Lemma 3.4's thresholds on ``|Y| = |∇f / s|``: phase 3 below ``low``, phase 1 above ``high``."""

    low: float = 1.0
    high: float = 1.5

    def phase(self, y: Tensor) -> Tensor:
        """Per coordinate: 1, 2 or 3."""
        magnitude = y.abs()
        phase = torch.full_like(magnitude, 2, dtype=torch.int64)
        phase[magnitude > self.high] = 1
        phase[magnitude < self.low] = 3
        return phase


def phase2_drift_bounds(thresholds: PhaseThresholds = PhaseThresholds()) -> tuple[float, float, float]:
    """Lemma 3.4, phase 2: slope ``m`` and offsets ``q₋ ≤ q₊`` with ``mY + q₋ ≤ erf(Y/√2) ≤ mY + q₊``.

    On ``[low, high]`` erf(·/√2) is concave, so the chord through its ends is a lower
    bound and the parallel tangent an upper one; computed from erf, not typed in.
    """
    a, b = thresholds.low, thresholds.high
    ea, eb = math.erf(a / math.sqrt(2)), math.erf(b / math.sqrt(2))
    slope = (eb - ea) / (b - a)
    q_low = ea - slope * a
    # Tangent point: derivative sqrt(2/π) e^{-y²/2} = slope.
    y_tangent = math.sqrt(-2.0 * math.log(slope / math.sqrt(2.0 / math.pi)))
    q_high = math.erf(y_tangent / math.sqrt(2)) - slope * y_tangent
    return slope, q_low, q_high


def square_root_rule(hp: Hyperparameters, delta: float) -> Hyperparameters:
    """``B → δB``, ``η → √δ η``: the sign-based square-root rule, which keeps ``η s`` fixed."""
    return hp.with_(lr=math.sqrt(delta) * hp.lr)


SIGNSGD_SPEC = OptimizerSpec(
    name="signsgd",
    discrete=SignSGD(),
    sdes={
        "paper": sign_sde("sde-paper", general_expected_sign, frozenset({"expected_sign"})),
        "gaussian": sign_sde("sde-gaussian", gaussian_expected_sign, frozenset({"grad", "variance"})),
        # Thm 3.2 in its general form, named as such: E sign ∇f_γ is whatever the oracle's noise
        # gives (exact for analytic noise; on a network with sign_samples = K, the mean sign of K
        # real minibatch gradients, unbiased, so the diffusion 1 − (E sign)² is low by (1 − 1/K)).
        "general": sign_sde("sde-general", general_expected_sign, frozenset({"expected_sign"})),
        "phase1": SIGNGD_ODE,
        "phase3": LINEARISED_SIGN_SDE,
    },
    uses=("lr",),
    scaling_rules={"square-root": square_root_rule},
    capabilities=Capabilities(
        theory="signsgd",
        noise_exponent=1,
        mean_under_heavy_tails=True,
        style={"color": "tab:red", "label": "SignSGD"},
        primary_sde="paper",
        second_moment="none",
    ),
    description="SignSGD; SDE of the paper (Thm 3.2) and its phase approximations (Lemma 3.4)",
)


def student_t_sde(nu: float) -> SDE:
    """SignSGD's SDE under Student-t noise with ``ν`` degrees of freedom (docs/theory.md §3).
    Its CDF comes from scipy, so it runs eagerly."""
    return sign_sde("sde-student-t", student_t_expected_sign(nu), _GRAD_AND_SCALE, compilable=False)
