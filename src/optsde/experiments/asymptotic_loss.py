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

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from optsde.analysis import AtMost, Check, Estimate, InRange, Within, burn_in_mask, paired_ratio, ratio
from optsde.analysis import sample_mean as mean_of
from optsde.experiments.base import Context, ExperimentError, experiment
from optsde.figures import dodge, errorbars, label_curves, legend_entry, reference_line, series_style
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.analytic import EmbeddedSaddle, NoisyProblem, Quadratic
from optsde.sde import DiscreteRunner, Recording, record_steps, simulate
from optsde.theory.adaptive import adamw_loss_limit, adaptive_stationary_second_moment, stationary_loss
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

LYAPUNOV, PAPER = PREDICTIONS = ("discrete Lyapunov", "paper-style")

TOLERANCE = FORMULA_TOLERANCE
"""A closed form "predicts" a level when within this relative error (the theory's own validity
tolerance, docs/theory.md §8), or within the checks' z standard errors."""

VARIANT_STYLE = {
    "original": {"color": "black", "linestyle": "-"},
    "R": {"color": "tab:green", "linestyle": "--"},
    "NR": {"color": "tab:red", "linestyle": ":"},
}
"""Panel (b): the original run, the run rescaled by the paper's rule (R), and θ not rescaled (NR)."""


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
    rec = simulate(
        DiscreteRunner(spec.discrete),
        oracle,
        hp,
        ctx.tensor(x0),
        paths=ctx["paths"],
        steps=steps,
        record_at=record_steps(steps, ctx["record_points"]),
        generator=ctx.generator(stream or label, "optimizer"),
        progress=ctx.progress,
        checkpoint=ctx.checkpoint(label, "optimizer"),
    )
    ctx.result.add_recording(label, rec, ("loss",))
    return rec


def _predicted(spec: OptimizerSpec, h: np.ndarray, s: np.ndarray, hp: Hyperparameters) -> dict[str, Any]:
    """Per-coordinate ``E x²`` by each prediction (docs/theory.md §5)."""
    lyapunov = spec.capabilities.linearised_second_moment(h, s, hp)  # type: ignore[misc]
    return {
        LYAPUNOV: lyapunov,
        PAPER: adaptive_stationary_second_moment(h, s, hp.lr, hp.eps, hp.weight_decay),
    }


def _path_averages(rec: Recording, burn_in: float, metric: str = "x2") -> np.ndarray:
    """Each path's time average over the stationary window, ``(P, …)``: one independent sample per path."""
    return rec.values[metric][burn_in_mask(rec, burn_in)].mean(axis=0)


def _rel(value: Estimate, target: float) -> str:
    return f"{value.value / target - 1:+.1%} ± {value.se / target:.1%}"


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


def _row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _sweep(ctx: Context) -> dict[str, dict[str, Any]]:
    """Panels (a), (d): one run per optimizer configuration over the whole (σ, h) grid."""
    say, sigmas, hessian = ctx.result.say, np.asarray(ctx["sweep_sigmas"]), np.asarray(ctx["sweep_hessian"])
    h, s = np.tile(hessian, len(sigmas)), np.repeat(sigmas, len(hessian))
    oracle = NoisyProblem(Quadratic(ctx.tensor(h)), GaussianNoise(len(h), scale=ctx.tensor(s)))
    lr, theta = ctx["sweep_lr"], ctx["sweep_weight_decay"]
    base = Hyperparameters(lr, beta2=ctx["beta2"], eps=ctx["eps"], weight_decay=theta)
    configs = []
    for name in ctx["sweep_optimizers"]:
        spec, label = _spec(name, "sweep_optimizers"), get_optimizer(name).capabilities.style["label"]
        betas = ctx["sweep_beta1"] if "beta1" in spec.uses else [None]
        configs += [
            (f"{label} β₁={b:g}" if b else label, spec, base.with_(beta1=b or base.beta1)) for b in betas
        ]
    say(f"## (a), (d) Asymptotic loss and variance vs σ (η = {lr:g}, θ = {theta:g}, h = {list(hessian)})")
    say()
    say(
        "Predictions (docs/theory.md §5): **discrete Lyapunov** (the optimizer linearised at the minimum, "
        "momentum included) and **paper-style** `η s²/(2p(h + θp))` (fast momentum, the same for every "
        "configuration).  Errors: measured/predicted − 1 ± SE; the last column is E f over eq. (6)'s bound."
    )
    say()
    say(_row("optimizer", "σ", "κ max", "measured E f", *(f"vs {n}" for n in PREDICTIONS), "/ bound"))
    say("|---" * 7 + "|")
    out: dict[str, dict[str, Any]] = {}
    checks_a: list[Check] = []
    checks_d: list[Check] = []
    lines_d: list[str] = []
    for label, spec, hp in configs:
        rec = _run(ctx, spec, oracle, hp, [0.0] * len(h), ctx["sweep_steps"], f"a-{label}")
        entry = out[label] = {"optimizer": spec.name, "hp": vars(hp), "kappa": oracle.kappa(lr)}
        if rec.divergence is not None:
            entry["divergence"] = rec.divergence.describe(label)
            say(_row(label, f"diverged: {entry['divergence']}", *[""] * 5))
            continue
        averages, predicted = _path_averages(rec, ctx["burn_in"]), _predicted(spec, h, s, hp)
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
            entry["per_sigma"].append(
                {"sigma": sigma, "loss": loss.value, "loss_se": loss.se, "eq6_bound": bound}
            )
            entry["per_sigma"][-1] |= levels
            ctx.result.add_series(
                f"a-{label}", "optimizer", [sigma], "asymptotic_loss", [loss.value], [loss.se]
            )
            checks_a += [
                Check(
                    f"{label}, σ = {sigma:g}: vs discrete Lyapunov", loss, levels[LYAPUNOV], Within(TOLERANCE)
                ),
                Check(f"{label}, σ = {sigma:g}: within eq. (6)", loss, None, AtMost(bound)),
            ]
            cells = (_rel(loss, levels[n]) for n in PREDICTIONS)
            say(
                _row(
                    label,
                    f"{sigma:g}",
                    f"{lr * hessian.max() / sigma:.3g}",
                    loss,
                    *cells,
                    f"{loss.value / bound:.2f}",
                )
            )
        # (d): each coordinate's error; their mean (coordinates are independent) is judged, since the
        # largest of many errors is biased away from 0 by the noise; it is reported beside it.
        errors = [ratio(m, float(v)) - 1.0 for m, v in zip(measured, predicted[LYAPUNOV], strict=True)]
        se = math.hypot(*(e.se for e in errors)) / len(errors)
        mean, worst = (
            Estimate(float(np.mean([e.value for e in errors])), se),
            max(errors, key=lambda e: abs(e.value)),
        )
        entry["variance_errors"] = {"mean": mean.to_dict(), "largest": worst.to_dict()}
        checks_d.append(Check(f"{label}: mean error of E x_i²", mean, None, InRange(-TOLERANCE, TOLERANCE)))
        lines_d.append(f"- {label}: mean error {mean}, largest {worst} over {len(errors)} coordinates.")
    ctx.result.add_checks("(a) asymptotic loss", checks_a)
    ctx.result.add_checks("(d) stationary variance", checks_d)
    factors = ", ".join(f"β₁ = {b:g}: θ/ρ₁ = {theta * lr / (1 - b):.2g}" for b in ctx["sweep_beta1"])
    say()
    say(
        "- With θ > 0 the loss stops growing with σ: E x² → η/(2θ) per coordinate, eq. (6)'s bounded "
        "asymptote (loose: it uses L/μ).  With decay, momentum lowers E x² by about 1/(1 + θ/ρ₁), "
        f"ρ₁ = (1 − β₁)/η ({factors}): the discrete Lyapunov form includes it, the paper-style one does not."
    )
    say("- (d) E x_i² of every coordinate against discrete Lyapunov (measured/predicted − 1):")
    ctx.result.report.extend(lines_d)
    say()
    return out


def _scaling(ctx: Context) -> dict[str, dict[str, Any]]:
    """Panel (b): original, rescaled (R) and not-rescaled-θ (NR) runs, paired by common random numbers."""
    say, h, lr = ctx.result.say, np.asarray(ctx["scaling_hessian"]), ctx["scaling_lr"]
    batch, delta, sigma = ctx["scaling_batch_size"], ctx["delta"], ctx["scaling_sigma"]
    say(
        f"## (b) Scaling rule, δ = {delta:g} (η = {lr:g}, β = {ctx['beta1']:g}, {ctx['beta2']:g}, "
        f"σ = {sigma:g}, "
        f"h = {list(h)})"
    )
    say()
    say(
        "R: batch δB with η, β₁, β₂, θ rescaled by the paper's rule (docs/theory.md §6); NR: the same but θ "
        "left as it was.  The three runs of a row share their noise draws, so their ratios are measured "
        "far more precisely than the levels (paired SEs).  Predicted: discrete Lyapunov, paper-style."
    )
    say()
    say(_row("run", "measured E f (original)", "R / original", "NR / original"))
    say("|---" * 4 + "|")
    out: dict[str, dict[str, Any]] = {}
    checks: list[Check] = []
    for name in ctx["scaling_optimizers"]:
        spec = _spec(name, "scaling_optimizers")
        for theta in ctx["scaling_weight_decays"]:
            hp = Hyperparameters(lr, ctx["beta1"], ctx["beta2"], ctx["eps"], theta)
            rescaled, key, big = (
                spec.rescale(hp, delta, "paper"),
                f"{spec.name} θ={theta:g}",
                round(delta * batch),
            )
            runs = {
                "original": (hp, batch),
                "R": (rescaled, big),
                "NR": (rescaled.with_(weight_decay=theta), big),
            }
            entry: dict[str, Any] = {}
            per_path = {}
            for variant, (vhp, vbatch) in runs.items():
                oracle = NoisyProblem(
                    Quadratic(ctx.tensor(h)), GaussianNoise(len(h), sigma, batch_size=vbatch)
                )
                rec = _run(
                    ctx, spec, oracle, vhp, ctx["scaling_x0"], ctx["scaling_steps"], f"b-{key}-{variant}", key
                )
                s = np.full(len(h), sigma / math.sqrt(vbatch))
                levels = {n: stationary_loss(h, v) for n, v in _predicted(spec, h, s, vhp).items()}
                entry[variant] = {
                    "hp": vars(vhp),
                    "batch_size": vbatch,
                    "predicted": levels,
                    "recording": rec,
                }
                if rec.divergence is None:
                    per_path[variant] = 0.5 * _path_averages(rec, ctx["burn_in"]) @ h
                    entry[variant]["loss"] = mean_of(per_path[variant]).to_dict()
            out[key] = entry
            cells = []
            for variant in ("R", "NR"):
                if variant not in per_path or "original" not in per_path:
                    cells.append("diverged")
                    continue
                measured = paired_ratio(per_path[variant], per_path["original"])
                predicted = {
                    n: entry[variant]["predicted"][n] / entry["original"]["predicted"][n] for n in PREDICTIONS
                }
                entry[f"{variant}_over_original"] = {
                    "measured": measured.value,
                    "se": measured.se,
                } | predicted
                cells.append(f"{measured} (predicted {' and '.join(f'{v:.3f}' for v in predicted.values())})")
                checks.append(
                    Check(
                        f"{key}: R / original", measured, 1.0, Within(TOLERANCE), "the paper's rule keeps E f"
                    )
                    if variant == "R"
                    else Check(
                        f"{key}: NR / original",
                        measured,
                        predicted[LYAPUNOV],
                        Within(TOLERANCE),
                        "θ unscaled",
                    )
                )
            original = entry["original"].get("loss")
            say(_row(key, Estimate(**original) if original else "diverged", *cells))
    say()
    ctx.result.add_checks("(b) scaling rule", checks)
    return out


def _basins(ctx: Context) -> dict[str, dict[str, Any]]:
    """Panel (c): θ = 0 on the embedded saddle over the (β₁, β₂) grid: well, settling time, level."""
    say, quad, sigma = ctx.result.say, np.asarray(ctx["basin_hessian"]), ctx["basin_sigma"]
    oracle = NoisyProblem(
        EmbeddedSaddle(ctx.tensor(quad), wells=1), GaussianNoise(len(quad) + 1, scale=sigma)
    )
    # Around either minimum (well coordinate ±1, curvature 2) the saddle is a quadratic.
    h_min, s = np.append(quad, 2.0), np.full(len(quad) + 1, sigma)
    spec = _spec(ctx["basin_optimizer"], "basin_optimizer")
    say(
        f"## (c) β₁, β₂ and the basin ({spec.capabilities.style['label']}, θ = 0, η = {ctx['basin_lr']:g}, "
        f"σ = {sigma:g}, x₀ = {tuple(ctx['basin_x0'])} on the embedded saddle)"
    )
    say()
    say(
        _row("β₁, β₂", "share in the x > 0 well", "settling time", "loss in the well", "vs discrete Lyapunov")
    )
    say("|---" * 5 + "|")
    out: dict[str, dict[str, Any]] = {}
    checks: list[Check] = []
    for beta1, beta2 in itertools.product(ctx["basin_beta1"], ctx["basin_beta2"]):
        hp, label = Hyperparameters(ctx["basin_lr"], beta1, beta2, ctx["eps"]), f"β₁={beta1:g}, β₂={beta2:g}"
        rec = _run(ctx, spec, oracle, hp, ctx["basin_x0"], ctx["basin_steps"], f"c-{label}")
        predicted = {n: stationary_loss(h_min, v) for n, v in _predicted(spec, h_min, s, hp).items()}
        entry = out[label] = {"hp": vars(hp), "predicted": predicted, "recording": rec}
        if rec.divergence is not None:
            say(_row(label, f"diverged: {rec.divergence.describe(label)}", "", "", ""))
            continue
        well = rec.values["x"][:, :, -1]  # (T, P)
        target = np.sign(well[-1])
        away = np.abs(well - target) > WELL_DISTANCE
        # Settled at the record after the last one spent away from the final well.
        last_away = np.where(away.any(axis=0), away.shape[0] - 1 - np.argmax(away[::-1], axis=0), -1)
        share = mean_of(target > 0)
        settle = mean_of(rec.times[np.minimum(last_away + 1, len(rec.times) - 1)])
        level = mean_of(_path_averages(rec, ctx["burn_in"], "loss"))
        entry |= {
            "share_positive_well": share.to_dict(),
            "settle_time": settle.to_dict(),
            "loss": level.to_dict(),
        }
        # The linearisation freezes v at s²; v's relative fluctuation √(2(1−β₂)/(1+β₂)) under Gaussian
        # noise is what it leaves out, so the level may be off by up to that much.
        swing = math.sqrt(2 * (1 - beta2) / (1 + beta2))
        checks.append(
            Check(f"{label}: level", level, predicted[LYAPUNOV], Within(swing), f"v swings ±{swing:.0%}")
        )
        say(_row(label, share, settle, level, _rel(level, predicted[LYAPUNOV])))
    levels = [e["loss"]["value"] for e in out.values() if "loss" in e]
    if levels:
        say()
        say(
            "- The well (share ending at x > 0) and the settling time (last exit from the final well's "
            f"±{WELL_DISTANCE:g}) change with β₁, β₂; the level inside the well spreads over only "
            f"{min(levels):.4g}–{max(levels):.4g}, around the β-independent paper-style "
            f"{next(iter(out.values()))['predicted'][PAPER]:.4g}."
        )
    say()
    ctx.result.add_checks("(c) basins", checks)
    return out


def _sweep_figures(sweep: dict[str, dict[str, Any]]) -> tuple[Figure, Figure]:
    """(a) E f vs σ; (d) E x_i² per h vs σ and the error per coordinate vs κ.  Each configuration has
    its own marker, line style and σ offset (its family's colour), so none hides another; the
    paper-style formula and the eq. (6) bound are the same for all and drawn once."""
    fig_a, ax = plt.subplots(figsize=(6.5, 4.5))
    fig_d, (ax_var, ax_err) = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = {k: e for k, e in sweep.items() if "per_sigma" in e}
    for i, (label, entry) in enumerate(drawn.items()):
        style = series_style(i, get_optimizer(entry["optimizer"]).capabilities.style["color"])
        shift, rows, coords = dodge(i, len(drawn)), entry["per_sigma"], entry["coordinates"]
        sig = np.array([r["sigma"] for r in rows])
        ax.plot(sig, [r[LYAPUNOV] for r in rows], **style, ms=0, lw=1.2)
        errorbars(ax, sig * shift, [Estimate(r["loss"], r["loss_se"]) for r in rows], **style)
        legend_entry(ax, f"{label}: measured, discrete Lyapunov", **style)
        legend_entry(ax_var, label, **style)
        for h in sorted({c["h"] for c in coords}):
            sel = [c for c in coords if c["h"] == h]
            sig_h = np.array([c["sigma"] for c in sel])
            errorbars(
                ax_var, sig_h * shift, [Estimate(c["measured"], c["measured_se"]) for c in sel], **style, ms=4
            )
            ax_var.plot(sig_h, [c[LYAPUNOV] for c in sel], **style, ms=0, lw=0.8)
            if i == 0:
                ax_var.plot(sig_h, [c[PAPER] for c in sel], color="gray", ls="--", lw=0.8)
                label_curves(ax_var, [(f"h = {h:g}", sig_h, np.array([c[LYAPUNOV] for c in sel]))], index=0)
        kappa, values = np.array([c["kappa"] for c in coords]), np.array([c["measured"] for c in coords])
        for name, fill, nudge in ((LYAPUNOV, style["color"], 1.0), (PAPER, "none", 1.04)):
            predicted = np.array([c[name] for c in coords])
            errors = [
                Estimate(v / p - 1, c["measured_se"] / p)
                for v, p, c in zip(values, predicted, coords, strict=True)
            ]
            errorbars(
                ax_err, kappa * nudge, errors, **{**style, "mfc": fill}, ms=5, label=f"{label} vs {name}"
            )
    if drawn:
        rows = next(iter(drawn.values()))["per_sigma"]
        sig = np.array([r["sigma"] for r in rows])
        ax.plot(sig, [r[PAPER] for r in rows], color="gray", ls="--", label="paper-style (all)")
        ax.plot(sig, [r["eq6_bound"] for r in rows], "k:", label="eq. (6) bound")
        legend_entry(ax_var, "paper-style (all)", color="gray", ls="--")
    for a in (ax, ax_var):
        a.set(xscale="log", yscale="log", xlabel="σ (noise scale, B = 1)")
        a.legend(fontsize=7)
    ax.set(ylabel="asymptotic E f", title="(a) asymptotic loss vs prediction")
    ax_var.set(
        ylabel="stationary E x_i²", title="(d) stationary variance per h: markers measured, lines predicted"
    )
    ax_var.margins(x=0.15)  # room for the h labels left of the curves
    ax_err.axhline(0, color="gray", lw=0.8)
    ax_err.set(xscale="log", xlabel="κ_i = η h_i / s_i", ylabel="measured / predicted − 1")
    ax_err.set_title("(d) relative error per coordinate (filled: discrete Lyapunov, open: paper-style)")
    ax_err.legend(fontsize=6)
    for a in (ax_var, ax_err):
        a.title.set_fontsize(9)
    fig_a.tight_layout()
    fig_d.tight_layout()
    return fig_a, fig_d


def _scaling_figure(scaling: dict[str, dict[str, Any]], delta: float) -> Figure:
    """(b) E f over steps of the original, R and NR runs, with each run's predicted levels."""
    columns = max(1, len(scaling) // 2)
    fig, axes = plt.subplots(2, columns, figsize=(5.5 * columns, 7.5), squeeze=False)
    for ax, (key, entry) in zip(axes.T.ravel(), scaling.items(), strict=False):
        for variant, style in VARIANT_STYLE.items():
            rec: Recording = entry[variant]["recording"]
            ax.plot(
                rec.steps, rec.mean("loss"), label=f"{variant} (B = {entry[variant]['batch_size']})", **style
            )
            reference_line(ax, entry[variant]["predicted"][LYAPUNOV], color=style["color"])
            reference_line(ax, entry[variant]["predicted"][PAPER], color=style["color"], ls=(0, (1, 3)))
        legend_entry(ax, "discrete Lyapunov level", color="gray", lw=0.8)
        legend_entry(ax, "paper-style level", color="gray", lw=0.8, ls=(0, (1, 3)))
        levels = [entry[v]["predicted"][LYAPUNOV] for v in VARIANT_STYLE]
        ax.set(yscale="log", xlabel="step k", ylabel="E f", title=f"{key}: δ = {delta:g}")
        ax.set_ylim(0.5 * min(levels), 10 * max(levels))  # zoom on the levels; the start is off the top
        ax.legend(fontsize=7)
    fig.suptitle("(b) scaling rule B → δB: R rescales η, β, θ by the paper's rule; NR leaves θ", fontsize=10)
    fig.tight_layout()
    return fig


def _basin_figure(basins: dict[str, dict[str, Any]]) -> Figure:
    """(c) E f with the predicted level in the well, and the double-well coordinate: mean and 4 paths."""
    fig, (ax_loss, ax_well) = plt.subplots(1, 2, figsize=(12, 4.3))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (label, entry) in zip(colors, basins.items(), strict=False):
        rec: Recording = entry["recording"]
        ax_loss.plot(rec.times, rec.mean("loss"), color=color, label=label)
        reference_line(ax_loss, entry["predicted"][LYAPUNOV], color=color, ls="--")
        ax_well.plot(rec.times, rec.mean("x")[:, -1], color=color, lw=2, label=label)
        ax_well.plot(rec.times, rec.snapshots[:, :, -1], color=color, lw=0.5, alpha=0.4)
    legend_entry(ax_loss, "predicted level in the well (discrete Lyapunov)", color="gray", lw=0.8, ls="--")
    legend_entry(ax_well, "4 paths each", color="gray", lw=0.5)
    ax_loss.set(yscale="log", xlabel="t = k η", ylabel="E f", title="(c) on the embedded saddle: loss")
    ax_well.set(
        xlabel="t = k η", ylabel="double-well coordinate x[-1]", title="(c) which well: β₁, β₂ decide"
    )
    for a in (ax_loss, ax_well):
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _without_recordings(section: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        return (
            {k: clean(v) for k, v in value.items() if k != "recording"} if isinstance(value, dict) else value
        )

    return clean(section)


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
    result.say(
        f"All runs: the discrete optimizers, {ctx['paths']} paths each, Gaussian noise; stationary values "
        f"are per-path time averages over the last {1 - ctx['burn_in']:.0%} of each run, ± one standard "
        "error over paths.  κ = η·max h/s (docs/theory.md §3)."
    )
    result.say()
    sweep = _sweep(ctx)
    result.summary["a_d_sweep"] = sweep
    result.figures["fig5a_asymptotic_loss"], result.figures["fig5d_stationary_variance"] = _sweep_figures(
        sweep
    )
    scaling = _scaling(ctx)
    result.summary["b_scaling"] = _without_recordings(scaling)
    result.figures["fig5b_scaling_rule"] = _scaling_figure(scaling, ctx["delta"])
    basins = _basins(ctx)
    result.summary["c_basins"] = _without_recordings(basins)
    result.figures["fig5c_basins"] = _basin_figure(basins)
