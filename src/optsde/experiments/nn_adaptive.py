"""``nn-adaptive``: AdamW and RMSpropW against their SDEs on networks (the paper's Fig. 4,
docs/theory.md §7 item 4), with the prior SDEs of Malladi et al. and our refined AdamW SDE beside
the paper's.

A Transformer on patch tokens and a ResNet on images (scikit-learn's digits by default;
``--set dataset=mnist`` / ``cifar10`` for the paper's data sets), and the MLP on the
breast-cancer table, where each optimizer should be tracked by the SDE it is judged by (the
refined one where the family has it, the paper's otherwise).  The optimizers see real
minibatches, an independent stream per path; the SDEs see the full-data gradient, weighted-loss
noise with covariance exactly ``C/B`` (docs/theory.md §4) and the exact per-example ``diag C``
(one pass of per-example gradients gives ∇f, diag C and the noise sample; docs/networks.md
"Exact per-example statistics").  ``--set variance=projection`` estimates ``diag C`` without bias
from random projections instead.
"""

from __future__ import annotations

from typing import Any

from optsde.experiments.base import Context, ExperimentError, experiment
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
from optsde.optimizers import get_optimizer
from optsde.report import method_style
from optsde.sde import Recording

NAME = "nn-adaptive"

OPTIMIZERS = ("adamw", "rmspropw")

DEFAULTS: dict[str, Any] = {
    **NETWORK_DEFAULTS,
    "models": ["mlp", "transformer", "resnet"],
    "optimizers": list(OPTIMIZERS),
    "sdes": ["paper", "malladi", "refined"],
    "lr": 0.001,
    "beta1": 0.9,
    "beta2": 0.99,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "steps": 500,
    "paths": 8,
    "warm_start": False,
}
"""``sdes``: the paper's, the prior (Malladi et al.) and the refined SDE; each optimizer runs
those it has (RMSpropW has no refined SDE).  ``warm_start``: each SDE also runs from
``V₀ = E g²(x₀)`` instead of 0 (``<model>-warm``; Adam(W)'s SDEs keep their ι₂ bias correction,
so for them a warm start is expected to overcorrect early)."""

QUICK: dict[str, Any] = {"models": ["mlp"], "records": 40}


@experiment(
    NAME,
    "AdamW and RMSpropW vs the paper's, the prior and the refined SDEs on networks (Fig. 4)",
    defaults=DEFAULTS,
    quick=QUICK,
)
def run(ctx: Context) -> None:
    params = ctx.params
    check_network_params(params)
    for name in params["optimizers"]:
        if name not in OPTIMIZERS:
            raise ExperimentError(f"--set optimizers: {name!r} is not one of {', '.join(OPTIMIZERS)}")
    specs = {name: get_optimizer(name) for name in params["optimizers"]}
    hps = {name: hyperparameters(params, spec) for name, spec in specs.items()}
    keys = {name: sde_keys(spec, params["sdes"]) for name, spec in specs.items()}
    problems = {arch: build_problem(ctx, arch) for arch in params["models"]}  # bad data: fail before running

    entries: dict[str, dict[str, Any]] = {}
    panels: dict[str, dict[str, Recording]] = {}
    titles: dict[str, str] = {}
    judged: dict[str, str] = {}
    result = ctx.result
    result.summary.update({"panels": entries, "divergences": []})
    for name, spec in specs.items():
        # Judged by the refined SDE where the family has one (it adds the momentum's fresh noise).
        judge = next(key for key in ("refined", "paper", *keys[name]) if key in keys[name])
        for arch, problem in problems.items():
            data = dataset_of(arch, params)
            label = f"{name} on {arch} ({data})"
            entry, comparison = run_panel(
                ctx, arch, problem, spec, hps[name], keys[name], label, warm=params["warm_start"]
            )
            entries[label], panels[label], judged[label] = entry, comparison.recordings, spec.sdes[judge].name
            titles[label] = f"{name}, {arch} on {data} (paper: {PAPER_DATASETS[arch]})"
            result.summary["divergences"] += [f"{label}: {line}" for line in comparison.divergences()]

    hp = next(iter(hps.values()))
    result.figures["loss"] = panels_figure(
        panels,
        titles,
        f"AdamW / RMSpropW (η = {hp.lr:g}, β = ({hp.beta1:g}, {hp.beta2:g}), θ = {params['weight_decay']:g}) "
        "and their SDEs: E f ± one s.d. over paths",
    )
    labels = ", ".join(method_style(m)["label"] for m in ("sde-paper", "sde-malladi", "sde-refined"))
    result.say(
        "AdamW and RMSpropW with real minibatches (an independent stream per path) against their SDEs "
        f"({labels}; docs/theory.md §3), integrated by Euler–Maruyama with dt = η/{params['substeps']} on "
        "the network's parameters from one initialisation. The refined AdamW SDE adds the momentum's fresh "
        "noise on X; the prior SDEs drop (∇f)² from dV and, for Adam, the ηρ₁(∇f − M) correction. A model "
        "whose E f leaves the optimizer's range is reported as not tracked, with the step where it left."
    )
    result.say("")
    report_panels(ctx, entries, judged)
