"""Predictions against a simulation of the optimizer: ``optsde predict --check`` (docs/theory.md §8).

:func:`simulate_stationary` is the one place that runs the engine; :func:`attach` writes what
it measured into the prediction records (``simulated``, ``simulated_se``, ``rel_error``).

The stationary averages are taken over the second half of the run at the engine's *stratified*
record steps (:func:`optsde.sde.record_steps`: consecutive pairs at random steps, one pair per
stratum), never on a regular grid: SignSGD on its lattice (κ ≳ 2) settles into short periodic
orbits, and a grid whose spacing is a multiple of the period sees one phase of the orbit only.
Each path's time average is one sample, so the standard errors are over independent paths
(:mod:`optsde.analysis`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from optsde.analysis import Estimate, grouped_quantile, sample_mean, stationarity
from optsde.noise import GaussianNoise, StudentTNoise
from optsde.optimizers import get_optimizer
from optsde.optimizers.base import State
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.problems.base import GradientOracle
from optsde.sde import DiscreteRunner, record_steps, simulate
from optsde.theory.predictions import Prediction, PredictionError, Setting

MEDIAN_GROUPS = 10
"""Paths are split into this many groups; the spread of the groups' medians gives the median's SE."""


@dataclass(frozen=True)
class Stationary:
    """What the simulation measured at stationarity, each as (estimate, standard error)."""

    loss: tuple[float, float]
    second_moment: tuple[float, float]
    second_moments: tuple[np.ndarray, np.ndarray]
    median_loss: tuple[float, float]
    median_second_moments: np.ndarray
    drift: float
    """Mean loss of the window's second half minus its first half, in standard errors."""
    diverged: str | None = None


def build_problem(setting: Setting) -> NoisyProblem:
    """The quadratic and the noise of ``setting``, as ``optsde simulate`` builds them."""
    scale = setting.sigma
    if setting.noise == "gaussian":
        noise: GaussianNoise | StudentTNoise = GaussianNoise(
            setting.dim, scale=scale, batch_size=setting.batch_size
        )
    else:
        noise = StudentTNoise(setting.dim, nu=setting.nu, scale=scale, batch_size=setting.batch_size)
    return NoisyProblem(Quadratic(torch.tensor(setting.hessian, dtype=torch.float64)), noise)


def _squares(state: State, oracle: GradientOracle) -> torch.Tensor:
    return state.x**2


def simulate_stationary(
    setting: Setting, *, paths: int, steps: int, seed: int, points: int = 200
) -> Stationary:
    """Run the optimizer of ``setting`` from its ``x0`` and measure its stationary moments."""
    if paths < 2 * MEDIAN_GROUPS:
        raise PredictionError(
            f"--paths must be at least {2 * MEDIAN_GROUPS} for standard errors, got {paths}"
        )
    if steps < 4:
        raise PredictionError(f"--steps must be at least 4 to average over a second half, got {steps}")
    problem = build_problem(setting)
    rec = simulate(
        DiscreteRunner(get_optimizer(setting.optimizer).discrete),
        problem,
        setting.hp,
        torch.tensor(setting.start, dtype=torch.float64),
        paths=paths,
        steps=steps,
        record_at=[k for k in record_steps(steps, 2 * points) if k > steps // 2],
        observables={"loss": lambda state, oracle: oracle.loss(state.x), "x2": _squares},
        generator=torch.Generator().manual_seed(seed),
    )
    if rec.divergence is not None:
        nan = (math.nan, math.nan)
        empty = np.full(setting.dim, math.nan)
        return Stationary(
            nan, nan, (empty, empty), nan, empty, math.nan, rec.divergence.describe("the optimizer")
        )
    loss, squares = rec.values["loss"], rec.values["x2"]  # (T, P), (T, P, d)
    coordinate = squares.mean(axis=0)  # (P, d)
    median = grouped_quantile(loss, 0.5, MEDIAN_GROUPS)
    steps_seen = rec.steps
    drift = stationarity(loss, steps_seen, burn_in=0.0, rel_tol=0.005).drift
    return Stationary(
        loss=_pair(sample_mean(loss.mean(axis=0))),
        second_moment=_pair(sample_mean(coordinate.sum(axis=1))),
        second_moments=(coordinate.mean(axis=0), coordinate.std(axis=0, ddof=1) / math.sqrt(paths)),
        median_loss=_pair(median),
        median_second_moments=np.median(squares.reshape(-1, setting.dim), axis=0),
        drift=_in_standard_errors(drift, float(loss.mean())),
    )


def _pair(estimate: Estimate) -> tuple[float, float]:
    return estimate.value, estimate.se


def _in_standard_errors(drift: Estimate, level: float) -> float:
    """The change of the mean loss across the window in standard errors, 0 if below 0.5% of the level.

    A change too small to matter is not a warning, however many standard errors it is (a
    deterministic orbit has none).
    """
    if abs(drift.value) <= 0.005 * abs(level) or not drift.se > 0:
        return 0.0
    return drift.value / drift.se


def attach(records: list[Prediction], measured: Stationary) -> None:
    """Fill ``simulated``, ``simulated_se`` and ``rel_error`` of the records a simulation measures.

    The stationary loss and second moment (means), and the median loss and median ``x_i²``
    (heavy tails); a record without a value (no stationary mean) gets no simulated mean.
    """
    for record in records:
        if record.value is None:
            continue
        if record.quantity == "stationary_loss":
            record.simulated, record.simulated_se = measured.loss
        elif record.quantity == "stationary_second_moment":
            record.simulated, record.simulated_se = measured.second_moment
            record.simulated_per_coordinate = measured.second_moments[0].tolist()
        elif record.quantity == "median_loss":
            record.simulated, record.simulated_se = measured.median_loss
        elif record.quantity == "median_second_moment":
            record.simulated = float(measured.median_second_moments.sum())
            record.simulated_per_coordinate = measured.median_second_moments.tolist()
        else:
            continue
        if record.simulated is not None and math.isfinite(record.simulated) and record.simulated != 0:
            record.rel_error = record.value / record.simulated - 1.0
