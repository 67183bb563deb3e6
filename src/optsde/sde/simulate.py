"""One ``simulate`` for every optimizer and SDE model (STYLE §3; docs/simulate.md).

What is solved (a runner: the optimizer, or an SDE model with its solver), how (segments
between record points, each run as compiled blocks or eagerly by
:class:`~optsde.sde.compiled.Engine`) and what is kept (observables at chosen steps) are
separate.  Nothing but the observables is stored.

Record steps are stratified by default: a pair of consecutive steps at a random step in each of
``points // 2`` equal strata of the run.  A recorder on a regular grid can alias a periodic orbit
of the optimizer (SignSGD at κ ≳ 2 settles into period-2 orbits, docs/theory.md §8) and see one
phase of it only; pairs at random steps weigh every phase of a period-2 orbit equally.
"""

from __future__ import annotations

import itertools
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from optsde.optimizers.base import Hyperparameters, Schedule, State, constant_schedule
from optsde.problems.base import GradientOracle
from optsde.progress import progress as progress_bar
from optsde.sde.compiled import Engine, EngineReport
from optsde.sde.solver import Runner, SolverError

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

SPACINGS = ("stratified", "linear", "log")


def record_steps(steps: int, points: int = 100, spacing: str = "stratified") -> list[int]:
    """Sorted distinct steps in ``[0, steps]`` to record at, both ends included.

    ``stratified`` (the default): ``points // 2`` equal strata of ``[1, steps]``, and in each a
    pair of consecutive steps ``k, k + 1`` at a random ``k``, from a stream fixed by
    ``(steps, points)`` so that a run is reproducible.  No period, so no aliasing; and each pair
    weighs both parities of the step equally, which SignSGD on its lattice needs (each step moves
    every coordinate by one site, so a period-2 orbit's phase is the step's parity on every path,
    docs/theory.md §8).  ``linear``: a regular grid.  ``log``: a geometric grid, dense early, for
    transients.
    """
    if spacing not in SPACINGS:
        raise SolverError(f"record spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    if points >= steps:
        return list(range(steps + 1))
    if spacing == "log":
        grid = np.unique(np.round(np.geomspace(1, max(steps, 1), points)).astype(int))
        return sorted({0, *grid.tolist(), steps})
    if spacing == "linear":
        return sorted({int(round(v)) for v in np.linspace(0, steps, points)} | {steps})
    strata = max(1, min(points // 2, steps // 2))
    edges = np.linspace(0, steps, strata + 1).round().astype(int)
    rng = np.random.default_rng(zlib.crc32(f"{steps}/{points}".encode()))
    picks = set()
    for lo, hi in itertools.pairwise(edges):
        k = int(rng.integers(lo + 1, hi)) if hi - lo >= 2 else lo + 1
        picks |= {k, min(k + 1, steps)}
    return sorted({0, steps} | picks)


@dataclass
class Divergence:
    """Paths that left the finite range, first seen at ``step`` (looked for at every record point
    and at the end of the run)."""

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
    ``engine`` says which code ran it and what compiling cost.
    """

    method: str
    lr: float
    steps: np.ndarray
    values: dict[str, np.ndarray]
    snapshots: np.ndarray
    divergence: Divergence | None = None
    extra: dict[str, float] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)

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


def _broadcast_start(x0: Tensor, paths: int) -> Tensor:
    if x0.ndim == 1:
        return x0.unsqueeze(0).expand(paths, -1).clone()
    if x0.shape[0] != paths:
        raise SolverError(f"x0 has {x0.shape[0]} rows for {paths} paths")
    return x0.clone()


class Checkpoint(Protocol):
    """Where a long simulation keeps its progress, so that a resumed run gives the same numbers."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, payload: dict[str, Any]) -> None: ...

    def due(self) -> bool: ...


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
    progress: bool = False,
    checkpoint: Checkpoint | None = None,
    compile: str = "auto",
    block: int = 16,
    noise: str = "auto",
) -> Recording:
    """Run ``runner`` for ``steps`` optimizer steps over ``paths`` paths from ``x0``.

    ``x0`` is one start ``(d,)`` shared by all paths or one per path ``(P, d)``; its dtype
    and device decide the run's.  The run advances segment by segment between record
    points (default: :func:`record_steps`, stratified), each segment as compiled blocks of
    ``block`` steps or eagerly (``compile``: ``auto``, ``on``, ``off``; see
    :mod:`optsde.sde.compiled`).  Divergence is looked for after every block; on divergence
    the run stops and the recording holds what was recorded before, with
    :attr:`Recording.divergence` set.  With a ``checkpoint``, progress is saved at record
    points (and on Ctrl-C) and a saved run continues from where it stopped with the numbers
    of an uninterrupted run.
    """
    if paths < 1 or steps < 1:
        raise SolverError(f"paths and steps must be positive integers, got paths={paths}, steps={steps}")
    observables = DEFAULT_OBSERVABLES if observables is None else observables
    record_set = set(record_steps(steps) if record_at is None else record_at)
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None and "recording" in saved:
        return saved["recording"]
    state = runner.init_state(_broadcast_start(x0, paths))
    engine = Engine(runner, oracle, hp, schedule, generator, compile=compile, block=block, noise=noise)
    engine.prepare(state, steps)
    recorded_steps: list[int] = []
    collected: dict[str, list[np.ndarray]] = {name: [] for name in observables}
    snapshots: list[np.ndarray] = []
    divergence: Divergence | None = None
    done = 0
    if saved is not None:
        state, recorded_steps, collected, snapshots = (
            saved["state"],
            saved["recorded_steps"],
            saved["collected"],
            saved["snapshots"],
        )
        done = saved["step"]
        if generator is not None:
            generator.set_state(saved["generator"])
    resume_point: dict[str, Any] | None = None

    def record(k: int, state: State) -> None:
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

    if 0 in record_set and done == 0:
        record(0, state)
    ends = sorted({k for k in record_set if done < k <= steps} | {steps})
    bar = progress_bar(steps, runner.name, enabled=progress, initial=done)
    try:
        with torch.no_grad():
            i = 0
            while i < len(ends) and divergence is None:
                # The second of a record pair is one step after the first: with noise that is a
                # function of the step (counter noise), it comes from the next segment's first
                # step, one compiled call instead of two; resuming from it draws the same numbers.
                pair = ends[i] - done == 1 and ends[i] in record_set and i + 1 < len(ends)
                if pair and engine.report.noise == "counter":
                    later, bad_later, first, bad = engine.advance_keeping_first(
                        state, done + 1, ends[i + 1] - done
                    )
                    arrivals = [(ends[i], first, bad), (ends[i + 1], later, bad_later)]
                else:
                    arrivals = [(ends[i], *engine.advance(state, done + 1, ends[i] - done))]
                for end, state, bad in arrivals:
                    bar.update(end - done)
                    done = end
                    if bad:
                        divergence = Divergence(step=end, paths=bad)
                        break
                    if end in record_set:
                        record(end, state)
                    i += 1
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
        engine=engine.report.to_dict(),
    )
    if checkpoint is not None:
        checkpoint.save({"recording": recording})
    return recording


__all__ = [
    "DEFAULT_OBSERVABLES",
    "Checkpoint",
    "Divergence",
    "EngineReport",
    "FileCheckpoint",
    "Observable",
    "Recording",
    "record_steps",
    "simulate",
]
