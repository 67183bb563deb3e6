"""``asymptotic-loss``: where AdamW and RMSpropW settle and what keeps them there (Fig. 5, docs/theory.md
§7 item 5).

(a) the asymptotic loss on ``½ Σ h_i x_i²`` against σ, measured and predicted two ways (docs/theory.md
    §5): the paper-style formula ``η s²/(2p(h + θp))`` and the discrete Lyapunov linearisation of the
    optimizer (its family's ``linearised_second_moment``), with the paper's eq. (6) bound;
(b) the batch-size scaling rule (docs/theory.md §6, ``spec.rescale(hp, δ, "paper")``): the rescaled
    run (R) keeps the original's asymptotic loss, the run that rescales all but θ (NR) does not;
(c) on the embedded saddle, β₁ and β₂ decide which well AdamW ends in and how fast, not the level;
(d) the stationary variance of every coordinate of (a) against both predictions.

Every coordinate of the diagonal quadratic is an independent 1-d problem for these element-wise
optimizers, so one run of (a) carries the whole (σ, h) grid as coordinates.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from optsde.analysis import AtMost, Check, Estimate, InRange, Within, paired_ratio, ratio, stationary_values
from optsde.analysis import sample_mean as mean_of
from optsde.experiments.base import Context, ExperimentError, experiment
from optsde.figures import asymptotic_loss as figures
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.analytic import EmbeddedSaddle, NoisyProblem, Quadratic
from optsde.sde import DiscreteRunner, Recording, record_steps, simulate
from optsde.theory.adaptive import (
    LYAPUNOV,
    PREDICTIONS,
    adamw_loss_limit,
    predicted_losses,
    predicted_second_moments,
    stationary_loss,
)
from optsde.theory.predictions import FORMULA_TOLERANCE

NAME = "asymptotic-loss"

DEFAULTS: dict[str, Any] = {
    "beta1": 0.9,
    "beta2": 0.99,
    "eps": 1e-8,
    "paths": 1000,
    "burn_in": 0.5,
    "record_points": 150,
    "sweep_optimizers": ["adamw", "rmspropw"],
    "sweep_lr": 0.002,
    "sweep_sigmas": [0.1, 0.3, 1.0, 3.0, 10.0],
    "sweep_hessian": [0.5, 1.0, 2.0, 4.0],
    "sweep_weight_decay": 1.0,
    "sweep_beta1": [0.9, 0.99],
    "sweep_steps": 3000,
    "scaling_optimizers": ["adamw", "rmspropw"],
    "scaling_lr": 0.002,
    "scaling_hessian": [1.0, 3.0],
    "scaling_sigma": 1.0,
    "scaling_batch_size": 1,
    "delta": 2.0,
    "scaling_weight_decays": [1.0, 4.0],
    "scaling_x0": [1.0, 1.0],
    "scaling_steps": 3000,
    "basin_optimizer": "adamw",
    "basin_lr": 0.01,
    "basin_sigma": 0.5,
    "basin_hessian": [1.0],
    "basin_x0": [1.0, -2.0],
    "basin_beta1": [0.9, 0.99],
    "basin_beta2": [0.9, 0.99],
    "basin_steps": 3000,
}
"""``beta2`` is AdamW's β₂ and RMSpropW's β: RMSprop has no bias correction, so ``v`` must fill up
from 0 well within the burn-in, and at 0.999 it would not.  ``sweep_*``: panels (a), (d), each
optimizer (at each ``sweep_beta1`` if it has a β₁) started at the minimum.  ``scaling_*``: panel
(b), batch size ``scaling_batch_size`` → ``delta`` × it.  ``basin_*``: panel (c), θ = 0 on the
embedded saddle (``basin_x0``: the quadratic coordinates, then the double well), over the grid
``basin_beta1`` × ``basin_beta2``.  ``burn_in``: the stationary window is the last ``1 − burn_in``
of each run.  The optimizers must have decoupled decay and a linearised closed form."""

QUICK: dict[str, Any] = {"paths": 200, "record_points": 100, "sweep_steps": 2500, "basin_steps": 1500}

WELL_DISTANCE = 0.25
"""Panel (c): a path has settled once it stays within this distance of the well it ends in."""

TOLERANCE = FORMULA_TOLERANCE
"""A closed form "predicts" a level when within this relative error (the theory's own validity
tolerance, docs/theory.md §8), or within the checks' z standard errors."""


def _spec(name: str, key: str) -> OptimizerSpec:
    spec = get_optimizer(name)
    if not spec.decoupled_decay or spec.capabilities.linearised_second_moment is None:
        raise ExperimentError(f"{key}: {name} lacks decoupled decay or a closed form; use adamw or rmspropw")
    return spec


def _run(
    ctx: Context,
    spec: OptimizerSpec,
    oracle: NoisyProblem,
    hp: Hyperparameters,
    x0: list[float],
    steps: int,
    label: str,
    stream: str = "",
) -> Recording:
    """The discrete optimizer alone.  Runs given one ``stream`` draw the same normals step by step
    (common random numbers), so their paths are paired."""
    spec.check(hp)
    generator, checkpoint = ctx.generator(stream or label, "optimizer"), ctx.checkpoint(label, "optimizer")
    runner, record_at = DiscreteRunner(spec.discrete), record_steps(steps, ctx["record_points"])
    sizes = {"paths": ctx["paths"], "steps": steps, "record_at": record_at, "progress": ctx.progress}
    rec = simulate(runner, oracle, hp, ctx.tensor(x0), **sizes, generator=generator, checkpoint=checkpoint)
    ctx.result.add_recording(label, rec, ("loss",))
    return rec


def _check_params(ctx: Context) -> None:
    for key in ("sweep_sigmas", "sweep_hessian", "scaling_hessian", "basin_hessian"):
        if any(v <= 0 for v in ctx[key]):
            raise ExperimentError(f"{key}: give positive numbers, e.g. {','.join(map(str, DEFAULTS[key]))}")
    if len(ctx["scaling_x0"]) != len(ctx["scaling_hessian"]):
        raise ExperimentError("scaling_x0 needs one value per scaling_hessian coordinate")
    if len(ctx["basin_x0"]) != len(ctx["basin_hessian"]) + 1:
        raise ExperimentError("basin_x0 lists the basin_hessian coordinates, then the double-well one")
    batch = ctx["delta"] * ctx["scaling_batch_size"]
    if ctx["delta"] <= 1 or abs(batch - round(batch)) > 1e-9:
        raise ExperimentError(f"delta × scaling_batch_size must be a larger whole batch size, got {batch:g}")


def _sweep(ctx: Context) -> dict[str, dict[str, Any]]:
    """Panels (a), (d): one run per optimizer configuration over the whole (σ, h) grid."""
    sigmas, hessian = np.asarray(ctx["sweep_sigmas"]), np.asarray(ctx["sweep_hessian"])
    h, s = np.tile(hessian, len(sigmas)), np.repeat(sigmas, len(hessian))
    oracle = NoisyProblem(Quadratic(ctx.tensor(h)), GaussianNoise(len(h), scale=ctx.tensor(s)))
    lr, theta = ctx["sweep_lr"], ctx["sweep_weight_decay"]
    base = Hyperparameters(lr, beta2=ctx["beta2"], eps=ctx["eps"], weight_decay=theta)
    configs = []
    for name in ctx["sweep_optimizers"]:
        spec = _spec(name, "sweep_optimizers")
        for b in ctx["sweep_beta1"] if "beta1" in spec.uses else [None]:
            label = spec.capabilities.style["label"]
            configs.append((f"{label} β₁={b:g}" if b else label, spec, base.with_(beta1=b or base.beta1)))
    out: dict[str, dict[str, Any]] = {}
    checks_a: list[Check] = []
    checks_d: list[Check] = []
    for label, spec, hp in configs:
        rec = _run(ctx, spec, oracle, hp, [0.0] * len(h), ctx["sweep_steps"], f"a-{label}")
        entry = out[label] = {"optimizer": spec.name, "hp": vars(hp), "kappa": oracle.kappa(lr)}
        if rec.divergence is not None:
            entry["divergence"] = rec.divergence.describe(label)
            continue
        # Each path's time average over the stationary window: one independent sample per path.
        averages = stationary_values(rec, "x2", ctx["burn_in"]).mean(axis=0)
        predicted = predicted_second_moments(spec, h, s, hp)
        measured = [mean_of(averages[:, i]) for i in range(len(h))]
        entry["coordinates"] = [
            {"h": h[i], "sigma": s[i], "kappa": lr * h[i] / s[i], "measured": m.value, "measured_se": m.se}
            | {name: v[i] for name, v in predicted.items()}
            for i, m in enumerate(measured)
        ]
        entry["per_sigma"] = []
        for j, sigma in enumerate(sigmas):
            idx = slice(j * len(hessian), (j + 1) * len(hessian))
            loss = mean_of(0.5 * (averages[:, idx] * hessian).sum(axis=1))
            levels = {name: stationary_loss(hessian, v[idx]) for name, v in predicted.items()}
            bound = adamw_loss_limit(hessian.min(), hessian.max(), len(hessian), sigma, 1, lr, theta)
            row = {"sigma": sigma, "loss": loss.value, "loss_se": loss.se, "eq6_bound": bound}
            entry["per_sigma"].append(row | levels)
            ctx.result.add_series(
                f"a-{label}", "optimizer", [sigma], "asymptotic_loss", [loss.value], [loss.se]
            )
            name = f"{label}, σ = {sigma:g}"
            checks_a.append(Check(f"{name}: vs discrete Lyapunov", loss, levels[LYAPUNOV], Within(TOLERANCE)))
            checks_a.append(Check(f"{name}: within eq. (6)", loss, None, AtMost(bound)))
        # (d): each coordinate's error; their mean (coordinates are independent) is judged, since the
        # largest of many errors is biased away from 0 by the noise; it is reported beside it.
        errors = [ratio(m, float(v)) - 1.0 for m, v in zip(measured, predicted[LYAPUNOV], strict=True)]
        se = math.hypot(*(e.se for e in errors)) / len(errors)
        mean = Estimate(float(np.mean([e.value for e in errors])), se)
        worst = max(errors, key=lambda e: abs(e.value))
        entry["variance_errors"] = {"mean": mean.to_dict(), "largest": worst.to_dict()}
        checks_d.append(Check(f"{label}: mean error of E x_i²", mean, None, InRange(-TOLERANCE, TOLERANCE)))
    ctx.result.add_checks("(a) asymptotic loss", checks_a)
    ctx.result.add_checks("(d) stationary variance", checks_d)
    ctx.result.report.extend(figures.sweep_report(out, ctx.params))
    return out


def _scaling(ctx: Context) -> dict[str, dict[str, Any]]:
    """Panel (b): original, rescaled (R) and not-rescaled-θ (NR) runs, paired by common random numbers."""
    h, sigma, delta = np.asarray(ctx["scaling_hessian"]), ctx["scaling_sigma"], ctx["delta"]
    batch, big = ctx["scaling_batch_size"], round(delta * ctx["scaling_batch_size"])
    specs = [_spec(name, "scaling_optimizers") for name in ctx["scaling_optimizers"]]
    out: dict[str, dict[str, Any]] = {}
    checks: list[Check] = []
    for spec, theta in itertools.product(specs, ctx["scaling_weight_decays"]):
        hp = Hyperparameters(ctx["scaling_lr"], ctx["beta1"], ctx["beta2"], ctx["eps"], theta)
        key, rescaled = f"{spec.name} θ={theta:g}", spec.rescale(hp, delta, "paper")
        runs = {
            "original": (hp, batch),
            "R": (rescaled, big),
            "NR": (rescaled.with_(weight_decay=theta), big),
        }
        entry: dict[str, Any] = {}
        out[key], per_path = entry, {}
        for variant, (vhp, vbatch) in runs.items():
            oracle = NoisyProblem(Quadratic(ctx.tensor(h)), GaussianNoise(len(h), sigma, batch_size=vbatch))
            steps, label = ctx["scaling_steps"], f"b-{key}-{variant}"
            rec = _run(ctx, spec, oracle, vhp, ctx["scaling_x0"], steps, label, key)
            levels = predicted_losses(spec, h, np.full(len(h), sigma / math.sqrt(vbatch)), vhp)
            entry[variant] = {"hp": vars(vhp), "batch_size": vbatch, "predicted": levels, "recording": rec}
            if rec.divergence is None:
                per_path[variant] = 0.5 * stationary_values(rec, "x2", ctx["burn_in"]).mean(axis=0) @ h
                entry[variant]["loss"] = mean_of(per_path[variant]).to_dict()
        for variant in ("R", "NR") if "original" in per_path else ():
            if variant in per_path:
                measured = paired_ratio(per_path[variant], per_path["original"])
                levels, base = entry[variant]["predicted"], entry["original"]["predicted"]
                predicted = {n: levels[n] / base[n] for n in PREDICTIONS}
                over = {"measured": measured.value, "se": measured.se}
                entry[f"{variant}_over_original"] = over | predicted
                target = 1.0 if variant == "R" else predicted[LYAPUNOV]
                why = "the paper's rule keeps E f" if variant == "R" else "θ unscaled"
                checks.append(Check(f"{key}: {variant} / original", measured, target, Within(TOLERANCE), why))
    ctx.result.report.extend(figures.scaling_report(out, ctx.params))
    ctx.result.add_checks("(b) scaling rule", checks)
    return out


def _basins(ctx: Context) -> dict[str, dict[str, Any]]:
    """Panel (c): θ = 0 on the embedded saddle over the (β₁, β₂) grid: well, settling time, level."""
    quad, sigma = np.asarray(ctx["basin_hessian"]), ctx["basin_sigma"]
    dim = len(quad) + 1
    oracle = NoisyProblem(EmbeddedSaddle(ctx.tensor(quad), wells=1), GaussianNoise(dim, scale=sigma))
    # Around either minimum (well coordinate ±1, curvature 2) the saddle is a quadratic.
    h_min, s = np.append(quad, 2.0), np.full(dim, sigma)
    spec = _spec(ctx["basin_optimizer"], "basin_optimizer")
    out: dict[str, dict[str, Any]] = {}
    checks: list[Check] = []
    for beta1, beta2 in itertools.product(ctx["basin_beta1"], ctx["basin_beta2"]):
        hp, label = Hyperparameters(ctx["basin_lr"], beta1, beta2, ctx["eps"]), f"β₁={beta1:g}, β₂={beta2:g}"
        rec = _run(ctx, spec, oracle, hp, ctx["basin_x0"], ctx["basin_steps"], f"c-{label}")
        predicted = predicted_losses(spec, h_min, s, hp)
        entry = out[label] = {"hp": vars(hp), "predicted": predicted, "recording": rec}
        if rec.divergence is not None:
            continue
        well = rec.values["x"][:, :, -1]  # (T, P)
        target = np.sign(well[-1])
        away = np.abs(well - target) > WELL_DISTANCE
        # Settled at the record after the last one spent away from the final well.
        last_away = np.where(away.any(axis=0), away.shape[0] - 1 - np.argmax(away[::-1], axis=0), -1)
        level = mean_of(stationary_values(rec, "loss", ctx["burn_in"]).mean(axis=0))
        entry |= {
            "share_positive_well": mean_of(target > 0).to_dict(),
            "settle_time": mean_of(rec.times[np.minimum(last_away + 1, len(rec.times) - 1)]).to_dict(),
            "loss": level.to_dict(),
        }
        # The linearisation freezes v at s²; v's relative fluctuation √(2(1−β₂)/(1+β₂)) under Gaussian
        # noise is what it leaves out, so the level may be off by up to that much.
        swing = math.sqrt(2 * (1 - beta2) / (1 + beta2))
        why = f"v swings ±{swing:.0%}"
        checks.append(Check(f"{label}: level", level, predicted[LYAPUNOV], Within(swing), why))
    ctx.result.report.extend(figures.basin_report(out, ctx.params, WELL_DISTANCE))
    ctx.result.add_checks("(c) basins", checks)
    return out


def _without_recordings(value: Any) -> Any:
    """``value`` without its ``recording`` entries: summary.json holds numbers."""
    if not isinstance(value, dict):
        return value
    return {k: _without_recordings(v) for k, v in value.items() if k != "recording"}


@experiment(
    NAME,
    "AdamW/RMSpropW asymptotic loss vs prediction, δ = 2 scaling rule with/without θ, β and basins (Fig. 5)",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    """Fig. 5 of the paper, four panels; numbers with standard errors and checks in ``summary.json``."""
    _check_params(ctx)
    result = ctx.result
    result.report.extend(figures.intro(ctx.params))
    sweep = _sweep(ctx)
    result.summary["a_d_sweep"] = sweep
    figs = result.figures
    figs["fig5a_asymptotic_loss"], figs["fig5d_stationary_variance"] = figures.sweep_figures(sweep)
    scaling = _scaling(ctx)
    result.summary["b_scaling"] = _without_recordings(scaling)
    figs["fig5b_scaling_rule"] = figures.scaling_figure(scaling, ctx["delta"])
    basins = _basins(ctx)
    result.summary["c_basins"] = _without_recordings(basins)
    figs["fig5c_basins"] = figures.basin_figure(basins)
