"""The estimators applied to a ``Recording``: the one place the analysis layer touches the engine.

The fidelity summary (how faithfully an SDE tracks its optimizer, docs/analysis.md
"Fidelity"): per (optimizer, SDE) pair, over the recorded times, the maximum and the time
average of ``|E f_sde − E f_opt| / E f_opt`` (:func:`~optsde.analysis.estimates.max_gap`,
:func:`~optsde.analysis.estimates.time_averaged_gap`) and the relative error of the
stationary loss, each with its Monte Carlo SE.  The two methods' paths are independent.
"""

from __future__ import annotations

import numpy as np

from optsde.analysis.estimates import (
    AnalysisError,
    Estimate,
    gap_profile,
    max_gap,
    median_gap,
    ratio,
    spike_share,
    stationary_mean,
    stationary_window,
    time_averaged_gap,
)
from optsde.sde import Recording


def burn_in_mask(rec: Recording, burn_in: float) -> np.ndarray:
    """:func:`~optsde.analysis.estimates.stationary_window` of ``rec``'s recorded steps."""
    return stationary_window(rec.steps, burn_in)


def restrict(rec: Recording, mask: np.ndarray) -> Recording:
    """``rec`` at the recorded points selected by ``mask`` (a boolean array over its records)."""
    return Recording(
        method=rec.method,
        lr=rec.lr,
        steps=rec.steps[mask],
        values={name: values[mask] for name, values in rec.values.items()},
        snapshots=rec.snapshots[mask],
        divergence=rec.divergence,
    )


def per_path(rec: Recording, metric: str) -> np.ndarray:
    """``(T, P)`` values of ``metric``; a vector observable ``(T, P, d…)`` is summed over its coordinates."""
    values = rec.values[metric]
    return values.reshape(values.shape[0], values.shape[1], -1).sum(axis=2)


def stationary_values(rec: Recording, metric: str = "loss", burn_in: float = 0.5) -> np.ndarray:
    """``(T_window, P, …)`` values of ``metric`` in the stationary window: samples of the stationary
    law, independent across paths, correlated in time (see :func:`grouped_quantile`)."""
    return rec.values[metric][burn_in_mask(rec, burn_in)]


def recording_mean(rec: Recording, metric: str = "loss", burn_in: float = 0.5) -> Estimate:
    """:func:`~optsde.analysis.estimates.stationary_mean` of ``metric`` (summed over coordinates)."""
    return stationary_mean(per_path(rec, metric), rec.steps, burn_in)


def _common_records(a: Recording, b: Recording) -> np.ndarray:
    n = min(len(a.steps), len(b.steps))
    if not np.array_equal(a.steps[:n], b.steps[:n]):
        raise AnalysisError(f"{a.method} and {b.method} were recorded at different steps")
    return np.arange(n)


DEPARTURE_GAP = 1.0
"""A model whose ``E f`` is off its optimizer's by more than this (relative, i.e. more than twice
the optimizer's loss) has left the optimizer's range: it is reported as not tracked from there,
not by a percentage that only measures how far it blew up."""


def departure_step(
    optimizer: Recording, sde: Recording, metric: str = "loss", threshold: float = DEPARTURE_GAP
) -> int | None:
    """The first recorded step at which ``|E sde − E optimizer| / E optimizer`` exceeds
    ``threshold`` (None if it never does); a model that blows up without overflowing."""
    idx = _common_records(optimizer, sde)
    reference = per_path(optimizer, metric)[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(per_path(sde, metric)[idx].mean(axis=1) / reference - 1.0)
    beyond = np.flatnonzero(~(gap <= threshold))  # a nan gap counts as beyond
    return int(optimizer.steps[idx][beyond[0]]) if beyond.size else None


def pair_fidelity(
    optimizer: Recording, sde: Recording, metric: str = "loss", burn_in: float = 0.5
) -> dict[str, float | int | str | None]:
    """The fidelity numbers of one (optimizer, SDE) pair; keys end in ``_se`` for errors."""
    diverged = [rec for rec in (optimizer, sde) if rec.divergence is not None]
    if diverged:
        return {
            "diverged": ", ".join(rec.method for rec in diverged),
            "diverged_step": min(rec.divergence.step for rec in diverged if rec.divergence),
            "diverged_paths": max(rec.divergence.paths for rec in diverged if rec.divergence),
        }
    idx = _common_records(optimizer, sde)[1:]  # t = 0 is identical by construction
    opt_vals, sde_vals = optimizer.values[metric][idx], sde.values[metric][idx]
    worst = int(np.argmax(np.abs(gap_profile(opt_vals, sde_vals)[0])))
    largest, average = max_gap(opt_vals, sde_vals), time_averaged_gap(opt_vals, sde_vals)
    opt_stat, sde_stat = recording_mean(optimizer, metric, burn_in), recording_mean(sde, metric, burn_in)
    error = ratio(sde_stat, opt_stat) - 1.0
    return {
        "max_rel_gap": largest.value,
        "max_rel_gap_se": largest.se,
        "max_rel_gap_t": float(optimizer.times[idx][worst]),
        "mean_rel_gap": average.value,
        "mean_rel_gap_se": average.se,
        "stationary_optimizer": opt_stat.value,
        "stationary_optimizer_se": opt_stat.se,
        "stationary_sde": sde_stat.value,
        "stationary_sde_se": sde_stat.se,
        "stationary_rel_error": error.value,
        "stationary_rel_error_se": error.se,
    }


def fidelity_summary(
    recordings: dict[str, Recording], metric: str = "loss", burn_in: float = 0.5
) -> dict[str, dict[str, float | int | str | None]]:
    """:func:`pair_fidelity` of every SDE / approximation against the ``optimizer`` recording."""
    optimizer = recordings["optimizer"]
    return {
        method: pair_fidelity(optimizer, rec, metric, burn_in)
        for method, rec in recordings.items()
        if method != "optimizer"
    }


def robust_fidelity(optimizer: Recording, sde: Recording, metric: str = "loss") -> dict[str, float]:
    """How much of a gap of ``E f`` the bulk of the paths carries (docs/networks.md "The ResNet gap"):
    the time-averaged gap of the medians over paths (:func:`~optsde.analysis.estimates.median_gap`)
    and each method's share of spiking ``(record, path)`` cells
    (:func:`~optsde.analysis.estimates.spike_share`, against the optimizer's median)."""
    idx = _common_records(optimizer, sde)[1:]  # t = 0 is identical by construction
    opt_vals, sde_vals = per_path(optimizer, metric)[idx], per_path(sde, metric)[idx]
    gap = median_gap(opt_vals, sde_vals)
    return {
        "median_rel_gap": gap.value,
        "median_rel_gap_se": gap.se,
        "spike_share_optimizer": spike_share(opt_vals, opt_vals),
        "spike_share_sde": spike_share(opt_vals, sde_vals),
    }
