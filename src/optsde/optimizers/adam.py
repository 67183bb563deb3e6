"""Adam and AdamW: discrete update (docs/theory.md §2), the paper's SDE, Malladi et al.'s, and our
refined SDE (docs/theory.md §3); scaling rules shared with RMSprop (docs/theory.md §6).

The models are one list of named terms (docs/theory.md §3) and differ by terms you can name:
- ``sde-malladi`` drops ``momentum_correction`` (the paper's ``ηρ₁(∇f − M)`` in the X drift) and
  relaxes ``V`` to ``diag Σ`` only (``v_relaxation_noise_only`` for ``v_relaxation``);
- ``sde-refined`` adds ``momentum_noise_on_x``, the fresh noise ``(1−β₁)Z`` that the discrete
  ``m_{k+1}`` carries into the step, as a diffusion on X driven by M's Wiener process;
- ``sde-uncorrected`` is the paper's model without ``momentum_correction``, a diagnostic.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from optsde.optimizers.base import Capabilities, Hyperparameters, OptimizerSpec, State
from optsde.optimizers.rmsprop import ADAPTIVE_RULES
from optsde.optimizers.terms import SDE, StepView, Term, decoupled_decay, iota, second_moment_relaxation


class AdamW:
    """torch.optim.AdamW's update (torch.optim.Adam's when θ = 0)."""

    name = "adamw"

    def init_state(self, x0: Tensor) -> State:
        return State(x=x0.clone(), m=torch.zeros_like(x0), v=torch.zeros_like(x0))

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float | Tensor) -> State:
        assert state.m is not None and state.v is not None
        k = state.step + 1
        x = state.x * (1.0 - lr * hp.weight_decay)
        m = hp.beta1 * state.m + (1.0 - hp.beta1) * gradient
        v = hp.beta2 * state.v + (1.0 - hp.beta2) * gradient**2
        bias1 = 1.0 - hp.beta1**k
        bias2 = 1.0 - hp.beta2**k
        x = x - (lr / bias1) * m / (v.sqrt() / bias2**0.5 + hp.eps)
        return State(x=x, m=m, v=v, step=k)


def _x_scale(view: StepView) -> Tensor:
    """``(√ι₂/ι₁) P⁻¹`` with ``P = diag(√V) + ε√ι₂``.  With the solver's look-ahead start
    (docs/theory.md §3) ``V`` is already advanced by this step, ``ι₂`` is taken at
    ``t + dt`` and ``ι₁`` at ``t + η``: discrete step k divides by ``1 − β^k`` and already
    holds gradient k."""
    hp = view.hp
    root_iota2 = iota(hp.rho2, view.time_ahead(view.dt)) ** 0.5
    iota1 = iota(hp.rho1, view.time_ahead(hp.lr))
    return root_iota2 / iota1 / (view.latest("v").sqrt() + hp.eps * root_iota2)


def _momentum_pull(view: StepView) -> Tensor:
    """``∇f − M``."""
    return view.at.grad - view.component("m")


PRECONDITIONED_MOMENTUM = Term(
    "preconditioned_momentum", "x", "drift", lambda view: -_x_scale(view) * view.component("m")
)
MOMENTUM_CORRECTION = Term(
    "momentum_correction",
    "x",
    "drift",
    lambda view: -_x_scale(view) * (view.hp.lr * view.hp.rho1) * _momentum_pull(view),
    frozenset({"grad"}),
)
"""The paper's ``ηρ₁(∇f − M)`` inside the X drift: ``M + ηρ₁(∇f − M) = β₁M + (1−β₁)∇f`` is the
conditional mean of the discrete ``m_{k+1}`` (absent in Malladi et al.)."""

MOMENTUM_NOISE_ON_X = Term(
    "momentum_noise_on_x",
    "x",
    "diffusion",
    lambda view: -_x_scale(view) * (view.hp.lr * view.hp.rho1) * math.sqrt(view.hp.lr) * view.sigma_dw,
    wiener="oracle",
)
"""Our refinement: the fresh noise ``(1−β₁)Z`` that the discrete ``m_{k+1}`` carries into the
step, as a diffusion on X driven by M's Wiener process (docs/theory.md §3)."""

MOMENTUM_RELAXATION = Term(
    "momentum_relaxation", "m", "drift", lambda view: view.hp.rho1 * _momentum_pull(view), frozenset({"grad"})
)
MOMENTUM_NOISE = Term(
    "momentum_noise",
    "m",
    "diffusion",
    lambda view: view.hp.rho1 * math.sqrt(view.hp.lr) * view.sigma_dw,
    wiener="oracle",
)

ADAM_PAPER_SDE = SDE(
    "sde-paper",
    order=("v", "x", "m"),
    terms=(
        second_moment_relaxation(with_gradient=True),
        PRECONDITIONED_MOMENTUM,
        MOMENTUM_CORRECTION,
        decoupled_decay(),
        MOMENTUM_RELAXATION,
        MOMENTUM_NOISE,
    ),
    description=(
        "dX = −(√ι₂/ι₁) P⁻¹ (M + ηρ₁(∇f − M)) dt − θX dt, dM = ρ₁(∇f − M) dt + √η ρ₁ Σ^{1/2} dW, "
        "dV = ρ₂((∇f)² + diag Σ − V) dt"
    ),
)

ADAM_SDES = {
    "paper": ADAM_PAPER_SDE,
    "malladi": ADAM_PAPER_SDE.without("v_relaxation", "momentum_correction", name="sde-malladi").with_terms(
        second_moment_relaxation(with_gradient=False), name="sde-malladi", description="Malladi et al. (2022)"
    ),
    "refined": ADAM_PAPER_SDE.with_terms(
        MOMENTUM_NOISE_ON_X, name="sde-refined", description="the paper's SDE plus the momentum's noise on X"
    ),
    "uncorrected": ADAM_PAPER_SDE.without(
        "momentum_correction",
        name="sde-uncorrected",
        description="the paper's SDE without its momentum-correction term (a diagnostic)",
    ),
}


def _linearised_second_moment(h: ArrayLike, s: ArrayLike, hp: Hyperparameters) -> np.ndarray:
    """``E x_i²`` of the discrete Adam(W) linearised at a minimum (docs/theory.md §5)."""
    # Imported on use: optsde.theory.adaptive imports this package's base module.
    from optsde.theory.adaptive import adamw_stationary_second_moment_discrete

    return adamw_stationary_second_moment_discrete(h, s, hp)


def _sde_linearised_second_moment(h: ArrayLike, s: ArrayLike, hp: Hyperparameters, model: str) -> np.ndarray:
    """``E X_i²`` of the Adam(W) SDE ``model`` linearised at a minimum (docs/theory.md §5)."""
    from optsde.theory.adaptive import adamw_stationary_second_moment_sde

    return adamw_stationary_second_moment_sde(h, s, hp, model)


ADAM_SPEC = OptimizerSpec(
    name="adam",
    discrete=AdamW(),
    sdes=ADAM_SDES,
    uses=("lr", "beta1", "beta2", "eps"),
    scaling_rules=ADAPTIVE_RULES,
    capabilities=Capabilities(
        theory="adamw",
        noise_exponent=1,
        mean_under_heavy_tails=True,
        style={"color": "tab:orange", "label": "Adam"},
        decay_variant="adamw",
        linearised_second_moment=_linearised_second_moment,
        sde_linearised_second_moment=_sde_linearised_second_moment,
        primary_sde="refined",
        second_moment="bias-corrected",
    ),
    description="Adam; SDEs of the paper, of Malladi et al., and our refined one",
    torch_defaults={"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
)

ADAMW_SPEC = OptimizerSpec(
    name="adamw",
    discrete=AdamW(),
    sdes=ADAM_SDES,
    uses=("lr", "beta1", "beta2", "eps", "weight_decay"),
    scaling_rules=ADAPTIVE_RULES,
    capabilities=Capabilities(
        theory="adamw",
        noise_exponent=1,
        mean_under_heavy_tails=True,
        style={"color": "tab:green", "label": "AdamW"},
        linearised_second_moment=_linearised_second_moment,
        sde_linearised_second_moment=_sde_linearised_second_moment,
        primary_sde="refined",
        second_moment="bias-corrected",
    ),
    decoupled_decay=True,
    description="AdamW (decoupled weight decay θ); SDEs of the paper, of Malladi et al., and our refined one",
    torch_defaults={"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
)
