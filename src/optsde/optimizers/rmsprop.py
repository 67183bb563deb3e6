"""RMSprop and RMSpropW: discrete update (SPEC §2), the paper's SDE and Malladi et al.'s (SPEC §3),
and the batch-size scaling rules (SPEC §6).

The two SDEs differ by one term of ``dV`` — the paper keeps ``(∇f)²``, the prior
SDE drops it — so they are one class with a flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from optsde.optimizers.base import Hyperparameters, OptimizerSpec, State
from optsde.problems.base import GradientOracle


class RMSpropW:
    """torch.optim.RMSprop's update (``alpha`` = β₂), plus decoupled decay on the old ``x``.

    ``v ← β v + (1−β) g²``; ``x ← x − η g/(√v + ε) − η θ x``.
    """

    name = "rmspropw"

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone(), v=torch.zeros_like(x0))

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float) -> State:
        assert state.v is not None
        v = hp.beta2 * state.v + (1.0 - hp.beta2) * gradient**2
        x = state.x - lr * gradient / (v.sqrt() + hp.eps) - lr * hp.weight_decay * state.x
        return State(x=x, v=v, step=state.step + 1)


def second_moment_target(oracle: GradientOracle, x: Tensor, gradient: Tensor, with_gradient: bool) -> Tensor:
    """What ``V`` relaxes to: ``(∇f)² + diag Σ`` (paper) or ``diag Σ`` (Malladi et al.)."""
    variance = oracle.noise_variance(x)
    return gradient**2 + variance if with_gradient else variance


@dataclass(frozen=True)
class RMSpropSDE:
    """State ``(X, V)``, ``P = diag(√V) + ε``:

    ``dX = −P⁻¹(∇f dt + √η Σ^{1/2} dW) − θX dt``, ``dV = ρ((∇f)² + diag Σ − V) dt``.

    ``V`` starts at 0 as the optimizer's ``v``; each EM step updates ``V`` first and
    uses the updated value in ``P`` (the look-ahead of SPEC §3), as the discrete
    step updates ``v`` before ``x``.
    """

    name: str
    gradient_in_second_moment: bool

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone(), v=torch.zeros_like(x0))

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
        x, v = state.x, state.v
        assert v is not None
        gradient = oracle.grad(x)
        target = second_moment_target(oracle, x, gradient, self.gradient_in_second_moment)
        v = v + hp.rho2 * (target - v) * dt
        preconditioner = v.sqrt() + hp.eps
        noise = math.sqrt(hp.lr * dt) * oracle.gaussian_noise(x, generator)
        dx = -(gradient * dt + noise) / preconditioner - hp.weight_decay * x * dt
        return State(x=x + lr_factor * dx, v=v)


def paper_rule(hp: Hyperparameters, delta: float) -> Hyperparameters:
    """SPEC §6, the paper's rule: ``η → √δ η``, ``β_i → 1 − √δ(1 − β_i)``, ``θ → √δ θ``."""
    root = math.sqrt(delta)
    return hp.with_(
        lr=root * hp.lr,
        beta1=1.0 - root * (1.0 - hp.beta1),
        beta2=1.0 - root * (1.0 - hp.beta2),
        weight_decay=root * hp.weight_decay,
    )


def malladi_rule(hp: Hyperparameters, delta: float) -> Hyperparameters:
    """SPEC §6, Malladi et al.: ``η → √δ η``, ``β_i → 1 − δ(1 − β_i)``, ``ε → ε/√δ``.

    Malladi et al. had no decoupled decay; we scale ``θ`` by ``√δ`` as the paper's rule
    does (the poster's reading), so the two rules differ only in ``β`` and ``ε``.
    """
    root = math.sqrt(delta)
    return hp.with_(
        lr=root * hp.lr,
        beta1=1.0 - delta * (1.0 - hp.beta1),
        beta2=1.0 - delta * (1.0 - hp.beta2),
        eps=hp.eps / root,
        weight_decay=root * hp.weight_decay,
    )


ADAPTIVE_RULES = {"paper": paper_rule, "malladi": malladi_rule}

_RMSPROP_SDES = {
    "paper": RMSpropSDE("sde-paper", gradient_in_second_moment=True),
    "malladi": RMSpropSDE("sde-malladi", gradient_in_second_moment=False),
}

RMSPROP_SPEC = OptimizerSpec(
    name="rmsprop",
    discrete=RMSpropW(),
    sdes=_RMSPROP_SDES,
    uses=("lr", "beta2", "eps"),
    scaling_rules=ADAPTIVE_RULES,
    description="RMSprop (β = beta2); SDEs of the paper and of Malladi et al.",
)

RMSPROPW_SPEC = OptimizerSpec(
    name="rmspropw",
    discrete=RMSpropW(),
    sdes=_RMSPROP_SDES,
    uses=("lr", "beta2", "eps", "weight_decay"),
    scaling_rules=ADAPTIVE_RULES,
    decoupled_decay=True,
    description="RMSprop with decoupled weight decay θ; SDEs of the paper and of Malladi et al.",
)
