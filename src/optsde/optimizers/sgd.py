"""SGD: discrete update (SPEC §2), its SDE (Li et al., SPEC §3), the linear scaling rule (SPEC §6)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optsde.optimizers.base import Hyperparameters, OptimizerSpec, PositionSDE, State
from optsde.problems.base import GradientOracle


class SGD:
    name = "sgd"

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone())

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float) -> State:
        """``x ← x − η g``."""
        return State(x=state.x - lr * gradient, step=state.step + 1)


class SGDSDE(PositionSDE):
    """``dX = −∇f(X) dt + √η Σ(X)^{1/2} dW`` (Li et al.); a schedule φ scales both terms."""

    name = "sde-paper"

    def descent(
        self,
        x: Tensor,
        dt: float,
        oracle: GradientOracle,
        hp: Hyperparameters,
        generator: torch.Generator | None,
    ) -> Tensor:
        return oracle.grad(x) * dt + math.sqrt(hp.lr * dt) * oracle.gaussian_noise(x, generator)


def linear_rule(hp: Hyperparameters, delta: float) -> Hyperparameters:
    """SPEC §6: ``B → δB``, ``η → δη``."""
    return hp.with_(lr=delta * hp.lr)


SGD_SPEC = OptimizerSpec(
    name="sgd",
    discrete=SGD(),
    sdes={"paper": SGDSDE()},
    uses=("lr",),
    scaling_rules={"linear": linear_rule},
    description="plain SGD; SDE of Li et al.",
)
