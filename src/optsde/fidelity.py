"""How faithfully an SDE tracks its optimizer: the fidelity summary of issue 2, item 9.

Per (optimizer, SDE) pair, over the recorded times: the maximum and the time
average of ``|E f_sde − E f_opt| / E f_opt``, and the relative error of the
stationary loss (time average after burn-in), each with its Monte Carlo
standard error.  The two methods' paths are independent, so their variances add.
"""

from __future__ import annotations

import math

import numpy as np

from optsde.sde import Recording


def _common_steps(a: Recording, b: Recording) -> np.ndarray:
    n = min(len(a.steps), len(b.steps))
    if not np.array_equal(a.steps[:n], b.steps[:n]):
        raise ValueError(f"{a.method} and {b.method} were recorded at different steps")
    return np.arange(n)


def burn_in_mask(rec: Recording, burn_in: float) -> np.ndarray:
    """Record points at or after ``burn_in`` × the last recorded step (at least the last one)."""
    if len(rec.steps) == 0:
        return np.zeros(0, dtype=bool)
    mask = rec.steps >= burn_in * rec.steps[-1]
    mask[-1] = True
    return mask


def stationary_mean(rec: Recording, metric: str = "loss", burn_in: float = 0.5) -> tuple[float, float]:
    """Time average after burn-in of ``metric``: mean over paths and its standard error.

    Each path's time average is one sample, so correlation in time is accounted for.
    """
    values = rec.values[metric][burn_in_mask(rec, burn_in)]
    per_path = values.mean(axis=0)
    if per_path.ndim > 1:
        per_path = per_path.reshape(per_path.shape[0], -1).sum(axis=1)
    se = per_path.std(ddof=1) / math.sqrt(len(per_path)) if len(per_path) > 1 else 0.0
    return float(per_path.mean()), float(se)


def ratio_with_error(num: float, num_se: float, den: float, den_se: float) -> tuple[float, float]:
    """``num/den − 1`` and its delta-method standard error for independent estimates."""
    ratio = num / den
    se = abs(ratio) * math.sqrt((num_se / num) ** 2 + (den_se / den) ** 2) if num else den_se / den
    return ratio - 1.0, se


def pair_fidelity(
    optimizer: Recording, sde: Recording, metric: str = "loss", burn_in: float = 0.5
) -> dict[str, float | int | None]:
    """The fidelity numbers of one (optimizer, SDE) pair; keys end in ``_se`` for errors."""
    diverged = [rec for rec in (optimizer, sde) if rec.divergence is not None]
    if diverged:
        return {
            "diverged": ", ".join(rec.method for rec in diverged),
            "diverged_step": min(rec.divergence.step for rec in diverged if rec.divergence),
            "diverged_paths": max(rec.divergence.paths for rec in diverged if rec.divergence),
        }
    idx = _common_steps(optimizer, sde)[1:]  # t = 0 is identical by construction
    opt_vals, sde_vals = optimizer.values[metric][idx], sde.values[metric][idx]
    opt_mean, sde_mean = opt_vals.mean(axis=1), sde_vals.mean(axis=1)
    opt_se = opt_vals.std(axis=1, ddof=1) / math.sqrt(opt_vals.shape[1])
    sde_se = sde_vals.std(axis=1, ddof=1) / math.sqrt(sde_vals.shape[1])
    gap = (sde_mean - opt_mean) / opt_mean
    gap_se = np.sqrt(sde_se**2 + (gap + 1) ** 2 * opt_se**2) / np.abs(opt_mean)
    worst = int(np.argmax(np.abs(gap)))
    # Time-averaged |gap|: with the sign of each gap fixed, it is linear in each
    # method's per-path values, so each path's weighted average is one sample.
    weights = np.sign(gap) / opt_mean / len(idx)
    sde_terms = (weights[:, None] * sde_vals).sum(axis=0)
    opt_terms = (weights[:, None] * opt_vals).sum(axis=0)
    mean_gap_se = math.sqrt(sde_terms.var(ddof=1) / len(sde_terms) + opt_terms.var(ddof=1) / len(opt_terms))
    opt_stat, opt_stat_se = stationary_mean(optimizer, metric, burn_in)
    sde_stat, sde_stat_se = stationary_mean(sde, metric, burn_in)
    stat_err, stat_err_se = ratio_with_error(sde_stat, sde_stat_se, opt_stat, opt_stat_se)
    return {
        "max_rel_gap": float(abs(gap[worst])),
        "max_rel_gap_se": float(gap_se[worst]),
        "max_rel_gap_t": float(optimizer.times[idx][worst]),
        "mean_rel_gap": float(np.abs(gap).mean()),
        "mean_rel_gap_se": mean_gap_se,
        "stationary_optimizer": opt_stat,
        "stationary_optimizer_se": opt_stat_se,
        "stationary_sde": sde_stat,
        "stationary_sde_se": sde_stat_se,
        "stationary_rel_error": stat_err,
        "stationary_rel_error_se": stat_err_se,
    }


def fidelity_summary(
    recordings: dict[str, Recording], metric: str = "loss", burn_in: float = 0.5
) -> dict[str, dict[str, float | int | None]]:
    """``pair_fidelity`` of every SDE / approximation against the ``optimizer`` recording."""
    optimizer = recordings["optimizer"]
    return {
        method: pair_fidelity(optimizer, rec, metric, burn_in)
        for method, rec in recordings.items()
        if method != "optimizer"
    }
