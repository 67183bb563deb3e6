"""The gradient-noise oracle: what optimizers and SDE models may ask of a problem.

SPEC §1: the stochastic gradient is ``∇f_γ(x) = ∇f(x) + Z(x)`` with ``E Z = 0`` and
``Cov Z = Σ(x)``.  Every problem (analytic landscape with synthetic noise, or a
network with minibatch noise) answers the same questions, for a batch of
``P`` parameter vectors at once (``x`` has shape ``(P, d)``).  Models only use
the diagonal of ``Σ`` except through :meth:`GradientOracle.gaussian_noise`,
which returns a full-covariance sample ``Σ(x)^{1/2} ξ``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


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

    def sample_gradient(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """A stochastic gradient ``∇f_γ(x)`` as the discrete optimizer sees it."""
        ...

    def noise_variance(self, x: Tensor) -> Tensor:
        """``diag Σ(x)``, the per-coordinate gradient-noise variance: ``(P, d)``.

        Infinite where the noise has no variance (Student-t with ν ≤ 2).
        """
        ...

    def noise_scale(self, x: Tensor) -> Tensor:
        """``s``, the per-coordinate scale of the noise: ``sqrt(diag Σ)``, or the
        scale of a Student-t variable.  SignSGD's phases are measured in it (SPEC §3)."""
        ...

    def gaussian_noise(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """A sample of ``N(0, Σ(x))``, i.e. ``Σ(x)^{1/2} ξ`` with ``ξ ~ N(0, I)``.

        This is the diffusion the SGD, RMSprop and Adam SDEs are driven by.
        """
        ...

    def expected_sign(self, x: Tensor) -> Tensor:
        """``E sign(∇f_γ(x)) = 1 − 2 P(∇f_γ(x) < 0)`` (SPEC §3, Thm 3.2)."""
        ...
