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
- :func:`counter_presample`: a block's normals computed from the step indices and a key by
  the counter-based generator Threefry-2x32-20 (:func:`threefry2x32`), written in tensor
  operations so that the compiler vectorises it (compiled blocks on a CPU), and handed out
  by a :class:`PresampledSource`;
- :class:`ProbeSource`: answers with placeholders and records what one step asked for, so
  that a block's draws can be presampled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    paired: bool = False
    """Each draw comes as two tensors, its first and second halves (:func:`counter_presample`),
    joined here: inside a compiled block the join fuses into the step's kernel."""
    _used: int = 0

    def _next(self, shape: Shape) -> Tensor:
        width = 2 if self.paired else 1
        if self._used + width > len(self.draws):
            raise NotPresampleable(f"draw {self._used // width} of shape {tuple(shape)} was not presampled")
        value = self.draws[self._used][self.index]
        if self.paired:
            numel = math.prod(shape)
            value = torch.cat([value, self.draws[self._used + 1][self.index]])[:numel].reshape(shape)
        self._used += width
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
    ``(c0, c1)`` encrypted under the key ``(k0, k1)``.  Words are int32 tensors read as
    unsigned 32-bit values (additions wrap; a right shift is made logical by a mask): only adds,
    rotations and xors on 32-bit lanes, so the compiler vectorises and fuses it.  Checked
    against Random123's known answers in the tests."""

    def rotate(word: Tensor, r: int) -> Tensor:
        return (word << r) | ((word >> (32 - r)) & ((1 << r) - 1))

    keys = (k0, k1, k0 ^ k1 ^ 0x1BD11BDA)
    x0, x1 = c0 + k0, c1 + k1
    for i in range(20):
        x0 = x0 + x1
        x1 = rotate(x1, THREEFRY_ROTATIONS[i % 8]) ^ x0
        if i % 4 == 3:  # key injection every four rounds
            s = i // 4 + 1
            x0 = x0 + keys[s % 3]
            x1 = x1 + keys[(s + 1) % 3] + s
    return x0, x1


def _unit_interval(word: Tensor, dtype: torch.dtype, offset: float) -> Tensor:
    """``(u + offset)·2^-bits`` for the top ``bits`` bits ``u`` of an unsigned 32-bit word, with as
    many bits as ``dtype``'s significand holds (24 for float32, all 32 otherwise)."""
    if torch.finfo(dtype).bits <= 32:
        return (((word >> 8) & 0xFFFFFF).to(dtype) + offset) * 2.0**-24
    return ((word.to(torch.int64) & _WORD).to(dtype) + offset) * 2.0**-32


def counter_normal_pairs(
    pairs: int, steps: Tensor, site: int, key: Tensor, like: Tensor
) -> tuple[Tensor, Tensor]:
    """Standard normals as two halves ``(len(steps), pairs)``: row ``r`` of draw ``site`` of
    step ``steps[r]`` comes from the Threefry words ``(a, b)`` of the counters ``(j, step)``,
    ``j`` = 0, …, pairs − 1, under the key ``(key₀, key₁ + site)``, by Box–Muller: the cosine
    half ``√(−2 ln u₁) cos 2πu₂`` and the sine half.  A function of its arguments only, so a
    compiled kernel, an eager call and another device compute the same numbers, however the
    steps are cut into blocks.  Two outputs, not one concatenation: the compiler then computes
    each pair once in one loop instead of storing the Threefry words."""
    counter = torch.arange(pairs, dtype=torch.int32, device=like.device)[None, :].expand(len(steps), pairs)
    step_word = steps.to(device=like.device, dtype=torch.int32)[:, None].expand(-1, pairs)
    words = key.to(device=like.device, dtype=torch.int32)  # the low 32 bits, as a bit pattern
    a, b = threefry2x32(counter, step_word, words[0], words[1] + site)
    u1 = _unit_interval(a, like.dtype, 0.5)  # in (0, 1): the logarithm stays finite
    u2 = _unit_interval(b, like.dtype, 0.0)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    return radius * torch.cos(angle), radius * torch.sin(angle)


CounterNormalPairs = Callable[[int, Tensor, int, Tensor, Tensor], tuple[Tensor, Tensor]]
""":func:`counter_normal_pairs` or a compiled copy of it."""


def counter_presample(
    draws: list[Draw],
    steps: Tensor,
    key: Tensor,
    like: Tensor,
    normal_pairs: CounterNormalPairs = counter_normal_pairs,
) -> list[Tensor]:
    """Every draw of the steps ``steps`` computed from counters: for each draw site (all
    normal) its two halves ``(len(steps), ⌈numel/2⌉)``, for a ``PresampledSource(paired=True)``."""
    out: list[Tensor] = []
    for site, draw in enumerate(draws):
        if draw.kind != "normal":
            raise NotPresampleable("only normals are computed from counters")
        out.extend(normal_pairs((math.prod(draw.shape) + 1) // 2, steps, site, key, like))
    return out


def counter_key(generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A run's Threefry key: two 32-bit words drawn once from its generator."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2**32, (2,), generator=generator, dtype=torch.int64, device=where).to(device)
