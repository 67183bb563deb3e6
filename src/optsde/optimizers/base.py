"""What every optimizer family shares: its hyperparameters, its state, its step contracts.

STYLE §1: a discrete update and an SDE model are pure functions of
``(state, inputs)`` over one state type, batched over paths on the leading
dimension.  Hyperparameters use torch.optim's names (``lr``, ``betas``, ``eps``,
``weight_decay``) so a user's config carries over (docs/theory.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import numpy as np
from numpy.typing import ArrayLike
from torch import Tensor

from optsde.errors import OptsdeError

if TYPE_CHECKING:
    from optsde.optimizers.terms import SDE

Schedule = Callable[[float], float]
"""A learning-rate schedule ``φ``: the step ``k`` (a float, ``t/η`` in an SDE) ↦ multiplier."""


def constant_schedule(_: float) -> float:
    return 1.0


class HyperparameterError(OptsdeError):
    """A hyperparameter is outside its valid range; the message says how to fix it."""


@dataclass(frozen=True)
class Hyperparameters:
    """One record for every family; each family reads the fields it uses.

    ``beta1`` is Adam's momentum rate, ``beta2`` the second-moment rate of Adam
    and RMSprop (torch's ``alpha`` for RMSprop).  ``weight_decay`` is the
    decoupled decay ``θ`` of AdamW / RMSpropW.
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise HyperparameterError(f"learning rate must be a positive number, got lr={self.lr}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (0.0 <= value < 1.0):
                raise HyperparameterError(f"{name} must lie in [0, 1), got {name}={value}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise HyperparameterError(f"eps must be a non-negative number, got eps={self.eps}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise HyperparameterError(
                f"weight_decay must be a non-negative number, got weight_decay={self.weight_decay}"
            )

    @property
    def rho1(self) -> float:
        """docs/theory.md §1: ``β₁ = 1 − η ρ₁``."""
        return (1.0 - self.beta1) / self.lr

    @property
    def rho2(self) -> float:
        """docs/theory.md §1: ``β₂ = 1 − η ρ₂``."""
        return (1.0 - self.beta2) / self.lr

    @classmethod
    def from_rates(cls, lr: float, rho1: float, rho2: float, **kw: float) -> Hyperparameters:
        """Inverse of :attr:`rho1` / :attr:`rho2`: ``β_i = 1 − η ρ_i``."""
        return cls(lr=lr, beta1=1.0 - lr * rho1, beta2=1.0 - lr * rho2, **kw)

    def with_(self, **changes: float) -> Hyperparameters:
        return replace(self, **changes)


@dataclass(frozen=True)
class _Unchecked:
    """Hyperparameters as plain numbers, for a scaling rule's arithmetic before validation."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float

    def with_(self, **changes: float) -> _Unchecked:
        return replace(self, **changes)


class State(NamedTuple):
    """Batched optimizer / SDE state. ``x``: ``(P, d)``; ``m``, ``v`` where the family has them.

    ``step`` counts discrete steps taken (torch.optim's ``step``), used by Adam's
    bias correction; an SDE state leaves it at 0 and works with time instead.
    """

    x: Tensor
    m: Tensor | None = None
    v: Tensor | None = None
    step: int | Tensor = 0


SecondMoment = Callable[[ArrayLike, ArrayLike, "Hyperparameters"], np.ndarray]
"""``(h, s, hp) ↦ E x_i²`` per coordinate near a minimum (docs/theory.md §5)."""

SDESecondMoment = Callable[[ArrayLike, ArrayLike, "Hyperparameters", str], np.ndarray]
"""``(h, s, hp, model key) ↦ E X_i²`` of one SDE model near a minimum (docs/theory.md §5)."""


@dataclass(frozen=True)
class Capabilities:
    """What a family declares about itself beside its equations (docs/theory.md §5, §8).

    ``noise_exponent``: the asymptotic loss grows like σ^exponent (without decoupled decay).
    ``mean_under_heavy_tails``: whether its stationary loss has a finite mean under
    Student-t noise with ν ≤ 2 (SGD's does not: it inherits the noise's infinite variance).
    ``style``: how figures draw the optimizer (matplotlib keywords, ``label`` included).
    ``decay_variant``: the family's name with decoupled decay, if this one has none.
    ``theory``: the key of its closed forms and regime wording in :mod:`optsde.theory.predictions`
    (Adam's are AdamW's at θ = 0, RMSprop's RMSpropW's).
    ``linearised_second_moment``: ``(h, s, hp) ↦ E x_i²`` of the discrete optimizer linearised at
    the minimum of ``½ Σ h_i x_i²`` with noise scale ``s`` (docs/theory.md §5); None if unknown.
    ``sde_linearised_second_moment``: ``(h, s, hp, model key) ↦ E X_i²`` of its SDE model, the
    same linearisation in continuous time; None if unknown.
    ``primary_sde``: the key of ``sdes`` an experiment compares the optimizer with by default
    (the family's most faithful model).
    ``second_moment``: ``"none"``, ``"bias-corrected"`` (Adam divides ``v`` by ``1 − β₂^k``) or
    ``"uncorrected"`` (RMSprop's ``v`` starts at 0 and must first grow), docs/theory.md §2.
    """

    noise_exponent: int
    mean_under_heavy_tails: bool
    style: Mapping[str, str]
    decay_variant: str | None = None
    theory: str = ""
    linearised_second_moment: SecondMoment | None = None
    sde_linearised_second_moment: SDESecondMoment | None = None
    primary_sde: str = "paper"
    second_moment: Literal["none", "bias-corrected", "uncorrected"] = "none"


ScalingRule = Callable[["Hyperparameters", float], "Hyperparameters"]
"""Batch size ``B → δB``: the hyperparameters ↦ rescaled hyperparameters (docs/theory.md §6)."""


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer as a whole: discrete update, SDE models, used fields, scaling rules and
    declared capabilities.  Code outside the family's module asks these, never the name.

    ``sdes`` maps a model key (``paper``, ``malladi``, ``refined``, or a named
    approximation) to the model; its method name in results is ``model.name``.
    """

    name: str
    discrete: DiscreteOptimizer
    sdes: Mapping[str, SDE]
    uses: tuple[str, ...]
    scaling_rules: Mapping[str, ScalingRule]
    capabilities: Capabilities
    decoupled_decay: bool = False
    description: str = ""
    torch_defaults: Mapping[str, float] = field(default_factory=dict)
    """torch.optim's defaults for the fields a user may leave out (``scale`` fills them in)."""

    def rescale(self, hp: Hyperparameters, delta: float, rule: str) -> Hyperparameters:
        """Hyperparameters for batch size ``δB`` under ``rule``; fields this optimizer does
        not use are left as they were.  Raises :class:`HyperparameterError` with a fix."""
        if not (math.isfinite(delta) and delta > 0):
            raise HyperparameterError(f"the batch-size ratio δ must be positive, got {delta}")
        if rule not in self.scaling_rules:
            known = ", ".join(self.scaling_rules)
            raise HyperparameterError(f"{self.name} has no scaling rule {rule!r}; choose one of: {known}")
        # Apply the rule field by field so an unused β cannot make the result invalid.
        base = {name: getattr(hp, name) for name in ("lr", "beta1", "beta2", "eps", "weight_decay")}
        scaled = self.scaling_rules[rule](_Unchecked(**base), delta)  # type: ignore[arg-type]
        changes = {name: getattr(scaled, name) for name in self.uses}
        for name in ("beta1", "beta2"):
            if name in self.uses and not 0.0 <= changes[name] < 1.0:
                raise HyperparameterError(
                    f"rescaling {name}={getattr(hp, name)} by δ={delta:g} under the {rule} rule gives "
                    f"{changes[name]:.6g}, outside [0, 1); use a smaller δ or a larger {name}"
                )
        return hp.with_(**changes)

    def check(self, hp: Hyperparameters) -> None:
        """Refuse hyperparameters this optimizer does not have (e.g. Adam with decay)."""
        if hp.weight_decay and "weight_decay" not in self.uses:
            twin = self.capabilities.decay_variant
            alternative = f"use {twin}, or " if twin else ""
            raise HyperparameterError(
                f"{self.name} has no decoupled weight decay; {alternative}set weight_decay=0"
            )

    def sde(self, key: str) -> SDE:
        """The SDE model ``key``, or a one-line error listing this optimizer's models."""
        if key not in self.sdes:
            known = ", ".join(self.sdes)
            raise HyperparameterError(f"{self.name} has no SDE model {key!r}; choose from: {known}")
        return self.sdes[key]

    def noise_exponent(self, hp: Hyperparameters) -> int:
        """How the asymptotic loss grows with the noise level σ at fixed η: ``σ^exponent``
        (docs/theory.md §5); 0 means bounded."""
        bounded = self.decoupled_decay and hp.weight_decay > 0
        return 0 if bounded else self.capabilities.noise_exponent


class DiscreteOptimizer(Protocol):
    """A discrete update, docs/theory.md §2."""

    name: str

    def init_state(self, x0: Tensor) -> State: ...

    def step(self, state: State, gradient: Tensor, hp: Hyperparameters, lr: float | Tensor) -> State:
        """One update with stochastic gradient ``gradient`` and effective rate ``lr = η φ(k)``.
        ``state.step`` and ``lr`` may be 0-d tensors inside a compiled block."""
        ...
