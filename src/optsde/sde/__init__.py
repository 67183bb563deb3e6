"""Solvers and ``simulate``: how optimizers and SDE models are advanced and recorded."""

from optsde.sde.compiled import DIVERGENCE_THRESHOLD, Engine, EngineReport, diverged
from optsde.sde.simulate import (
    DEFAULT_OBSERVABLES,
    Checkpoint,
    Divergence,
    FileCheckpoint,
    Observable,
    Recording,
    loss_observable,
    record_steps,
    simulate,
    x_observable,
    x_squared_observable,
)
from optsde.sde.solver import DiscreteRunner, EulerMaruyama, Runner, SDERunner, SolverError, StepInputs

__all__ = [
    "DEFAULT_OBSERVABLES",
    "DIVERGENCE_THRESHOLD",
    "Checkpoint",
    "DiscreteRunner",
    "Divergence",
    "Engine",
    "EngineReport",
    "EulerMaruyama",
    "FileCheckpoint",
    "Observable",
    "Recording",
    "Runner",
    "SDERunner",
    "SolverError",
    "StepInputs",
    "diverged",
    "loss_observable",
    "record_steps",
    "simulate",
    "x_observable",
    "x_squared_observable",
]
