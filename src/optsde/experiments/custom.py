"""One custom comparison, as ``optsde simulate`` asks for it: an optimizer beside its SDE models
on a quadratic or an embedded saddle, with Gaussian or Student-t noise.

Not a registered experiment: the command line builds its :class:`Context` from flags.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

from optsde.analysis import burn_in_mask, mean_exists, quantile, recording_mean, stationarity
from optsde.experiments.base import Context, ExperimentError, compare
from optsde.figures import legend_entry
from optsde.noise import GaussianNoise, StudentTNoise
from optsde.optimizers import Hyperparameters, get_optimizer
from optsde.problems.analytic import EmbeddedSaddle, NoisyProblem, Quadratic
from optsde.report import fidelity_table, loss_figure, method_style
from optsde.sde import Recording, record_steps
from optsde.theory.predictions import PredictionError, Setting, predictions, recommended, regime_statement

CUSTOM_DEFAULTS: dict[str, Any] = {
    "problem": "quadratic",
    "hessian": [1.0, 2.0],
    "noise": "gaussian",
    "sigma": 0.1,
    "nu": 3.0,
    "batch_size": 1,
    "optimizer": "adamw",
    "lr": 0.001,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "x0": None,
    "steps": 2000,
    "paths": 256,
    "sde": ["paper"],
    "substeps": 1,
    "records": 200,
    "burn_in": 0.5,
}
"""``optsde simulate``'s flags and defaults.  ``x0`` None: the problem's own start (:func:`default_start`)."""

SADDLE_OFFSET = 0.05
"""The default start of the saddle's double-well coordinate: near the saddle at 0, so the run
shows the escape from it (at 1, its minimum, the saddle would never be visited)."""

X0_HELP = (
    "start, one value per coordinate, e.g. 1,1 (default: 1 in every quadratic coordinate; "
    f"--problem saddle: its double-well coordinate at {SADDLE_OFFSET:g}, near the saddle)"
)
"""``simulate --help``'s text for ``--x0``: the default of :func:`default_start` in words."""


def default_start(params: dict[str, Any]) -> list[float]:
    """1 in every quadratic coordinate; the saddle's double-well coordinate at :data:`SADDLE_OFFSET`."""
    start = [1.0] * len(params["hessian"])
    return [*start, SADDLE_OFFSET] if params["problem"] == "saddle" else start


def build_problem(params: dict[str, Any]) -> NoisyProblem:
    """The landscape and noise the flags describe; every inconsistency is a one-line error."""
    hessian = params["hessian"]
    if not hessian or (params["problem"] == "quadratic" and any(h <= 0 for h in hessian)):
        raise ExperimentError("--hessian: give positive curvatures like 1,3,10 for a convex quadratic")
    if params["problem"] == "quadratic":
        landscape: Quadratic | EmbeddedSaddle = Quadratic(hessian)
    elif params["problem"] == "saddle":
        landscape = EmbeddedSaddle(hessian, wells=1)
    else:
        raise ExperimentError(f"--problem {params['problem']!r}: choose quadratic or saddle")
    if not params["sigma"] >= 0:
        raise ExperimentError(f"--sigma must be a non-negative number (0: no noise), got {params['sigma']}")
    if params["noise"] == "gaussian":
        noise: GaussianNoise | StudentTNoise = GaussianNoise(
            landscape.dim, scale=params["sigma"], batch_size=params["batch_size"]
        )
    elif params["noise"] == "student-t":
        noise = StudentTNoise(
            landscape.dim, nu=params["nu"], scale=params["sigma"], batch_size=params["batch_size"]
        )
    else:
        raise ExperimentError(f"--noise {params['noise']!r}: choose gaussian or student-t")
    return NoisyProblem(landscape, noise)


def custom_comparison(ctx: Context) -> int:
    """Run the comparison into ``ctx.result``; returns 1 if a single-method run diverged."""
    params = ctx.params
    spec = get_optimizer(params["optimizer"])
    problem = build_problem(params)
    hp = Hyperparameters(
        lr=params["lr"],
        beta1=params["beta1"],
        beta2=params["beta2"],
        eps=params["eps"],
        weight_decay=params["weight_decay"],
    )
    spec.check(hp)
    x0_values = params["x0"] if params["x0"] is not None else default_start(params)
    if len(x0_values) != problem.dim:
        raise ExperimentError(f"--x0 has {len(x0_values)} values; the problem has {problem.dim} coordinates")
    params["x0"] = list(x0_values)  # config.json holds the start the run used, not null
    models = [m for m in params["sde"] if m != "none"]
    for key in models:
        if key not in spec.sdes:
            raise ExperimentError(f"--sde {key}: {spec.name} has the SDE models {', '.join(spec.sdes)}")
        if params["sigma"] == 0 and spec.sdes[key].requires_noise:
            raise ExperimentError(
                f"--sde {key}: {spec.sdes[key].name} divides by the noise scale and is undefined at "
                "--sigma 0; choose another model or a positive --sigma"
            )
    needs_variance = any(spec.sdes[key].needs & {"variance", "noise"} for key in models)
    if needs_variance and not bool(problem.noise_variance(ctx.tensor([x0_values])).isfinite().all()):
        if params["noise"] == "student-t" and params["nu"] <= 2:
            raise ExperimentError(
                f"--nu {params['nu']:g}: Student-t noise with ν ≤ 2 has no variance, so the {spec.name} SDE "
                "does not exist; use --sde none to run the optimizer alone, or --nu above 2"
            )
        raise ExperimentError(
            f"--sigma {params['sigma']:g}: the noise variance overflows; give a smaller --sigma"
        )
    if not 0 <= params["burn_in"] < 1:
        raise ExperimentError(f"--burn-in must lie in [0, 1), got {params['burn_in']}")
    comparison = compare(
        ctx,
        spec,
        problem,
        hp,
        ctx.tensor(x0_values),
        steps=params["steps"],
        paths=params["paths"],
        models=models,
        substeps=params["substeps"],
        record_at=record_steps(params["steps"], params["records"]),
        burn_in=params["burn_in"],
    )
    result = ctx.result
    for rec in comparison.recordings.values():
        result.add_recording("main", rec)
    result.summary.update(comparison.summary())
    heavy_tailed = params["noise"] == "student-t" and params["nu"] <= 2
    result.summary["stationary_loss"] = {
        method: stationary_loss(
            rec, params["burn_in"], heavy_tailed and not spec.capabilities.mean_under_heavy_tails
        )
        for method, rec in comparison.recordings.items()
        if rec.divergence is None and len(rec.steps) > 1
    }
    title = f"{spec.name} on a {params['problem']}, {params['noise']} noise σ={params['sigma']:g}"
    result.figures["loss"] = loss_figure(comparison.recordings, title)
    if problem.dim >= 2:
        result.figures["trajectories"] = trajectory_figure(comparison, title)
    result.say(f"{title}; η = {hp.lr:g}, {params['paths']} paths, {params['steps']} steps.")
    if params["sigma"] == 0:
        result.say("σ = 0: no gradient noise; the optimizer runs noise-free and every SDE as its ODE.")
    else:
        nu = params["nu"] if params["noise"] == "student-t" else None
        result.say(regime_statement(spec.name, comparison.kappa, noise=params["noise"], nu=nu))
    result.say("")
    if comparison.fidelity:
        result.report.extend(fidelity_table(comparison.fidelity))
    for line in comparison.divergences():
        result.say(f"- **{line}**")
    for method, numbers in result.summary["stationary_loss"].items():
        result.say(f"- {method}: {numbers['verdict']}")
    predicted = predicted_stationary_loss(params, x0_values)
    result.summary["stationary_loss_predicted"] = predicted
    result.say(f"- predicted: {predicted['statement']}")
    single = len(comparison.recordings) == 1
    return 1 if single and comparison.divergences() else 0


def predicted_stationary_loss(params: dict[str, Any], x0: list[float]) -> dict[str, Any]:
    """Theory's recommended stationary loss for the run (docs/theory.md §8), to set beside the simulated
    one: ``value`` (None where there is none), ``formula``, ``valid`` (inside its regime), ``regime`` and
    a ``statement`` for the report.  Predictions exist for the quadratic with noise only."""
    if params["problem"] != "quadratic" or params["sigma"] == 0:
        why = "no noise" if params["sigma"] == 0 else "the saddle has no closed-form stationary loss"
        return {"value": None, "statement": f"none ({why}; theory covers the noisy quadratic)"}
    keys = ("optimizer", "hessian", "lr", "sigma", "batch_size", "noise", "nu", "beta1", "beta2", "eps")
    try:
        setting = Setting(**{k: params[k] for k in keys}, weight_decay=params["weight_decay"], x0=tuple(x0))
        best = recommended(predictions(setting), "stationary_loss")
    except PredictionError as error:
        return {"value": None, "statement": f"none ({error})"}
    numbers = {"value": best.value, "formula": best.formula, "valid": best.valid, "regime": best.regime}
    if best.value is None:
        return numbers | {"statement": f"no stationary loss ({best.note or best.regime})"}
    inside = "inside" if best.valid else "outside"
    statement = f"stationary loss {best.value:.4g} by {best.formula} ({inside} its regime: {best.regime})"
    return numbers | {"statement": statement}


def stationary_loss(rec: Recording, burn_in: float, no_mean_expected: bool) -> dict[str, Any]:
    """The stationary loss of one recording, said honestly (docs/simulate.md):

    its mean with SE over the last ``1 − burn_in`` of the run, unless the theory says the mean
    is infinite (``no_mean_expected``: SGD under Student-t noise with ν ≤ 2, docs/theory.md §8)
    or the per-path losses' tail says so; then the median.  A window whose two halves differ
    is flagged as too short to call stationary.
    """
    window = burn_in_mask(rec, burn_in)
    finals = rec.values["loss"][window][-1]
    existence = mean_exists(finals)
    median = quantile(finals, 0.5)
    numbers: dict[str, Any] = {"median": median.value, "median_stderr": median.se}
    if no_mean_expected or existence.exists is False:
        why = (
            "the noise has no variance (Student-t, ν ≤ 2) and this optimizer passes it on to x"
            if no_mean_expected
            else existence.reason
        )
        numbers.update(mean=None, stderr=None, mean_exists=False)
        numbers["verdict"] = f"no finite stationary mean ({why}); median loss {median}"
        return numbers
    mean = recording_mean(rec, burn_in=burn_in)
    steady = stationarity(rec.values["loss"], rec.steps, burn_in)
    numbers.update(
        mean=mean.value, stderr=mean.se, mean_exists=existence.exists, stationary=steady.is_stationary
    )
    numbers["verdict"] = f"stationary loss {mean}" + ("" if steady.is_stationary else f"; {steady.reason}")
    return numbers


def trajectory_figure(comparison: Any, title: str) -> plt.Figure:
    """The first coordinates' mean path and a few sample paths of every method."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for method, rec in comparison.recordings.items():
        style = method_style(method)
        mean = rec.mean("x")
        ax.plot(mean[:, 0], mean[:, 1], lw=2, **style)
        for path in range(min(2, rec.snapshots.shape[1])):
            ax.plot(
                rec.snapshots[:, path, 0],
                rec.snapshots[:, path, 1],
                lw=0.5,
                alpha=0.5,
                color=style.get("color"),
            )
    legend_entry(ax, "2 sample paths each (thin)", color="gray", lw=0.5)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
