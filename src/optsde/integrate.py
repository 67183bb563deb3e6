"""Simulation over paths: discrete optimizers and Euler–Maruyama for their SDEs, one interface.

STYLE §3: what is solved (an optimizer or an SDE model), how (the runner; EM with
``dt = η/m``) and what is kept (observables at chosen steps) are separate.  Both
runners advance from step ``k−1`` to step ``k`` (SDE time ``t = kη``), so their
recordings compare one-for-one.  Nothing but the observables is stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from optsde.optimizers.base import (
    DiscreteOptimizer,
    Hyperparameters,
    Schedule,
    SDEModel,
    State,
    constant_schedule,
)
from optsde.problems.base import GradientOracle

DIVERGENCE_THRESHOLD = 1e30
"""A coordinate beyond this magnitude counts as diverged (overflow is on its way)."""


class Runner(Protocol):
    name: str

    def init_state(self, x0: Tensor) -> State: ...

    def advance(
        self,
        state: State,
        k: int,
        oracle: GradientOracle,
        hp: Hyperparameters,
        schedule: Schedule,
        generator: torch.Generator | None,
    ) -> State:
        """From step ``k − 1`` to step ``k``."""
        ...


@dataclass(frozen=True)
class DiscreteRunner:
    """The optimizer itself, with stochastic gradients from the oracle; method name ``optimizer``."""

    optimizer: DiscreteOptimizer
    name: str = "optimizer"

    def init_state(self, x0: Tensor) -> State:
        return self.optimizer.init_state(x0)

    def advance(
        self,
        state: State,
        k: int,
        oracle: GradientOracle,
        hp: Hyperparameters,
        schedule: Schedule,
        generator: torch.Generator | None,
    ) -> State:
        gradient = oracle.sample_gradient(state.x, generator)
        return self.optimizer.step(state, gradient, hp, hp.lr * schedule(k - 1))


@dataclass(frozen=True)
class SDERunner:
    """Euler–Maruyama for an SDE model, ``substeps`` steps of ``dt = η/substeps`` per optimizer step."""

    model: SDEModel
    substeps: int = 1

    def __post_init__(self) -> None:
        if self.substeps < 1:
            raise ValueError(f"substeps must be a positive integer, got {self.substeps}")

    @property
    def name(self) -> str:
        return self.model.name

    def init_state(self, x0: Tensor) -> State:
        return self.model.init_state(x0)

    def advance(
        self,
        state: State,
        k: int,
        oracle: GradientOracle,
        hp: Hyperparameters,
        schedule: Schedule,
        generator: torch.Generator | None,
    ) -> State:
        dt = hp.lr / self.substeps
        for j in range(self.substeps):
            step_time = (k - 1) + j / self.substeps  # in units of η
            state = self.model.em_step(
                state, step_time * hp.lr, dt, oracle, hp, schedule(step_time), generator
            )
        return state


Observable = Callable[[State, GradientOracle], Tensor]
"""``(state, oracle)`` ↦ per-path values, ``(P,)`` or ``(P, d)``."""


def loss_observable(state: State, oracle: GradientOracle) -> Tensor:
    return oracle.loss(state.x)


def x_observable(state: State, oracle: GradientOracle) -> Tensor:
    return state.x


def x_squared_observable(state: State, oracle: GradientOracle) -> Tensor:
    return state.x**2


DEFAULT_OBSERVABLES: dict[str, Observable] = {
    "loss": loss_observable,
    "x": x_observable,
    "x2": x_squared_observable,
}


@dataclass
class Divergence:
    """Paths that left the finite range: first seen at ``step`` (checked every few steps)."""

    step: int
    paths: int

    def describe(self, method: str) -> str:
        return f"{method} diverged at step {self.step}: {self.paths} path(s) became NaN or overflowed"


@dataclass
class Recording:
    """Observables of one method at the recorded steps.

    ``values[name]`` holds every path's value, shape ``(T, P)`` or ``(T, P, d)``;
    means and standard errors are over paths.  ``snapshots`` are the first few
    paths' states ``(T, n, d)``.  A diverged run is cut at its last finite record.
    """

    method: str
    lr: float
    steps: np.ndarray
    values: dict[str, np.ndarray]
    snapshots: np.ndarray
    divergence: Divergence | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def times(self) -> np.ndarray:
        return self.steps * self.lr

    @property
    def paths(self) -> int:
        return next(iter(self.values.values())).shape[1]

    def mean(self, name: str) -> np.ndarray:
        return self.values[name].mean(axis=1)

    def stderr(self, name: str) -> np.ndarray:
        values = self.values[name]
        if values.shape[1] < 2:
            return np.zeros_like(values[:, 0])
        return values.std(axis=1, ddof=1) / np.sqrt(values.shape[1])


def record_steps(steps: int, points: int = 100, spacing: str = "linear") -> list[int]:
    """Sorted distinct steps in ``[0, steps]`` to record at, including both ends."""
    if spacing == "log":
        grid = np.unique(np.round(np.geomspace(1, max(steps, 1), points)).astype(int))
        return sorted({0, *grid.tolist(), steps})
    return sorted({int(round(v)) for v in np.linspace(0, steps, points)} | {steps})


def _broadcast_start(x0: Tensor, paths: int) -> Tensor:
    if x0.ndim == 1:
        return x0.unsqueeze(0).expand(paths, -1).clone()
    if x0.shape[0] != paths:
        raise ValueError(f"x0 has {x0.shape[0]} rows for {paths} paths")
    return x0.clone()


def _diverged(x: Tensor) -> Tensor:
    return ~(torch.isfinite(x) & (x.abs() < DIVERGENCE_THRESHOLD)).all(dim=-1)


class Checkpoint(Protocol):
    """Where a long simulation keeps its progress, so that a resumed run gives the same numbers."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, payload: dict[str, Any]) -> None: ...


@dataclass
class FileCheckpoint:
    """A checkpoint file, rewritten atomically at most every ``every_s`` seconds of wall time.

    What is saved is the state at a record point with the random generator's
    state, so the continuation draws exactly the numbers an uninterrupted run would.
    """

    path: Path
    every_s: float = 30.0
    _last_save: float = field(default=0.0, init=False)

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, weights_only=False)

    def save(self, payload: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_suffix(".tmp")
        torch.save(payload, staging)
        os.replace(staging, self.path)
        self._last_save = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.every_s


def simulate(
    runner: Runner,
    oracle: GradientOracle,
    hp: Hyperparameters,
    x0: Tensor,
    *,
    paths: int,
    steps: int,
    record_at: Sequence[int] | None = None,
    observables: dict[str, Observable] | None = None,
    schedule: Schedule = constant_schedule,
    generator: torch.Generator | None = None,
    snapshot_paths: int = 4,
    check_every: int = 10,
    progress: bool = False,
    checkpoint: FileCheckpoint | None = None,
) -> Recording:
    """Run ``runner`` for ``steps`` optimizer steps over ``paths`` paths from ``x0``.

    ``x0`` is one start ``(d,)`` shared by all paths or one per path ``(P, d)``; its
    dtype and device decide the run's.  Divergence is checked at every record and
    every ``check_every`` steps; on divergence the run stops and the recording
    holds what was recorded before, with :attr:`Recording.divergence` set.
    With a ``checkpoint``, progress is saved at record points (and on Ctrl-C) and
    a saved run continues from where it stopped.
    """
    observables = DEFAULT_OBSERVABLES if observables is None else observables
    record_set = set(record_steps(steps) if record_at is None else record_at)
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None and "recording" in saved:
        return saved["recording"]
    state = runner.init_state(_broadcast_start(x0, paths))
    recorded_steps: list[int] = []
    collected: dict[str, list[np.ndarray]] = {name: [] for name in observables}
    snapshots: list[np.ndarray] = []
    divergence: Divergence | None = None
    first_step = 1
    if saved is not None:
        state, recorded_steps, collected, snapshots = (
            saved["state"],
            saved["recorded_steps"],
            saved["collected"],
            saved["snapshots"],
        )
        first_step = saved["step"] + 1
        if generator is not None:
            generator.set_state(saved["generator"])
    resume_point: dict[str, Any] | None = None

    def record(k: int) -> None:
        nonlocal resume_point
        recorded_steps.append(k)
        for name, fn in observables.items():
            collected[name].append(fn(state, oracle).detach().cpu().double().numpy())
        snapshots.append(state.x[:snapshot_paths].detach().cpu().double().numpy())
        if checkpoint is not None:
            resume_point = {
                "step": k,
                "state": state,
                "generator": generator.get_state() if generator is not None else None,
                "recorded_steps": list(recorded_steps),
                "collected": {name: list(vals) for name, vals in collected.items()},
                "snapshots": list(snapshots),
            }
            if checkpoint.due():
                checkpoint.save(resume_point)

    if 0 in record_set and first_step == 1:
        record(0)
    bar = tqdm(total=steps, initial=first_step - 1, desc=runner.name, disable=not progress, leave=False)
    try:
        with torch.no_grad():
            for k in range(first_step, steps + 1):
                state = runner.advance(state, k, oracle, hp, schedule, generator)
                if k in record_set or k % check_every == 0:
                    bad = _diverged(state.x)
                    if bool(bad.any()):
                        divergence = Divergence(step=k, paths=int(bad.sum()))
                        break
                    if k in record_set:
                        record(k)
                bar.update(1)
    except KeyboardInterrupt:
        if checkpoint is not None and resume_point is not None:
            checkpoint.save(resume_point)
        raise
    finally:
        bar.close()
    dim = state.x.shape[-1]
    recording = Recording(
        method=runner.name,
        lr=hp.lr,
        steps=np.asarray(recorded_steps, dtype=np.int64),
        values={name: np.stack(vals) if vals else np.zeros((0, paths)) for name, vals in collected.items()},
        snapshots=np.stack(snapshots) if snapshots else np.zeros((0, 0, dim)),
        divergence=divergence,
    )
    if checkpoint is not None:
        checkpoint.save({"recording": recording})
    return recording
