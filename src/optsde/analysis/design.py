"""Run design for stationary estimates: how long to run and where to record (docs/analysis.md).

A stationary average (:func:`~optsde.analysis.estimates.stationary_mean`) is honest when the
part of the run before its window covers the transient and a few relaxation times, and when
its records cannot alias a periodic motion of the optimizer.  :func:`settling_time` gives the
first on a diagonal quadratic from what an optimizer family declares about itself
(``spec.capabilities``); the engine's stratified :func:`optsde.sde.record_steps` (pairs of
consecutive steps), with :func:`~optsde.analysis.estimates.stationary_window` keeping whole
pairs, gives the second.  :func:`recommended_laws` gives the theory's numbers to check such a
run against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optsde.analysis.checks import Check, Rule, Within
from optsde.analysis.estimates import AnalysisError, Estimate
from optsde.errors import OptsdeError
from optsde.optimizers import Hyperparameters, OptimizerSpec
from optsde.theory.predictions import Prediction, Setting, predictions


def quadratic_setting(hessian: Sequence[float], x0: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Curvatures ``h`` and start ``x0`` of ``f = ½ xᵀ diag(h) x``, refused with a fix if unusable."""
    h, start = np.asarray(hessian, dtype=float), np.asarray(x0, dtype=float)
    if h.size == 0 or not (np.isfinite(h).all() and (h > 0).all()):
        raise AnalysisError("--set hessian=…: give positive curvatures like 1,2 (a convex quadratic)")
    if start.shape != h.shape or not np.isfinite(start).all():
        raise AnalysisError(f"--set x0=…: give {h.size} finite values, one per curvature")
    return h, start


def check_run_design(params: Mapping[str, Any]) -> None:
    """Refuse, with a fix, sizes that leave no standard error or no stationary window: ``params``
    holds ``paths``, ``burn_in``, ``settle``, ``min_steps`` and ``max_steps`` (:func:`run_steps`)."""
    paths, burn_in, settle = params["paths"], params["burn_in"], params["settle"]
    min_steps, max_steps = params["min_steps"], params["max_steps"]
    if paths < 2:
        raise AnalysisError("--paths must be at least 2 for standard errors")
    if not 0.0 <= burn_in < 1.0:
        raise AnalysisError(f"--set burn_in={burn_in}: give a fraction in [0, 1)")
    if not settle > 0 or min_steps < 2 or max_steps < min_steps:
        raise AnalysisError("--set settle>0, min_steps≥2 and max_steps≥min_steps")


def hyperparameters_for(spec: OptimizerSpec, params: Mapping[str, Any]) -> Hyperparameters:
    """``params``' ``lr``, ``beta1``, ``beta2``, ``eps`` and ``weight_decay`` as ``spec``'s hyperparameters:
    θ kept only where the optimizer has decoupled decay."""
    fields = {key: params[key] for key in ("lr", "beta1", "beta2", "eps")}
    hp = Hyperparameters(**fields, weight_decay=params["weight_decay"] if spec.decoupled_decay else 0.0)
    spec.check(hp)
    return hp


def settling_time(
    spec: OptimizerSpec, h: np.ndarray, scale: float, hp: Hyperparameters, x0: np.ndarray, slope: float = 1.0
) -> tuple[float, float]:
    """``(transient, relaxation)`` in SDE time ``t = kη`` on ``½ xᵀ diag(h) x`` with noise scale ``scale``.

    - A step linear in the gradient (the families whose loss has no mean under heavy tails,
      since it inherits the noise's variance: SGD) relaxes at rate ``2h`` (its SDE is
      Ornstein–Uhlenbeck, docs/theory.md §5); the transient is the decay of ``f(x₀)`` to 1%
      of the stationary level ``ηs²/4`` per coordinate.
    - A bounded step (sign, or gradient over ``√v``) crosses to the minimum at about unit speed
      and then relaxes at rate ``c·h/s + θ`` (docs/theory.md §5, ``p ≈ s``), ``c = slope`` the
      slope of ``E sign`` at 0 (``√(2/π)`` for Gaussian noise, ``2f_ν(0)`` for Student-t; 1 by
      default, which the ``settle`` factor of :func:`run_steps` absorbs).  A second moment
      ``v`` must first forget the early gradients ``(h x₀)²`` at rate ρ₂ down to 1% of ``s²``;
      without bias correction it must also grow from 0 as ``(1 − β₂^k)s²``.
    """
    h_min, reach = float(h.min()), float(np.abs(x0).max())
    if not spec.capabilities.mean_under_heavy_tails:
        f0 = 0.5 * float((h * x0**2).sum())
        level = hp.lr * scale**2 * h.size / 4.0
        return math.log(max(1.0, 100.0 * f0 / level)) / (2.0 * h_min), 1.0 / (2.0 * h_min)
    memory = 0.0
    if spec.capabilities.second_moment != "none":
        floor = 100.0 if spec.capabilities.second_moment == "uncorrected" else 1.0
        gradient = float(h.max()) * reach
        memory = math.log(max(floor, 100.0 * gradient**2 / scale**2)) / hp.rho2
    return reach + memory, 1.0 / (slope * h_min / scale + hp.weight_decay)


def run_steps(
    spec: OptimizerSpec,
    h: np.ndarray,
    scale: float,
    hp: Hyperparameters,
    x0: np.ndarray,
    params: Mapping[str, Any],
    slope: float = 1.0,
) -> int:
    """Steps so that the first half of the run covers the transient and ``params["settle"]``
    relaxation times: the second half (a stationary window with ``burn_in = 0.5``) is then
    stationary.  Clipped to ``[params["min_steps"], params["max_steps"]]``."""
    transient, relaxation = settling_time(spec, h, scale, hp, x0, slope)
    steps = math.ceil(2.0 * (transient + params["settle"] * relaxation) / hp.lr)
    return int(min(max(steps, params["min_steps"]), params["max_steps"]))


def recommended_laws(
    spec: OptimizerSpec,
    hp: Hyperparameters,
    h: np.ndarray,
    x0: np.ndarray,
    scale: float,
    noise: str = "gaussian",
    nu: float = 3.0,
) -> dict[str, Prediction]:
    """docs/theory.md §8's recommended prediction per quantity for ``spec`` on ``½ xᵀ diag(h) x`` with
    noise of scale ``scale`` (only those with a value); empty where the theory refuses the setting
    (e.g. SGD at ηh ≥ 2).  A prediction's ``valid`` says whether the setting is inside its regime."""
    fields = {key: value for key, value in vars(hp).items() if key != "lr"}
    setting = dict(sigma=scale, noise=noise, nu=nu, x0=tuple(x0), **fields)
    try:
        records = predictions(Setting(spec.name, tuple(h), hp.lr, **setting))
    except OptsdeError:
        return {}
    return {p.quantity: p for p in records if p.recommended and p.value is not None}


def sde_fidelity_check(name: str, numbers: Mapping[str, Any], rel: float, description: str) -> Check | None:
    """An SDE's stationary loss over its optimizer's (``numbers`` of :func:`pair_fidelity`) against 1
    under ``Within(rel)``; None if one of them diverged."""
    if "stationary_rel_error" not in numbers:
        return None
    ratio = Estimate(1.0 + numbers["stationary_rel_error"], numbers["stationary_rel_error_se"])
    return Check(name, ratio, 1.0, Within(rel), description)


def stationary_loss_check(name: str, numbers: Mapping[str, Any], rule: Rule, description: str) -> Check:
    """An SDE's stationary loss against its optimizer's, both with their SE (``numbers`` of
    :func:`~optsde.analysis.recordings.pair_fidelity`, independent paths), under ``rule``."""
    value = Estimate(numbers["stationary_sde"], numbers["stationary_sde_se"])
    target = Estimate(numbers["stationary_optimizer"], numbers["stationary_optimizer_se"])
    return Check(name, value, target, rule, description)
