"""One custom comparison, as ``optsde simulate`` asks for it: an optimizer beside its SDE models
on a quadratic or an embedded saddle, with Gaussian or Student-t noise.

Not a registered experiment: the command line builds its :class:`Context` from flags.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

from optsde.analysis import recording_mean
from optsde.experiments.base import Context, ExperimentError, compare
from optsde.sde import record_steps
from optsde.noise import GaussianNoise, StudentTNoise
from optsde.optimizers import Hyperparameters, get_optimizer
from optsde.problems.analytic import EmbeddedSaddle, NoisyProblem, Quadratic
from optsde.report import fidelity_table, loss_figure, method_style

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
}


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
    if not params["sigma"] > 0:
        raise ExperimentError(f"--sigma must be positive, got {params['sigma']}")
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
    x0_values = params["x0"] if params["x0"] is not None else [1.0] * problem.dim
    if len(x0_values) != problem.dim:
        raise ExperimentError(f"--x0 has {len(x0_values)} values; the problem has {problem.dim} coordinates")
    models = [m for m in params["sde"] if m != "none"]
    for key in models:
        if key not in spec.sdes:
            raise ExperimentError(f"--sde {key}: {spec.name} has the SDE models {', '.join(spec.sdes)}")

    if (
        models
        and spec.name != "signsgd"
        and not bool(problem.noise_variance(ctx.tensor([x0_values])).isfinite().all())
    ):
        raise ExperimentError(
            f"--nu {params['nu']:g}: Student-t noise with ν ≤ 2 has no variance, so the {spec.name} SDE "
            "does not exist; use --sde none to run the optimizer alone, or --nu above 2"
        )
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
        record_at=record_steps(params["steps"], 200),
    )
    result = ctx.result
    for rec in comparison.recordings.values():
        result.add_recording("main", rec)
    result.summary.update(comparison.summary())
    stationary = {
        method: recording_mean(rec)
        for method, rec in comparison.recordings.items()
        if rec.divergence is None and len(rec.steps) > 1
    }
    result.summary["stationary_loss"] = {m: {"mean": e.value, "stderr": e.se} for m, e in stationary.items()}
    title = f"{spec.name} on a {params['problem']}, {params['noise']} noise σ={params['sigma']:g}"
    result.figures["loss"] = loss_figure(comparison.recordings, title)
    if problem.dim >= 2:
        result.figures["trajectories"] = trajectory_figure(comparison, title)
    result.say(f"{title}; η = {hp.lr:g}, {params['paths']} paths, {params['steps']} steps.")
    kappa = comparison.kappa
    result.say(
        f"κ = η·max h/s = {kappa:.3g}: "
        + ("the SDE picture can hold (κ ≲ 0.1)." if kappa < 0.1 else "outside κ ≲ 0.1; expect SDE gaps.")
    )
    result.say("")
    if comparison.fidelity:
        result.report.extend(fidelity_table(comparison.fidelity))
    for line in comparison.divergences():
        result.say(f"- **{line}**")
    single = len(comparison.recordings) == 1
    return 1 if single and comparison.divergences() else 0


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
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
