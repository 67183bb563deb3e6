"""SDE models as sums of named terms (STYLE §2; docs/theory.md §3).

An SDE model is a list of :class:`Term` objects, each moving one state component
(``x``, ``m`` or ``v``) by a drift rate or a diffusion increment.  The paper's, the prior
and the refined AdamW SDE are the same list with a term removed, replaced or added
(:meth:`SDE.without`, :meth:`SDE.with_terms`), so the difference between two models is a
term you can name.  A model says nothing about how it is integrated: the solver
(:mod:`optsde.sde.solver`) evaluates the oracle once per step for the union of the terms'
needs, draws the Brownian increments, and advances the components in the model's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from optsde.optimizers.base import Hyperparameters, State
from optsde.problems.base import NEEDS, Evaluation

COMPONENTS = ("x", "m", "v")


@dataclass(frozen=True)
class StepView:
    """What a term may read in one Euler–Maruyama step from ``t`` to ``t + dt``.

    ``state`` is the state at ``t`` and ``at`` the oracle's answers there.  ``ahead``
    holds the components the solver has already advanced in this step (empty unless the
    solver runs with the look-ahead start, docs/theory.md §3).  ``sigma_dw`` is
    ``Σ(x)^{1/2} dW`` (the oracle's noise on the increment) and ``dw`` a standard
    ``d``-dimensional increment, for diffusions not driven by the gradient noise.
    """

    t: float | Tensor
    dt: float
    hp: Hyperparameters
    state: State
    at: Evaluation
    sigma_dw: Tensor | None
    dw: Tensor | None
    lookahead: bool
    ahead: dict[str, Tensor] = field(default_factory=dict)

    def component(self, name: str) -> Tensor:
        value = getattr(self.state, name)
        assert value is not None, f"the state has no {name}"
        return value

    def latest(self, name: str) -> Tensor:
        """Component ``name`` as advanced this step if the look-ahead start is on, else at ``t``."""
        return self.ahead.get(name, self.component(name))

    def time_ahead(self, horizon: float) -> float | Tensor:
        """``t + horizon`` with the look-ahead start, ``t`` without it."""
        return self.t + horizon if self.lookahead else self.t


TermFn = Callable[[StepView], Tensor]


@dataclass(frozen=True)
class Term:
    """One named piece of an SDE: ``kind="drift"`` gives a rate (the solver multiplies by
    ``dt``), ``kind="diffusion"`` gives the increment itself from ``view.sigma_dw`` or
    ``view.dw``."""

    name: str
    component: Literal["x", "m", "v"]
    kind: Literal["drift", "diffusion"]
    value: TermFn
    needs: frozenset[str] = frozenset()
    wiener: Literal["oracle", "standard"] | None = None
    """Which increment a diffusion is driven by: the oracle's noise, or a standard one."""

    def __post_init__(self) -> None:
        unknown = self.needs - NEEDS
        assert not unknown, f"term {self.name} needs unknown quantities {unknown}"
        assert (self.kind == "diffusion") == (self.wiener is not None), self.name


@dataclass(frozen=True)
class SDE:
    """An SDE model: named terms over the state components, advanced in ``order``.

    ``name`` is the method name in results (``sde-paper``, …).  ``requires_noise``: the
    model is undefined without gradient noise (it divides by the noise scale); every other
    model runs as its ODE when the noise vanishes (docs/theory.md §3).  ``compilable``:
    its terms are pure torch, so a block of steps may be compiled.
    """

    name: str
    order: tuple[str, ...]
    terms: tuple[Term, ...]
    description: str = ""
    requires_noise: bool = False
    compilable: bool = True

    def __post_init__(self) -> None:
        for term in self.terms:
            assert term.component in self.order, f"{self.name}: {term.name} moves {term.component}"

    @property
    def needs(self) -> frozenset[str]:
        """Everything the terms ask of the oracle: asked once per step."""
        needs = frozenset().union(*(term.needs for term in self.terms))
        if any(term.wiener == "oracle" for term in self.terms):
            needs |= {"noise"}
        return needs

    @property
    def needs_standard_increment(self) -> bool:
        return any(term.wiener == "standard" for term in self.terms)

    def term_names(self) -> tuple[str, ...]:
        return tuple(term.name for term in self.terms)

    def without(self, *names: str, name: str, description: str = "") -> SDE:
        """This model with the terms ``names`` removed (each must exist)."""
        missing = set(names) - set(self.term_names())
        assert not missing, f"{self.name} has no terms {missing}"
        kept = tuple(term for term in self.terms if term.name not in names)
        return replace(self, name=name, terms=kept, description=description)

    def with_terms(self, *terms: Term, name: str, description: str = "") -> SDE:
        """This model with ``terms`` added, replacing any of the same name."""
        names = {term.name for term in terms}
        kept = tuple(term for term in self.terms if term.name not in names)
        return replace(self, name=name, terms=kept + terms, description=description)

    def init_state(self, x0: Tensor) -> State:
        """``(x₀, 0, 0)`` for the components the model has (docs/theory.md §3)."""
        zeros = {name: torch.zeros_like(x0) for name in self.order if name != "x"}
        return State(x=x0.clone(), m=zeros.get("m"), v=zeros.get("v"))


# ---------------------------------------------------------------- terms shared by families


def decoupled_decay() -> Term:
    """``−θX dt``: AdamW's and RMSpropW's decoupled weight decay."""
    return Term("decoupled_decay", "x", "drift", lambda view: -view.hp.weight_decay * view.state.x)


def second_moment_relaxation(with_gradient: bool) -> Term:
    """``dV = ρ₂((∇f)² + diag Σ − V) dt`` (paper), or ``ρ₂(diag Σ − V) dt`` (Malladi et al.)."""

    def value(view: StepView) -> Tensor:
        target = view.at.variance + view.at.grad**2 if with_gradient else view.at.variance
        return view.hp.rho2 * (target - view.component("v"))

    name = "v_relaxation" if with_gradient else "v_relaxation_noise_only"
    return Term(name, "v", "drift", value, frozenset({"grad", "variance"}))


def iota(rate: float, t: float | Tensor) -> float | Tensor:
    """``ι(t) = 1 − e^{−ρt}``; ``t`` may be a 0-d tensor inside a compiled block."""
    return -torch.expm1(-rate * t) if isinstance(t, Tensor) else -math.expm1(-rate * t)
