"""``nn-signsgd``: SignSGD against its SDE on four networks (the paper's Fig. 1, docs/theory.md §7 item 1).

An MLP on scikit-learn's breast-cancer table, and a CNN, a Transformer on patch
tokens and a ResNet on images: scikit-learn's digits by default (no download),
MNIST or CIFAR-10 with ``--set dataset=mnist`` / ``cifar10`` (through
torchvision; ``--set download=true`` fetches them).  The optimizer sees real
minibatches — an independent stream per path, from one initialisation — and the
SDE (paper Thm 3.2 in its Gaussian form, ``erf(∇f/(√2 s))``) sees the full-data
gradient and the exact per-example noise scale ``s = sqrt(diag C/B)``.
``--set noise=synthetic`` is the paper's own protocol instead: full-batch
gradient plus ``N(0, σ²I/B)``.

The helpers here (problem from parameters, one panel, the figure, the verdict)
are shared with ``nn-adaptive``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer
from optsde.problems.datasets import DATASETS
from optsde.problems.models import ARCHITECTURES
from optsde.problems.network import (
    NOISE_MODES,
    SAMPLING_MODES,
    VARIANCE_MODES,
    NetworkProblem,
    network_problem,
)
from optsde.report import fidelity_table, plot_band
from optsde.sde import Recording, loss_observable, record_steps

NAME = "nn-signsgd"

TABLE_DATASET = "breast-cancer"
"""The MLP's data set; the other architectures take ``dataset`` (images)."""

PAPER_DATASETS = {"mlp": "breast-cancer", "cnn": "MNIST", "transformer": "MNIST", "resnet": "CIFAR-10"}

NETWORK_DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "data_dir": "",
    "download": False,
    "train_size": 256,
    "table_size": 569,
    "estimation_size": 0,
    "width": 0,
    "batch_size": 64,
    "noise": "minibatch",
    "sigma": 0.1,
    "variance": "per-example",
    "projections": 1,
    "sampling": "without-replacement",
    "records": 60,
    "substeps": 1,
    "burn_in": 0.5,
    "gap_target": 0.1,
}
"""Shared by both network experiments.  ``train_size``: examples of the image set;
``table_size``: rows of the breast-cancer table (all 569 by default); ``estimation_size``
0: the SDE's ∇f and C on the whole training subset; ``width`` 0: each model's quick size;
``gap_target``: the time-averaged relative gap of E f called "tracked"."""

DEFAULTS: dict[str, Any] = {
    **NETWORK_DEFAULTS,
    "models": list(ARCHITECTURES),
    "lr": 0.001,
    "steps": 300,
    "paths": 8,
    "check_points": 6,
    "check_samples": 256,
}
"""``check_points`` / ``check_samples``: where along the optimizer's first path, and with how
many real minibatches, the Gaussian form's ``E sign`` is checked (0 points: no check)."""

QUICK: dict[str, Any] = {
    "models": ["mlp"],
    "steps": 150,
    "records": 30,
}

PRIMARY_SDE = {
    "signsgd": "sde-paper",
    "rmspropw": "sde-paper",
    "rmsprop": "sde-paper",
    "adamw": "sde-refined",
}
"""The SDE each optimizer is judged against: the paper's, the refined one for AdamW."""


# ---------------------------------------------------------------- shared helpers


def check_network_params(params: Mapping[str, Any]) -> None:
    """Refuse unusable settings before anything runs, each with the fix."""
    models = params["models"]
    if not models:
        raise ExperimentError(f"--set models=…: name at least one of {', '.join(ARCHITECTURES)}")
    for arch in models:
        if arch not in ARCHITECTURES:
            raise ExperimentError(
                f"--set models: unknown model {arch!r}; choose from {', '.join(ARCHITECTURES)}"
            )
    if params["dataset"] not in DATASETS:
        raise ExperimentError(f"--set dataset={params['dataset']}: choose one of {', '.join(DATASETS)}")
    if params["dataset"] == TABLE_DATASET and any(a != "mlp" for a in models):
        raise ExperimentError(
            "--set dataset=breast-cancer is a table; the image models need digits, mnist or cifar10"
        )
    if params["dataset"] in ("mnist", "cifar10") and all(a == "mlp" for a in models):
        raise ExperimentError(
            f"--set dataset={params['dataset']} is for the image models, and only the MLP "
            "(on breast-cancer) would run; add e.g. --set models=cnn,transformer"
        )
    checks = [
        (params["noise"] in NOISE_MODES, f"noise: choose {' or '.join(NOISE_MODES)}"),
        (params["variance"] in VARIANCE_MODES, f"variance: choose {' or '.join(VARIANCE_MODES)}"),
        (params["sampling"] in SAMPLING_MODES, f"sampling: choose {' or '.join(SAMPLING_MODES)}"),
        (params["paths"] >= 2, "paths: at least 2, for standard errors"),
        (params["steps"] >= 1, "steps: a positive integer"),
        (params["records"] >= 2, "records: at least 2"),
        (params["train_size"] >= 1, "train_size: a positive integer"),
        (params["table_size"] >= 1, "table_size: a positive integer, at most 569"),
        (params["estimation_size"] >= 0, "estimation_size: 0 (all) or a positive integer"),
        (params["width"] >= 0, "width: 0 (the quick size) or a positive integer"),
        (params["batch_size"] >= 1, "batch_size: a positive integer"),
        (params["sigma"] >= 0, "sigma: a non-negative number"),
        (params["substeps"] >= 1, "substeps: a positive integer"),
        (params.get("check_points", 0) >= 0, "check_points: 0 (no check) or a positive integer"),
        (0.0 <= params["burn_in"] < 1.0, "burn_in: a fraction in [0, 1)"),
    ]
    for ok, fix in checks:
        if not ok:
            raise ExperimentError(f"--set {fix}")


def dataset_of(arch: str, params: Mapping[str, Any]) -> str:
    return TABLE_DATASET if arch == "mlp" else params["dataset"]


def build_problem(ctx: Context, arch: str) -> NetworkProblem:
    """The network problem of ``arch`` as the parameters describe it; the data subset and the
    estimation subset are fixed by the run's seed."""
    params = ctx.params
    dataset = dataset_of(arch, params)
    train_size = params["table_size"] if dataset == TABLE_DATASET else params["train_size"]
    return network_problem(
        arch,
        dataset,
        width=params["width"] or None,
        train_size=train_size,
        batch_size=params["batch_size"],
        estimation_size=params["estimation_size"] or None,
        noise=params["noise"],
        sigma=params["sigma"] if params["noise"] == "synthetic" else None,
        variance=params["variance"],
        projections=params["projections"],
        sampling=params["sampling"],
        data_dir=params["data_dir"] or None,
        download=params["download"],
        seed=ctx.seed,
    )


def sde_keys(spec: OptimizerSpec, wanted: Sequence[str]) -> tuple[str, ...]:
    """The SDE models of ``wanted`` that ``spec`` has (RMSprop has no refined SDE)."""
    keys = tuple(k for k in wanted if k in spec.sdes)
    if not keys:
        raise ExperimentError(f"--set sdes: {spec.name} has the SDE models {', '.join(spec.sdes)}")
    return keys


def run_panel(
    ctx: Context,
    arch: str,
    problem: NetworkProblem,
    spec: OptimizerSpec,
    hp: Hyperparameters,
    models: Sequence[str],
    label: str,
) -> tuple[dict[str, Any], Comparison]:
    """The optimizer and its SDEs on one network from one initialisation: numbers and recordings."""
    params = ctx.params
    x0 = problem.x0(ctx.seed, dtype=ctx.dtype).to(ctx.device)
    steps = params["steps"]
    started = time.perf_counter()
    kappa_profile = problem.kappa_profile(hp.lr, x0)
    comparison = compare(
        ctx,
        spec,
        problem,
        hp,
        x0,
        steps=steps,
        paths=params["paths"],
        models=models,
        substeps=params["substeps"],
        record_at=record_steps(steps, params["records"]),
        observables={"loss": loss_observable},
        label=label,
        burn_in=params["burn_in"],
        kappa=kappa_profile["max"],
    )
    entry: dict[str, Any] = {
        "model": arch,
        "optimizer": spec.name,
        "problem": problem.describe(),
        "hyperparameters": dict(hp.__dict__),
        "steps": steps,
        "wall_time_s": round(time.perf_counter() - started, 2),
        **comparison.summary(),
        "kappa_profile": kappa_profile,
    }
    for rec in comparison.recordings.values():
        ctx.result.add_recording(label, rec, ("loss",))
    return entry, comparison


def panels_figure(
    panels: Mapping[str, Mapping[str, Recording]], titles: Mapping[str, str], heading: str
) -> Figure:
    """E f over time per panel, mean and a band of ± one s.d. over paths (the paper's style)."""
    count = len(panels)
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, (label, recordings) in zip(axes.flat, panels.items(), strict=False):
        for rec in recordings.values():
            if len(rec.steps):
                plot_band(ax, rec, "loss")
        limit_to_optimizer(ax, recordings)
        ax.set_title(titles[label], fontsize=9)
        ax.set_xlabel("t = k η", fontsize=8)
        ax.set_ylabel("f(x)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return fig


def limit_to_optimizer(ax: Axes, recordings: Mapping[str, Recording]) -> None:
    """Keep the optimizer's range in view: an SDE that blows up (the prior ones can) leaves
    the panel instead of flattening every other curve; its numbers are in the table."""
    optimizer = recordings.get("optimizer")
    if optimizer is None or len(optimizer.steps) == 0:
        return
    values = optimizer.values["loss"]
    top = float((values.mean(axis=1) + values.std(axis=1)).max())
    bottom = float((values.mean(axis=1) - values.std(axis=1)).min())
    for rec in recordings.values():
        if len(rec.steps):
            bottom = min(bottom, float(np.nanmin(rec.mean("loss"))))
    span = max(top - bottom, 1e-12)
    lower = bottom - 0.05 * span
    ax.set_ylim(max(lower, 0.0) if bottom >= 0 else lower, top + 0.15 * span)


def describe_problem(entry: Mapping[str, Any]) -> str:
    p = entry["problem"]
    noise = (
        f"synthetic noise N(0, σ²I/B), σ = {p['sigma']:g}"
        if p["noise"] == "synthetic"
        else f"minibatch noise ({p['sampling']}), diag C {p['variance']}"
        + (f" ({p['projections']} projection(s))" if p["variance"] == "projection" else "")
    )
    return (
        f"{p['model']} ({p['parameters']} parameters) on {p['dataset']}: {p['train_size']} training "
        f"examples, ∇f and C on {p['estimation_size']}, B = {p['batch_size']}, {noise}"
    )


def verdict(entry: Mapping[str, Any], target: float) -> str:
    """One line: is the optimizer tracked by its primary SDE (time-averaged gap below target)?"""
    primary = PRIMARY_SDE.get(entry["optimizer"], "sde-paper")
    numbers = entry["fidelity"].get(primary)
    name = f"{entry['optimizer']} on {entry['model']}"
    if numbers is None:
        return f"- {name}: {primary} was not run."
    if "diverged" in numbers:
        return f"- **{name}: {numbers['diverged']} diverged at step {numbers['diverged_step']}.**"
    gap, se = numbers["mean_rel_gap"], numbers["mean_rel_gap_se"]
    tracked = "tracked" if gap < target else "NOT tracked"
    profile = entry.get("kappa_profile") or {}
    kappa_text = f", median κ ≈ {profile['median']:.2g}" if "median" in profile else ""
    return (
        f"- {name}: {tracked} by {primary} — time-averaged relative gap of E f {gap:.1%} ± {se:.1%} "
        f"(target < {target:.0%}), maximum {numbers['max_rel_gap']:.1%} ± {numbers['max_rel_gap_se']:.1%}"
        f"{kappa_text}."
    )


def report_panels(ctx: Context, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """The verdicts, then per panel the setting, κ and the fidelity table."""
    say = ctx.result.say
    target = ctx.params["gap_target"]
    say("## Verdict")
    say("")
    for entry in entries.values():
        say(verdict(entry, target))
    divergences = [line for entry in entries.values() for line in entry["divergences"]]
    if divergences:
        say("")
        say("## Divergences (the other methods finished)")
        say("")
        for line in divergences:
            say(f"- **{line}**")
    for label, entry in entries.items():
        say("")
        say(f"## {label}")
        say("")
        say(describe_problem(entry) + ".")
        hp = entry["hyperparameters"]
        say(
            f"η = {hp['lr']:g}, {entry['steps']} steps (t = {entry['steps'] * hp['lr']:g}), "
            f"{entry['paths']['optimizer']} paths; wall time {entry['wall_time_s']:g} s."
        )
        profile = entry.get("kappa_profile")
        if profile is not None:
            say(
                f"κ = η·|h_i|/s_i at the start: median {profile['median']:.2g}, 99th percentile "
                f"{profile['q99']:.2g}, maximum {profile['max']:.2g} (docs/theory.md §3's κ is the "
                f"maximum; the SDE "
                "picture needs κ ≲ 0.1. A network has coordinates whose noise all but vanishes, which "
                "make the maximum large; h is Hutchinson's estimate of the Hessian diagonal, so these are "
                "estimates)."
            )
        say("")
        ctx.result.report.extend(fidelity_table(entry["fidelity"]))


def hyperparameters(params: Mapping[str, Any], spec: OptimizerSpec) -> Hyperparameters:
    """One record for ``spec`` from the parameters; θ only where the optimizer has decoupled decay."""
    hp = Hyperparameters(
        lr=params["lr"],
        beta1=params.get("beta1", 0.9),
        beta2=params.get("beta2", 0.999),
        eps=params.get("eps", 1e-8),
        weight_decay=params.get("weight_decay", 0.0) if spec.decoupled_decay else 0.0,
    )
    spec.check(hp)
    return hp


def gaussian_check(
    ctx: Context, problem: NetworkProblem, optimizer: Recording, label: str
) -> list[dict[str, float]]:
    """Is the noise Gaussian enough for the SDE's drift?  At ``check_points`` record times
    along the optimizer's first path: the descent rate ``∇f · E sign ∇f_γ`` under the real
    minibatch noise (a Monte Carlo mean over ``check_samples`` minibatches, with its standard
    error) against the Gaussian form's ``∇f · erf(∇f/(√2 s))``, which drives the SDE.

    A ratio below 1 means SignSGD descends more slowly than its SDE at that point.
    """
    params = ctx.params
    points, samples = params["check_points"], params["check_samples"]
    if points < 1 or samples < 2 or len(optimizer.steps) == 0:
        return []
    generator = ctx.generator(label, "gaussian-check")
    rows = []
    for index in np.unique(np.linspace(0, len(optimizer.steps) - 1, points).round().astype(int)):
        x = torch.as_tensor(optimizer.snapshots[index, 0], dtype=ctx.dtype, device=ctx.device)
        with torch.no_grad():
            gradient = problem.grad(x[None])[0]
            predicted = float(gradient @ problem.expected_sign(x[None])[0])
            rates = problem.sampled_signs(x, samples, generator) @ gradient  # (samples,)
        real, real_se = float(rates.mean()), float(rates.std()) / math.sqrt(samples)
        rows.append(
            {
                "t": float(optimizer.times[index]),
                "rate_real": real,
                "rate_real_se": real_se,
                "rate_gaussian": predicted,
                "ratio": real / predicted if predicted else math.nan,
                "ratio_se": real_se / abs(predicted) if predicted else math.nan,
            }
        )
    ctx.result.add_series(
        label,
        "gaussian-check",
        np.array([r["t"] for r in rows]),
        "descent_rate_ratio",
        np.array([r["ratio"] for r in rows]),
        np.array([r["ratio_se"] for r in rows]),
    )
    return rows


def gaussian_check_figure(checks: Mapping[str, list[dict[str, float]]]) -> Figure:
    """Descent-rate ratio (real noise / Gaussian form) along each optimizer run."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, rows in checks.items():
        if rows:
            t = [r["t"] for r in rows]
            ax.errorbar(
                t,
                [r["ratio"] for r in rows],
                yerr=[r["ratio_se"] for r in rows],
                fmt="o-",
                ms=4,
                capsize=2,
                label=label,
            )
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set_xlabel("t = k η (optimizer's first path)")
    ax.set_ylabel("∇f·E sign (real minibatches)\n/ ∇f·erf(∇f/(√2 s))")
    ax.set_title("Is the minibatch noise Gaussian enough for SignSGD's SDE?", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def gaussian_check_lines(checks: Mapping[str, list[dict[str, float]]], samples: int) -> list[str]:
    lines = [
        "## Is the noise Gaussian enough? (paper Thm 3.2 vs its Gaussian form)",
        "",
        "The SDE's drift is erf(∇f/(√2 s)), exact for Gaussian gradient noise. Along the optimizer's first "
        f"path, E sign of the real minibatch gradient (a mean over {samples} minibatches) gives the descent "
        "rate ∇f·E sign that SignSGD actually has; the ratio to the Gaussian form's rate says how much "
        "slower (< 1) or faster (> 1) SignSGD descends than its SDE at that point. Minibatch gradients "
        "whose per-example terms are skewed or concentrated on few examples (well-fitted data under "
        "cross-entropy) push E sign towards the sign of the median rather than of the mean.",
        "",
        "| panel | t | ∇f·E sign (real) | ∇f·erf (Gaussian) | ratio |",
        "|---|---|---|---|---|",
    ]
    for label, rows in checks.items():
        for r in rows:
            lines.append(
                f"| {label} | {r['t']:.3g} | {r['rate_real']:.4g} ± {r['rate_real_se']:.2g} "
                f"| {r['rate_gaussian']:.4g} | {r['ratio']:.3f} ± {r['ratio_se']:.3f} |"
            )
    return lines


# ---------------------------------------------------------------- this experiment


@experiment(
    NAME,
    "SignSGD vs its SDE on an MLP, a CNN, a Transformer and a ResNet with real minibatch noise (Fig. 1)",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    params = ctx.params
    check_network_params(params)
    spec = get_optimizer("signsgd")
    hp = hyperparameters(params, spec)
    problems = {arch: build_problem(ctx, arch) for arch in params["models"]}  # bad data: fail before running

    entries: dict[str, dict[str, Any]] = {}
    panels: dict[str, dict[str, Recording]] = {}
    titles: dict[str, str] = {}
    checks: dict[str, list[dict[str, float]]] = {}
    result = ctx.result
    result.summary.update({"panels": entries, "divergences": []})
    for arch, problem in problems.items():
        label = f"{arch} on {dataset_of(arch, params)}"
        entry, comparison = run_panel(ctx, arch, problem, spec, hp, ("paper",), label)
        checks[label] = entry["gaussian_check"] = gaussian_check(
            ctx, problem, comparison.recordings["optimizer"], label
        )
        entries[label] = entry
        panels[label] = comparison.recordings
        titles[label] = f"{arch} on {dataset_of(arch, params)} (paper: {PAPER_DATASETS[arch]})"
        result.summary["divergences"] += [f"{label}: {line}" for line in comparison.divergences()]

    result.figures["loss"] = panels_figure(
        panels, titles, f"SignSGD (η = {hp.lr:g}) and its SDE: E f ± one s.d. over paths"
    )
    result.say(
        "SignSGD with real minibatches (an independent stream per path) against its SDE "
        "dX = −erf(∇f/(√2 s)) dt + √η sqrt(I − diag(erf(∇f/(√2 s)))²) dW (paper Thm 3.2, Gaussian form), "
        "with ∇f and s² = diag C/B computed on the estimation set; same initialisation for every path."
    )
    result.say("")
    report_panels(ctx, entries)
    if any(checks.values()):
        result.figures["gaussian_check"] = gaussian_check_figure(checks)
        result.say("")
        result.report.extend(gaussian_check_lines(checks, params["check_samples"]))
