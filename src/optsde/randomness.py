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
- :class:`CounterSource`: computed from the step index and a key by the counter-based
  generator Threefry-2x32-20 (:func:`threefry2x32`), written in tensor operations so that
  a compiled block fuses it into the kernel (compiled blocks on a CPU);
- :class:`ProbeSource`: answers with placeholders and records what one step asked for, so
  that a block's draws can be presampled.
"""

from __future__ import annotations

import math
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


THREEFRY_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
"""Rotation constants of Threefry-2x32 (Salmon et al. 2011, Random123)."""

_WORD = 0xFFFFFFFF


def threefry2x32(c0: Tensor, c1: Tensor, k0: Tensor | int, k1: Tensor | int) -> tuple[Tensor, Tensor]:
    """Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror & Shaw, *Parallel random numbers: as
    easy as 1, 2, 3*, SC 2011; the generator behind JAX's keys): the 2-word counter
    ``(c0, c1)`` encrypted under the key ``(k0, k1)``.  Words are unsigned 32-bit values held
    in int64 tensors; only adds, rotations and xors, so the compiler vectorises and fuses it.
    Checked against Random123's known answers in the tests."""

    def rotate(word: Tensor, r: int) -> Tensor:
        return ((word << r) | (word >> (32 - r))) & _WORD

    keys = (k0, k1, k0 ^ k1 ^ 0x1BD11BDA)
    x0, x1 = (c0 + k0) & _WORD, (c1 + k1) & _WORD
    for i in range(20):
        x0 = (x0 + x1) & _WORD
        x1 = rotate(x1, THREEFRY_ROTATIONS[i % 8]) ^ x0
        if i % 4 == 3:  # key injection every four rounds
            s = i // 4 + 1
            x0 = (x0 + keys[s % 3]) & _WORD
            x1 = (x1 + keys[(s + 1) % 3] + s) & _WORD
    return x0, x1


def counter_normals(shape: Shape, step: Tensor | int, site: int, key: Tensor, like: Tensor) -> Tensor:
    """Standard normals of ``shape`` for draw ``site`` of step ``step``: Threefry words of the
    counters ``(j, step)``, ``j`` = 0, 1, …, under the key ``(key₀, key₁ + site)``, turned
    into pairs of normals by Box–Muller (cosine half, then sine half).  A function of its
    arguments only, so a compiled kernel, an eager step and another device compute the same
    numbers."""
    numel = math.prod(shape)
    pairs = (numel + 1) // 2
    counter = torch.arange(pairs, dtype=torch.int64, device=like.device)
    step_word = torch.as_tensor(step, device=like.device).to(torch.int64) & _WORD
    a, b = threefry2x32(counter, step_word.expand_as(counter), key[0], (key[1] + site) & _WORD)
    # As many bits as the dtype's significand holds, so that 0 < u₁ < 1 exactly.
    bits = 24 if torch.finfo(like.dtype).bits <= 32 else 32
    scale = 2.0**-bits
    u1 = ((a >> (32 - bits)).to(like.dtype) + 0.5) * scale
    u2 = (b >> (32 - bits)).to(like.dtype) * scale
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    # Cosines fill the first half and sines the second: contiguous stores, which vectorise.
    normals = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])
    return normals[:numel].reshape(shape)


@dataclass
class CounterSource:
    """Normals of step ``step`` computed by :func:`counter_normals` under ``key`` (an int64
    tensor of two 32-bit words), one draw site after another."""

    key: Tensor
    step: Tensor | int
    _site: int = 0

    def normal(self, shape: Shape, like: Tensor) -> Tensor:
        self._site += 1
        return counter_normals(shape, self.step, self._site - 1, self.key, like)

    def gamma(self, shape: Shape, concentration: float, like: Tensor) -> Tensor:
        raise NotPresampleable("Gamma variables are presampled, not computed from counters")

    def integers(self, high: int, shape: Shape, device: torch.device) -> Tensor:
        raise NotPresampleable("minibatch indices are drawn on demand")

    def uniform(self, shape: Shape, like: Tensor) -> Tensor:
        raise NotPresampleable("uniform keys are drawn on demand")


def counter_key(generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A run's Threefry key: two 32-bit words drawn once from its generator."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2**32, (2,), generator=generator, dtype=torch.int64, device=where).to(device)
