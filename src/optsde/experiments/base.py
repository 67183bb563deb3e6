"""The experiment registry, the run context, and the comparison every experiment builds on.

An experiment is a function of a :class:`Context` that fills ``ctx.result``.  Its
parameters and their defaults are declared once (``defaults``, and ``quick``
overrides for ``--quick``); ``--set key=value`` may change only declared keys,
and values are parsed to the default's type before anything runs.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from optsde.analysis import fidelity_summary
from optsde.errors import OptsdeError
from optsde.optimizers import Hyperparameters, OptimizerSpec, Schedule, constant_schedule
from optsde.problems.base import GradientOracle
from optsde.report import Result
from optsde.sde import (
    DiscreteRunner,
    FileCheckpoint,
    Observable,
    Recording,
    Runner,
    SDERunner,
    simulate,
)

MAX_COUNT = 2**31 - 1
"""The largest count a flag or setting accepts (steps, paths, dimensions, …): torch sizes and the
engine's step counters are machine integers, and no run on one machine comes near it."""


class ExperimentError(OptsdeError):
    """Bad experiment name or setting; the message says how to fix it."""


def parse_value(text: str, default: Any, key: str) -> Any:
    """``text`` parsed to the type of ``default`` (lists are comma-separated) and checked.

    Numbers must be finite; a whole number keeps the sign class of its default (a positive
    default is a count and stays ≥ 1, a non-negative one stays ≥ 0); lists are non-empty.
    """
    if isinstance(default, (list, tuple)):
        element = default[0] if default else 0.0
        parts = [part for part in text.split(",") if part.strip()]
        if not parts:
            example = ",".join(str(v) for v in default) or "1,2"
            raise ExperimentError(f"--set {key}={text!r}: give at least one value, e.g. {key}={example}")
        return [parse_value(part, element, key) for part in parts]
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered not in {"true", "false", "1", "0", "yes", "no"}:
            raise ExperimentError(f"--set {key}={text!r}: expected true or false")
        return lowered in {"true", "1", "yes"}
    if not isinstance(default, (int, float)):
        return text
    count = isinstance(default, int)
    try:
        value: float = int(text) if count else float(text)
    except ValueError:
        kind = "a whole number" if count else "a number"
        raise ExperimentError(f"--set {key}={text!r}: expected {kind} like {default}") from None
    if not math.isfinite(value):
        raise ExperimentError(f"--set {key}={text!r}: expected a finite number")
    if count and default > 0 and value < 1:
        raise ExperimentError(f"--set {key}={text!r}: {key} is a count; give a positive whole number")
    if count and default >= 0 and value < 0:
        raise ExperimentError(f"--set {key}={text!r}: give a whole number ≥ 0")
    if count and abs(value) > MAX_COUNT:
        raise ExperimentError(f"--set {key}={text!r}: too large; give at most {MAX_COUNT}")
    return value


@dataclass
class Context:
    """Everything a run needs besides its code: seed, device, sizes, parameters, the result."""

    experiment: str
    params: dict[str, Any]
    seed: int = 0
    quick: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float64
    progress: bool = False
    checkpoint_dir: Path | None = None
    result: Result = field(init=False)

    def __post_init__(self) -> None:
        config = {
            "experiment": self.experiment,
            "seed": self.seed,
            "quick": self.quick,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "params": self.params,
        }
        self.result = Result(experiment=self.experiment, config=config)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def generator(self, *labels: object) -> torch.Generator:
        """A generator seeded from the run's seed and ``labels``: same seed, same numbers,
        and each method / panel has its own stream."""
        text = "/".join(str(label) for label in (self.seed, *labels))
        return torch.Generator(device=self.device).manual_seed(zlib.crc32(text.encode()))

    def checkpoint(self, *labels: object) -> FileCheckpoint | None:
        """Where the simulation named by ``labels`` keeps its progress (None: no checkpoints)."""
        if self.checkpoint_dir is None:
            return None
        name = "-".join(str(label) for label in labels if str(label)) or "run"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return FileCheckpoint(self.checkpoint_dir / f"{safe}.pt")

    def tensor(self, values: Any) -> torch.Tensor:
        return torch.as_tensor(values, dtype=self.dtype, device=self.device)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    run: Callable[[Context], int | None]
    defaults: Mapping[str, Any]
    quick: Mapping[str, Any]

    def resolve(self, quick: bool, settings: Mapping[str, str], paths: int | None) -> dict[str, Any]:
        """Defaults, then quick overrides, then ``--paths``, then ``--set``; unknown keys are refused."""
        params = dict(self.defaults)
        if quick:
            params.update(self.quick)
        if paths is not None:
            if "paths" not in params:
                raise ExperimentError(f"{self.name} takes no --paths")
            params["paths"] = paths
        for key, text in settings.items():
            if key not in params:
                known = ", ".join(sorted(params))
                raise ExperimentError(f"{self.name} has no parameter {key!r}; known: {known}")
            params[key] = parse_value(text, params[key], key)
        return params


REGISTRY: dict[str, Experiment] = {}


def experiment(
    name: str, description: str, defaults: Mapping[str, Any], quick: Mapping[str, Any] | None = None
) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    """Register ``fn`` as experiment ``name``; ``description`` is its one line in ``optsde list``."""

    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        REGISTRY[name] = Experiment(name, description, fn, dict(defaults), dict(quick or {}))
        return fn

    return register


def discover() -> dict[str, Experiment]:
    """Import every module of this package so that its experiments register themselves."""
    import optsde.experiments as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "base":
            importlib.import_module(f"{package.__name__}.{module.name}")
    return dict(sorted(REGISTRY.items()))


def get_experiment(name: str) -> Experiment:
    experiments = discover()
    if name not in experiments:
        raise ExperimentError(f"unknown experiment {name!r}; `optsde list` shows: {', '.join(experiments)}")
    return experiments[name]


@dataclass
class Comparison:
    """An optimizer and SDE models run side by side from one start: recordings, fidelity, κ."""

    recordings: dict[str, Recording]
    fidelity: dict[str, dict[str, Any]]
    kappa: float | None

    def divergences(self) -> list[str]:
        return [rec.divergence.describe(m) for m, rec in self.recordings.items() if rec.divergence]

    def summary(self) -> dict[str, Any]:
        return {
            "kappa": self.kappa,
            "fidelity": self.fidelity,
            "divergences": self.divergences(),
            "paths": {m: rec.paths for m, rec in self.recordings.items()},
        }


def compare(
    ctx: Context,
    spec: OptimizerSpec,
    oracle: GradientOracle,
    hp: Hyperparameters,
    x0: torch.Tensor,
    *,
    steps: int,
    paths: int,
    models: Sequence[str] = ("paper",),
    extra_models: Sequence[Runner] = (),
    substeps: int = 1,
    record_at: Sequence[int] | None = None,
    observables: dict[str, Observable] | None = None,
    schedule: Schedule = constant_schedule,
    label: str = "",
    burn_in: float = 0.5,
    with_optimizer: bool = True,
    kappa: float | None = None,
) -> Comparison:
    """Run the discrete optimizer and each SDE model in ``models`` (keys of ``spec.sdes``).

    Each method has its own random stream, so a method's numbers do not depend
    on which others run beside it.  A diverged method stops; the rest finish.
    ``kappa`` (docs/theory.md §3) is asked of the oracle unless the caller already has it.
    """
    spec.check(hp)
    if paths < 2 and (models or extra_models) and with_optimizer:
        raise ExperimentError(
            f"paths={paths}: comparing with the optimizer needs standard errors; use 2 or more"
        )
    runners: list[Runner] = [DiscreteRunner(spec.discrete)] if with_optimizer else []
    for key in models:
        if key not in spec.sdes:
            known = ", ".join(spec.sdes)
            raise ExperimentError(f"{spec.name} has no SDE model {key!r}; choose from: {known}")
        runners.append(SDERunner(spec.sdes[key], substeps=substeps))
    runners.extend(extra_models)
    recordings = {}
    for runner in runners:
        recordings[runner.name] = simulate(
            runner,
            oracle,
            hp,
            x0,
            paths=paths,
            steps=steps,
            record_at=record_at,
            observables=observables,
            schedule=schedule,
            generator=ctx.generator(label, runner.name),
            progress=ctx.progress,
            checkpoint=ctx.checkpoint(label, runner.name),
        )
    fidelity = fidelity_summary(recordings, burn_in=burn_in) if with_optimizer else {}
    if kappa is None:
        kappa_fn = getattr(oracle, "kappa", None)
        kappa = kappa_fn(hp.lr) if callable(kappa_fn) else None
    return Comparison(recordings, fidelity, kappa)
