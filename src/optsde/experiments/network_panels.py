"""Panels of an optimizer and its SDEs on a network, shared by ``nn-signsgd`` and ``nn-adaptive``
(docs/networks.md).

A panel is one architecture on one data set from one initialisation: the optimizer on real
minibatches (an independent stream per path) and each SDE model on the network oracle
(:class:`~optsde.problems.network.NetworkProblem`), compared by :func:`optsde.experiments.base.compare`.
Each SDE's claim to track its optimizer is a :class:`~optsde.analysis.Check` on the
time-averaged relative gap of ``E f``; a model that diverged or left the optimizer's range is
judged by its step, not by a percentage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from optsde.analysis import POLICY, SPIKE_FACTOR, AtMost, Check, Estimate, robust_fidelity
from optsde.experiments.base import Comparison, Context, ExperimentError, compare
from optsde.figures import departures
from optsde.optimizers import Hyperparameters, OptimizerSpec
from optsde.problems.datasets import DATASETS
from optsde.problems.models import ARCHITECTURES
from optsde.problems.network import (
    NOISE_MODES,
    SAMPLING_MODES,
    VARIANCE_MODES,
    NetworkProblem,
    network_problem,
)
from optsde.report import fidelity_table
from optsde.sde import Recording, Runner, SDERunner, loss_observable, record_steps
from optsde.theory.predictions import regime_statement

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
"""``train_size``: examples of the image set; ``table_size``: rows of the breast-cancer table (all
569 by default); ``estimation_size`` 0: the SDE's ∇f and C on the whole training subset;
``width`` 0: each model's quick size; ``gap_target``: the time-averaged relative gap of E f
called "tracked"."""


def check_network_params(params: Mapping[str, Any]) -> None:
    """Refuse unusable settings before anything runs, each with the fix."""
    models = params["models"]
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
        (params["records"] >= 2, "records: at least 2"),
        (params["table_size"] <= 569, "table_size: at most 569, the rows of the table"),
        (0.0 <= params["burn_in"] < 1.0, "burn_in: a fraction in [0, 1)"),
    ]
    for ok, fix in checks:
        if not ok:
            raise ExperimentError(f"--set {fix}")


def dataset_of(arch: str, params: Mapping[str, Any]) -> str:
    return TABLE_DATASET if arch == "mlp" else params["dataset"]


def build_problem(ctx: Context, arch: str, sign_samples: int = 0) -> NetworkProblem:
    """The network problem of ``arch`` as the parameters describe it; the data subset and the
    estimation subset are fixed by the run's seed.  ``sign_samples``: see :class:`NetworkProblem`."""
    params = ctx.params
    dataset = dataset_of(arch, params)
    return network_problem(
        arch,
        dataset,
        width=params["width"] or None,
        train_size=params["table_size"] if dataset == TABLE_DATASET else params["train_size"],
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
        sign_samples=sign_samples,
    )


def sde_keys(spec: OptimizerSpec, wanted: Sequence[str]) -> tuple[str, ...]:
    """The SDE models of ``wanted`` that ``spec`` has (RMSprop has no refined SDE)."""
    keys = tuple(k for k in wanted if k in spec.sdes)
    if not keys:
        raise ExperimentError(f"--set sdes: {spec.name} has the SDE models {', '.join(spec.sdes)}")
    return keys


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


@dataclass(frozen=True)
class WarmStart:
    """An SDE runner whose second moment starts at ``V₀ = v0`` instead of 0 (method name
    ``<model>-warm``): the V start as an option, docs/networks.md.  ``v0 = E g²(x₀)`` is the
    stationary value of ``dV = ρ₂((∇f)² + diag Σ − V) dt`` at fixed ``x₀``."""

    runner: SDERunner
    v0: Tensor

    @property
    def name(self) -> str:
        return f"{self.runner.name}-warm"

    @property
    def substeps(self) -> int:
        return self.runner.substeps

    @property
    def compilable(self) -> bool:
        return self.runner.compilable

    def init_state(self, x0: Tensor) -> Any:
        return self.runner.init_state(x0)._replace(v=self.v0.expand_as(x0).clone())

    def advance(self, *args: Any) -> Any:
        return self.runner.advance(*args)


def warm_starts(
    problem: NetworkProblem, spec: OptimizerSpec, keys: Sequence[str], x0: Tensor, substeps: int
) -> list[Runner]:
    """:class:`WarmStart` of each model in ``keys`` that has a second moment, from
    ``V₀ = ∇f(x₀)² + diag Σ(x₀)`` with the exact per-example ``diag C`` (once, at ``x₀``)."""
    exact = replace(problem, variance="per-example")
    v0 = (exact.grad(x0[None]) ** 2 + exact.noise_variance(x0[None]))[0]
    return [WarmStart(SDERunner(spec.sdes[k], substeps), v0) for k in keys if "v" in spec.sdes[k].order]


KAPPA_LIMIT = 0.1
"""κ above which a coordinate is outside the small-κ regime where the SDE is derived (docs/theory.md §3)."""


def kappa_by_layer(problem: NetworkProblem, lr: float, x: Tensor, samples: int = 16) -> list[dict[str, Any]]:
    """κ = η·|h_i|/s_i (docs/theory.md §3) grouped by parameter tensor, at ``x``: per tensor its
    size, its coordinates with noise (``noisy``) and over those the median, maximum and share above
    :data:`KAPPA_LIMIT`.  ``h`` is the Hutchinson estimate of :meth:`NetworkProblem.curvature` with the
    probes of :meth:`NetworkProblem.kappa_profile`, so the maxima agree with its maximum."""
    point = x.reshape(-1)
    h = problem.curvature(point, samples=samples).abs().double()
    s = problem.noise_scale(point[None])[0].double()
    layout = problem._layout
    rows = []
    for name, h_part, s_part in zip(layout.names, h.split(layout.sizes), s.split(layout.sizes), strict=True):
        noisy = lr * h_part[s_part > 0] / s_part[s_part > 0]
        if noisy.numel():
            rows.append(
                {
                    "layer": name,
                    "size": int(h_part.numel()),
                    "noisy": int(noisy.numel()),
                    "median": float(noisy.median()),
                    "max": float(noisy.max()),
                    "share_above": float((noisy > KAPPA_LIMIT).double().mean()),
                }
            )
    return rows


def run_panel(
    ctx: Context,
    arch: str,
    problem: NetworkProblem,
    spec: OptimizerSpec,
    hp: Hyperparameters,
    models: Sequence[str],
    label: str,
    warm: bool = False,
) -> tuple[dict[str, Any], Comparison]:
    """The optimizer and its SDEs on one network from one initialisation: numbers, recordings
    (as series) and the data set in config.json's ``panels``.  ``warm``: each SDE with a second
    moment also runs from a warm ``V₀`` (:func:`warm_starts`)."""
    params = ctx.params
    x0 = problem.x0(ctx.seed, dtype=ctx.dtype).to(ctx.device)
    started = time.perf_counter()
    kappa_profile = problem.kappa_profile(hp.lr, x0)
    kappa_layers = kappa_by_layer(problem, hp.lr, x0)
    comparison = compare(
        ctx,
        spec,
        problem,
        hp,
        x0,
        steps=params["steps"],
        paths=params["paths"],
        models=models,
        extra_models=warm_starts(problem, spec, models, x0, params["substeps"]) if warm else (),
        substeps=params["substeps"],
        record_at=record_steps(params["steps"], params["records"]),
        observables={"loss": loss_observable},
        label=label,
        burn_in=params["burn_in"],
        kappa=kappa_profile["max"],
    )
    mark_departures(comparison.fidelity, comparison.recordings)
    optimizer = comparison.recordings["optimizer"]
    robust = {
        method: robust_fidelity(optimizer, rec)
        for method, rec in comparison.recordings.items()
        if method != "optimizer" and rec.divergence is None and optimizer.divergence is None
    }
    entry: dict[str, Any] = {
        "model": arch,
        "optimizer": spec.name,
        "problem": problem.describe(),
        "hyperparameters": dict(hp.__dict__),
        "steps": params["steps"],
        "wall_time_s": round(time.perf_counter() - started, 2),
        **comparison.summary(),
        "kappa_profile": kappa_profile,
        "kappa_by_layer": kappa_layers,
        "robust_fidelity": robust,
    }
    for rec in comparison.recordings.values():
        ctx.result.add_recording(label, rec, ("loss",))
    ctx.result.config.setdefault("panels", {})[label] = {"model": arch, "dataset": problem.data.name}
    return entry, comparison


def mark_departures(fidelity: dict[str, dict[str, Any]], recordings: Mapping[str, Recording]) -> None:
    """Add ``departure_step`` to the fidelity numbers of each model that left the optimizer's range
    (:func:`optsde.figures.departures`), so that tables and checks name it by its step."""
    for method, step in departures(recordings).items():
        fidelity[method]["departure_step"] = step


def tracking_checks(fidelity: Mapping[str, Mapping[str, Any]], target: float) -> list[Check]:
    """Per SDE: is ``E f``'s time-averaged relative gap to the optimizer at most ``target``?
    A model that diverged or left the optimizer's range fails, named with its step."""
    checks = []
    for method, numbers in fidelity.items():
        if "diverged" in numbers:
            name, value = (
                f"{method}: {numbers['diverged']} diverged at step {numbers['diverged_step']}",
                math.inf,
            )
        elif numbers.get("departure_step") is not None:
            name, value = (
                f"{method}: left the optimizer's range at step {numbers['departure_step']}",
                math.inf,
            )
        else:
            name, value = f"{method} tracks the optimizer", numbers["mean_rel_gap"]
        se = 0.0 if math.isinf(value) else numbers["mean_rel_gap_se"]
        checks.append(
            Check(name, Estimate(value, se), None, AtMost(target), "time-averaged relative gap of E f")
        )
    return checks


def verdict(label: str, entry: Mapping[str, Any], method: str, target: float) -> str:
    """One line: is the optimizer tracked by ``method`` (time-averaged gap below ``target``)?"""
    numbers = entry["fidelity"].get(method)
    if numbers is None:
        return f"- {label}: {method} was not run."
    if "diverged" in numbers:
        return f"- **{label}: {numbers['diverged']} diverged at step {numbers['diverged_step']}.**"
    if numbers.get("departure_step") is not None:
        step = numbers["departure_step"]
        return f"- **{label}: NOT tracked by {method}, which left the optimizer's range at step {step}.**"
    gap, se = numbers["mean_rel_gap"], numbers["mean_rel_gap_se"]
    profile = entry.get("kappa_profile") or {}
    kappa_text = f", median κ ≈ {profile['median']:.2g}" if "median" in profile else ""
    return (
        f"- {label}: {'tracked' if gap < target else 'NOT tracked'} by {method} — time-averaged relative "
        f"gap of E f {gap:.1%} ± {se:.1%} (target < {target:.0%}), maximum {numbers['max_rel_gap']:.1%} "
        f"± {numbers['max_rel_gap_se']:.1%}{kappa_text}."
    )


def why_not_tracked(entry: Mapping[str, Any], method: str) -> list[str]:
    """The measured evidence for a panel whose ``method`` is not tracked (docs/networks.md "The
    ResNet gap"): the gap of the medians against the gap of the means, how often each side's loss
    spikes, and κ by parameter tensor at the start."""
    lines = []
    robust = entry.get("robust_fidelity", {}).get(method)
    if robust is not None:
        gap = Estimate(robust["median_rel_gap"], robust["median_rel_gap_se"])
        mean = Estimate(
            entry["fidelity"][method]["mean_rel_gap"], entry["fidelity"][method]["mean_rel_gap_se"]
        )
        spikes = (mean - gap).value > POLICY.z * (mean - gap).se
        reading = (
            "The medians are much closer than the means: a few paths whose loss spikes, on both sides, "
            "carry the gap, not the bulk of the paths."
            if spikes
            else "The medians are as far apart as the means: the bulk of the paths departs, not a few "
            'spikes (docs/networks.md, "The ResNet gap", for the measured causes).'
        )
        lines.append(
            f"Gap of the medians over paths (time-averaged, bootstrap SE): {gap.value:.1%} ± {gap.se:.1%}, "
            f"against {mean.value:.1%} ± {mean.se:.1%} for the means. "
            f"Share of (record, path) losses above {SPIKE_FACTOR:g}× the optimizer's median at that record "
            f"(spikes): optimizer {robust['spike_share_optimizer']:.1%}, "
            f"{method} {robust['spike_share_sde']:.1%}. " + reading
        )
    layers = entry.get("kappa_by_layer") or []
    if layers:
        total = sum(row["noisy"] for row in layers)
        above = sum(row["share_above"] * row["noisy"] for row in layers) / total
        worst = max(layers, key=lambda row: row["share_above"])
        top = max(layers, key=lambda row: row["max"])
        lines.append(
            f"κ by parameter tensor at the start: {above:.2%} of the coordinates above {KAPPA_LIMIT:g} "
            f"(most in {worst['layer']}: {worst['share_above']:.1%}); the largest median κ of a tensor is "
            f"{max(row['median'] for row in layers):.2g}, the largest κ {top['max']:.2g} ({top['layer']})."
        )
    return lines


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


def report_panels(ctx: Context, entries: Mapping[str, Mapping[str, Any]], judged: Mapping[str, str]) -> None:
    """The verdicts (``judged``: panel → the SDE method it is judged by), then per panel the
    setting, κ and the fidelity table; the checks are added per panel."""
    say, target = ctx.result.say, ctx.params["gap_target"]
    say("## Verdict")
    say("")
    for label, entry in entries.items():
        say(verdict(label, entry, judged[label], target))
        ctx.result.add_checks(label, tracking_checks(entry["fidelity"], target))
    for label, entry in entries.items():
        hp, profile = entry["hyperparameters"], entry["kappa_profile"]
        say("")
        say(f"## {label}")
        say("")
        say(describe_problem(entry) + ".")
        say(
            f"η = {hp['lr']:g}, {entry['steps']} steps (t = {entry['steps'] * hp['lr']:g}), "
            f"{entry['paths']['optimizer']} paths; wall time {entry['wall_time_s']:g} s. "
            f"κ = η·|h_i|/s_i at the start: median {profile['median']:.2g}, 99th percentile "
            f"{profile['q99']:.2g}, maximum {profile['max']:.2g} (docs/theory.md §3's κ is the maximum; a "
            "network has coordinates whose noise all but vanishes, which make the maximum large; h is "
            "Hutchinson's estimate of the Hessian diagonal, so these are estimates)."
        )
        say("At the median κ: " + regime_statement(entry["optimizer"], profile["median"]))
        say("")
        numbers = entry["fidelity"].get(judged[label], {})
        if numbers and (numbers.get("mean_rel_gap", math.inf) >= target or "departure_step" in numbers):
            say(
                f"**Why {judged[label]} is not tracked here (measured):** "
                + " ".join(why_not_tracked(entry, judged[label]))
            )
            say("")
        ctx.result.report.extend(fidelity_table(entry["fidelity"]))
