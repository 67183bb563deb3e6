"""Where the randomness of a step comes from: one source handed down to the oracle.

STYLE §1 and the torchsde pattern (``I_k = bm(t0, t1)`` drawn outside the model): a
discrete step or an Euler–Maruyama step never seeds, stores or intercepts a generator of
its own.  It asks the :class:`RandomSource` it was handed for standard normals (and, for
Student-t noise, Gamma variables), and the solver decides where they come from:

- :class:`GeneratorSource`: drawn on demand from a ``torch.Generator`` (eager runs, and
  oracles that also draw minibatch indices, such as a network's);
- :class:`PresampledSource`: a block's draws made in advance by :func:`presample`, one
  ``randn`` call per draw site, and handed out in order (eager and compiled blocks on the CPU);
- :class:`KernelSource`: drawn inside a compiled kernel from the device's default
  generator, which the solver seeds per block from the run's generator (compiled blocks on
  a GPU);
- :class:`ProbeSource`: answers with placeholders and records what one step asked for, so
  that a block's draws can be presampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

Shape = tuple[int, ...]


class NotPresampleable(RuntimeError):
    """A step asked for randomness that cannot be drawn ahead of time (e.g. minibatch indices)."""


@runtime_checkable
class RandomSource(Protocol):
    """The random numbers one step may ask for."""

    def normal(self, shape: Shape, like: Tensor) -> Tensor:
        """Standard normals of ``shape``, with ``like``'s dtype and device."""
        ...

    def gamma(self, shape: Shape, concentration: float, like: Tensor) -> Tensor:
        """``Gamma(concentration, 1)`` variables of ``shape``, with ``like``'s dtype and device."""
        ...

    def integers(self, high: int, shape: Shape, device: torch.device) -> Tensor:
        """Uniform integers in ``[0, high)``."""
        ...

    def uniform(self, shape: Shape, like: Tensor) -> Tensor:
        """Uniform numbers in ``[0, 1)``."""
        ...


@dataclass
class GeneratorSource:
    """Draws on demand from ``generator`` (the global stream when it is None)."""

    generator: torch.Generator | None = None

    def normal(self, shape: Shape, like: Tensor) -> Tensor:
        return torch.randn(shape, generator=self.generator, dtype=like.dtype, device=like.device)

    def gamma(self, shape: Shape, concentration: float, like: Tensor) -> Tensor:
        alpha = torch.full(shape, concentration, dtype=like.dtype, device=like.device)
        return torch._standard_gamma(alpha, generator=self.generator)

    def integers(self, high: int, shape: Shape, device: torch.device) -> Tensor:
        return torch.randint(high, shape, generator=self.generator, device=device)

    def uniform(self, shape: Shape, like: Tensor) -> Tensor:
        return torch.rand(shape, generator=self.generator, dtype=like.dtype, device=like.device)


def as_source(random: RandomSource | torch.Generator | None) -> RandomSource:
    """A generator (or None, the global stream) becomes a :class:`GeneratorSource`."""
    if random is None or isinstance(random, torch.Generator):
        return GeneratorSource(random)
    return random


@dataclass(frozen=True)
class Draw:
    """One draw site of a step: what it asks for, in the order it asks."""

    kind: str
    """``normal`` or ``gamma``."""
    shape: Shape
    concentration: float = 0.0


@dataclass
class ProbeSource:
    """Records the draws of one step and answers with placeholders (zeros, or ones for Gamma,
    which Student-t noise divides by), so that probing consumes no randomness."""

    draws: list[Draw] = field(default_factory=list)

    def normal(self, shape: Shape, like: Tensor) -> Tensor:
        self.draws.append(Draw("normal", tuple(shape)))
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def gamma(self, shape: Shape, concentration: float, like: Tensor) -> Tensor:
        self.draws.append(Draw("gamma", tuple(shape), concentration))
        return torch.ones(shape, dtype=like.dtype, device=like.device)

    def integers(self, high: int, shape: Shape, device: torch.device) -> Tensor:
        raise NotPresampleable("minibatch indices are drawn on demand")

    def uniform(self, shape: Shape, like: Tensor) -> Tensor:
        raise NotPresampleable("uniform keys are drawn on demand")


def presample(draws: list[Draw], steps: int, like: Tensor, generator: torch.Generator | None) -> list[Tensor]:
    """Every draw of ``steps`` steps: for each draw site one tensor ``(steps, *shape)``, made
    by one call each, in the order of ``draws``."""
    out = []
    for draw in draws:
        shape = (steps, *draw.shape)
        if draw.kind == "normal":
            out.append(torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device))
        else:
            alpha = torch.full(shape, draw.concentration, dtype=like.dtype, device=like.device)
            out.append(torch._standard_gamma(alpha, generator=generator))
    return out


@dataclass
class PresampledSource:
    """Hands out step ``index``'s presampled draws in the order the probe saw them."""

    draws: list[Tensor]
    index: int | Tensor = 0
    _used: int = 0

    def _next(self, shape: Shape) -> Tensor:
        if self._used >= len(self.draws):
            raise NotPresampleable(f"draw {self._used} of shape {tuple(shape)} was not presampled")
        value = self.draws[self._used][self.index]
        self._used += 1
        return value

    def normal(self, shape: Shape, like: Tensor) -> Tensor:
        return self._next(shape)

    def gamma(self, shape: Shape, concentration: float, like: Tensor) -> Tensor:
        return self._next(shape)

    def integers(self, high: int, shape: Shape, device: torch.device) -> Tensor:
        raise NotPresampleable("minibatch indices are drawn on demand")

    def uniform(self, shape: Shape, like: Tensor) -> Tensor:
        raise NotPresampleable("uniform keys are drawn on demand")


class KernelSource:
    """Draws inside a compiled kernel from the device's default generator (seeded per block)."""

    def normal(self, shape: Shape, like: Tensor) -> Tensor:
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def gamma(self, shape: Shape, concentration: float, like: Tensor) -> Tensor:
        return torch._standard_gamma(torch.full(shape, concentration, dtype=like.dtype, device=like.device))

    def integers(self, high: int, shape: Shape, device: torch.device) -> Tensor:
        raise NotPresampleable("minibatch indices are drawn on demand")

    def uniform(self, shape: Shape, like: Tensor) -> Tensor:
        raise NotPresampleable("uniform keys are drawn on demand")
