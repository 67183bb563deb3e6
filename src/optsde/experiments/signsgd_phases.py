"""``signsgd-phases``: SignSGD's three phases on ``f = ½xᵀHx`` (paper Fig. 2, docs/theory.md §5, §7 item 2).

Panels: (a) the full SDE beside the optimizer, the phase-1 ODE from x₀, the phase-3 SDE from
phase-3 entry and, in phase 2, the mean inside the bracket of Lemma 3.4's drift bounds; (b) the
loss with the phase-1 and phase-3 bounds, each over its own phase; (c) the phase-3 closed forms of
``E X_t``, ``E X_t²``; (d) schedules with their bound and the phase-3 moment equation.  Phase
windows come from the recorded occupancy (a phase holds while ≥ ``occupancy`` of the paths are
in it).  Every verdict is a ``Check`` (docs/analysis.md); a window the run never reaches gives an
inconclusive check that says so.  The drawing is in :mod:`optsde.figures.signsgd_phases`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from optsde.analysis import (
    AtLeast,
    AtMost,
    Check,
    Estimate,
    Within,
    bound_check,
    fidelity_summary,
    furthest_from_curve,
    pair_fidelity,
    restrict,
    sample_mean,
    stationary_loss_check,
    stationary_mean,
)
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.figures import signsgd_phases as figures
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters
from optsde.optimizers.signsgd import SIGNSGD_SPEC
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.report import fidelity_table
from optsde.sde import DEFAULT_OBSERVABLES, Recording, record_steps
from optsde.theory import signsgd as theory
from optsde.theory.predictions import regime_statement

MODEL = Within(0.05)
"""docs/theory.md §5: a closed form holds within 5% inside its regime (or the Monte Carlo's SE)."""
NAN = Estimate(math.nan, math.nan)
RUNS = {"main": ("paper", "phase1"), "phase3": ("paper", "phase3")}
"""SDE models beside SignSGD: from x₀ the full SDE and phase-1 ODE; from phase-3 entry, the phase-3 SDE."""
OBSERVABLES = {**DEFAULT_OBSERVABLES, **theory.phase_observables()}
SHORT = " — not reached: the run is too short (raise `steps`)"
EDGES = (("≤", 1, "E(X − upper edge)"), ("≥", -1, "E(lower edge − X)"))
"""The phase-2 bracket's upper and lower edge: how each is checked (a sign makes both upper bounds)."""


def _check(p: dict[str, Any]) -> None:
    if any(h <= 0 for h in p["hessian"]):
        raise ExperimentError("hessian: give positive curvatures like 1,2 (a convex quadratic)")
    for key in ("x0", "schedule_x0"):
        if len(p[key]) != len(p["hessian"]):
            raise ExperimentError(f"{key} has {len(p[key])} values for {len(p['hessian'])} coordinates")
    if not p["sigma"] > 0:
        raise ExperimentError(f"sigma must be positive, got {p['sigma']}")
    if not 0.5 < p["occupancy"] <= 1:
        raise ExperimentError("occupancy is the share of paths that defines a phase window; use (0.5, 1]")
    if all(v == 0 for v in p["x0"]):
        raise ExperimentError("x0 = 0 is the minimum; start away from it to see the phases")
    for key in ("paths", "schedule_paths"):
        if p[key] < 2:
            raise ExperimentError(f"{key}={p[key]}: standard errors need at least 2 paths; use 2 or more")


@experiment(
    "signsgd-phases",
    "SignSGD's three phases on a quadratic: phase ODE/SDEs, loss bounds, moments, schedules (Fig. 2)",
    defaults={
        "lr": 0.001,
        "sigma": 0.1,
        "batch_size": 1,
        "hessian": [1.0, 2.0],
        "x0": [0.5, 0.5],
        "steps": 2000,
        "paths": 2000,
        "record_points": 300,
        "occupancy": 0.95,
        "schedules": ["constant", "power:0.6", "power:1", "exp:4"],
        "schedule_x0": [0.05, 0.025],
        "schedule_steps": 8000,
        "schedule_paths": 1000,
    },
    quick={"paths": 500, "steps": 1500, "schedule_steps": 3000, "schedule_paths": 300},
)
def run(ctx: Context) -> None:
    """Fig. 2 of the paper: checks per panel, numbers in ``summary.json``, figures."""
    _check(ctx.params)
    schedules = [theory.parse_schedule(text) for text in ctx["schedules"]]
    h, lr, steps, result = np.asarray(ctx["hessian"], dtype=float), ctx["lr"], ctx["steps"], ctx.result
    noise = GaussianNoise(len(h), scale=ctx["sigma"], batch_size=ctx["batch_size"])
    problem, hp = NoisyProblem(Quadratic(ctx.tensor(h)), noise), Hyperparameters(lr=lr)
    s = ctx["sigma"] / math.sqrt(ctx["batch_size"])
    regime = regime_statement("signsgd", problem.kappa(lr))
    result.say(figures.setting_line(h, s, lr, ctx["x0"], ctx["paths"], regime))
    even = record_steps(steps, ctx["record_points"])  # phase 2 is short: recorded at every step
    dense = [k for k in theory.phase2_steps(ctx["x0"], h, s, lr) if k <= steps]
    main = _compare(ctx, problem, hp, ctx["x0"], "main", sorted({*even, *dense}))
    if main.divergences():
        result.summary["main"] = main.summary()
        result.say("**The main run diverged:** " + "; ".join(main.divergences()))
        return
    opt, occupancy = main.recordings["optimizer"], ctx["occupancy"]
    t, loss = opt.times, opt.values["loss"]
    windows = {m: theory.phase_windows(r, occupancy) for m, r in main.recordings.items() if m != "ode-phase1"}
    result.summary["phases"] = {"occupancy": occupancy, "per_coordinate": windows}
    result.report.extend(figures.phase_lines(windows["optimizer"], occupancy))
    phase1, k3 = theory.phase_stretch(opt, occupancy, 1), theory.phase_stretch(opt, occupancy, 3)[:1]
    k3 = int(k3[0]) if len(k3) and k3[0] < len(t) - 1 else None  # entered at the last record: nothing after
    settled = math.inf if k3 is None else t[k3] + theory.phase3_settling_time(opt.mean("x2")[k3], h, s, lr)
    burn_in = min(settled / t[-1], 0.9)
    # Fidelity as a time average: over the evenly spread records, not the dense phase-2 ones.
    main.fidelity = fidelity_summary(
        {m: restrict(r, np.isin(r.steps, even)) for m, r in main.recordings.items()}, burn_in=burn_in
    )
    result.summary["main"] = {**main.summary(), "burn_in_time": burn_in * t[-1]}
    result.say("\n**Fidelity from x₀** (the phase-1 ODE is only meant to hold in phase 1):\n")
    result.report.extend(fidelity_table(main.fidelity))
    note = f"\nE x² settles in phase 3 only at t ≈ {settled:.3g}, after the run: 'stationary' = last 10%."
    result.report.extend([note] if settled > t[-1] else [])
    fidelity = [_stationary("sde-paper", main.fidelity, "over the run"), _ode_check(main, phase1)]
    t1, f1 = t[phase1], theory.signsgd_phase1_loss_bound(t[phase1], float(loss[0, 0]), h.min())
    bounds = {"phase1": (t1, f1)}
    what = "E f, every coordinate in phase 1"
    checks = [bound_check("phase-1 bound", what, t1[1:], loss[phase1][1:], f1[1:], SHORT)]
    phase3, moments = None, [Check("phase-3 moments", NAN, math.nan, MODEL, "never all in phase 3" + SHORT)]
    if k3 is None:
        checks.append(Check("phase-3 bound", NAN, math.nan, AtMost(), "never all in phase 3" + SHORT))
    else:
        args = (float(loss[k3].mean()), h.min(), h.max(), len(h), ctx["sigma"], ctx["batch_size"], lr)
        bounds["phase3"] = (t[k3:], theory.signsgd_phase3_loss_bound(t[k3:] - t[k3], *args))
        what, f3 = f"E f from phase-3 entry at t = {t[k3]:.3g}", bounds["phase3"][1]
        checks.append(bound_check("phase-3 bound", what, t[k3 + 1 :], loss[k3 + 1 :], f3[1:]))
        start = int(opt.steps[k3])
        record = [0] + [k - start for k in even if k > start]
        late = min(max((settled - t[k3]) / (t[-1] - t[k3]), 0.0), 0.9)
        phase3 = _compare(ctx, problem, hp, opt.values["x"][k3], "phase3", record, start, late)
        result.summary["phase3"] = {**phase3.summary(), "start_time": float(t[k3])}
        result.say(f"\n**Fidelity from phase-3 entry (t = {t[k3]:.3g}), all from SignSGD's paths there:**\n")
        result.report.extend(fidelity_table(phase3.fidelity))
        fidelity += [_stationary(m, phase3.fidelity, "from phase-3 entry") for m in phase3.fidelity]
        moments, laws = _moments(ctx, phase3, opt, k3, h, s, burn_in)
    for key, (tb, fb) in bounds.items():
        result.add_series("bounds", f"bound-{key}", tb, "loss", fb, 0 * tb)
    result.summary["loss_bounds"] = {k: [tb[0], tb[-1]] if len(tb) else None for k, (tb, _) in bounds.items()}
    brackets, bracket_checks = _phase2(ctx, opt, h, s)
    for panel, panel_checks in (("fidelity", fidelity), ("phase 2", bracket_checks), ("loss bounds", checks)):
        result.add_checks(panel, panel_checks)
    result.add_checks("moments", moments)
    entered = phase3.recordings if phase3 else None  # the runs from phase-3 entry
    result.figures["fig2a_trajectories"] = figures.trajectory_figure(main.recordings, entered, brackets, h, s)
    stationary = theory.signsgd_phase3_stationary_loss(h, s, lr)
    result.figures["fig2b_loss_bounds"] = figures.loss_bounds_figure(main.recordings, bounds, stationary)
    if phase3 is not None:
        result.figures["fig2c_moments"] = figures.moments_figure(phase3.recordings, laws)
    until = t[-1] if k3 is None else min(1.5 * t[k3], t[-1])
    result.figures["phase_occupancy"] = figures.occupancy_figure(main.recordings, until)
    _schedules(ctx, problem, hp, h, s, schedules)
    result.report[1:1] = figures.checks_headline(c for panel in result.checks.values() for c in panel)


def _stationary(m: str, numbers: dict[str, Any], when: str) -> Check:
    """An SDE's stationary loss against SignSGD's (independent paths)."""
    return stationary_loss_check(f"{m} stationary E f {when}", numbers[m], MODEL, "against SignSGD's")


def _ode_check(main: Comparison, phase1: np.ndarray) -> Check:
    """The phase-1 ODE against SignSGD while every coordinate is in phase 1: largest gap of E f."""
    name, rule = "ode-phase1 in phase 1", AtMost(0.05)
    if len(phase1) < 2:
        return Check(name, NAN, None, rule, "largest relative gap of E f to SignSGD" + SHORT)
    opt = main.recordings["optimizer"]
    gap = pair_fidelity(restrict(opt, phase1), restrict(main.recordings["ode-phase1"], phase1))
    value = Estimate(gap["max_rel_gap"], gap["max_rel_gap_se"])
    return Check(name, value, None, rule, f"largest relative gap of E f (t ≤ {opt.times[phase1[-1]]:.3g})")


def _compare(
    ctx: Context,
    problem: NoisyProblem,
    hp: Hyperparameters,
    x0: Any,
    label: str,
    record: list[int],
    start: int = 0,
    burn_in: float = 0.5,
) -> Comparison:
    """SignSGD and the SDE models of ``RUNS[label]`` from ``x0`` (a point or one per path) with the phase
    observables (:data:`OBSERVABLES`), recorded on a clock that starts at step ``start`` (up to ``steps``)."""
    options = dict(paths=ctx["paths"], models=RUNS[label], record_at=record, label=label, burn_in=burn_in)
    steps = ctx["steps"] - start
    run = compare(
        ctx, SIGNSGD_SPEC, problem, hp, ctx.tensor(x0), steps=steps, observables=OBSERVABLES, **options
    )
    for rec in run.recordings.values():
        rec.steps = rec.steps + start
        ctx.result.add_recording(label, rec, ("loss", "x", "x2") if start else None)
    return run


def _phase2(
    ctx: Context, opt: Recording, h: np.ndarray, s: float
) -> tuple[list[dict[str, Any]], list[Check]]:
    """Per coordinate, over the first stretch with ≥ ``occupancy`` of the paths in phase 2: the mean
    inside the bracket of the drift bounds from entry, in discrete time (it is narrower than a step).
    Each path has its own bracket (affine in its entry point), so the margins are paired per path."""
    t, x, drawn, checks, lr = opt.times, opt.values["x"], [], [], opt.lr
    for i in range(len(h)):
        idx, name = theory.phase_stretch(opt, ctx["occupancy"], 2, i), f"x[{i}] in its phase-2 bracket"
        if len(idx) < 2:
            checks.append(Check(name, NAN, None, AtMost(0.0), "E X beyond it" + SHORT))
            continue
        ti, xi, entry = t[idx], x[idx, :, i], x[idx[0], :, i]
        low, high = theory.signsgd_phase2_mean_bounds(ti - ti[0], entry, np.full(len(entry), h[i]), s, lr=lr)
        for (side, sign, what), edge in zip(EDGES, (high, low), strict=True):
            name = f"x[{i}] {side} its phase-2 bracket"
            checks.append(bound_check(name, what, ti[1:], sign * xi[1:], sign * edge[1:]))
        drawn.append({"i": i, "t": ti, "x": xi, "low": low, "high": high})
        for side, edge in (("lower", low), ("upper", high)):
            ctx.result.add_series("phase2", f"bound-phase2-{side}", ti, f"x[{i}]", edge.mean(axis=1), 0 * ti)
    return drawn, checks


def _moments(
    ctx: Context, phase3: Comparison, opt: Recording, k3: int, h: np.ndarray, s: float, burn_in: float
) -> tuple[list[Check], dict[str, np.ndarray]]:
    """docs/theory.md §5's phase-3 closed forms of E X_t and E X_t² from the measured moments at
    entry: the checks, and the closed forms on the phase-3 run's clock with the stationary ``E X²``."""
    lr, t3 = ctx["lr"], float(opt.times[k3])
    stationary = theory.signsgd_phase3_stationary_second_moment(h, s, lr)
    ctx.result.summary["moments"] = {"start_time": t3, "predicted_stationary_x2": stationary}
    checks = []
    for (m, r), i in itertools.product(phase3.recordings.items(), range(len(h))):
        value = stationary_mean(r.values["x2"][..., i], r.steps, burn_in)
        checks.append(Check(f"{m} stationary E x[{i}]²", value, stationary[i], MODEL))
    rec = phase3.recordings["optimizer"]
    mean, x2 = theory.signsgd_phase3_moments(rec.times - t3, opt.mean("x")[k3], opt.mean("x2")[k3], h, s, lr)
    for i in range(len(h)):
        ctx.result.add_series("moments", "theory-phase3", rec.times, f"x[{i}]", mean[:, i], 0 * rec.times)
        ctx.result.add_series("moments", "theory-phase3", rec.times, f"x2[{i}]", x2[:, i], 0 * rec.times)
    (k, i), gap = furthest_from_curve(rec.values["x"], mean)
    what = f"largest |E X − e^(−at)E X₀|/|E X₀| (x[{i}], t = {rec.times[k]:.3g})"
    checks.append(Check("SignSGD E X_t", gap / abs(opt.mean("x")[k3, i]), None, AtMost(0.05), what))
    (k, i), value = furthest_from_curve(rec.values["x2"], x2, relative=True)
    lag = "erf(Y/√2) lags √(2/π)Y by ≈ Y²/6 after entry"
    what = f"E X²/closed form furthest from 1 (x[{i}], t = {rec.times[k]:.3g}; {lag})"
    checks.append(Check("SignSGD E X_t²", value, 1.0, MODEL, what))
    return checks, {"x": mean, "x2": x2, "stationary_x2": stationary}


def _schedules(
    ctx: Context, problem: NoisyProblem, hp: Hyperparameters, h: np.ndarray, s: float, schedules: list[Any]
) -> None:
    """(d) each schedule from ``schedule_x0`` (phase 3): its bound and phase-3 moment equation; a
    to-zero schedule ends below the constant-lr level, a summable one above the floor Φ(∞) sets."""
    lr, x0, result = hp.lr, np.asarray(ctx["schedule_x0"], dtype=float), ctx.result
    sigma, batch = ctx["sigma"], ctx["batch_size"]
    stationary = theory.signsgd_phase3_stationary_loss(h, s, lr)
    y0, record = np.abs(h * x0 / s), record_steps(ctx["schedule_steps"], 60, "log")
    numbers: dict[str, Any] = {"start_Y": y0, "constant_lr_stationary_loss": stationary}
    result.report.extend(figures.schedules_heading(ctx["schedule_x0"], y0))
    runs, checks = {}, []
    options = {"steps": ctx["schedule_steps"], "paths": ctx["schedule_paths"], "record_at": record}
    options["observables"] = {"loss": DEFAULT_OBSERVABLES["loss"]}
    for sched in schedules:
        by_step = lambda k, phi=sched.phi: float(phi(np.array([k * lr]))[0])  # noqa: E731 (φ is of SDE time)
        name, label = sched.name, f"schedule-{sched.name}"  # its own random stream and checkpoint
        run = compare(
            ctx, SIGNSGD_SPEC, problem, hp, ctx.tensor(x0), schedule=by_step, label=label, **options
        )
        t, loss = run.recordings["optimizer"].times, run.recordings["optimizer"].values["loss"]
        bound, predicted = theory.signsgd_schedule_laws(t, sched.phi, x0, h, sigma, batch, lr)
        floor, final = theory.signsgd_schedule_loss_floor(x0, h, s, sched.total), sample_mean(loss[-1])
        for rec in run.recordings.values():
            result.add_recording(label, rec)
        result.add_series(label, "bound-schedule", t, "loss", bound, 0 * t)
        result.add_series(label, "theory-phase3", t, "loss", predicted, 0 * t)
        checks.append(Check(f"{name}: final E f", final, predicted[-1], MODEL, "phase-3 moment equation"))
        checks.append(
            bound_check(f"{name}: bound", "E f under the schedule bound", t[1:], loss[1:], bound[1:])
        )
        if sched.to_zero:
            checks.append(Check(f"{name}: to 0", final, stationary, AtMost(), "below the constant-lr level"))
        elif math.isfinite(sched.total):
            checks.append(Check(f"{name}: floor", final, floor, AtLeast(), "above Σ½hx₀²e^(−2aΦ(∞))"))
        finals = dict(final_loss=final.value, final_loss_se=final.se, final_predicted=predicted[-1])
        limits = dict(
            Phi_infinity=sched.total, theory_says_loss_to_zero=sched.to_zero, loss_floor_from_Phi=floor
        )
        numbers[name] = {**run.summary(), **finals, "final_bound": bound[-1], **limits}
        result.say(figures.schedule_line(name, final, stationary, predicted[-1], bound[-1]))
        runs[name] = (run.recordings, bound, predicted)
    result.summary["schedules"] = numbers
    result.add_checks("schedules", checks)
    result.figures["fig2d_schedules"] = figures.schedules_figure(runs, stationary)
