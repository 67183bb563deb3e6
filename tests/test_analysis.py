"""The analysis layer against ground truth (docs/analysis.md).

Coverage tests: over ``REPS`` independent replications with known answers, the share of
``± 2 SE`` intervals that contain the truth must match its expected value (from the normal
or Student-t law of the z-score) within 4 binomial standard errors of that share.  All
seeds are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from optsde.analysis import (
    POLICY,
    AnalysisError,
    AtLeast,
    AtMost,
    Check,
    Estimate,
    InRange,
    Matches,
    Within,
    bound_check,
    checks_summary,
    checks_table,
    departure_step,
    fidelity_summary,
    furthest_from_curve,
    grouped_quantile,
    hill_tail_index,
    independent_ratio,
    loglog_fit,
    loglog_slope,
    max_gap,
    mean_exists,
    paired_ratio,
    quantile,
    ratio,
    restrict,
    sample_mean,
    sde_fidelity_check,
    stationarity,
    stationary_loss_check,
    stationary_mean,
    stationary_window,
    time_averaged_gap,
    worst_excess,
)
from optsde.sde import Recording, record_steps

REPS = 400
Z_BINOMIAL = 4.0


def assert_coverage(z_scores: np.ndarray, expected: float) -> None:
    """Share of ``|z| ≤ 2`` against ``expected``, within 4 binomial SE of REPS trials."""
    covered = float((np.abs(z_scores) <= 2.0).mean())
    tolerance = Z_BINOMIAL * math.sqrt(expected * (1 - expected) / len(z_scores))
    assert abs(covered - expected) <= tolerance, (covered, expected, tolerance)


NORMAL_2SE = float(2 * stats.norm.cdf(2.0) - 1)


def t_2se(dof: int) -> float:
    return float(2 * stats.t.cdf(2.0, dof) - 1)


def ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float) -> np.ndarray:
    """Stationary Gaussian AR(1) along axis −2 (records), unit variance: ``(…, T, P)``."""
    *lead, t, p = shape
    out = np.empty(shape)
    out[..., 0, :] = rng.standard_normal((*lead, p))
    noise = rng.standard_normal(shape) * math.sqrt(1 - phi**2)
    for k in range(1, t):
        out[..., k, :] = phi * out[..., k - 1, :] + noise[..., k, :]
    return out


# ---------------------------------------------------------------- Estimate


def test_estimate_arithmetic_and_format() -> None:
    a, b = Estimate(2.0, 0.3), Estimate(1.0, 0.4)
    assert (a + b) == Estimate(3.0, 0.5) and (a - b) == Estimate(1.0, 0.5)
    assert (
        (a * 2) == Estimate(4.0, 0.6) and (2 * a) == Estimate(4.0, 0.6) and (a / -2) == Estimate(-1.0, 0.15)
    )
    assert (a - 1.0) == Estimate(1.0, 0.3)
    assert a.rel_se == pytest.approx(0.15)
    assert Estimate(0.0, 0.0).rel_se == 0.0 and Estimate(0.0, 1.0).rel_se == math.inf
    assert str(Estimate(0.1234, 0.0041)) == "0.123 ± 0.004"
    assert str(Estimate(0.1234, 0.0012)) == "0.1234 ± 0.0012"
    assert str(Estimate(123.4, 1.7)) == "123.4 ± 1.7"
    assert str(Estimate(1.2e-8, 3e-10)) == "(1.20 ± 0.03)e-08"
    # A nearly exact value (a lattice orbit every path shares) is cut to 6 significant digits, its
    # SE written on its own to 2: not the ~20 digits that reaching down to the SE would take.
    assert str(Estimate(0.00750000000000000406, 2.9e-19)) == "0.00750000 ± 2.9e-19"
    assert str(Estimate(123456.7, 0.17)) == "123457 ± 0.17"
    assert str(Estimate(1.234567, 3.4e-5)) == "1.23457 ± 0.00003"  # the sixth digit: still one rule
    assert a.to_dict() == {"value": 2.0, "se": 0.3}
    r = ratio(Estimate(2.0, 0.2), Estimate(4.0, 0.4))  # both 10% → √2 × 10% of 0.5
    assert r.value == 0.5 and r.se == pytest.approx(0.5 * math.sqrt(2) * 0.1)
    assert ratio(Estimate(0.0, 0.1), Estimate(2.0, 0.0)) == Estimate(0.0, 0.05)


# ---------------------------------------------------------------- stationary averages


def test_stationary_window() -> None:
    steps = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert stationary_window(steps, 0.5).tolist() == [False] * 5 + [True] * 6
    assert stationary_window(steps, 0.0).all()
    assert stationary_window(steps, 0.999).tolist() == [False] * 10 + [True]  # the last record always
    with pytest.raises(AnalysisError, match="burn_in"):
        stationary_window(steps, 1.0)


def test_stationary_window_keeps_whole_pairs() -> None:
    def window(steps: list[int], burn_in: float) -> list[int]:
        return np.array(steps)[stationary_window(np.array(steps), burn_in)].tolist()

    paired = [0, 3, 4, 7, 8, 11, 12, 14]
    assert window(paired, 0.5) == [7, 8, 11, 12]  # the lone last step goes
    assert window(paired, 8 / 14) == [11, 12]  # and 8, whose partner 7 is before the window
    assert window([0, 2, 3, 5, 6, 7], 0.25) == [2, 3, 6, 7]  # 5, 6, 7: 6 and 7 are a pair too
    assert window(list(range(10)), 0.5) == [6, 7, 8, 9]  # every step: an even count


def test_stationary_mean_coverage_over_paths() -> None:
    """AR(1) paths around μ = 3, correlated in time: the SE over paths' time averages covers μ."""
    rng = np.random.default_rng(1)
    paths, records, mu = 32, 60, 3.0
    steps = np.arange(2 * records)
    data = mu + ar1(rng, (REPS, 2 * records, paths), phi=0.9)
    data[:, :records] += 50.0  # a transient the burn-in must drop
    z = np.array([(lambda e: (e.value - mu) / e.se)(stationary_mean(d, steps, 0.5)) for d in data])
    assert_coverage(z, t_2se(paths - 1))


def test_stationary_mean_single_path_batch_means() -> None:
    """One path: batch means over 10 batches of 100 records, correlation time ≈ 3 records."""
    rng = np.random.default_rng(2)
    steps = np.arange(2000)
    data = 1.0 + ar1(rng, (REPS, 2000, 1), phi=0.5)
    z = np.array([(lambda e: (e.value - 1.0) / e.se)(stationary_mean(d, steps)) for d in data])
    assert_coverage(z, t_2se(9))
    with pytest.raises(AnalysisError, match="shape"):
        stationary_mean(np.zeros((5, 2)), np.arange(4))


def test_stationarity_flags_a_drift() -> None:
    rng = np.random.default_rng(3)
    steps = np.arange(400)
    still = 1.0 + 0.3 * ar1(rng, (400, 64), phi=0.8)
    verdict = stationarity(still, steps)
    assert verdict.is_stationary and "stationary" in verdict.reason
    assert abs(verdict.drift.value) <= Z_BINOMIAL * verdict.drift.se
    relaxing = still + np.exp(-steps / 100.0)[:, None]  # still decaying by 7% of the level in the window
    verdict = stationarity(relaxing, steps)
    assert not verdict.is_stationary and "too short" in verdict.reason
    expected = np.exp(-steps[300:] / 100).mean() - np.exp(-steps[200:300] / 100).mean()
    assert abs(verdict.drift.value - expected) <= Z_BINOMIAL * verdict.drift.se


# ---------------------------------------------------------------- ratios


def test_ratio_coverage() -> None:
    """Means 2 and 4 (ratio 0.5): paired samples sharing a common factor, and independent ones."""
    rng = np.random.default_rng(4)
    n = 200
    common = rng.standard_normal((REPS, n))
    a = 2.0 + common + 0.2 * rng.standard_normal((REPS, n))
    b = 4.0 + 2.0 * common + 0.2 * rng.standard_normal((REPS, n))
    paired = [paired_ratio(x, y) for x, y in zip(a, b, strict=True)]
    assert_coverage(np.array([(e.value - 0.5) / e.se for e in paired]), NORMAL_2SE)
    c = 4.0 + 2.0 * rng.standard_normal((REPS, n))
    independent = [independent_ratio(x, y) for x, y in zip(a, c, strict=True)]
    assert_coverage(np.array([(e.value - 0.5) / e.se for e in independent]), NORMAL_2SE)
    # Pairing removes the common factor: the paired SE is far below the independent one.
    assert np.median([p.se for p in paired]) < 0.2 * np.median([i.se for i in independent])
    with pytest.raises(AnalysisError, match="equal lengths"):
        paired_ratio(np.ones(3), np.ones(4))


# ---------------------------------------------------------------- slopes


def test_loglog_slope_exact_and_weighted() -> None:
    x = np.array([0.01, 0.1, 1.0, 10.0])
    exact = loglog_fit(x, list(3.0 * x**2))
    assert exact.slope == Estimate(pytest.approx(2.0), 0.0) and math.isnan(exact.chi2_per_dof)
    assert exact.intercept == pytest.approx(math.log(3.0))
    # Weighted least squares against numpy's, weights 1/σ of log y = y/SE.
    y = [Estimate(1.0, 0.01), Estimate(3.5, 0.2), Estimate(9.0, 0.05), Estimate(40.0, 4.0)]
    rel = np.array([e.se / e.value for e in y])
    coef, cov = np.polyfit(np.log(x), np.log([e.value for e in y]), 1, w=1 / rel, cov="unscaled")
    fit = loglog_slope(x, y)
    assert fit.value == pytest.approx(coef[0]) and fit.se == pytest.approx(math.sqrt(cov[0, 0]))


def test_loglog_slope_coverage() -> None:
    """y = x^1.5 with 3% Gaussian noise (SE given): the slope's ±2 SE covers 1.5."""
    rng = np.random.default_rng(5)
    x = np.geomspace(0.1, 100, 7)
    z = []
    for _ in range(REPS):
        y = [Estimate(v * (1 + 0.03 * rng.standard_normal()), 0.03 * v) for v in x**1.5]
        fit = loglog_slope(x, y)
        z.append((fit.value - 1.5) / fit.se)
    assert_coverage(np.array(z), NORMAL_2SE)


# ---------------------------------------------------------------- quantiles and tails


def test_quantile_coverage() -> None:
    """Median of N(0, 1) and 0.9-quantile of Exp(1) (= ln 10) from 500 samples."""
    rng = np.random.default_rng(6)
    medians = [quantile(rng.standard_normal(500), 0.5) for _ in range(REPS)]
    assert_coverage(np.array([e.value / e.se for e in medians]), NORMAL_2SE)
    # The SE matches the asymptotic √(q(1−q)/n)/density = √(π/2)/√n within 10%.
    assert np.mean([e.se for e in medians]) == pytest.approx(math.sqrt(math.pi / 2 / 500), rel=0.1)
    tops = [quantile(rng.exponential(size=500), 0.9) for _ in range(REPS)]
    assert_coverage(np.array([(e.value - math.log(10)) / e.se for e in tops]), NORMAL_2SE)


def test_grouped_quantile_coverage() -> None:
    """Pooled 0.9-quantile of AR(1) paths (stationary N(0, 1): 1.2816), SE over 16 groups of paths."""
    rng = np.random.default_rng(7)
    data = ar1(rng, (REPS, 40, 64), phi=0.8)
    truth = float(stats.norm.ppf(0.9))
    z = np.array([(lambda e: (e.value - truth) / e.se)(grouped_quantile(d, 0.9, 16)) for d in data])
    assert_coverage(z, t_2se(15))


@pytest.mark.parametrize("alpha", [0.7, 1.5, 3.0])
def test_hill_on_pareto(alpha: float) -> None:
    # α̂/α has the same law for every α (log-ratios of Pareto order statistics are Exp(α)): a seed per α.
    rng = np.random.default_rng(int(alpha * 10))
    z = []
    for _ in range(REPS):
        est = hill_tail_index(rng.pareto(alpha, 10_000) + 1.0)  # Pareto(α) on [1, ∞)
        z.append((est.value - alpha) / est.se)
    assert_coverage(np.array(z), NORMAL_2SE)


def test_mean_exists_with_known_truth() -> None:
    rng = np.random.default_rng(9)
    n = 100_000
    cauchy = mean_exists(rng.standard_cauchy(n) ** 2)  # tail index 1/2: no mean
    assert cauchy.exists is False and "infinite" in cauchy.reason
    assert abs(cauchy.tail_index.value - 0.5) <= Z_BINOMIAL * cauchy.tail_index.se
    assert mean_exists(rng.standard_normal(n) ** 2).exists is True  # light tail
    student = mean_exists(rng.standard_t(3, n) ** 2)  # tail index 3/2: a mean, no variance
    assert student.exists is True
    assert abs(student.tail_index.value - 1.5) <= Z_BINOMIAL * student.tail_index.se
    assert mean_exists(rng.pareto(1.0, n) + 1.0).exists is None  # α = 1 exactly: undecided
    assert mean_exists(np.ones(1000)).exists is True  # bounded: the top values are all equal
    assert mean_exists(rng.standard_normal(20)).exists is None  # too few to see a tail


# ---------------------------------------------------------------- SDE vs optimizer gaps


def test_gaps_against_brute_force() -> None:
    """Model mean 10% above the reference at every record: the time-averaged gap covers 0.1."""
    rng = np.random.default_rng(10)
    level = np.linspace(1.0, 2.0, 20)[:, None]
    z = []
    for _ in range(200):
        ref = level * (1 + 0.3 * rng.standard_normal((20, 100)))
        mod = 1.1 * level * (1 + 0.3 * rng.standard_normal((20, 150)))
        gap = time_averaged_gap(ref, mod)
        z.append((gap.value - 0.1) / gap.se)
    assert_coverage(np.array(z), NORMAL_2SE)
    by_hand = mod.mean(axis=1) / ref.mean(axis=1) - 1
    worst = max_gap(ref, mod)
    assert worst.value == pytest.approx(np.abs(by_hand).max())
    assert gap.value == pytest.approx(np.abs(by_hand).mean())


def _recording(method: str, values: np.ndarray) -> Recording:
    steps = np.arange(values.shape[0]) * 5
    return Recording(method, 0.1, steps, {"loss": values}, np.zeros((len(steps), 1, 1)))


def test_fidelity_summary_keys_and_numbers() -> None:
    rng = np.random.default_rng(11)
    opt = np.abs(rng.standard_normal((30, 64))) + 1.0
    sde = 1.2 * (np.abs(rng.standard_normal((30, 64))) + 1.0)
    summary = fidelity_summary(
        {"optimizer": _recording("optimizer", opt), "sde-paper": _recording("sde", sde)}
    )
    numbers = summary["sde-paper"]
    assert set(numbers) == {
        "max_rel_gap",
        "max_rel_gap_se",
        "max_rel_gap_t",
        "mean_rel_gap",
        "mean_rel_gap_se",
        "stationary_optimizer",
        "stationary_optimizer_se",
        "stationary_sde",
        "stationary_sde_se",
        "stationary_rel_error",
        "stationary_rel_error_se",
    }
    window = np.arange(30) * 5 >= 0.5 * 145
    expected = sde[window].mean() / opt[window].mean() - 1
    assert numbers["stationary_rel_error"] == pytest.approx(expected)
    assert abs(numbers["stationary_rel_error"] - 0.2) <= Z_BINOMIAL * numbers["stationary_rel_error_se"]
    assert numbers["stationary_optimizer"] == pytest.approx(opt[window].mean())


def test_worst_excess_ranks_by_standard_errors() -> None:
    """The record nearest the bound in SE, not in raw excess; no spread counts as ±∞ (0 on the bound)."""
    excess = np.array(
        [
            [-1.0, 1.0, -1.0, 1.0],  # mean 0.0, SE 0.577
            [0.2, 0.4, 0.2, 0.4],  # mean 0.3, SE 0.058: z ≈ 5.2, the worst
            [2.0, -1.0, 3.0, -1.0],  # mean 0.75, SE 0.99: larger excess, z ≈ 0.8
        ]
    )
    k, value = worst_excess(excess)
    assert k == 1 and value == sample_mean(excess[1])
    k, value = worst_excess(np.vstack([excess, np.full((1, 4), 1e-9)]))
    assert k == 3 and value.se == 0.0  # past the bound with no spread: certain
    k, _ = worst_excess(np.array([[0.0, 0.0], [-0.5, -0.4]]))
    assert k == 0  # on the bound (z = 0) beats clearly inside
    k, value = worst_excess(np.array([[0.1], [0.3], [0.2]]))
    assert k == 1 and math.isnan(value.se)  # one path: by the mean, SE unknown
    with pytest.raises(AnalysisError):
        worst_excess(np.zeros((0, 3)))


def test_bound_check_judges_the_closest_record() -> None:
    """An exact bound per record: judged at the record nearest it in SE, against the bound there; a
    bound per path is paired with its path; no records: inconclusive, saying why."""
    t = np.array([0.0, 1.0, 2.0])
    values = np.array([[0.0, 0.2], [0.8, 1.0], [0.2, 0.4]])
    check = bound_check("b", "E f", t, values, np.array([2.0, 1.0, 2.0]))
    assert check.value == sample_mean(values[1]) and check.target == 1.0 and check.verdict == "pass"
    assert check.description == "E f (closest at t = 1)"
    assert bound_check("b", "E f", t, values, np.array([2.0, 0.5, 2.0])).verdict == "fail"
    per_path = values + np.array([0.1, 0.3])  # each path's bound just above it: margins -0.1, -0.3
    paired = bound_check("b", "E f", t, values, per_path)
    assert paired.value.value == pytest.approx(-0.2) and paired.target is None and paired.verdict == "pass"
    assert bound_check("b", "E f", t, values, values - 0.1).verdict == "fail"
    empty = bound_check("b", "E f", t[:0], values[:0], per_path[:0], " — not reached")
    assert empty.verdict == "inconclusive" and empty.description == "E f — not reached"


def test_furthest_from_curve_finds_the_largest_gap() -> None:
    curve = np.array([[1.0, 2.0], [1.0, 4.0], [2.0, 2.0]])
    values = np.repeat(curve[:, None, :], 3, axis=1) + np.array([-0.1, 0.0, 0.1])[None, :, None]
    values[1, :, 1] += 0.5  # mean 4.5 against 4: the largest absolute gap
    values[2, :, 0] -= 0.4  # mean 1.6 against 2: the largest relative gap (20%)
    where, gap = furthest_from_curve(values, curve)
    assert where == (1, 1) and gap == Estimate(pytest.approx(0.5), pytest.approx(0.1 / math.sqrt(3)))
    where, ratio_ = furthest_from_curve(values, curve, relative=True)
    assert where == (2, 0) and ratio_ == Estimate(pytest.approx(0.8), pytest.approx(0.05 / math.sqrt(3)))
    with pytest.raises(AnalysisError):
        furthest_from_curve(values, curve[:, :1])


def test_stationary_loss_check_reads_the_pair_fidelity_numbers() -> None:
    numbers = {"stationary_sde": 1.02, "stationary_sde_se": 0.01}
    numbers |= {"stationary_optimizer": 1.0, "stationary_optimizer_se": 0.01}
    check = stationary_loss_check("sde", numbers, Within(0.05), "against the optimizer")
    assert check.value == Estimate(1.02, 0.01) and check.target == Estimate(1.0, 0.01)
    assert check.verdict == "pass"
    assert (
        stationary_loss_check("sde", {**numbers, "stationary_sde": 1.3}, Within(0.05), "").verdict == "fail"
    )


def test_restrict_keeps_the_selected_records() -> None:
    rec = _recording("optimizer", np.arange(12.0).reshape(6, 2))
    part = restrict(rec, rec.steps >= 10)
    assert part.steps.tolist() == [10, 15, 20, 25] and part.method == "optimizer" and part.lr == rec.lr
    np.testing.assert_array_equal(part.values["loss"], rec.values["loss"][2:])
    assert part.snapshots.shape[0] == 4


def test_departure_step_is_the_first_record_beyond_twice_the_optimizer() -> None:
    opt = np.ones((30, 4))
    factor = np.where(np.arange(30) >= 12, 3.0, 1.5)[:, None]  # 1.5× until record 12, then 3×
    optimizer, model = _recording("optimizer", opt), _recording("sde", opt * factor)
    assert departure_step(optimizer, model) == int(optimizer.steps[12])
    assert departure_step(optimizer, model, threshold=2.5) is None
    assert departure_step(optimizer, _recording("sde", 1.2 * opt)) is None  # off, but within its range
    assert departure_step(optimizer, _recording("sde", opt * np.where(factor > 2, np.nan, 1.0))) == int(
        optimizer.steps[12]
    )  # a nan mean counts as beyond


# ---------------------------------------------------------------- checks


def test_within_verdicts() -> None:
    rule = Within(0.05)
    assert Check("a", Estimate(1.04, 0.001), 1.0, rule).verdict == "pass"  # inside 5%
    assert Check("b", Estimate(1.10, 0.04), 1.0, rule).verdict == "pass"  # outside 5%, within 3 SE
    assert Check("c", Estimate(1.10, 0.01), 1.0, rule).verdict == "fail"  # outside both
    assert Check("d", Estimate(1.5, 0.4), 1.0, rule).verdict == "inconclusive"  # 3 SE > the target
    assert Check("e", Estimate(9.0, 0.4), 1.0, rule).verdict == "fail"  # far off, even with a large SE
    # The target's own SE adds in quadrature: 0.09 off, combined SE 0.05 → within 3 SE.
    assert Check("f", Estimate(1.09, 0.03), Estimate(1.0, 0.04), rule).verdict == "pass"
    assert Check("g", Estimate(math.nan, 0.1), 1.0, rule).verdict == "inconclusive"


def test_matches_and_bounds() -> None:
    assert Check("m", Estimate(2.02, 0.01), 2.0, Matches()).verdict == "pass"
    assert Check("m", Estimate(2.05, 0.01), 2.0, Matches()).verdict == "fail"
    assert Check("m0", Estimate(0.01, 0.01), 0.0, Matches()).verdict == "pass"  # no scale for a 0 target
    assert Check("m0", Estimate(0.01, 0.01), 0.0, Matches(resolution=0.02)).verdict == "inconclusive"
    assert Check("le", Estimate(1.02, 0.01), None, AtMost(1.0)).verdict == "pass"  # within 3 SE above
    assert Check("le", Estimate(1.05, 0.01), None, AtMost(1.0)).verdict == "fail"
    assert Check("le", Estimate(0.9, 0.5), None, AtMost(1.0)).verdict == "inconclusive"
    assert Check("le", Estimate(-5.0, 2.0), None, AtMost(1.0)).verdict == "pass"  # clearly below
    assert Check("le", Estimate(1.0, 0.1), Estimate(1.5, 0.1), AtMost()).verdict == "pass"
    assert Check("ge", Estimate(0.98, 0.01), None, AtLeast(1.0)).verdict == "pass"
    assert Check("ge", Estimate(0.9, 0.01), None, AtLeast(1.0)).verdict == "fail"
    assert Check("in", Estimate(0.5, 0.01), None, InRange(0.0, 1.0)).verdict == "pass"
    assert Check("in", Estimate(1.02, 0.01), None, InRange(0.0, 1.0)).verdict == "pass"
    assert Check("in", Estimate(1.2, 0.01), None, InRange(0.0, 1.0)).verdict == "fail"
    assert Check("in", Estimate(0.9, 1.0), None, InRange(0.0, 1.0)).verdict == "inconclusive"
    with pytest.raises(AnalysisError, match="target=None"):
        Check("x", Estimate(1.0, 0.1), 1.0, AtMost(2.0))
    with pytest.raises(AnalysisError, match="needs a target"):
        Check("x", Estimate(1.0, 0.1), None, Within(0.05))


def test_check_reporting() -> None:
    checks = [
        Check("sgd-exponent", Estimate(2.003, 0.011), 2.0, Within(0.05), "stationary loss grows like σ²"),
        Check("bound", Estimate(1.3, 0.01), None, AtMost(1.0)),
        Check("noisy", Estimate(1.5, 0.4), 1.0, Within(0.05)),
    ]
    sentence = checks[0].sentence()
    assert "2.003 ± 0.011" in sentence and "against 2" in sentence and "3 SE" in sentence
    assert sentence.endswith("**pass**.")
    record = checks[1].to_dict()
    assert record["verdict"] == "fail" and record["target"] is None and record["value"] == 1.3
    table = checks_table(checks).splitlines()
    assert len(table) == 5 and table[0].startswith("| check | value ± SE |") and "**fail**" in table[3]
    summary = checks_summary(checks)
    assert (summary["verdict"], summary["pass"], summary["fail"], summary["inconclusive"]) == (
        "fail",
        1,
        1,
        1,
    )
    assert summary["z"] == POLICY.z == 3.0 and len(summary["checks"]) == 3


@pytest.mark.parametrize("burn_in", [0.3, 0.5, 0.75])
def test_paired_records_average_a_period_two_orbit_exactly(burn_in: float) -> None:
    """A loss alternating 0, 1, 0, 1 … on every path (a lattice orbit of SignSGD, docs/theory.md §8)
    has time average 1/2; over the engine's stratified records (pairs of consecutive steps) the
    stationary window keeps whole pairs, so the estimate is exactly 1/2 whatever the run length
    and the burn-in (the SE over paths, 0 here, could not show an error)."""
    for steps in range(151, 2000, 37):
        recorded = np.array(record_steps(steps, 100))
        values = np.repeat((recorded % 2).astype(float)[:, None], 2, axis=1)
        assert stationary_mean(values, recorded, burn_in).value == 0.5, steps


def test_sde_fidelity_check_reads_the_pair_fidelity_numbers() -> None:
    assert sde_fidelity_check("sde", {"diverged": "sde-paper", "diverged_step": 3}, 0.05, "") is None
    near = sde_fidelity_check(
        "sde", {"stationary_rel_error": 0.02, "stationary_rel_error_se": 0.01}, 0.05, ""
    )
    far = sde_fidelity_check("sde", {"stationary_rel_error": 0.2, "stationary_rel_error_se": 0.01}, 0.05, "")
    assert near is not None and near.value == Estimate(1.02, 0.01) and near.verdict == "pass"
    assert far is not None and far.verdict == "fail"


def test_a_window_too_short_is_not_called_stationary() -> None:
    """One record in the window: no drift can be measured, so the run is not called stationary."""
    verdict = stationarity(np.ones((2, 4)), np.array([0, 10]), burn_in=0.5)
    assert not verdict.is_stationary and "too short" in verdict.reason
