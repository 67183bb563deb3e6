"""The one tolerance policy of the product (docs/analysis.md "Tolerance policy").

Every comparison of a Monte Carlo estimate with a target — a check's verdict, whether a
window is stationary, whether a mean exists — allows ``z`` standard errors.  ``z = 3``:
a single comparison of a correct result fails by chance with probability 0.27% (two-sided,
normal errors), so a report with a few dozen checks on a correct run shows a false
failure only rarely (≈ 8% for 30 checks), while a real deviation of 4–5 SE is still caught;
at z = 2 the same report would show one false failure in most runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TolerancePolicy:
    """How many standard errors a comparison allows."""

    z: float = 3.0


POLICY = TolerancePolicy()
"""The product's policy, used by every rule and estimator verdict."""
