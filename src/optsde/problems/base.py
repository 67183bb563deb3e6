"""The gradient-noise oracle: what optimizers and SDE models may ask of a problem.

docs/theory.md §1: the stochastic gradient is ``∇f_γ(x) = ∇f(x) + Z(x)`` with ``E Z = 0`` and
``Cov Z = Σ(x)``.  Every problem (analytic landscape with synthetic noise, or a
network with minibatch noise) answers the same questions, for a batch of
``P`` parameter vectors at once (``x`` has shape ``(P, d)``).  Models only use
the diagonal of ``Σ`` except through :meth:`GradientOracle.gaussian_noise`,
which returns a full-covariance sample ``Σ(x)^{1/2} ξ``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from optsde.randomness import RandomSource

NEEDS = frozenset({"grad", "variance", "scale", "expected_sign", "noise"})
"""What a step may ask of one evaluation of the oracle at ``x`` (:meth:`GradientOracle.evaluate`)."""


@dataclass(frozen=True)
class Evaluation:
    """The oracle's answers at one ``x``; a field is None where the step did not ask for it.

    ``noise`` is the diffusion applied to a fresh standard normal increment,
    ``Σ(x)^{1/2} ξ`` — the oracle draws ``ξ`` from the step's source, since the Wiener
    process it needs has the dimension of its own noise (``d`` for additive noise, the
    number of examples for a network's minibatch noise, docs/theory.md §4).
    """

    grad: Tensor | None = None
    variance: Tensor | None = None
    scale: Tensor | None = None
    expected_sign: Tensor | None = None
    noise: Tensor | None = None


@runtime_checkable
class GradientOracle(Protocol):
    """A differentiable loss with a gradient-noise model, batched over paths."""

    dim: int

    def loss(self, x: Tensor) -> Tensor:
        """``f(x)`` for every path: shape ``(P,)``."""
        ...

    def grad(self, x: Tensor) -> Tensor:
        """The noiseless gradient ``∇f(x)``: shape ``(P, d)``."""
        ...

    compilable: bool
    """Whether a step through this oracle is pure torch and may run as one compiled block."""

    def sample_gradient(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        """A stochastic gradient ``∇f_γ(x)`` as the discrete optimizer sees it."""
        ...

    def noise_variance(self, x: Tensor) -> Tensor:
        """``diag Σ(x)``, the per-coordinate gradient-noise variance: ``(P, d)``.

        Infinite where the noise has no variance (Student-t with ν ≤ 2).
        """
        ...

    def noise_scale(self, x: Tensor) -> Tensor:
        """``s``, the per-coordinate scale of the noise: ``sqrt(diag Σ)``, or the
        scale of a Student-t variable.  SignSGD's phases are measured in it (docs/theory.md §3)."""
        ...

    def gaussian_noise(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        """A sample of ``N(0, Σ(x))``, i.e. ``Σ(x)^{1/2} ξ`` with ``ξ ~ N(0, I)``.

        This is the diffusion the SGD, RMSprop and Adam SDEs are driven by.
        """
        ...

    def expected_sign(self, x: Tensor) -> Tensor:
        """``E sign(∇f_γ(x)) = 1 − 2 P(∇f_γ(x) < 0)`` (docs/theory.md §3, Thm 3.2)."""
        ...

    def evaluate(self, x: Tensor, needs: frozenset[str], random: RandomSource) -> Evaluation:
        """Everything a step asks for at ``x`` (``needs`` ⊆ :data:`NEEDS`), from one evaluation."""
        ...


def evaluate_by_parts(
    oracle: GradientOracle, x: Tensor, needs: frozenset[str], random: RandomSource
) -> Evaluation:
    """:meth:`GradientOracle.evaluate` for oracles whose answers are cheap closed forms:
    each asked-for quantity from its own method."""
    return Evaluation(
        grad=oracle.grad(x) if "grad" in needs else None,
        variance=oracle.noise_variance(x) if "variance" in needs else None,
        scale=oracle.noise_scale(x) if "scale" in needs else None,
        expected_sign=oracle.expected_sign(x) if "expected_sign" in needs else None,
        noise=oracle.gaussian_noise(x, random) if "noise" in needs else None,
    )
