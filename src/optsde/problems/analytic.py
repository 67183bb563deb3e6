"""Analytic landscapes with synthetic gradient noise (docs/theory.md §4, §7 items 2, 3, 5).

A landscape gives ``f`` and ``∇f`` batched over paths; :class:`NoisyProblem`
pairs it with a noise model and so becomes a :class:`GradientOracle`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from optsde.errors import OptsdeError
from optsde.noise import NoiseModel
from optsde.problems.base import Evaluation, evaluate_by_parts
from optsde.randomness import RandomSource


class ProblemError(OptsdeError):
    """A problem is ill-specified; the message says how to fix it."""


class Landscape(Protocol):
    dim: int

    def loss(self, x: Tensor) -> Tensor: ...

    def grad(self, x: Tensor) -> Tensor: ...

    def curvature(self) -> Tensor:
        """Per-coordinate curvature at the minimum the run is expected to reach (for κ)."""
        ...


@dataclass
class Quadratic:
    """``f(x) = ½ (x − x*)ᵀ H (x − x*)`` with ``H`` diagonal (a vector) or full (a matrix)."""

    hessian: Tensor
    minimum: Tensor | None = None

    def __post_init__(self) -> None:
        h = torch.as_tensor(self.hessian, dtype=torch.float64)
        if h.ndim not in (1, 2) or (h.ndim == 2 and h.shape[0] != h.shape[1]):
            raise ProblemError("the Hessian must be a vector (diagonal) or a square matrix")
        if h.ndim == 2 and not torch.allclose(h, h.T):
            raise ProblemError("the Hessian must be symmetric")
        self.hessian = h
        self.dim = h.shape[0]
        self.minimum = (
            torch.zeros(self.dim, dtype=torch.float64)
            if self.minimum is None
            else torch.as_tensor(self.minimum, dtype=torch.float64)
        )

    @property
    def is_diagonal(self) -> bool:
        return self.hessian.ndim == 1

    def _centred(self, x: Tensor) -> Tensor:
        return x - self.minimum.to(dtype=x.dtype, device=x.device)  # type: ignore[union-attr]

    def grad(self, x: Tensor) -> Tensor:
        h = self.hessian.to(dtype=x.dtype, device=x.device)
        y = self._centred(x)
        return y * h if self.is_diagonal else y @ h  # H symmetric: (H y)ᵀ = yᵀ H

    def loss(self, x: Tensor) -> Tensor:
        return 0.5 * (self._centred(x) * self.grad(x)).sum(dim=-1)

    def curvature(self) -> Tensor:
        return self.hessian if self.is_diagonal else torch.linalg.eigvalsh(self.hessian)


@dataclass
class EmbeddedSaddle:
    """Quadratic coordinates times double wells (docs/theory.md §7 item 3).

    ``f(x) = ½ Σ_i h_i x_i² + Σ_j (x_j⁴/4 − x_j²/2)`` over the first ``len(h)``
    coordinates and the last ``wells`` coordinates: a saddle at 0, minima where
    every well coordinate is ±1 (curvature 2 there).
    """

    quadratic_hessian: Tensor
    wells: int = 1

    def __post_init__(self) -> None:
        self.quadratic_hessian = torch.as_tensor(self.quadratic_hessian, dtype=torch.float64).reshape(-1)
        if self.wells < 1:
            raise ProblemError("the embedded saddle needs at least one double-well coordinate")
        self.split = self.quadratic_hessian.shape[0]
        self.dim = self.split + self.wells

    def loss(self, x: Tensor) -> Tensor:
        h = self.quadratic_hessian.to(dtype=x.dtype, device=x.device)
        q, w = x[..., : self.split], x[..., self.split :]
        return 0.5 * (h * q * q).sum(-1) + (w**4 / 4 - w**2 / 2).sum(-1) + self.wells / 4

    def grad(self, x: Tensor) -> Tensor:
        h = self.quadratic_hessian.to(dtype=x.dtype, device=x.device)
        q, w = x[..., : self.split], x[..., self.split :]
        return torch.cat([h * q, w**3 - w], dim=-1)

    def curvature(self) -> Tensor:
        return torch.cat([self.quadratic_hessian, torch.full((self.wells,), 2.0, dtype=torch.float64)])


@dataclass
class UserFunction:
    """Any differentiable torch function ``f: R^d → R`` of one parameter vector.

    Batched over paths with ``torch.func.vmap`` and differentiated with
    ``torch.func.grad``.  ``curvature`` is the Hessian diagonal at ``reference``
    (default: the origin), used only for κ.
    """

    fn: Callable[[Tensor], Tensor]
    dim: int
    reference: Tensor | None = None

    def __post_init__(self) -> None:
        self._loss = torch.func.vmap(self.fn)
        self._grad = torch.func.vmap(torch.func.grad(self.fn))

    def loss(self, x: Tensor) -> Tensor:
        return self._loss(x)

    def grad(self, x: Tensor) -> Tensor:
        return self._grad(x)

    def curvature(self) -> Tensor:
        ref = torch.zeros(self.dim, dtype=torch.float64) if self.reference is None else self.reference
        return torch.autograd.functional.hessian(self.fn, ref.double()).diagonal().abs()


@dataclass
class NoisyProblem:
    """A landscape plus additive noise: the :class:`GradientOracle` of analytic experiments."""

    landscape: Landscape
    noise: NoiseModel
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.dim = self.landscape.dim
        if self.noise.dim != self.dim:
            raise ProblemError(f"noise has dimension {self.noise.dim}, the problem {self.dim}")

    def loss(self, x: Tensor) -> Tensor:
        return self.landscape.loss(x)

    def grad(self, x: Tensor) -> Tensor:
        return self.landscape.grad(x)

    @property
    def compilable(self) -> bool:
        """A step through this oracle is pure torch where its noise model is (``noise.pure_torch``)."""
        return self.noise.pure_torch

    def sample_gradient(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        return self.landscape.grad(x) + self.noise.sample(x, random)

    def noise_variance(self, x: Tensor) -> Tensor:
        return self.noise.variance(x)

    def noise_scale(self, x: Tensor) -> Tensor:
        """``s``: the per-coordinate scale that SignSGD's phases are measured in (docs/theory.md §3)."""
        return self.noise.std(x)

    def gaussian_noise(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        return self.noise.gaussian(x, random)

    def evaluate(self, x: Tensor, needs: frozenset[str], random: RandomSource) -> Evaluation:
        return evaluate_by_parts(self, x, needs, random)

    def expected_sign(self, x: Tensor) -> Tensor:
        return self.noise.expected_sign(self.landscape.grad(x), x)

    def kappa(self, lr: float) -> float:
        """docs/theory.md §3: ``κ = η · max_i h_i / s_i``, step size against the stationary spread."""
        h = self.landscape.curvature().abs()
        x = torch.zeros(1, self.dim, dtype=torch.float64)
        s = self.noise.std(x)[0]
        return float((lr * h / s).max())
