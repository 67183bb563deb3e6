"""How an optimizer or an SDE model is advanced by one optimizer step (docs/theory.md §3).

STYLE §1 and §3: a runner is a pure function of ``(state, step, schedule factors, oracle,
hyperparameters, random source)``.  The discrete optimizer samples a stochastic gradient and
takes its step; an SDE model is advanced by Euler–Maruyama, ``substeps`` steps of
``dt = η/substeps`` per optimizer step, so that both runners go from step ``k − 1`` to
step ``k`` (SDE time ``t = kη``) and their recordings compare one-for-one.

Euler–Maruyama asks the oracle once per step for what the model's terms need, draws the
increments from the source it was handed, and advances the components in the model's
order.  With the look-ahead start (the default, docs/theory.md §3) a component advanced
earlier in the step is seen at its new value by the later ones: Adam(W)'s and RMSprop(W)'s
``P`` uses ``V + dt·dV``, as the discrete step updates ``v`` before ``x``; this is what lets
the adaptive SDEs start from ``V = 0``.  The schedule ``φ`` scales the increment of ``X``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from optsde.errors import OptsdeError
from optsde.optimizers.base import DiscreteOptimizer, Hyperparameters, State
from optsde.optimizers.terms import SDE, StepView
from optsde.problems.base import GradientOracle
from optsde.randomness import RandomSource


class SolverError(OptsdeError):
    """A solver setting is invalid; the message says how to fix it."""


Factors = Sequence[float] | Tensor
"""The schedule ``φ`` at each Euler–Maruyama sub-step of one optimizer step."""


@dataclass(frozen=True)
class StepInputs:
    """What one optimizer step reads besides the state: its number ``k`` (from step ``k − 1`` to
    ``k``; a 0-d tensor inside a compiled block), the schedule ``φ`` at each sub-step, the oracle,
    the hyperparameters and the random source."""

    k: int | Tensor
    factors: Factors
    oracle: GradientOracle
    hp: Hyperparameters
    random: RandomSource


class Runner(Protocol):
    """What :func:`~optsde.sde.simulate.simulate` advances, one optimizer step at a time."""

    name: str
    substeps: int
    compilable: bool

    def init_state(self, x0: Tensor) -> State: ...

    def advance(self, state: State, step: StepInputs) -> State: ...


@dataclass(frozen=True)
class DiscreteRunner:
    """The optimizer itself, with stochastic gradients from the oracle; method name ``optimizer``."""

    optimizer: DiscreteOptimizer
    name: str = "optimizer"
    substeps: int = 1
    compilable: bool = True

    def init_state(self, x0: Tensor) -> State:
        return self.optimizer.init_state(x0)

    def advance(self, state: State, step: StepInputs) -> State:
        gradient = step.oracle.sample_gradient(state.x, step.random)
        return self.optimizer.step(state, gradient, step.hp, step.hp.lr * step.factors[0])


@dataclass(frozen=True)
class EulerMaruyama:
    """One Euler–Maruyama step of a term model; ``lookahead`` switches the look-ahead start."""

    lookahead: bool = True

    def step(
        self,
        model: SDE,
        state: State,
        t: float | Tensor,
        dt: float,
        factor: float | Tensor,
        oracle: GradientOracle,
        hp: Hyperparameters,
        random: RandomSource,
    ) -> State:
        at = oracle.evaluate(state.x, model.needs, random)
        root_dt = math.sqrt(dt)
        sigma_dw = None if at.noise is None else root_dt * at.noise
        dw = (
            root_dt * random.normal(tuple(state.x.shape), state.x) if model.needs_standard_increment else None
        )
        view = StepView(t, dt, hp, state, at, sigma_dw, dw, self.lookahead)
        advanced: dict[str, Tensor] = {}
        for component in model.order:
            increment: Tensor | None = None
            for term in model.terms:
                if term.component != component:
                    continue
                piece = term.value(view) * dt if term.kind == "drift" else term.value(view)
                increment = piece if increment is None else increment + piece
            current = view.component(component)
            if increment is None:
                advanced[component] = current
                continue
            if component == "x":
                increment = factor * increment
            advanced[component] = current + increment
            if self.lookahead:
                view.ahead[component] = advanced[component]
        return state._replace(**advanced)


@dataclass(frozen=True)
class SDERunner:
    """An SDE model advanced by ``substeps`` Euler–Maruyama steps of ``dt = η/substeps`` per
    optimizer step; method name ``model.name``."""

    model: SDE
    substeps: int = 1
    solver: EulerMaruyama = EulerMaruyama()

    def __post_init__(self) -> None:
        if self.substeps < 1:
            raise SolverError(f"substeps must be a positive integer, got {self.substeps}")

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def compilable(self) -> bool:
        return self.model.compilable

    def init_state(self, x0: Tensor) -> State:
        return self.model.init_state(x0)

    def advance(self, state: State, step: StepInputs) -> State:
        hp = step.hp
        dt = hp.lr / self.substeps
        for j in range(self.substeps):
            t = ((step.k - 1) + j / self.substeps) * hp.lr
            state = self.solver.step(self.model, state, t, dt, step.factors[j], step.oracle, hp, step.random)
        return state
