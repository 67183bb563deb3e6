"""SignSGD: discrete update (SPEC §2), its SDEs and phase approximations (SPEC §3).

The SDE is driven by ``E sign ∇f_γ`` and ``Cov sign ∇f_γ`` (paper Thm 3.2); the
three noise forms differ only in how ``E sign`` is computed, so each is a
:class:`SignSGDSDE` with its own ``expected_sign``.  Phase 1 (the SignGD ODE)
and phase 3 (the linearised SDE) are the approximations of paper Lemma 3.4.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from optsde.noise import gaussian_sign_mean, standard_normal, student_t_cdf
from optsde.optimizers.base import Hyperparameters, OptimizerSpec, PositionSDE, State
from optsde.problems.base import GradientOracle

ExpectedSign = Callable[[GradientOracle, Tensor], Tensor]


class SignSGD:
    name = "signsgd"

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone())

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float) -> State:
        """``x ← x − η sign(g)``."""
        return State(x=state.x - lr * torch.sign(gradient), step=state.step + 1)


def general_expected_sign(oracle: GradientOracle, x: Tensor) -> Tensor:
    """``1 − 2 P(∇f_γ < 0)`` as the oracle's noise model gives it (Thm 3.2)."""
    return oracle.expected_sign(x)


def gaussian_expected_sign(oracle: GradientOracle, x: Tensor) -> Tensor:
    """``erf(∇f / (√2 s))`` with ``s² = diag Σ`` (Cor 3.3): Gaussian noise assumed."""
    return gaussian_sign_mean(oracle.grad(x), oracle.noise_variance(x).sqrt())


def student_t_expected_sign(nu: float) -> ExpectedSign:
    """``2 F_ν(∇f / s) − 1`` with ``s`` the oracle's noise scale (SPEC §3, Student-t form)."""

    def expected_sign(oracle: GradientOracle, x: Tensor) -> Tensor:
        return 2.0 * student_t_cdf(oracle.grad(x) / oracle.noise_scale(x), nu) - 1.0

    return expected_sign


@dataclass(frozen=True)
class SignSGDSDE(PositionSDE):
    """``dX = −E sign(∇f_γ) dt + √η sqrt(I − diag(E sign ∇f_γ)²) dW``.

    The diffusion is ``Cov(sign ∇f_γ)^{1/2}`` for independent coordinates (SPEC §3).
    """

    name: str
    expected_sign: ExpectedSign

    def descent(
        self,
        x: Tensor,
        dt: float,
        oracle: GradientOracle,
        hp: Hyperparameters,
        generator: torch.Generator | None,
    ) -> Tensor:
        mean_sign = self.expected_sign(oracle, x)
        sign_std = (1.0 - mean_sign**2).clamp_min(0.0).sqrt()
        return mean_sign * dt + math.sqrt(hp.lr * dt) * sign_std * standard_normal(x, generator)


class SignGDODE(PositionSDE):
    """Phase 1 (Lemma 3.4, ``|∇f/s| > 3/2``): ``dX = −sign(∇f(X)) dt``."""

    name = "ode-phase1"

    def descent(
        self,
        x: Tensor,
        dt: float,
        oracle: GradientOracle,
        hp: Hyperparameters,
        generator: torch.Generator | None,
    ) -> Tensor:
        return torch.sign(oracle.grad(x)) * dt


class LinearisedSignSDE(PositionSDE):
    """Phase 3 (Lemma 3.4, ``|∇f/s| < 1``), the poster's simplified SDE.

    ``dX = −√(2/π) ∇f/s dt + √η sqrt(I − (2/π) diag(∇f/s)²) dW``.
    """

    name = "sde-phase3"

    def descent(
        self,
        x: Tensor,
        dt: float,
        oracle: GradientOracle,
        hp: Hyperparameters,
        generator: torch.Generator | None,
    ) -> Tensor:
        y = oracle.grad(x) / oracle.noise_scale(x)
        drift = math.sqrt(2.0 / math.pi) * y
        # Outside phase 3 the variance term turns negative: the model no longer applies,
        # and we clamp instead of producing NaNs.
        sign_std = (1.0 - (2.0 / math.pi) * y**2).clamp_min(0.0).sqrt()
        return drift * dt + math.sqrt(hp.lr * dt) * sign_std * standard_normal(x, generator)


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
        "paper": SignSGDSDE("sde-paper", general_expected_sign),
        "gaussian": SignSGDSDE("sde-gaussian", gaussian_expected_sign),
        "phase1": SignGDODE(),
        "phase3": LinearisedSignSDE(),
    },
    uses=("lr",),
    scaling_rules={"square-root": square_root_rule},
    description="SignSGD; SDE of the paper (Thm 3.2) and its phase approximations (Lemma 3.4)",
)


def student_t_sde(nu: float) -> SignSGDSDE:
    """SignSGD's SDE under Student-t noise with ``ν`` degrees of freedom (SPEC §3)."""
    return SignSGDSDE("sde-student-t", student_t_expected_sign(nu))
