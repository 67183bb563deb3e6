"""``nn-signsgd``: SignSGD against its SDE on four networks (the paper's Fig. 1, docs/theory.md §7 item 1).

An MLP on scikit-learn's breast-cancer table, and a CNN, a Transformer on patch tokens and a
ResNet on images: scikit-learn's digits by default (no download), MNIST or CIFAR-10 with
``--set dataset=mnist`` / ``cifar10`` (``--set download=true`` fetches them).  The optimizer
sees real minibatches, an independent stream per path, from one initialisation.  Two SDEs
(paper Thm 3.2, docs/networks.md): the Gaussian form ``erf(∇f/(√2 s))`` from the full-data
gradient and the exact per-example noise scale ``s = sqrt(diag C/B)``, and the general form,
whose drift ``E sign ∇f_γ`` and diagonal diffusion come from the signs of ``sign_samples`` real
minibatch gradients at the current parameters.  ``--set noise=synthetic`` is the paper's own
protocol instead: full-batch gradient plus ``N(0, σ²I/B)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from optsde.experiments.base import Context, experiment
from optsde.experiments.network_panels import (
    NETWORK_DEFAULTS,
    PAPER_DATASETS,
    build_problem,
    check_network_params,
    dataset_of,
    hyperparameters,
    report_panels,
    run_panel,
    sde_keys,
)
from optsde.figures import panels_figure
from optsde.noise import gaussian_sign_mean
from optsde.optimizers import get_optimizer
from optsde.problems.network import NetworkProblem
from optsde.sde import Recording

NAME = "nn-signsgd"

DEFAULTS: dict[str, Any] = {
    **NETWORK_DEFAULTS,
    "models": ["mlp", "cnn", "transformer", "resnet"],
    "sdes": ["gaussian", "general"],
    "sign_samples": 32,
    "lr": 0.001,
    "steps": 300,
    "paths": 8,
    "check_points": 6,
    "check_samples": 256,
}
"""``sdes``: SignSGD's SDE models to run (``gaussian``: Thm 3.2's Gaussian form; ``general``: its
general form with ``E sign`` from ``sign_samples`` real minibatch signs per path and step); the
verdict names the last of them.
``check_points`` / ``check_samples``: where along the optimizer's first path, and with how many real
minibatches, ``E sign`` of the real noise is compared with the Gaussian form's."""

QUICK: dict[str, Any] = {"models": ["mlp"], "steps": 150, "records": 30}


def gaussian_check(
    ctx: Context, problem: NetworkProblem, optimizer: Recording, label: str
) -> list[dict[str, float]]:
    """Is the noise Gaussian enough for the Gaussian form's drift?  At ``check_points`` record times
    along the optimizer's first path: the descent rate ``∇f · E sign ∇f_γ`` under the real
    minibatch noise (a mean over ``check_samples`` minibatches, with its SE) against the Gaussian
    form's ``∇f · erf(∇f/(√2 s))``; and the relative SE of the same rate from the ``sign_samples``
    signs the general SDE draws per step (its drift estimate's SE)."""
    params = ctx.params
    points, samples = params["check_points"], params["check_samples"]
    if samples < 2 or len(optimizer.steps) == 0:
        return []
    generator = ctx.generator(label, "gaussian-check")
    rows = []
    for index in np.unique(np.linspace(0, len(optimizer.steps) - 1, points).round().astype(int)):
        x = torch.as_tensor(optimizer.snapshots[index, 0], dtype=ctx.dtype, device=ctx.device)
        with torch.no_grad():
            gradient = problem.grad(x[None])[0]
            gaussian = gaussian_sign_mean(gradient, problem.noise_scale(x[None])[0])
            predicted = float(gradient @ gaussian)
            rates = problem.sampled_signs(x, samples, generator) @ gradient  # (samples,)
        real, spread = float(rates.mean()), float(rates.std())
        rows.append(
            {
                "t": float(optimizer.times[index]),
                "rate_real": real,
                "rate_real_se": spread / math.sqrt(samples),
                "rate_gaussian": predicted,
                "ratio": real / predicted if predicted else math.nan,
                "ratio_se": spread / math.sqrt(samples) / abs(predicted) if predicted else math.nan,
                "general_drift_rel_se": spread / math.sqrt(params["sign_samples"]) / abs(real)
                if real
                else math.nan,
            }
        )
    t = np.array([r["t"] for r in rows])
    ratio, ratio_se = (np.array([r[key] for r in rows]) for key in ("ratio", "ratio_se"))
    ctx.result.add_series(label, "gaussian-check", t, "descent_rate_ratio", ratio, ratio_se)
    return rows


def gaussian_check_figure(checks: Mapping[str, list[dict[str, float]]]) -> Figure:
    """Descent-rate ratio (real noise / Gaussian form) along each optimizer run."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, rows in checks.items():
        if rows:
            ax.errorbar(
                [r["t"] for r in rows],
                [r["ratio"] for r in rows],
                yerr=[r["ratio_se"] for r in rows],
                fmt="o-",
                ms=4,
                capsize=2,
                label=label,
            )
    ax.axhline(1.0, color="black", lw=0.6, label="Gaussian noise (exact)")
    ax.set_xlabel("t = k η (optimizer's first path)")
    ax.set_ylabel("∇f·E sign (real minibatches)\n/ ∇f·erf(∇f/(√2 s))")
    ax.set_title("Is the minibatch noise Gaussian enough for the Gaussian form?", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def gaussian_check_lines(
    checks: Mapping[str, list[dict[str, float]]], params: Mapping[str, Any]
) -> list[str]:
    lines = [
        "## Is the noise Gaussian enough? (paper Thm 3.2: general form vs its Gaussian form)",
        "",
        "The Gaussian form's drift is erf(∇f/(√2 s)), exact for Gaussian gradient noise. Along the "
        "optimizer's first path, E sign of the real minibatch gradient (a mean over "
        f"{params['check_samples']} minibatches) gives the descent rate ∇f·E sign that SignSGD actually "
        "has; the ratio to the Gaussian form's says how much slower (< 1) or faster (> 1) SignSGD "
        "descends than that SDE. Per-example "
        "gradients that are skewed or concentrated on few examples (well-fitted data under cross-entropy) "
        "push E sign towards the sign of the median rather than of the mean. The general SDE draws "
        f"{params['sign_samples']} real signs per path and step: its drift is unbiased, with the relative SE "
        "of the last column.",
        "",
        "| panel | t | ∇f·E sign (real) | ∇f·erf (Gaussian) | ratio | general drift's rel. SE |",
        "|---|---|---|---|---|---|",
    ]
    for label, rows in checks.items():
        for r in rows:
            lines.append(
                f"| {label} | {r['t']:.3g} | {r['rate_real']:.4g} ± {r['rate_real_se']:.2g} "
                f"| {r['rate_gaussian']:.4g} | {r['ratio']:.3f} ± {r['ratio_se']:.3f} "
                f"| {r['general_drift_rel_se']:.1%} |"
            )
    return lines


def comparison_line(label: str, fidelity: Mapping[str, Mapping[str, Any]]) -> str:
    """The general form against the Gaussian form on one panel, in numbers."""
    parts = []
    for method in ("sde-general", "sde-gaussian"):
        numbers = fidelity.get(method, {})
        if "mean_rel_gap" in numbers and numbers.get("departure_step") is None:
            parts.append(f"{method} {numbers['mean_rel_gap']:.1%} ± {numbers['mean_rel_gap_se']:.1%}")
        elif numbers:
            parts.append(f"{method} not tracked")
    return f"- {label}: time-averaged gap of E f to SignSGD: " + ", ".join(parts) + "."


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
    keys = sde_keys(spec, params["sdes"])
    problems = {  # bad data: fail before running
        arch: build_problem(ctx, arch, params["sign_samples"]) for arch in params["models"]
    }
    entries: dict[str, dict[str, Any]] = {}
    panels: dict[str, dict[str, Recording]] = {}
    titles: dict[str, str] = {}
    checks: dict[str, list[dict[str, float]]] = {}
    result = ctx.result
    result.summary.update({"panels": entries, "divergences": []})
    for arch, problem in problems.items():
        label = f"{arch} on {dataset_of(arch, params)}"
        entry, comparison = run_panel(ctx, arch, problem, spec, hp, keys, label)
        checks[label] = entry["gaussian_check"] = gaussian_check(
            ctx, problem, comparison.recordings["optimizer"], label
        )
        entries[label], panels[label] = entry, comparison.recordings
        titles[label] = f"{label} (paper: {PAPER_DATASETS[arch]})"
        result.summary["divergences"] += [f"{label}: {line}" for line in comparison.divergences()]

    result.figures["loss"] = panels_figure(
        panels, titles, f"SignSGD (η = {hp.lr:g}) and its SDEs: E f ± one s.d. over paths"
    )
    result.say(
        "SignSGD with real minibatches (an independent stream per path) against its SDE "
        "dX = −E sign ∇f_γ dt + √η sqrt(I − diag(E sign ∇f_γ)²) dW (paper Thm 3.2) from one "
        "initialisation, in two forms: sde-gaussian, E sign = erf(∇f/(√2 s)) with ∇f and s² = diag C/B on "
        f"the estimation set; sde-general, E sign the mean sign of {params['sign_samples']} real minibatch "
        "gradients per path and step (unbiased; the diffusion's variance 1 − (E sign)² is then low by the "
        f"factor 1 − 1/K = {1 - 1 / params['sign_samples']:.3f})."
    )
    result.say("")
    judged = {label: spec.sdes[keys[-1]].name for label in entries}
    report_panels(ctx, entries, judged)
    if len(keys) > 1:
        result.say("")
        result.say("## General form against Gaussian form")
        result.say("")
        for label, entry in entries.items():
            result.say(comparison_line(label, entry["fidelity"]))
    if any(checks.values()):
        result.figures["gaussian_check"] = gaussian_check_figure(checks)
        result.say("")
        result.report.extend(gaussian_check_lines(checks, params))
