"""SGD: discrete update (docs/theory.md §2), its SDE (Li et al., §3), the linear scaling rule (§6)."""

from __future__ import annotations

import math

from torch import Tensor

from optsde.optimizers.base import Capabilities, Hyperparameters, OptimizerSpec, State
from optsde.optimizers.terms import SDE, StepView, Term


class SGD:
    name = "sgd"

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone())

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float | Tensor) -> State:
        """``x ← x − η g``."""
        return State(x=state.x - lr * gradient, step=state.step + 1)


def gradient_flow() -> Term:
    """``−∇f(X) dt``."""
    return Term("gradient", "x", "drift", lambda view: -view.at.grad, frozenset({"grad"}))


def _gradient_noise(view: StepView) -> Tensor:
    return -math.sqrt(view.hp.lr) * view.sigma_dw


SGD_SDE = SDE(
    "sde-paper",
    order=("x",),
    terms=(gradient_flow(), Term("gradient_noise", "x", "diffusion", _gradient_noise, wiener="oracle")),
    description="dX = −∇f dt + √η Σ^{1/2} dW (Li et al.); a schedule φ scales both terms",
)


def linear_rule(hp: Hyperparameters, delta: float) -> Hyperparameters:
    """docs/theory.md §6: ``B → δB``, ``η → δη``."""
    return hp.with_(lr=delta * hp.lr)


SGD_SPEC = OptimizerSpec(
    name="sgd",
    discrete=SGD(),
    sdes={"paper": SGD_SDE},
    uses=("lr",),
    scaling_rules={"linear": linear_rule},
    capabilities=Capabilities(
        theory="sgd",
        noise_exponent=2,
        mean_under_heavy_tails=False,
        style={"color": "black", "label": "SGD"},
        primary_sde="paper",
        second_moment="none",
    ),
    description="plain SGD; SDE of Li et al.",
)
