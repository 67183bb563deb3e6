"""Shared helpers for the core engine's tests.

Statistical assertions take their tolerance from the Monte Carlo standard error of
the data they are given (never from a number tuned to pass): ``Z_TOL`` standard
errors, two-sided.  At 4 SE a single comparison fails by chance with probability
6e-5, so a test making a dozen of them stays below 1e-3 — and every test uses a
fixed seed, so a pass or a failure is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

Z_TOL = 4.0
"""Standard errors allowed between two Monte Carlo estimates (or one and an exact value)."""


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean and its standard error."""

    mean: float
    se: float

    def __str__(self) -> str:
        return f"{self.mean:.6g} ± {self.se:.2g}"


def estimate(samples: np.ndarray | torch.Tensor) -> Estimate:
    """Mean and standard error of independent samples (one per path)."""
    values = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, float)
    values = values.reshape(-1)
    return Estimate(float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size)))


def ratio(a: Estimate, b: Estimate) -> Estimate:
    """``a/b`` of two independent estimates, its SE by the delta method."""
    r = a.mean / b.mean
    return Estimate(r, abs(r) * math.hypot(a.se / a.mean, b.se / b.mean))


def assert_agree(a: Estimate, b: Estimate | float, *, allowance: float = 0.0, what: str = "") -> None:
    """``|a − b| ≤ Z_TOL·SE + allowance``, SE combining both estimates (a float is exact).

    ``allowance`` is an absolute modelling tolerance that each caller must justify.
    """
    b_mean, b_se = (b.mean, b.se) if isinstance(b, Estimate) else (float(b), 0.0)
    se = math.hypot(a.se, b_se)
    gap = abs(a.mean - b_mean)
    assert gap <= Z_TOL * se + allowance, (
        f"{what}: {a} vs {b_mean:.6g} ± {b_se:.2g}: gap {gap:.3g} = {gap / se if se else math.inf:.1f} SE "
        f"exceeds {Z_TOL} SE + allowance {allowance:.3g}"
    )


@pytest.fixture
def generator():
    """A factory of seeded CPU generators: ``generator(seed)``."""

    def make(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return make


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """One intra-op thread for the whole suite, as the CLI's default ``--threads 1``: the
    tests' tensors are small, where torch's thread pool costs more than it gains, and on a
    busy machine its spin-waits made some simulations 5–30× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_global_rng():
    """Anything that falls back on torch's global RNG is reproducible too."""
    torch.manual_seed(1234)
    np.random.seed(1234)
