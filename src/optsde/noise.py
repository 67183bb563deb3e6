"""Gradient-noise models for analytic problems, docs/theory.md §4.

Additive noise ``Z`` with per-coordinate scale ``s`` (constant, or a function of
``x`` for state-dependent covariance), divided by ``√B`` for a minibatch of size
``B``.  Each model knows its variance, its Gaussian surrogate for the SDE
diffusion, and ``E sign(g + Z)`` in closed form (docs/theory.md §3: erf for Gaussian noise,
the Student-t CDF for Student-t noise), and declares whether all of it is pure torch
(``pure_torch``), which decides whether a step through it may be compiled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from optsde.errors import OptsdeError
from optsde.randomness import RandomSource, as_source

ScaleFn = Callable[[Tensor], Tensor]
"""``x`` of shape ``(P, d)`` ↦ per-coordinate noise scale ``(P, d)``."""


def standard_normal(like: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
    """``ξ ~ N(0, I)`` shaped, typed and placed like ``like``."""
    return as_source(random).normal(tuple(like.shape), like)


def gaussian_sign_mean(mean: Tensor, std: Tensor) -> Tensor:
    """``E sign(mean + s ξ) = erf(mean / (√2 s))`` (docs/theory.md §3, Cor 3.3).

    Where ``s = 0`` there is no noise and the answer is ``sign(mean)`` (a dead unit of a
    network has ``mean = s = 0``, where the formula would give 0/0).
    """
    return torch.where(std > 0, torch.erf(mean / (math.sqrt(2.0) * std)), torch.sign(mean))


class NoiseError(OptsdeError):
    """A noise parameter is invalid; the message says how to fix it."""


def _as_scale(scale: float | Tensor | ScaleFn, dim: int) -> ScaleFn:
    if callable(scale):
        return scale
    value = torch.as_tensor(scale, dtype=torch.float64)
    if value.ndim == 0:
        value = value.expand(dim)
    if value.shape != (dim,):
        raise NoiseError(f"noise scale has shape {tuple(value.shape)}, expected a scalar or ({dim},)")
    if not bool((value >= 0).all()):
        raise NoiseError("noise scale must be non-negative")
    return lambda x: value.to(dtype=x.dtype, device=x.device).expand_as(x)


@dataclass
class GaussianNoise:
    """``Z ~ N(0, Σ/B)``.

    ``scale`` gives ``s = sqrt(diag Σ)`` (scalar, per coordinate, or a function of x);
    alternatively ``covariance`` is a full constant ``(d, d)`` matrix Σ.
    """

    dim: int
    scale: float | Tensor | ScaleFn | None = None
    covariance: Tensor | None = None
    batch_size: int = 1

    pure_torch: ClassVar[bool] = True
    """Every method is torch operations only, so a step through this noise may be compiled."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise NoiseError(f"batch size must be a positive integer, got {self.batch_size}")
        if (self.scale is None) == (self.covariance is None):
            raise NoiseError("give exactly one of a noise scale or a full covariance matrix")
        self._cholesky: Tensor | None = None
        if self.covariance is not None:
            cov = torch.as_tensor(self.covariance, dtype=torch.float64)
            if cov.shape != (self.dim, self.dim):
                raise NoiseError(f"covariance must be ({self.dim}, {self.dim}), got {tuple(cov.shape)}")
            try:
                self._cholesky = torch.linalg.cholesky(cov)
            except RuntimeError as exc:
                raise NoiseError("covariance must be symmetric positive definite") from exc
            self._scale_fn = _as_scale(cov.diagonal().sqrt(), self.dim)
        else:
            self._scale_fn = _as_scale(self.scale, self.dim)  # type: ignore[arg-type]

    def std(self, x: Tensor) -> Tensor:
        """Per-coordinate standard deviation of ``Z`` (batch size included)."""
        return self._scale_fn(x) / math.sqrt(self.batch_size)

    def variance(self, x: Tensor) -> Tensor:
        return self.std(x) ** 2

    def gaussian(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        xi = standard_normal(x, random)
        if self._cholesky is not None:
            chol = self._cholesky.to(dtype=x.dtype, device=x.device)
            return xi @ chol.T / math.sqrt(self.batch_size)
        return self.std(x) * xi

    def sample(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        return self.gaussian(x, random)

    def expected_sign(self, mean: Tensor, x: Tensor) -> Tensor:
        """``E sign(mean + Z) = erf(mean / (√2 s))`` (docs/theory.md §3, Cor 3.3)."""
        return gaussian_sign_mean(mean, self.std(x))


@dataclass
class StudentTNoise:
    """``Z = (s/√B) T_ν`` with ``T_ν`` a standard Student-t variable, independent per coordinate.

    Its variance ``s² ν/(ν−2)/B`` is infinite for ν ≤ 2, where the SGD SDE does
    not exist but the SignSGD SDE does (docs/theory.md §3).
    """

    dim: int
    nu: float
    scale: float | Tensor | ScaleFn = 1.0
    batch_size: int = 1

    pure_torch: ClassVar[bool] = False
    """Its ``expected_sign`` evaluates the Student-t CDF with scipy (:func:`student_t_cdf`), which
    a compiled step cannot trace: a step through this noise runs eagerly."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nu) and self.nu > 0):
            raise NoiseError(f"degrees of freedom must be positive, got nu={self.nu}")
        if self.batch_size < 1:
            raise NoiseError(f"batch size must be a positive integer, got {self.batch_size}")
        self._scale_fn = _as_scale(self.scale, self.dim)

    def std(self, x: Tensor) -> Tensor:
        """The scale ``s/√B`` of the t variable (not its standard deviation)."""
        return self._scale_fn(x) / math.sqrt(self.batch_size)

    def variance(self, x: Tensor) -> Tensor:
        factor = self.nu / (self.nu - 2.0) if self.nu > 2 else math.inf
        return self.std(x) ** 2 * factor

    def gaussian(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        return self.variance(x).sqrt() * standard_normal(x, random)

    def sample(self, x: Tensor, random: RandomSource | torch.Generator | None) -> Tensor:
        # T = ξ / sqrt(χ²_ν/ν); χ²_ν = 2·Gamma(ν/2), drawn from the same source
        # so that a seed fixes the whole run.
        source = as_source(random)
        xi = standard_normal(x, source)
        gamma = source.gamma(tuple(x.shape), self.nu / 2.0, x)
        return self.std(x) * xi / torch.sqrt(2.0 * gamma / self.nu)

    def expected_sign(self, mean: Tensor, x: Tensor) -> Tensor:
        """``E sign(mean + Z) = 2 F_ν(mean / s) − 1`` (docs/theory.md §3, Student-t form)."""
        scale = self.std(x)
        return torch.where(scale > 0, 2.0 * student_t_cdf(mean / scale, self.nu) - 1.0, torch.sign(mean))


def student_t_cdf(y: Tensor, nu: float) -> Tensor:
    """CDF of the standard Student-t, through the regularised incomplete beta function.

    ``F_ν(y) = 1 − ½ I_{ν/(ν+y²)}(ν/2, ½)`` for ``y ≥ 0`` and symmetric.  torch has
    no incomplete beta, so we evaluate it with scipy on the CPU; it is only used
    by the Student-t SignSGD SDE on small analytic problems.
    """
    from scipy.special import stdtr

    values = stdtr(nu, y.detach().cpu().double().numpy())
    return torch.as_tensor(values, dtype=y.dtype, device=y.device)


NoiseModel = GaussianNoise | StudentTNoise
