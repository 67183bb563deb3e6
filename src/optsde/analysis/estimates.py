"""Estimates with standard errors: the one set of estimators every experiment uses (docs/analysis.md).

Every number an experiment reports about a random quantity is an :class:`Estimate`:
a value and its Monte Carlo standard error.  The estimators here take plain arrays —
recordings of shape ``(T, P)`` (recorded steps × independent paths) or samples — so
they know nothing of the simulation engine; :mod:`optsde.analysis.recordings` adapts
a ``Recording`` to them.  Independence is what the standard errors rest on: paths are
independent, consecutive records of one path are not, so a path's time average is one
sample (docs/theory.md §3 for the stationary laws these averages estimate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from optsde.analysis.policy import POLICY
from optsde.errors import OptsdeError

BATCHES = 10
"""Batch count of the batch-means SE when there is a single path (P == 1)."""

HILL_MIN_SAMPLES = 50
"""Fewer samples than this leave :func:`mean_exists` undecided: the tail is not seen."""


class AnalysisError(OptsdeError):
    """Input the estimators cannot use (shapes, fractions, empty windows)."""


@dataclass(frozen=True)
class Estimate:
    """A value and its standard error (0 for an exact number, ``nan`` when unknown)."""

    value: float
    se: float

    @property
    def rel_se(self) -> float:
        """``se / |value|`` (``inf`` for a zero value with a nonzero SE)."""
        if self.value == 0:
            return 0.0 if self.se == 0 else math.inf
        return self.se / abs(self.value)

    def __str__(self) -> str:
        return format_estimate(self.value, self.se)

    def to_dict(self) -> dict[str, float]:
        """``{"value": …, "se": …}``, JSON-ready."""
        return {"value": float(self.value), "se": float(self.se)}

    def __add__(self, other: Estimate | float) -> Estimate:
        """Sum; an ``Estimate`` operand is taken as independent (variances add)."""
        o = as_estimate(other)
        return Estimate(self.value + o.value, math.hypot(self.se, o.se))

    def __sub__(self, other: Estimate | float) -> Estimate:
        """Difference; an ``Estimate`` operand is taken as independent (variances add)."""
        o = as_estimate(other)
        return Estimate(self.value - o.value, math.hypot(self.se, o.se))

    def __mul__(self, factor: float) -> Estimate:
        """Scaled by an exact number."""
        return Estimate(self.value * factor, self.se * abs(factor))

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Estimate:
        """Divided by an exact number (use :func:`ratio` for an estimate in the denominator)."""
        return Estimate(self.value / divisor, self.se / abs(divisor))

    def __neg__(self) -> Estimate:
        return Estimate(-self.value, self.se)


def as_estimate(x: Estimate | float) -> Estimate:
    """``x`` itself, or an exact number as an estimate with SE 0."""
    return x if isinstance(x, Estimate) else Estimate(float(x), 0.0)


VALUE_DIGITS = 6
"""At most this many significant digits of a value are printed (:func:`format_estimate`)."""


def format_estimate(value: float, se: float) -> str:
    """``0.123 ± 0.004``: the value to the SE's leading digit (two digits when it starts with 1 or 2).

    At most :data:`VALUE_DIGITS` significant digits of the value: an SE below its last one (a
    nearly exact number, e.g. a lattice orbit that every path shares) is written on its own to
    two significant digits, ``0.00750000 ± 2.9e-19``.
    """
    if not (math.isfinite(value) and math.isfinite(se)) or se <= 0:
        return f"{value:.4g} ± {se:.2g}"
    lead = math.floor(math.log10(se))
    digit = se / 10.0**lead
    last = lead - 1 if digit < 3 else lead  # the last digit shown
    top = math.floor(math.log10(max(abs(value), se)))
    if last < top - VALUE_DIGITS + 1:
        shown = f"{value:#.{VALUE_DIGITS}g}".rstrip(".")  # "#" keeps trailing zeros; no bare point
        return f"{shown} ± {se:.2g}"
    if -4 <= top < 6 and last < 0:
        decimals = -last
        return f"{value:.{decimals}f} ± {se:.{decimals}f}"
    if -4 <= top < 6:
        return f"{value:.0f} ± {se:.0f}"
    scale = 10.0**top
    decimals = max(top - last, 0)
    return f"({value / scale:.{decimals}f} ± {se / scale:.{decimals}f})e{top:+03d}"


def sample_mean(samples: np.ndarray) -> Estimate:
    """Mean of independent samples and its SE ``std/√n`` (``nan`` with fewer than two)."""
    x = np.asarray(samples, dtype=float).ravel()
    if x.size == 0:
        raise AnalysisError("no samples to average")
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return Estimate(float(x.mean()), se)


def ratio(a: Estimate | float, b: Estimate | float) -> Estimate:
    """``a/b`` for independent estimates, SE by the delta method:
    ``Var(a/b) ≈ (Var a + (a/b)² Var b)/b²``."""
    a, b = as_estimate(a), as_estimate(b)
    r = a.value / b.value
    return Estimate(r, math.sqrt(a.se**2 + r**2 * b.se**2) / abs(b.value))


def paired_ratio(a: np.ndarray, b: np.ndarray) -> Estimate:
    """``mean(a)/mean(b)`` for per-path samples paired by path (same seeds), SE by the paired delta method.

    Each path's linearisation ``r (a_i/ā − b_i/b̄)`` carries ``Var a``, ``Var b`` and their
    covariance, so common random numbers make the SE small where they make ``a`` and ``b`` move together.
    """
    a, b = _paths(a, "a"), _paths(b, "b")
    if a.shape != b.shape:
        raise AnalysisError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    mean_a, mean_b = a.mean(), b.mean()
    r = mean_a / mean_b
    influence = (a / mean_a - b / mean_b) * r
    return Estimate(float(r), float(influence.std(ddof=1) / math.sqrt(a.size)))


def independent_ratio(a: np.ndarray, b: np.ndarray) -> Estimate:
    """``mean(a)/mean(b)`` for independent samples (different paths), SE by :func:`ratio`."""
    return ratio(sample_mean(_paths(a, "a")), sample_mean(_paths(b, "b")))


def _paths(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise AnalysisError(f"{name}: give one value per path, at least two, got shape {x.shape}")
    return x


# ---------------------------------------------------------------- stationary averages


def stationary_window(steps: np.ndarray, burn_in: float) -> np.ndarray:
    """Mask of the recorded steps at or after ``burn_in`` × the last recorded step: the last
    ``1 − burn_in`` of a run that starts at step 0.

    Records taken as pairs of consecutive steps (:func:`optsde.sde.record_steps`, stratified)
    stay whole pairs: where the window holds two consecutive steps, every run of consecutive
    recorded steps in it of odd length loses its first record — the second half of a pair whose
    partner lies before the window, or the first of ``k, k + 1, last`` when the run's last step
    follows the last pair (a lone last step goes).  Each run then holds as many even as odd
    steps, so a period-2 motion shared by every path (SignSGD on its lattice, docs/theory.md §8),
    which the SE over paths cannot see, cannot bias a time average.  Records without pairs (a
    linear or log grid) are kept as they are.
    """
    steps = np.asarray(steps)
    if not 0.0 <= burn_in < 1.0:
        raise AnalysisError(f"burn_in={burn_in}: give a fraction in [0, 1)")
    if steps.size == 0:
        return np.zeros(0, dtype=bool)
    mask = steps >= burn_in * steps[-1]
    mask[-1] = True
    index = np.flatnonzero(mask)
    consecutive = np.diff(steps[index]) == 1
    if consecutive.any():
        starts = np.flatnonzero(np.r_[True, ~consecutive])  # first record of each run
        lengths = np.diff(np.r_[starts, index.size])
        mask[index[starts[lengths % 2 == 1]]] = False
    return mask


def _records(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] != len(steps):
        raise AnalysisError(
            f"values must have shape (records, paths) = ({len(steps)}, P), got {values.shape}"
        )
    return values


def stationary_mean(values: np.ndarray, steps: np.ndarray, burn_in: float = 0.5) -> Estimate:
    """Time average over the stationary window, averaged over paths, with its SE (docs/analysis.md).

    ``values``: ``(T, P)``, records × independent paths.  Each path's time average is one
    independent sample, so the SE (spread over paths / √P) accounts for the correlation in time.
    With a single path (P == 1) the window is cut into ``BATCHES`` consecutive batches and
    the SE is that of their means (batch means): it is honest only when a batch is much
    longer than the correlation time; ``nan`` when the window has fewer than 4 records.
    """
    values = _records(values, steps)[stationary_window(steps, burn_in)]
    if values.shape[1] > 1:
        return sample_mean(values.mean(axis=0))
    return _batch_means(values[:, 0])


def _batch_means(series: np.ndarray) -> Estimate:
    batches = min(BATCHES, series.size // 2)
    if batches < 2:
        return Estimate(float(series.mean()), math.nan)
    means = np.array([chunk.mean() for chunk in np.array_split(series, batches)])
    return Estimate(float(series.mean()), float(means.std(ddof=1) / math.sqrt(batches)))


@dataclass(frozen=True)
class Stationarity:
    """Whether the stationary window looks stationary: the drift between its two halves."""

    is_stationary: bool
    drift: Estimate
    reason: str


def stationarity(
    values: np.ndarray, steps: np.ndarray, burn_in: float = 0.5, z: float | None = None, rel_tol: float = 0.02
) -> Stationarity:
    """Second half minus first half of the stationary window (means over paths), with its SE.

    Paths are independent and each path contributes its own difference, so the SE is the
    spread of the per-path differences / √P (batch means over each half when P == 1).  The
    window is "too short to call stationary" when the drift exceeds both ``z`` standard errors
    (the tolerance policy's, docs/analysis.md) and ``rel_tol`` of the window's mean: a drift
    the Monte Carlo resolves but smaller than ``rel_tol`` does not matter to any reported number.
    """
    z = POLICY.z if z is None else z
    window = _records(values, steps)[stationary_window(steps, burn_in)]
    if window.shape[0] < 2:
        reason = "the stationary window has fewer than two records: the run is too short to call stationary"
        return Stationarity(False, Estimate(math.nan, math.nan), reason)
    half = window.shape[0] // 2
    first, second = window[:half], window[-half:]
    if window.shape[1] > 1:
        drift = sample_mean(second.mean(axis=0) - first.mean(axis=0))
    else:
        drift = _batch_means(second[:, 0]) - _batch_means(first[:, 0])
    level = abs(float(window.mean()))
    relative = abs(drift.value) / level if level > 0 else math.inf
    resolved = abs(drift.value) > z * drift.se if math.isfinite(drift.se) else False
    moving = resolved and relative > rel_tol
    share = f"{drift.value / level:+.1%} of the mean" if level > 0 else "the mean is 0"
    if moving:
        reason = (
            f"the second half of the stationary window differs from the first by {drift} ({share}), "
            f"more than {z:g} SE and {rel_tol:.0%}: the run is too short to call stationary"
        )
    else:
        reason = (
            f"the two halves of the stationary window differ by {drift} ({share}), "
            f"within {z:g} SE or {rel_tol:.0%}: stationary"
        )
    return Stationarity(not moving, drift, reason)


# ---------------------------------------------------------------- SDE vs optimizer gaps


def gap_profile(reference: np.ndarray, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per record, ``(E model − E reference)/E reference`` and its SE (independent paths: variances add).

    ``reference`` ``(T, P)`` and ``model`` ``(T, P′)`` are recorded at the same steps.
    """
    ref, mod = _pair(reference, model)
    ref_mean, mod_mean = ref.mean(axis=1), mod.mean(axis=1)
    ref_se = ref.std(axis=1, ddof=1) / math.sqrt(ref.shape[1])
    mod_se = mod.std(axis=1, ddof=1) / math.sqrt(mod.shape[1])
    gap = (mod_mean - ref_mean) / ref_mean
    gap_se = np.sqrt(mod_se**2 + (gap + 1) ** 2 * ref_se**2) / np.abs(ref_mean)
    return gap, gap_se


def _pair(reference: np.ndarray, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, mod = np.asarray(reference, dtype=float), np.asarray(model, dtype=float)
    if ref.ndim != 2 or mod.ndim != 2 or ref.shape[0] != mod.shape[0] or ref.shape[0] == 0:
        raise AnalysisError(
            f"reference and model need shapes (T, P) with equal T, got {ref.shape}, {mod.shape}"
        )
    if min(ref.shape[1], mod.shape[1]) < 2:
        raise AnalysisError("reference and model need at least two paths each for standard errors")
    return ref, mod


def max_gap(reference: np.ndarray, model: np.ndarray) -> Estimate:
    """The largest ``|gap|`` of :func:`gap_profile` over the records and that record's SE.

    (The maximum of noisy gaps is biased upwards by about its SE: compare it with tolerances
    that are large against the SE.)  :func:`worst_record` says which record it is.
    """
    gap, gap_se = gap_profile(reference, model)
    worst = int(np.argmax(np.abs(gap)))
    return Estimate(float(abs(gap[worst])), float(gap_se[worst]))


def worst_excess(excess: np.ndarray) -> tuple[int, Estimate]:
    """The record where a mean comes closest to a bound, or goes furthest past it, in standard errors.

    ``excess``: ``(T, P)``, per record and independent path, how far past the bound the path is
    (positive: on the wrong side).  Returns that record's index and its mean excess over paths
    with SE (:func:`sample_mean`).  Records rank by ``mean/SE``: a record with no spread counts
    as ±∞ (0 when exactly on the bound), ties go to the larger excess; with one path (no SE), by
    the mean.  Where a bound is tight along many records, their largest ``mean/SE`` exceeds a
    single record's by one or two SE, so a check of it at ``z`` SE fails a correct bound more
    often than the policy's rate for one comparison.
    """
    x = np.asarray(excess, dtype=float)
    if x.ndim != 2 or x.shape[0] == 0:
        raise AnalysisError(f"excess must have shape (records, paths) with records ≥ 1, got {x.shape}")
    mean = x.mean(axis=1)
    if x.shape[1] < 2:
        worst = int(np.argmax(mean))
    else:
        se = x.std(axis=1, ddof=1) / math.sqrt(x.shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, mean / se, np.sign(mean) * np.inf)  # sign(0)·∞ = nan: on the bound
        worst = int(np.lexsort((mean, np.nan_to_num(z, nan=0.0, posinf=np.inf, neginf=-np.inf)))[-1])
    return worst, sample_mean(x[worst])


def furthest_from_curve(
    values: np.ndarray, curve: np.ndarray, relative: bool = False
) -> tuple[tuple[int, ...], Estimate]:
    """Where the mean over paths of ``values`` ``(T, P, ...)`` is furthest from ``curve`` ``(T, ...)``
    (a closed form on the same records): by ``|mean − curve|``, or by ``|mean/curve − 1|`` if
    ``relative``.  Returns that index (records and trailing axes, no path axis) and there
    ``|mean − curve|``, or ``mean/curve``, with its SE over the independent paths.
    """
    x, law = np.asarray(values, dtype=float), np.asarray(curve, dtype=float)
    if x.ndim < 2 or x.shape[:1] + x.shape[2:] != law.shape:
        raise AnalysisError(f"values {x.shape} must be (records, paths, ...) over a curve {law.shape}")
    mean = x.mean(axis=1)
    distance = np.abs(mean / law - 1) if relative else np.abs(mean - law)
    where = tuple(int(k) for k in np.unravel_index(np.argmax(distance), distance.shape))
    there = sample_mean(x[(where[0], slice(None), *where[1:])])
    if relative:
        return where, there / float(law[where])
    gap = there - float(law[where])
    return where, Estimate(abs(gap.value), gap.se)


def worst_record(reference: np.ndarray, model: np.ndarray) -> int:
    """Index of the record where :func:`max_gap` is attained."""
    return int(np.argmax(np.abs(gap_profile(reference, model)[0])))


def time_averaged_gap(reference: np.ndarray, model: np.ndarray) -> Estimate:
    """The average over records of ``|gap|`` (:func:`gap_profile`), with its SE over paths.

    With the sign of each record's gap held fixed, the average is linear in each path's
    values, so each path's weighted sum over records is one independent sample: the SE
    accounts for the correlation in time.
    """
    ref, mod = _pair(reference, model)
    gap, _ = gap_profile(ref, mod)
    weights = np.sign(gap) / ref.mean(axis=1) / len(gap)
    mod_terms = (weights[:, None] * mod).sum(axis=0)
    ref_terms = (weights[:, None] * ref).sum(axis=0)
    se = math.sqrt(mod_terms.var(ddof=1) / len(mod_terms) + ref_terms.var(ddof=1) / len(ref_terms))
    return Estimate(float(np.abs(gap).mean()), se)


SPIKE_FACTOR = 3.0
"""A path's value more than this many times the reference's median over paths at the same record
is a spike (:func:`spike_share`)."""


def median_gap(reference: np.ndarray, model: np.ndarray, resamples: int = 400, seed: int = 0) -> Estimate:
    """The average over records of ``|med_model − med_ref| / med_ref`` (medians over paths, arrays
    ``(T, P)``), with its SE from a bootstrap over paths (half the central 68% range of the
    resampled gaps; each resample draws whole paths, so the correlation in time is kept; fixed
    ``seed``).

    Unlike :func:`time_averaged_gap` it is not moved by a few paths whose loss spikes: where the
    gap of the means and the gap of the medians disagree, rare large excursions, not the bulk of
    the paths, make the difference (docs/networks.md "The ResNet gap").
    """
    ref, mod = _pair(reference, model)

    def gap(r: np.ndarray, m: np.ndarray) -> np.ndarray:
        centre = np.median(r, axis=1)
        return np.abs(np.median(m, axis=1) - centre) / np.abs(centre)

    rng = np.random.default_rng(seed)
    draws = [
        gap(
            ref[:, rng.integers(0, ref.shape[1], ref.shape[1])],
            mod[:, rng.integers(0, mod.shape[1], mod.shape[1])],
        ).mean()
        for _ in range(resamples)
    ]
    # Half the central 68% range, not the s.d.: a resample that repeats a spiking path moves the
    # median of a few paths far, and the s.d. of the draws would be that outlier's.
    low, high = np.quantile(draws, [0.16, 0.84])
    return Estimate(float(gap(ref, mod).mean()), float(high - low) / 2)


def spike_share(reference: np.ndarray, values: np.ndarray, factor: float = SPIKE_FACTOR) -> float:
    """The share of ``(record, path)`` cells of ``values`` ``(T, P)`` above ``factor`` times the
    median over paths of ``reference`` ``(T, P')`` at the same record."""
    ref, vals = np.asarray(reference, dtype=float), np.asarray(values, dtype=float)
    return float((vals > factor * np.median(ref, axis=1, keepdims=True)).mean())


# ---------------------------------------------------------------- laws and distributions


@dataclass(frozen=True)
class LogLogFit:
    """Weighted least-squares line through ``(log x, log y)``."""

    slope: Estimate
    intercept: float
    chi2_per_dof: float
    points: int


def loglog_fit(x: Sequence[float], y: Sequence[Estimate | float]) -> LogLogFit:
    """Slope of ``log y`` against ``log x`` by weighted least squares, with its SE (docs/analysis.md).

    The weights are ``1/Var(log y) = 1/rel_se²`` (delta method), so the slope's SE comes from
    the Monte Carlo errors alone; ``chi2_per_dof`` ≫ 1 says a straight line does not fit within
    them.  A relative SE below 1e-6 counts as 1e-6 (a deterministic orbit).  When every ``y`` is
    exact (SE 0: a closed form) it is ordinary least squares with slope SE 0 and ``chi2`` nan.
    """
    ys = [as_estimate(v) for v in y]
    lx = np.log(np.asarray(x, dtype=float))
    value = np.array([v.value for v in ys])
    if lx.shape != value.shape or lx.size < 2:
        raise AnalysisError(f"loglog_fit needs as many x as y, at least two, got {lx.size} and {value.size}")
    if (np.asarray(x, dtype=float) <= 0).any() or (value <= 0).any():
        raise AnalysisError("loglog_fit needs positive x and y")
    exact = all(v.se == 0 for v in ys)
    ly = np.log(value)
    rel_se = np.ones_like(lx) if exact else np.maximum([v.se / v.value for v in ys], 1e-6)
    w = 1.0 / rel_se**2
    design = np.stack([np.ones_like(lx), lx], axis=1)
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    coef = cov @ design.T @ (w * ly)
    dof = lx.size - 2
    chi2 = float((w * (ly - design @ coef) ** 2).sum() / dof) if dof > 0 and not exact else math.nan
    slope_se = 0.0 if exact else float(math.sqrt(cov[1, 1]))
    return LogLogFit(Estimate(float(coef[1]), slope_se), float(coef[0]), chi2, int(lx.size))


def loglog_slope(x: Sequence[float], y: Sequence[Estimate | float]) -> Estimate:
    """The slope of :func:`loglog_fit` and its SE."""
    return loglog_fit(x, y).slope


def quantile(samples: np.ndarray, q: float, confidence: float = 0.95) -> Estimate:
    """The ``q``-quantile of independent samples, SE from the order-statistic interval.

    The number of samples below the true quantile is Binomial(n, q), so the order statistics
    at that binomial's ``(1 ∓ confidence)/2`` quantiles bracket it with probability
    ``confidence``, whatever the distribution; the SE is that interval's width / (2 z), with
    ``z`` the normal quantile of the same confidence (exact for a large n).  Samples correlated
    in time (one path's records) need :func:`grouped_quantile` instead.
    """
    x = np.sort(np.asarray(samples, dtype=float).ravel())
    if not 0.0 < q < 1.0:
        raise AnalysisError(f"quantile level {q}: give a level strictly between 0 and 1")
    if x.size < 2:
        raise AnalysisError("a quantile's SE needs at least two samples")
    tail = (1.0 - confidence) / 2.0
    low, high = stats.binom.ppf([tail, 1.0 - tail], x.size, q).astype(int)
    # The j-th order statistic (1-based) lies below the quantile iff at least j samples do:
    # the 1-based ranks ``low`` and ``high`` bracket it.
    lo, hi = x[max(low - 1, 0)], x[max(high - 1, 0)]
    z = float(stats.norm.ppf(1.0 - tail))
    return Estimate(float(np.quantile(x, q)), float((hi - lo) / (2.0 * z)))


def grouped_quantile(values: np.ndarray, q: float, groups: int = 16) -> Estimate:
    """The ``q``-quantile of all ``(T, P)`` values pooled, SE from ``groups`` disjoint groups of paths.

    Each group's pooled quantile is one independent sample (paths are independent; the records
    of a path are not), so the SE is their spread / √groups — batch means over paths.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or not 2 <= groups <= v.shape[1]:
        raise AnalysisError(
            f"grouped_quantile needs (T, P) values with 2 ≤ groups ≤ P, got {v.shape}, {groups}"
        )
    parts = np.array_split(np.arange(v.shape[1]), groups)
    per_group = np.array([np.quantile(v[:, idx], q) for idx in parts])
    return Estimate(float(np.quantile(v, q)), float(per_group.std(ddof=1) / math.sqrt(groups)))


@dataclass(frozen=True)
class MeanExistence:
    """Whether the samples support a finite mean: ``exists`` is None when they cannot tell."""

    exists: bool | None
    tail_index: Estimate
    reason: str


def hill_tail_index(samples: np.ndarray, k: int | None = None) -> Estimate:
    """Hill's estimator of the tail index α of ``|samples|`` from its ``k`` largest values.

    ``α̂ = k / Σ_{i≤k} log(X_(i)/X_(k+1))`` with SE ``α̂/√k`` (asymptotically normal for
    ``P(|X| > x) ~ C x^(−α)``).  Default ``k = ⌊√n⌋``: far enough into the tail that the
    bias of a non-Pareto body is small, with enough points for the SE.  ``inf`` when the top
    values are all equal (a bounded law seen at its maximum).
    """
    x = np.sort(np.abs(np.asarray(samples, dtype=float).ravel()))[::-1]
    k = int(math.isqrt(x.size)) if k is None else k
    if not 2 <= k < x.size:
        raise AnalysisError(f"Hill's estimator needs 2 ≤ k < n, got k={k}, n={x.size}")
    threshold = x[k]
    if threshold <= 0:
        return Estimate(math.inf, 0.0)
    total = float(np.log(x[:k] / threshold).sum())
    if total == 0.0:
        return Estimate(math.inf, 0.0)
    alpha = k / total
    return Estimate(alpha, alpha / math.sqrt(k))


def mean_exists(samples: np.ndarray, k: int | None = None, z: float | None = None) -> MeanExistence:
    """Whether a finite mean is supported: the tail index α of :func:`hill_tail_index` against 1.

    ``E|X| < ∞`` iff α > 1.  The mean exists if ``α̂ − z·SE > 1``, is infinite if
    ``α̂ + z·SE < 1``, undecided in between (``z``: the tolerance policy's).  Samples must
    be independent (one per path, or records far apart): correlated samples make the SE too small.
    """
    z = POLICY.z if z is None else z
    n = np.asarray(samples).size
    if n < HILL_MIN_SAMPLES:
        return MeanExistence(
            None, Estimate(math.nan, math.nan), f"only {n} samples: too few to see the tail; report medians"
        )
    alpha = hill_tail_index(samples, k)
    if not math.isfinite(alpha.value):
        return MeanExistence(
            True, alpha, "the largest values are all equal: the law is bounded, its mean finite"
        )
    if alpha.value - z * alpha.se > 1.0:
        return MeanExistence(
            True, alpha, f"the tail index is {alpha} > 1 (by more than {z:g} SE): the mean is finite"
        )
    if alpha.value + z * alpha.se < 1.0:
        return MeanExistence(
            False,
            alpha,
            f"the tail index is {alpha} < 1 (by more than {z:g} SE): the mean is infinite; report medians",
        )
    return MeanExistence(
        None,
        alpha,
        f"the tail index is {alpha}, within {z:g} SE of 1: a finite mean is not established; report medians",
    )
