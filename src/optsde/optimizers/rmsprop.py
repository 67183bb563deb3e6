"""RMSprop and RMSpropW: discrete update (docs/theory.md §2), the paper's SDE and Malladi et al.'s
(docs/theory.md §3),
and the batch-size scaling rules (docs/theory.md §6).

The two SDEs differ by one term of ``dV`` — the paper keeps ``(∇f)²``, the prior
SDE drops it (:func:`~optsde.optimizers.terms.second_moment_relaxation`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from optsde.optimizers.base import Capabilities, Hyperparameters, OptimizerSpec, State
from optsde.optimizers.terms import SDE, StepView, Term, decoupled_decay, second_moment_relaxation


class RMSpropW:
    """torch.optim.RMSprop's update (``alpha`` = β₂), plus decoupled decay on the old ``x``.

    ``v ← β v + (1−β) g²``; ``x ← x − η g/(√v + ε) − η θ x``.
    """

    name = "rmspropw"

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone(), v=torch.zeros_like(x0))

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float | Tensor) -> State:
        assert state.v is not None
        v = hp.beta2 * state.v + (1.0 - hp.beta2) * gradient**2
        x = state.x - lr * gradient / (v.sqrt() + hp.eps) - lr * hp.weight_decay * state.x
        return State(x=x, v=v, step=state.step + 1)


def _preconditioner(view: StepView) -> Tensor:
    """``P = diag(√V) + ε`` with ``V`` as advanced this step (the look-ahead start)."""
    return view.latest("v").sqrt() + view.hp.eps


def rmsprop_sde(name: str, gradient_in_second_moment: bool) -> SDE:
    """State ``(X, V)``, ``P = diag(√V) + ε`` (docs/theory.md §3):

    ``dX = −P⁻¹(∇f dt + √η Σ^{1/2} dW) − θX dt``, ``dV = ρ((∇f)² + diag Σ − V) dt``.

    ``V`` starts at 0 as the optimizer's ``v``; with the solver's look-ahead start
    ``P`` uses ``V`` already advanced by this step, as the discrete step updates ``v``
    before ``x``.  The paper's and Malladi et al.'s models differ in the ``V`` term.
    """
    return SDE(
        name,
        order=("v", "x"),
        terms=(
            second_moment_relaxation(gradient_in_second_moment),
            Term(
                "preconditioned_gradient",
                "x",
                "drift",
                lambda view: -view.at.grad / _preconditioner(view),
                frozenset({"grad"}),
            ),
            Term(
                "preconditioned_noise",
                "x",
                "diffusion",
                lambda view: -math.sqrt(view.hp.lr) * view.sigma_dw / _preconditioner(view),
                wiener="oracle",
            ),
            decoupled_decay(),
        ),
    )


def paper_rule(hp: Hyperparameters, delta: float) -> Hyperparameters:
    """docs/theory.md §6, the paper's rule: ``η → √δ η``, ``β_i → 1 − √δ(1 − β_i)``, ``θ → √δ θ``."""
    root = math.sqrt(delta)
    return hp.with_(
        lr=root * hp.lr,
        beta1=1.0 - root * (1.0 - hp.beta1),
        beta2=1.0 - root * (1.0 - hp.beta2),
        weight_decay=root * hp.weight_decay,
    )


def malladi_rule(hp: Hyperparameters, delta: float) -> Hyperparameters:
    """docs/theory.md §6, Malladi et al.: ``η → √δ η``, ``β_i → 1 − δ(1 − β_i)``, ``ε → ε/√δ``.

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
    "paper": rmsprop_sde("sde-paper", gradient_in_second_moment=True),
    "malladi": rmsprop_sde("sde-malladi", gradient_in_second_moment=False),
}


def _linearised_second_moment(h: ArrayLike, s: ArrayLike, hp: Hyperparameters) -> np.ndarray:
    """``E x_i²`` of the discrete RMSprop(W) linearised at a minimum (docs/theory.md §5)."""
    # Imported on use: optsde.theory.adaptive imports this package's base module.
    from optsde.theory.adaptive import rmspropw_stationary_second_moment_discrete

    return rmspropw_stationary_second_moment_discrete(h, s, hp)


def _sde_linearised_second_moment(h: ArrayLike, s: ArrayLike, hp: Hyperparameters, model: str) -> np.ndarray:
    """``E X_i²`` of either RMSprop(W) SDE linearised at a minimum: with ``V`` frozen at ``s²`` both
    are one Ornstein–Uhlenbeck process, whose variance is the paper-style formula (docs/theory.md §5)."""
    from optsde.theory.adaptive import adaptive_stationary_second_moment

    return adaptive_stationary_second_moment(h, s, hp.lr, hp.eps, hp.weight_decay)


RMSPROP_SPEC = OptimizerSpec(
    name="rmsprop",
    discrete=RMSpropW(),
    sdes=_RMSPROP_SDES,
    uses=("lr", "beta2", "eps"),
    scaling_rules=ADAPTIVE_RULES,
    capabilities=Capabilities(
        theory="rmspropw",
        noise_exponent=1,
        mean_under_heavy_tails=True,
        style={"color": "tab:cyan", "label": "RMSprop"},
        decay_variant="rmspropw",
        linearised_second_moment=_linearised_second_moment,
        sde_linearised_second_moment=_sde_linearised_second_moment,
        primary_sde="paper",
        second_moment="uncorrected",
    ),
    description="RMSprop (β = beta2); SDEs of the paper and of Malladi et al.",
    torch_defaults={"beta2": 0.99, "eps": 1e-8, "weight_decay": 0.0},  # torch.optim.RMSprop's alpha = β
)

RMSPROPW_SPEC = OptimizerSpec(
    name="rmspropw",
    discrete=RMSpropW(),
    sdes=_RMSPROP_SDES,
    uses=("lr", "beta2", "eps", "weight_decay"),
    scaling_rules=ADAPTIVE_RULES,
    capabilities=Capabilities(
        theory="rmspropw",
        noise_exponent=1,
        mean_under_heavy_tails=True,
        style={"color": "tab:blue", "label": "RMSpropW"},
        linearised_second_moment=_linearised_second_moment,
        sde_linearised_second_moment=_sde_linearised_second_moment,
        primary_sde="paper",
        second_moment="uncorrected",
    ),
    decoupled_decay=True,
    description="RMSprop with decoupled weight decay θ; SDEs of the paper and of Malladi et al.",
    torch_defaults={"beta2": 0.99, "eps": 1e-8, "weight_decay": 0.0},
)
