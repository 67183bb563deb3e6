"""Adam and AdamW: discrete update (SPEC §2), the paper's SDE, Malladi et al.'s, and our
refined SDE (SPEC §3); scaling rules shared with RMSprop (SPEC §6).

The three SDEs are one drift built from named terms (STYLE §2):
- ``momentum_correction``: the paper's ``ηρ₁(∇f − M)`` inside the X drift (absent in Malladi et al.);
- ``gradient_in_second_moment``: ``(∇f)²`` in ``dV`` (absent in Malladi et al.);
- ``momentum_noise_on_x``: our refinement, the fresh noise ``(1−β₁)Z`` that the discrete
  ``m_{k+1}`` carries into the step, as a diffusion on X driven by M's Wiener process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from optsde.optimizers.base import Hyperparameters, OptimizerSpec, State
from optsde.optimizers.rmsprop import ADAPTIVE_RULES, second_moment_target
from optsde.problems.base import GradientOracle


class AdamW:
    """torch.optim.AdamW's update (torch.optim.Adam's when θ = 0)."""

    name = "adamw"

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone(), m=torch.zeros_like(x0), v=torch.zeros_like(x0))

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float) -> State:
        assert state.m is not None and state.v is not None
        k = state.step + 1
        x = state.x * (1.0 - lr * hp.weight_decay)
        m = hp.beta1 * state.m + (1.0 - hp.beta1) * gradient
        v = hp.beta2 * state.v + (1.0 - hp.beta2) * gradient**2
        bias1 = 1.0 - hp.beta1**k
        bias2 = 1.0 - hp.beta2**k
        x = x - (lr / bias1) * m / (v.sqrt() / math.sqrt(bias2) + hp.eps)
        return State(x=x, m=m, v=v, step=k)


def _iota(rate: float, t: float | Tensor) -> float | Tensor:
    """``ι(t) = 1 − e^{−ρt}``.  ``t`` may be a 0-d tensor: a compiled block of EM steps
    (:mod:`optsde.fused`) passes its times as tensors so one compilation serves every block."""
    return -torch.expm1(-rate * t) if isinstance(t, Tensor) else -math.expm1(-rate * t)


@dataclass(frozen=True)
class AdamSDE:
    """State ``(X, M, V)``, ``ι_i(t) = 1 − e^{−ρ_i t}``, ``P = diag(√V) + ε√ι₂``:

    ``dX = −(√ι₂/ι₁) P⁻¹ (M + ηρ₁(∇f − M)) dt − θX dt``,
    ``dM = ρ₁(∇f − M) dt + √η ρ₁ Σ^{1/2} dW``, ``dV = ρ₂((∇f)² + diag Σ − V) dt``.

    Start (SPEC §3): ``(x₀, 0, 0)`` at ``t = 0``; in each EM step ``P`` uses the
    look-ahead ``V + dt·dV`` with ``ι₂`` at ``t + dt`` and ``ι₁`` at ``t + η``, the
    way discrete step ``k`` divides by ``1 − β^k`` and already holds gradient ``k``.
    """

    name: str
    momentum_correction: bool
    gradient_in_second_moment: bool
    momentum_noise_on_x: bool

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone(), m=torch.zeros_like(x0), v=torch.zeros_like(x0))

    def em_step(
        self,
        state: State,
        t: float,
        dt: float,
        oracle: GradientOracle,
        hp: Hyperparameters,
        lr_factor: float,
        generator: torch.Generator | None,
    ) -> State:
        x, m, v = state.x, state.m, state.v
        assert m is not None and v is not None
        rho1, rho2, lr = hp.rho1, hp.rho2, hp.lr
        gradient = oracle.grad(x)
        # One Wiener increment drives M and, in the refined model, X.
        noise = math.sqrt(lr * dt) * oracle.gaussian_noise(x, generator)

        target = second_moment_target(oracle, x, gradient, self.gradient_in_second_moment)
        v_next = v + rho2 * (target - v) * dt
        iota1 = _iota(rho1, t + lr)
        root_iota2 = _iota(rho2, t + dt) ** 0.5
        scale = root_iota2 / iota1 / (v_next.sqrt() + hp.eps * root_iota2)

        direction = m + lr * rho1 * (gradient - m) if self.momentum_correction else m
        dx = -scale * direction * dt - hp.weight_decay * x * dt
        if self.momentum_noise_on_x:
            dx = dx - scale * (lr * rho1) * noise
        m_next = m + rho1 * (gradient - m) * dt + rho1 * noise
        return State(x=x + lr_factor * dx, m=m_next, v=v_next)


ADAM_SDES = {
    "paper": AdamSDE("sde-paper", True, True, False),
    "malladi": AdamSDE("sde-malladi", False, False, False),
    "refined": AdamSDE("sde-refined", True, True, True),
}

ADAM_SPEC = OptimizerSpec(
    name="adam",
    discrete=AdamW(),
    sdes=ADAM_SDES,
    uses=("lr", "beta1", "beta2", "eps"),
    scaling_rules=ADAPTIVE_RULES,
    description="Adam; SDEs of the paper, of Malladi et al., and our refined one",
)

ADAMW_SPEC = OptimizerSpec(
    name="adamw",
    discrete=AdamW(),
    sdes=ADAM_SDES,
    uses=("lr", "beta1", "beta2", "eps", "weight_decay"),
    scaling_rules=ADAPTIVE_RULES,
    decoupled_decay=True,
    description="AdamW (decoupled weight decay θ); SDEs of the paper, of Malladi et al., and our refined one",
)
