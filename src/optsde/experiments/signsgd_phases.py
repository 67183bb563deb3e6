"""``signsgd-phases``: SignSGD's three phases on ``f = ½xᵀHx`` (paper Fig. 2, docs/theory.md §5, §7 item 2).

Panels: (a) the full SDE beside the optimizer, the phase-1 ODE from x₀, the phase-3 SDE from
phase-3 entry and, in phase 2, the mean inside the bracket of Lemma 3.4's drift bounds; (b) the
loss with the phase-1 and phase-3 bounds, each over its own phase; (c) the phase-3 closed forms of
``E X_t``, ``E X_t²``; (d) schedules with their bound and the phase-3 moment equation.  Phase
windows come from the recorded occupancy (a phase holds while ≥ ``occupancy`` of the paths are
in it).  Every verdict is a ``Check`` (docs/analysis.md); a window the run never reaches gives an
inconclusive check that says so.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from optsde.analysis import (
    AtLeast,
    AtMost,
    Check,
    Estimate,
    Within,
    fidelity_summary,
    pair_fidelity,
    restrict,
    sample_mean,
    stationary_mean,
    worst_excess,
)
from optsde.experiments.base import Comparison, Context, ExperimentError, compare, experiment
from optsde.noise import GaussianNoise
from optsde.optimizers import Hyperparameters
from optsde.optimizers.signsgd import SIGNSGD_SPEC, PhaseThresholds
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.report import fidelity_table, method_style, plot_mean, two_way_legend
from optsde.sde import DEFAULT_OBSERVABLES, Recording, record_steps
from optsde.theory import signsgd as theory
from optsde.theory.predictions import regime_statement

MODEL = Within(0.05)
"""docs/theory.md §5: a closed form holds within 5% inside its regime (or the Monte Carlo's SE)."""
NAN = Estimate(math.nan, math.nan)
SHORT = " — not reached: the run is too short (raise `steps`)"
THEORY = {"color": "black", "ls": "--", "lw": 1.2}
PHASE_COLORS = ("tab:red", "tab:orange", "tab:green")
METHOD_LINES = {"optimizer": "-", "sde-paper": "--"}


def _bound(name: str, what: str, t: np.ndarray, values: np.ndarray, bound: np.ndarray) -> Check:
    """``E values ≤ bound`` over the records ``(T, P)``, judged where the mean comes closest in SE.
    A bound per path ``(T, P)`` is paired with its path: the SE is that of the margin."""
    paired = bound.ndim == 2
    if not len(values):
        return Check(name, NAN, None, AtMost(0.0), what + SHORT)
    k, excess = worst_excess(values - (bound if paired else bound[:, None]))
    if paired:
        return Check(name, excess, None, AtMost(0.0), f"{what} (closest at t = {t[k]:.3g})")
    return Check(
        name, sample_mean(values[k]), float(bound[k]), AtMost(), f"{what} (closest at t = {t[k]:.3g})"
    )


def _stationary(method: str, fidelity: dict[str, Any], when: str) -> Check:
    """An SDE's stationary loss against SignSGD's (independent paths)."""
    f = fidelity[method]
    value = Estimate(f["stationary_sde"], f["stationary_sde_se"])
    target = Estimate(f["stationary_optimizer"], f["stationary_optimizer_se"])
    return Check(f"{method} stationary E f {when}", value, target, MODEL, "against SignSGD's")


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


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
    result.say(
        f"SignSGD on f = ½xᵀHx, H = diag({', '.join(f'{v:g}' for v in h)}), s = σ/√B = {s:g}, η = {lr:g}, "
        f"x₀ = {tuple(ctx['x0'])}, {ctx['paths']} paths. {regime_statement('signsgd', problem.kappa(lr))}"
    )
    even = record_steps(steps, ctx["record_points"])  # phase 2 is short: recorded at every step
    dense = [k for k in theory.phase2_steps(ctx["x0"], h, s, lr) if k <= steps]
    main = _compare(ctx, problem, hp, ctx["x0"], ("paper", "phase1"), "main", steps, sorted({*even, *dense}))
    if main.divergences():
        result.summary["main"] = main.summary()
        result.say("**The main run diverged:** " + "; ".join(main.divergences()))
        return
    opt, occupancy = main.recordings["optimizer"], ctx["occupancy"]
    t, loss = opt.times, opt.values["loss"]
    windows = {m: theory.phase_windows(r, occupancy) for m, r in main.recordings.items() if m != "ode-phase1"}
    result.summary["phases"] = {"occupancy": occupancy, "per_coordinate": windows}
    result.say(f"\n**Phases** (while ≥ {occupancy:.0%} of SignSGD's paths are in them):")
    for i, w in enumerate(windows["optimizer"]):
        spans = [f"phase {k} " + _span(w[f"phase{k}_from"], w[f"phase{k}_to"]) for k in (1, 2, 3)]
        result.say(f"- x[{i}]: {', '.join(spans)}.")
    phase1 = theory.first_stretch((opt.mean("phase1") >= occupancy).all(axis=1))
    k3 = _first((opt.mean("phase3") >= occupancy).all(axis=1))
    k3 = None if k3 is None or k3 == len(t) - 1 else k3  # entered at the last record: nothing after it
    settled = math.inf if k3 is None else t[k3] + theory.phase3_settling_time(opt.mean("x2")[k3], h, s, lr)
    burn_in = min(settled / t[-1], 0.9)
    # Fidelity as a time average: over the evenly spread records, not the dense phase-2 ones.
    main.fidelity = fidelity_summary(
        {m: restrict(r, np.isin(r.steps, even)) for m, r in main.recordings.items()}, burn_in=burn_in
    )
    result.summary["main"] = {**main.summary(), "burn_in_time": burn_in * t[-1]}
    result.say("\n**Fidelity from x₀** (the phase-1 ODE is only meant to hold in phase 1):\n")
    result.report.extend(fidelity_table(main.fidelity))
    if settled > t[-1]:
        result.say(
            f"\nE x² settles in phase 3 only at t ≈ {settled:.3g}, after the run: 'stationary' = last 10%."
        )
    fidelity = [_stationary("sde-paper", main.fidelity, "over the run"), _ode_check(main, phase1)]
    t1, f1 = t[phase1], theory.signsgd_phase1_loss_bound(t[phase1], float(loss[0, 0]), h.min())
    bounds = {"phase1": (t1, f1)}
    checks = [_bound("phase-1 bound", "E f, every coordinate in phase 1", t1[1:], loss[phase1][1:], f1[1:])]
    phase3, moments = None, [Check("phase-3 moments", NAN, math.nan, MODEL, "never all in phase 3" + SHORT)]
    if k3 is None:
        checks.append(Check("phase-3 bound", NAN, math.nan, AtMost(), "never all in phase 3" + SHORT))
    else:
        args = (float(loss[k3].mean()), h.min(), h.max(), len(h), ctx["sigma"], ctx["batch_size"], lr)
        bounds["phase3"] = (t[k3:], theory.signsgd_phase3_loss_bound(t[k3:] - t[k3], *args))
        what = f"E f from phase-3 entry at t = {t[k3]:.3g}"
        checks.append(_bound("phase-3 bound", what, t[k3 + 1 :], loss[k3 + 1 :], bounds["phase3"][1][1:]))
        start = int(opt.steps[k3])
        record = [0] + [k - start for k in even if k > start]
        late = min(max((settled - t[k3]) / (t[-1] - t[k3]), 0.0), 0.9)
        models = ("paper", "phase3")
        phase3 = _compare(
            ctx, problem, hp, opt.values["x"][k3], models, "phase3", steps - start, record, start, late
        )
        result.summary["phase3"] = {**phase3.summary(), "start_time": float(t[k3])}
        result.say(f"\n**Fidelity from phase-3 entry (t = {t[k3]:.3g}), all from SignSGD's paths there:**\n")
        result.report.extend(fidelity_table(phase3.fidelity))
        fidelity += [
            _stationary(m, phase3.fidelity, "from phase-3 entry") for m in ("sde-paper", "sde-phase3")
        ]
        moments = _moments(ctx, phase3, opt, k3, h, s, burn_in)
    for key, (tb, fb) in bounds.items():
        result.add_series("bounds", f"bound-{key}", tb, "loss", fb, 0 * tb)
    result.summary["loss_bounds"] = {k: [tb[0], tb[-1]] if len(tb) else None for k, (tb, _) in bounds.items()}
    brackets, bracket_checks = _phase2(ctx, opt, h, s)
    for panel, panel_checks in (("fidelity", fidelity), ("phase 2", bracket_checks), ("loss bounds", checks)):
        result.add_checks(panel, panel_checks)
    result.add_checks("moments", moments)
    result.figures["fig2a_trajectories"] = _trajectory_figure(main, phase3, brackets, h, s)
    stationary = theory.signsgd_phase3_stationary_loss(h, s, lr)
    result.figures["fig2b_loss_bounds"] = _loss_figure(main, bounds, stationary)
    if phase3 is not None:
        result.figures["fig2c_moments"] = _moments_figure(phase3, opt, k3, h, s, lr)
    until = t[-1] if k3 is None else min(1.5 * t[k3], t[-1])
    result.figures["phase_occupancy"] = _occupancy_figure(main, until)
    _schedules(ctx, problem, hp, h, s, schedules)
    every = [c for panel in result.checks.values() for c in panel]
    missed = [f"- {c.sentence()}" for c in every if c.verdict != "pass"]
    head = f"**{len(every) - len(missed)} of {len(every)} checks pass**" + (", not these:" if missed else ".")
    result.report[1:1] = ["", head, *missed]


def _span(start: float | None, stop: float | None) -> str:
    return "never" if start is None else f"t ∈ [{start:.3g}, {stop:.3g}]"


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
    models: tuple[str, ...],
    label: str,
    steps: int,
    record: list[int],
    start: int = 0,
    burn_in: float = 0.5,
) -> Comparison:
    """SignSGD and its SDE ``models`` from ``x0`` (a point or one per path) with the phase
    observables, recorded on a clock that starts at step ``start``."""
    observables = {**DEFAULT_OBSERVABLES, **theory.phase_observables()}
    options = {
        "paths": ctx["paths"],
        "models": models,
        "record_at": record,
        "label": label,
        "burn_in": burn_in,
    }
    run = compare(
        ctx, SIGNSGD_SPEC, problem, hp, ctx.tensor(x0), steps=steps, observables=observables, **options
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
    t, x, drawn, checks = opt.times, opt.values["x"], [], []
    for i in range(len(h)):
        idx = theory.first_stretch(opt.mean("phase2")[:, i] >= ctx["occupancy"])
        if len(idx) < 2:
            checks.append(
                Check(f"x[{i}] in its phase-2 bracket", NAN, None, AtMost(0.0), "E X beyond it" + SHORT)
            )
            continue
        entry, ti, xi = x[idx[0], :, i], t[idx], x[idx, :, i]
        low, high = theory.signsgd_phase2_mean_bounds(
            ti - ti[0], entry, np.full(len(entry), h[i]), s, lr=opt.lr
        )
        checks.append(_bound(f"x[{i}] ≤ its phase-2 bracket", "E(X − upper edge)", ti[1:], xi[1:], high[1:]))
        checks.append(_bound(f"x[{i}] ≥ its phase-2 bracket", "E(lower edge − X)", ti[1:], -xi[1:], -low[1:]))
        offset = xi - (high + low) / 2
        se = offset.std(axis=1, ddof=1) / math.sqrt(len(entry)) if len(entry) > 1 else 0 * ti
        drawn.append(
            {"i": i, "t": ti, "offset": offset.mean(axis=1), "se": se, "half": (high - low).mean(1) / 2}
        )
        for side, edge in (("lower", low), ("upper", high)):
            ctx.result.add_series("phase2", f"bound-phase2-{side}", ti, f"x[{i}]", edge.mean(axis=1), 0 * ti)
    return drawn, checks


def _moments(
    ctx: Context, phase3: Comparison, opt: Recording, k3: int, h: np.ndarray, s: float, burn_in: float
) -> list[Check]:
    """docs/theory.md §5's phase-3 closed forms of E X_t and E X_t² from the measured moments at entry."""
    lr, t3 = ctx["lr"], float(opt.times[k3])
    stationary = theory.signsgd_phase3_stationary_second_moment(h, s, lr)
    ctx.result.summary["moments"] = {"start_time": t3, "predicted_stationary_x2": stationary}
    checks = [
        Check(
            f"{m} stationary E x[{i}]²",
            stationary_mean(r.values["x2"][..., i], r.steps, burn_in),
            stationary[i],
            MODEL,
        )
        for m, r in phase3.recordings.items()
        for i in range(len(h))
    ]
    rec = phase3.recordings["optimizer"]
    mean, x2 = _phase3_laws(rec.times - t3, opt, k3, h, s)
    for i in range(len(h)):
        ctx.result.add_series("moments", "theory-phase3", rec.times, f"x[{i}]", mean[:, i], 0 * rec.times)
        ctx.result.add_series("moments", "theory-phase3", rec.times, f"x2[{i}]", x2[:, i], 0 * rec.times)
    k, i = np.unravel_index(np.argmax(np.abs(rec.mean("x") - mean)), mean.shape)
    gap = sample_mean(rec.values["x"][k, :, i]) - float(mean[k, i])
    value, where = (
        Estimate(abs(gap.value), gap.se) / abs(opt.mean("x")[k3, i]),
        f"x[{i}], t = {rec.times[k]:.3g}",
    )
    checks.append(
        Check("SignSGD E X_t", value, None, AtMost(0.05), f"largest |E X − e^(−at)E X₀|/|E X₀| ({where})")
    )
    k, i = np.unravel_index(np.argmax(np.abs(rec.mean("x2") / x2 - 1)), x2.shape)
    value, where = sample_mean(rec.values["x2"][k, :, i]) / float(x2[k, i]), f"x[{i}], t = {rec.times[k]:.3g}"
    lag = "erf(Y/√2) lags √(2/π)Y by ≈ Y²/6 after entry"
    checks.append(
        Check("SignSGD E X_t²", value, 1.0, MODEL, f"E X²/closed form furthest from 1 ({where}; {lag})")
    )
    return checks


def _phase3_laws(
    tau: np.ndarray, opt: Recording, k3: int, h: np.ndarray, s: float
) -> tuple[np.ndarray, np.ndarray]:
    """``E X`` and ``E X²`` a time ``tau`` after phase-3 entry, from SignSGD's moments there."""
    x, x2 = opt.mean("x")[k3], opt.mean("x2")[k3]
    second = theory.signsgd_phase3_second_moment(tau, x, h, s, opt.lr, second_moment0=x2)
    return theory.signsgd_phase3_mean(tau, x, h, s), second


def _schedules(
    ctx: Context, problem: NoisyProblem, hp: Hyperparameters, h: np.ndarray, s: float, schedules: list[Any]
) -> None:
    """(d) each schedule from ``schedule_x0`` (phase 3): its bound and phase-3 moment equation; a
    to-zero schedule ends below the constant-lr level, a summable one above the floor Φ(∞) sets."""
    lr, x0, result = hp.lr, np.asarray(ctx["schedule_x0"], dtype=float), ctx.result
    stationary = theory.signsgd_phase3_stationary_loss(h, s, lr)
    y0, record = np.abs(h * x0 / s), record_steps(ctx["schedule_steps"], 60, "log")
    numbers: dict[str, Any] = {"start_Y": y0, "constant_lr_stationary_loss": stationary}
    result.say(
        f"\n**Schedules** from x₀ = {tuple(ctx['schedule_x0'])} (|Y₀| = {', '.join(f'{v:.2g}' for v in y0)}):"
    )
    if (y0 >= 1).any():
        result.say(
            "- `schedule_x0` is outside phase 3 (|Y| ≥ 1): the bound and the prediction need not hold."
        )
    runs, checks = {}, []
    options = {"steps": ctx["schedule_steps"], "paths": ctx["schedule_paths"], "record_at": record}
    options["observables"] = {"loss": DEFAULT_OBSERVABLES["loss"]}
    for sched in schedules:
        by_step = lambda k, phi=sched.phi: float(phi(np.array([k * lr]))[0])  # noqa: E731 (φ is of SDE time)
        label = f"schedule-{sched.name}"  # its own random stream and checkpoint
        run = compare(
            ctx, SIGNSGD_SPEC, problem, hp, ctx.tensor(x0), schedule=by_step, label=label, **options
        )
        t, loss = run.recordings["optimizer"].times, run.recordings["optimizer"].values["loss"]
        bound, predicted = theory.signsgd_schedule_laws(
            t, sched.phi, x0, h, ctx["sigma"], ctx["batch_size"], lr
        )
        floor, final = theory.signsgd_schedule_loss_floor(x0, h, s, sched.total), sample_mean(loss[-1])
        for rec in run.recordings.values():
            result.add_recording(f"schedule-{sched.name}", rec)
        result.add_series(f"schedule-{sched.name}", "bound-schedule", t, "loss", bound, 0 * t)
        result.add_series(f"schedule-{sched.name}", "theory-phase3", t, "loss", predicted, 0 * t)
        checks.append(
            Check(f"{sched.name}: final E f", final, predicted[-1], MODEL, "phase-3 moment equation")
        )
        checks.append(
            _bound(f"{sched.name}: bound", "E f under the schedule bound", t[1:], loss[1:], bound[1:])
        )
        if sched.to_zero:
            checks.append(
                Check(f"{sched.name}: to 0", final, stationary, AtMost(), "below the constant-lr level")
            )
        elif math.isfinite(sched.total):
            checks.append(Check(f"{sched.name}: floor", final, floor, AtLeast(), "above Σ½hx₀²e^(−2aΦ(∞))"))
        numbers[sched.name] = {
            **run.summary(),
            "final_loss": final.value,
            "final_loss_se": final.se,
            "final_predicted": predicted[-1],
            "final_bound": bound[-1],
            "Phi_infinity": sched.total,
            "theory_says_loss_to_zero": sched.to_zero,
            "loss_floor_from_Phi": floor,
        }
        result.say(
            f"- {sched.name}: final E f = {final} = {final.value / stationary:.2f}× the constant-lr level "
            f"{stationary:.3g}; phase-3 prediction {predicted[-1]:.3g}; bound {bound[-1]:.3g}."
        )
        runs[sched.name] = (run, bound, predicted)
    result.summary["schedules"] = numbers
    result.add_checks("schedules", checks)
    result.figures["fig2d_schedules"] = _schedules_figure(runs, stationary)


# Figures: SignSGD and the full SDE with a band over paths (± 1 sd on a linear axis, 25–75% on a
# log one), the phase approximations as their mean; the phase-1 ODE only until it reaches 0 (after
# that it hops on the lattice ηℤ and models nothing).


def _curve(
    ax: Any, rec: Recording, metric: str, index: int | None = None, log: bool = False, **style: Any
) -> None:
    if rec.method == "ode-phase1":
        arrived = _first((np.abs(rec.mean("x")) <= rec.lr).all(axis=1))
        rec = restrict(rec, np.arange(len(rec.steps)) <= (len(rec.steps) if arrived is None else arrived))
    band = ("quartiles" if log else "sd") if rec.method in ("optimizer", "sde-paper") else None
    plot_mean(ax, rec, metric, index, band, **style)


def _trajectory_figure(
    main: Comparison, phase3: Comparison | None, brackets: list[dict[str, Any]], h: np.ndarray, s: float
) -> Figure:
    """(a) mean paths in the plane, the coordinates over time, the mean inside the phase-2 bracket."""
    fig, (plane, coords, bracket) = plt.subplots(1, 3, figsize=(15, 4.2))
    runs = {**main.recordings, **({"sde-phase3": phase3.recordings["sde-phase3"]} if phase3 else {})}
    j = min(1, len(h) - 1)
    for rec in runs.values():
        plane.plot(rec.mean("x")[:, 0], rec.mean("x")[:, j], lw=1.8, **method_style(rec.method))
        for i in range(j + 1):
            _curve(coords, rec, "x", i, label=f"{method_style(rec.method)['label']} x[{i}]", lw=1.6 - 0.7 * i)
    for n, path in enumerate(main.recordings["optimizer"].snapshots.transpose(1, 0, 2)[:2]):
        plane.plot(
            path[:, 0], path[:, j], lw=0.4, color="gray", label=None if n else "SignSGD, 2 sample paths"
        )
    for level, ls in ((PhaseThresholds().low, ":"), (PhaseThresholds().high, "-.")):
        plane.axvline(level * s / h[0], color="gray", lw=0.7, ls=ls, label=f"|Y| = {level:g}")
        plane.axhline(level * s / h[j], color="gray", lw=0.7, ls=ls)
    for b in brackets:
        line = bracket.plot(b["t"], b["offset"], lw=1.4, label=f"SignSGD E x[{b['i']}] ± 2 SE")[0]
        bracket.fill_between(
            b["t"],
            b["offset"] - 2 * b["se"],
            b["offset"] + 2 * b["se"],
            color=line.get_color(),
            alpha=0.2,
            lw=0,
        )
        bracket.plot(
            b["t"], b["half"], color=line.get_color(), lw=0.8, ls="--", label=f"bracket of x[{b['i']}]"
        )
        bracket.plot(b["t"], -b["half"], color=line.get_color(), lw=0.8, ls="--")
    if not brackets:
        bracket.text(0.5, 0.5, "no stretch in phase 2 recorded", ha="center", transform=bracket.transAxes)
    plane.set(xlabel="x[0]", ylabel=f"x[{j}]", title="mean paths in the plane")
    coords.set(xlabel="t = k η", ylabel="E x[i] (band ± 1 sd)", title="coordinates over time")
    bracket.set(
        xlabel="t = k η",
        ylabel="E x − middle of the bracket",
        title="phase 2: mean in the drift-bound bracket",
    )
    for ax in (plane, coords, bracket) if brackets else (plane, coords):
        ax.legend(fontsize=6)
    fig.suptitle("(a) SignSGD: optimizer, full SDE, phase-1 ODE, phase-3 SDE, phase-2 bracket", fontsize=10)
    fig.tight_layout()
    return fig


def _loss_figure(main: Comparison, bounds: dict[str, Any], stationary: float) -> Figure:
    """(b) E f with each phase's bound drawn over the time that phase lasts."""
    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    ax.set_yscale("log")
    for rec in main.recordings.values():
        _curve(ax, rec, "loss", log=True)
    for (key, (tb, fb)), color in zip(bounds.items(), ("tab:purple", "tab:brown"), strict=False):
        ax.plot(tb, fb, color=color, lw=1.5, label=f"phase-{key[-1]} bound, over phase {key[-1]}")
    ax.axhline(stationary, label="phase-3 stationary loss", **THEORY)
    ax.set(ylim=(min(1e-6, stationary / 10), None), xlabel="t = k η", ylabel="f(x) (mean; band 25–75%)")
    ax.set_title("(b) loss and the bound of each phase, over that phase", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _moments_figure(
    phase3: Comparison, opt: Recording, k3: int, h: np.ndarray, s: float, lr: float
) -> Figure:
    """(c) E X_t and E X_t² in phase 3: closed forms against the simulations."""
    d, t3, times = min(len(h), 2), float(opt.times[k3]), phase3.recordings["optimizer"].times
    fig, axes = plt.subplots(2, d, figsize=(5.0 * d, 6.4), squeeze=False)
    laws = dict(zip(("x", "x2"), _phase3_laws(times - t3, opt, k3, h, s), strict=True))
    for (row, metric), i in itertools.product(enumerate(laws), range(d)):
        ax, log = axes[row, i], metric == "x2"
        if log:
            ax.set_yscale("log")
            level = theory.signsgd_phase3_stationary_second_moment(h, s, lr)[i]
            ax.axhline(level, color="gray", lw=0.6, ls=":", label="stationary E X² (phase 3)")
        for rec in phase3.recordings.values():
            _curve(ax, rec, metric, index=i, log=log)
        ax.plot(times, laws[metric][:, i], label="closed form (phase 3)", **THEORY)
        ax.set(
            title=f"E {'X²' if log else 'X'}, x[{i}] (band {'25–75%' if log else '± 1 sd'})", xlabel="t = k η"
        )
        ax.legend(fontsize=7)
    fig.suptitle("(c) moments of X_t in phase 3: closed forms vs simulation", fontsize=10)
    fig.tight_layout()
    return fig


def _occupancy_figure(main: Comparison, until: float) -> Figure:
    """Fraction of paths in each phase over time, per coordinate (optimizer solid, SDE dashed)."""
    d = min(main.recordings["optimizer"].values["x"].shape[-1], 4)
    fig, axes = plt.subplots(1, d, figsize=(4.6 * d, 3.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for (method, ls), (k, color) in itertools.product(METHOD_LINES.items(), enumerate(PHASE_COLORS, 1)):
            rec = main.recordings[method]
            ax.plot(rec.times, rec.mean(f"phase{k}")[:, i], color=color, ls=ls, label=f"phase {k} ({method})")
        ax.set(xlim=(0.0, until), title=f"x[{i}]", xlabel="t = k η", ylabel="fraction of paths")
        ax.legend(fontsize=6)
    fig.suptitle("phase occupancy of Y = ∇f/s (Lemma 3.4 thresholds 1 and 3/2)", fontsize=10)
    fig.tight_layout()
    return fig


def _schedules_figure(
    runs: dict[str, tuple[Comparison, np.ndarray, np.ndarray]], stationary: float
) -> Figure:
    """(d) the loss under each schedule (log–log): optimizer (band), SDE, bound, phase-3 prediction."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.set(xscale="log", yscale="log", xlabel="t", ylabel="f(x) (mean; band 25–75%)")
    colors = dict(zip(runs, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for name, (run, bound, predicted) in runs.items():
        t = run.recordings["optimizer"].times
        _curve(ax, run.recordings["optimizer"], "loss", log=True, color=colors[name], lw=1.6)
        _curve(ax, run.recordings["sde-paper"], "loss", log=True, color=colors[name], linestyle="--", lw=1.0)
        ax.plot(t[t > 0], bound[t > 0], color=colors[name], ls=":", lw=1.2)
        ax.plot(t[t > 0], predicted[t > 0], color=colors[name], ls="-.", lw=0.8)
    level = ax.axhline(stationary, color="gray", lw=0.7, label="constant-lr stationary loss")
    styles = {"optimizer": "-", "SDE": "--", "schedule bound": ":", "phase-3 moments": "-."}
    two_way_legend(ax, colors, styles, [level], fontsize=7, ncol=2, loc="lower left")
    ax.set_xlim(left=1e-2)
    ax.set_title("(d) schedules: loss → 0 only if Φ(∞) = ∞ and φ → 0", fontsize=10)
    fig.tight_layout()
    return fig
