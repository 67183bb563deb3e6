"""Checks: one type, one set of rules and one tolerance policy for every verdict (docs/analysis.md).

A :class:`Check` compares an :class:`~optsde.analysis.estimates.Estimate` with a target under
a :class:`Rule`; its verdict is ``pass``, ``fail`` or ``inconclusive``.  Every rule allows
``z`` combined standard errors, ``z`` from the one :data:`~optsde.analysis.policy.POLICY`
(z = 3, see there), where the combined SE is ``√(SE_value² + SE_target²)`` (independent).

``inconclusive`` means the SE is too large for the rule to say anything: the value does not
fail, is not clearly inside, and the slack ``z·SE`` exceeds the scale the rule judges —
``|target|`` for :class:`Within` and :class:`Matches` (or ``Matches(resolution=…)``), ``|bound|``
for :class:`AtMost` / :class:`AtLeast`, the width for :class:`InRange`.  A value outside the
rule by more than the slack fails however large the SE, and a nan value or SE is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from optsde.analysis.estimates import AnalysisError, Estimate, as_estimate, sample_mean, worst_excess
from optsde.analysis.policy import POLICY, TolerancePolicy

Verdict = Literal["pass", "fail", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "inconclusive")


class Rule(Protocol):
    """How a value is compared with its target, allowing ``z`` combined SE."""

    def judge(self, value: Estimate, target: Estimate | None, z: float) -> Verdict: ...

    def describe(self, z: float = POLICY.z) -> str: ...


def _slack(value: Estimate, target: Estimate | None, z: float) -> float:
    return z * math.hypot(value.se, target.se if target is not None else 0.0)


def _undetermined(value: Estimate, slack: float) -> bool:
    return math.isnan(value.value) or math.isnan(slack)


def _need(target: Estimate | None, rule: str) -> Estimate:
    if target is None:
        raise AnalysisError(f"{rule} compares with the check's target: give one")
    return target


@dataclass(frozen=True)
class Within:
    """``|value − target| ≤ rel·|target|``, or within ``z`` combined SE.

    Inconclusive when ``z·SE > |target|``: the Monte Carlo cannot tell the value from 0 or 2× the target.
    For a target of 0 use ``Matches(resolution=…)``: a relative tolerance of 0 has no scale.
    """

    rel: float

    def judge(self, value: Estimate, target: Estimate | None, z: float) -> Verdict:
        t = _need(target, "Within")
        slack = _slack(value, t, z)
        if _undetermined(value, slack):
            return "inconclusive"
        if abs(value.value - t.value) > max(self.rel * abs(t.value), slack):
            return "fail"
        return "inconclusive" if slack > abs(t.value) else "pass"

    def describe(self, z: float = POLICY.z) -> str:
        return f"within {self.rel:.3g} relative or {z:g} SE"


@dataclass(frozen=True)
class Matches:
    """``|value − target| ≤ z`` combined SE.

    Inconclusive when ``z·SE`` exceeds ``resolution`` (default ``|target|``; none for a target of 0).
    """

    resolution: float | None = None

    def judge(self, value: Estimate, target: Estimate | None, z: float) -> Verdict:
        t = _need(target, "Matches")
        slack = _slack(value, t, z)
        if _undetermined(value, slack):
            return "inconclusive"
        if abs(value.value - t.value) > slack:
            return "fail"
        scale = abs(t.value) if self.resolution is None else self.resolution
        return "inconclusive" if scale > 0 and slack > scale else "pass"

    def describe(self, z: float = POLICY.z) -> str:
        return f"within {z:g} SE"


def _one_sided(excess: float, slack: float, scale: float) -> Verdict:
    """``excess``: how far the value is on the wrong side of the bound (negative: inside)."""
    if excess > slack:
        return "fail"
    if excess + slack <= 0 or scale == 0:  # clearly inside: within the bound even with the slack
        return "pass"
    return "inconclusive" if slack > abs(scale) else "pass"


@dataclass(frozen=True)
class _OneSided:
    """A bound on one side: ``bound`` or, left out, the check's target; ``z`` combined SE of slack."""

    bound: float | None = None
    above: ClassVar[bool]  # True: the value must stay at or below the bound

    def judge(self, value: Estimate, target: Estimate | None, z: float) -> Verdict:
        b = as_estimate(self.bound) if self.bound is not None else _need(target, f"{type(self).__name__}()")
        slack = _slack(value, b, z)
        if _undetermined(value, slack):
            return "inconclusive"
        excess = value.value - b.value if self.above else b.value - value.value
        return _one_sided(excess, slack, b.value)

    def describe(self, z: float = POLICY.z) -> str:
        bound = "the target" if self.bound is None else f"{self.bound:.4g}"
        return f"at most {bound} + {z:g} SE" if self.above else f"at least {bound} − {z:g} SE"


@dataclass(frozen=True)
class AtMost(_OneSided):
    """``value ≤ bound + z`` combined SE; the bound is ``bound`` or, left out, the check's target."""

    above: ClassVar[bool] = True


@dataclass(frozen=True)
class AtLeast(_OneSided):
    """``value ≥ bound − z`` combined SE; the bound is ``bound`` or, left out, the check's target."""

    above: ClassVar[bool] = False


@dataclass(frozen=True)
class InRange:
    """``low − z·SE ≤ value ≤ high + z·SE``; inconclusive when ``z·SE`` exceeds ``high − low``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise AnalysisError(f"InRange({self.low}, {self.high}): low must be below high")

    def judge(self, value: Estimate, target: Estimate | None, z: float) -> Verdict:
        slack = _slack(value, None, z)
        if _undetermined(value, slack):
            return "inconclusive"
        v = value.value
        if v < self.low - slack or v > self.high + slack:
            return "fail"
        if self.low + slack <= v <= self.high - slack:
            return "pass"
        return "inconclusive" if slack > self.high - self.low else "pass"

    def describe(self, z: float = POLICY.z) -> str:
        return f"in [{self.low:.4g}, {self.high:.4g}] ± {z:g} SE"


@dataclass(frozen=True)
class Check:
    """A value against its target under a rule; the verdict follows the one tolerance policy.

    ``target``: the number compared with (an ``Estimate`` when it carries its own SE), or
    None for rules that carry their bounds (``InRange``, ``AtMost(bound)``, ``AtLeast(bound)``).
    """

    name: str
    value: Estimate
    target: float | Estimate | None
    rule: Rule
    description: str = ""
    policy: TolerancePolicy = field(default=POLICY)

    def __post_init__(self) -> None:
        if not isinstance(self.value, Estimate):
            raise AnalysisError(f"check {self.name!r}: the value must be an Estimate")
        carries_bound = isinstance(self.rule, InRange) or getattr(self.rule, "bound", None) is not None
        if carries_bound and self.target is not None:
            raise AnalysisError(f"check {self.name!r}: the rule carries its bound; give target=None")
        if not carries_bound and self.target is None:
            raise AnalysisError(f"check {self.name!r}: {self.rule.describe()} needs a target")

    @property
    def target_estimate(self) -> Estimate | None:
        return None if self.target is None else as_estimate(self.target)

    @property
    def verdict(self) -> Verdict:
        return self.rule.judge(self.value, self.target_estimate, self.policy.z)

    def target_text(self) -> str:
        t = self.target_estimate
        if t is None:
            return "—"
        return str(t) if t.se > 0 else f"{t.value:.4g}"

    def sentence(self) -> str:
        """One Markdown sentence: what was checked, the numbers, the rule and the verdict."""
        subject = f"{self.description} ({self.name})" if self.description else self.name
        against = f" against {self.target_text()}" if self.target is not None else ""
        return f"{subject}: {self.value}{against}, {self.rule.describe(self.policy.z)} — **{self.verdict}**."

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: name, value, se, target, target_se, rule, verdict (and the description)."""
        t = self.target_estimate
        return {
            "name": self.name,
            "value": float(self.value.value),
            "se": float(self.value.se),
            "target": None if t is None else float(t.value),
            "target_se": None if t is None else float(t.se),
            "rule": self.rule.describe(self.policy.z),
            "verdict": self.verdict,
            "description": self.description,
        }


def checks_table(checks: Iterable[Check]) -> str:
    """Markdown table: check, value ± SE, target, rule, verdict."""
    lines = ["| check | value ± SE | target | rule | verdict |", "|---|---|---|---|---|"]
    for c in checks:
        verdict = c.verdict if c.verdict == "pass" else f"**{c.verdict}**"
        lines.append(
            f"| {c.name} | {c.value} | {c.target_text()} | {c.rule.describe(c.policy.z)} | {verdict} |"
        )
    return "\n".join(lines)


def checks_summary(checks: Iterable[Check]) -> dict[str, Any]:
    """For summary.json: counts per verdict, the overall verdict (any fail → fail, else any
    inconclusive → inconclusive, else pass) and every check's :meth:`Check.to_dict`."""
    rows = [c.to_dict() for c in checks]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    overall = "fail" if counts["fail"] else "inconclusive" if counts["inconclusive"] else "pass"
    return {"verdict": overall, **counts, "z": POLICY.z, "checks": rows}


def bound_check(
    name: str, description: str, t: np.ndarray, values: np.ndarray, bound: np.ndarray, unreached: str = ""
) -> Check:
    """``E values ≤ bound`` over the records ``(T, P)`` at times ``t``, judged where the mean comes
    closest in SE (:func:`~optsde.analysis.estimates.worst_excess`).  A ``bound`` per record ``(T,)``
    is exact; a bound per path ``(T, P)`` is paired with its path, so the SE is that of the margin.
    With no records the check is inconclusive and its description ends with ``unreached``.
    """
    paired = np.ndim(bound) == 2
    if not len(values):
        return Check(name, Estimate(math.nan, math.nan), None, AtMost(0.0), description + unreached)
    k, excess = worst_excess(values - (bound if paired else bound[:, None]))
    where = f"{description} (closest at t = {t[k]:.3g})"
    if paired:
        return Check(name, excess, None, AtMost(0.0), where)
    return Check(name, sample_mean(values[k]), float(bound[k]), AtMost(), where)
