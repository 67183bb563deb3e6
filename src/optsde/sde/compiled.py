"""Segments of a run as compiled blocks, with the randomness handed in (docs/simulate.md).

An eager step of an adaptive SDE is some twenty small tensor operations, each a separate
pass over the ``(P, d)`` state: at the sizes of the experiments the time goes into dispatch
and memory traffic.  ``torch.compile`` (inductor: C++/OpenMP on a CPU, Triton on a GPU)
turns a block of consecutive ``runner.advance`` calls into one kernel that reads the state
once and writes it once.  Nothing here knows an optimizer or an SDE: the runner, the oracle
and the hyperparameters are traced as they are.

Randomness is an input (:mod:`optsde.randomness`): a probe step records what one step draws.
Then a block's draws are made before it runs, one call per draw site, either with the
run's generator (``presampled``, the eager default) or from counters (``counter``, the
compiled default on a CPU: ``randn`` is a serial Mersenne Twister there and would cap the
block): the Threefry generator, compiled once on its own (inside the block it would
multiply the block's compile time by ten), computes them from the step indices and a key
drawn once from the run's generator, the same numbers eager or compiled, on any device.
On a GPU the compiled default draws inside the kernel from the device generator reseeded
per block (``in-kernel``).
A block length compiles once; a segment of ``n`` steps runs as blocks of ``block`` steps and
a remainder in blocks of ``block/4`` and single steps, so three lengths serve every segment.
"""

from __future__ import annotations

import contextlib
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from optsde.optimizers.base import Hyperparameters, Schedule, State, constant_schedule
from optsde.problems.base import GradientOracle
from optsde.randomness import (
    CounterNormalPairs,
    Draw,
    GeneratorSource,
    KernelSource,
    NotPresampleable,
    PresampledSource,
    ProbeSource,
    counter_key,
    counter_normal_pairs,
    counter_presample,
    presample,
)
from optsde.sde.solver import Runner, SolverError, StepInputs

NOISE_MODES = ("auto", "presampled", "in-kernel", "counter")
COMPILE_MODES = ("auto", "on", "off")

AUTO_COMPILE_ELEMENT_STEPS = {"cpu": 3e8, "cuda": 1e8}
"""``compile="auto"`` compiles a run of at least this many element-steps (paths × d × EM
steps).  Measured on 2 CPU cores (docs/simulate.md): compiling costs 5–10 s once per
runner, and the compiled block is 3–10× faster than eager steps, so below this size the
eager path finishes first."""


_COMPILED: dict[tuple, tuple[object, Callable[..., tuple]]] = {}
"""Compiled blocks by (runner, hyperparameters, oracle, length, noise mode, dtype, device, state
layout, CPU threads), kept for the process so that repeated runs of one setting compile once.  The oracle is
held beside its id so that a recycled id never reuses another oracle's code."""


PARALLEL_MIN_ELEMENTS = 2**14
"""A compiled CPU kernel over a state of fewer elements (paths × d) runs on one thread."""

COUNTER_MIN_ELEMENTS = 2**14
"""``noise="auto"`` computes counter normals for a compiled CPU block from this many elements
(paths × d) on; below, one ``randn`` call per block costs less than a call of the compiled
generator."""


def kernel_threads(x: Tensor) -> int:
    """The threads a compiled kernel over ``x`` is generated for: torch's count, or one for a
    small state, where OpenMP's fork and join cost more than the second thread saves."""
    return 1 if x.numel() < PARALLEL_MIN_ELEMENTS else torch.get_num_threads()


def generated_for(threads: int) -> contextlib.AbstractContextManager[object]:
    """Run a compiled call whose kernels are generated for ``threads`` CPU threads.

    Inductor decides at code generation whether a CPU kernel runs in parallel, from the thread
    count, which its on-disk cache does not key on: a kernel generated in a one-thread process
    ran on one thread in a two-thread one (measured: half the speed).  Naming the count in its
    configuration puts it into the cache key."""
    return torch._inductor.config.patch({"cpp.threads": threads})


def chunk_sizes(n: int, block: int) -> list[int]:
    """``n`` steps as blocks of ``block``, then of ``max(1, block // 4)``, then single steps."""
    sizes = []
    for size in dict.fromkeys((block, max(1, block // 4), 1)):
        sizes += [size] * (n // size)
        n %= size
    return sizes


@dataclass
class EngineReport:
    """Which code ran a simulation and what compiling cost (reported once, never hidden)."""

    path: str = "eager"
    noise: str = "generator"
    block: int = 16
    compile_seconds: float = 0.0
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class Engine:
    """Advances one runner through segments of steps, compiled or eager, drawing its randomness
    from ``generator`` (the global stream when None)."""

    runner: Runner
    oracle: GradientOracle
    hp: Hyperparameters
    schedule: Schedule = constant_schedule
    generator: torch.Generator | None = None
    compile: str = "auto"
    block: int = 16
    noise: str = "auto"
    report: EngineReport = field(init=False)
    _draws: list[Draw] | None = field(init=False, default=None)
    _key: Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.block < 1:
            raise SolverError(f"block must be a positive number of steps, got {self.block}")
        if self.noise not in NOISE_MODES:
            raise SolverError(f"noise must be one of {', '.join(NOISE_MODES)}, got {self.noise!r}")
        if self.compile not in COMPILE_MODES:
            raise SolverError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        self.report = EngineReport(block=self.block)

    # ------------------------------------------------------------------ set-up

    def prepare(self, state: State, steps: int) -> None:
        """Decide compiled or eager and how noise is drawn, for a run of ``steps`` steps."""
        x = state.x
        pure = self.runner.compilable and getattr(self.oracle, "compilable", False)
        if pure:
            probe = ProbeSource()
            factors = [1.0] * self.runner.substeps
            try:
                with torch.no_grad():
                    self.runner.advance(state, StepInputs(1, factors, self.oracle, self.hp, probe))
                self._draws = probe.draws
            except NotPresampleable:
                pure = False
        work = x.numel() * steps * self.runner.substeps
        wanted = self.compile == "on" or (
            self.compile == "auto" and work >= AUTO_COMPILE_ELEMENT_STEPS.get(x.device.type, 1e8)
        )
        if wanted and not pure:
            self.report.fallback_reason = "the runner or the oracle is not pure torch; it runs eagerly"
        elif wanted and not torch._dynamo.is_dynamo_supported():
            self.report.fallback_reason = "torch.compile is not supported on this Python or platform"
        elif wanted:
            self.report.path = "compiled"
        if self._draws is not None:
            self.report.noise = self._noise_mode(x)
            if self.report.noise == "counter":
                self._key = counter_key(self.generator, x.device)

    def _noise_mode(self, x: Tensor) -> str:
        """``auto``: counter noise for compiled blocks on a CPU over at least
        :data:`COUNTER_MIN_ELEMENTS` elements (docs/simulate.md measures it against
        presampling), the kernel's generator on a GPU, presampling otherwise."""
        only_normals = all(draw.kind == "normal" for draw in self._draws or [])
        if self.noise == "counter" and not only_normals:
            raise SolverError(
                "noise='counter' computes normals only, and this model also draws Gamma variables "
                "(Student-t noise); use noise='presampled'"
            )
        if self.report.path != "compiled" and self.noise in ("auto", "in-kernel"):
            return "presampled"  # an eager step cannot draw inside a kernel
        if self.noise != "auto":
            return self.noise
        if x.device.type == "cpu":
            return "counter" if only_normals and x.numel() >= COUNTER_MIN_ELEMENTS else "presampled"
        return "in-kernel"

    # ------------------------------------------------------------------ running

    def advance(self, state: State, first: int, steps: int) -> tuple[State, int]:
        """From step ``first − 1`` to ``first − 1 + steps``; returns the state and the number of
        diverged paths at the end (0 if none).  Divergence is looked for once per call, at the
        segment's end (a compiled block counts its diverged paths in its own kernel, where the
        state is still in cache; an eager segment counts them after its last step)."""
        state, bad, _ = self._advance(state, first, steps, keep_first=False)
        return state, bad

    def advance_keeping_first(self, state: State, first: int, steps: int) -> tuple[State, int, State, int]:
        """:meth:`advance`, and also the state after the first step and its diverged paths:
        ``simulate`` records a pair of consecutive steps with one call instead of two."""
        end, bad, (after_first, bad_first) = self._advance(state, first, steps, keep_first=True)
        return end, bad, after_first, bad_first

    def _advance(self, state: State, first: int, steps: int, keep_first: bool) -> tuple[State, int, Any]:
        k, bad, kept = first, None, None
        with self._kernel_seeds() as reseed:
            for i, n in enumerate(chunk_sizes(steps, self.block)):
                reseed(i)
                state, bad, after_first = self._chunk(state, k, n, keep_first and i == 0)
                if after_first is not None:
                    kept = after_first
                k += n
        return state, int(diverged(state.x).sum() if bad is None else bad), kept

    def _factors(self, k: int, n: int) -> list[list[float]]:
        m = self.runner.substeps
        if self.schedule is constant_schedule:
            return [[1.0] * m] * n
        return [[self.schedule((k + i - 1) + j / m) for j in range(m)] for i in range(n)]

    def _chunk(
        self, state: State, k: int, n: int, keep_first: bool = False
    ) -> tuple[State, Tensor | None, tuple[State, int] | None]:
        """Steps ``k … k + n − 1``: the state, its diverged paths (None where not counted yet)
        and, with ``keep_first``, the state after step ``k`` with its diverged paths."""
        factors = self._factors(k, n)
        draws = None
        if self.report.noise == "presampled":
            draws = presample(self._draws or [], n, state.x, self.generator)
        elif self.report.noise == "counter":
            draws = self._counter_draws(k, n, state.x)
        if self.report.path == "compiled":
            saved = self.generator.get_state() if self.generator is not None else None
            try:
                return self._compiled_chunk(state, k, n, factors, draws, keep_first)
            except Exception as exc:
                # Tracing and code generation fail in many ways; the compiled call does not
                # touch its inputs, so the block reruns eagerly (with presampled noise, from
                # the same draws), and raises again if the error was the model's own.
                self.report.path = "eager"
                self.report.fallback_reason = (
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
                )
                if self.report.noise == "in-kernel":
                    if self.generator is not None:
                        self.generator.set_state(saved)
                    self.report.noise = "presampled"
                    draws = presample(self._draws or [], n, state.x, self.generator)
        random, paired = GeneratorSource(self.generator), self.report.noise == "counter"
        kept = None
        for i in range(n):
            source = random if draws is None else PresampledSource(draws, i, paired)
            state = self.runner.advance(state, StepInputs(k + i, factors[i], self.oracle, self.hp, source))
            if keep_first and i == 0:
                kept = (state, int(diverged(state.x).sum()))
        return state, None, kept

    def _counter_draws(self, k: int, n: int, like: Tensor) -> list[Tensor]:
        """Steps ``k … k + n − 1``'s normals from counters; compiled (once per process, for any
        size) on the compiled path, where eager tensor operations would cost more than the block."""
        steps = torch.arange(k, k + n, dtype=torch.int64, device=like.device)
        normal_pairs: CounterNormalPairs = counter_normal_pairs
        first_call, started = False, time.perf_counter()
        if self.report.path == "compiled":
            threads = kernel_threads(like)
            key = ("counter-normals", like.dtype, like.device, threads)
            first_call = key not in _COMPILED
            if first_call:
                _COMPILED[key] = (None, torch.compile(_private_copy(counter_normal_pairs), dynamic=True))
            compiled = _COMPILED[key][1]

            def normal_pairs(*arguments: object) -> tuple[Tensor, Tensor]:
                with generated_for(threads):
                    return compiled(*arguments)  # type: ignore[return-value]

        assert self._key is not None
        draws = counter_presample(self._draws or [], steps, self._key, like.new_zeros(()), normal_pairs)
        if first_call:
            self.report.compile_seconds += time.perf_counter() - started
        return draws

    def _compiled_chunk(
        self,
        state: State,
        k: int,
        n: int,
        factors: list[list[float]],
        draws: list[Tensor] | None,
        keep_first: bool,
    ) -> tuple[State, Tensor, tuple[State, int] | None]:
        x = state.x
        threads = kernel_threads(x)
        handed_in = "none" if draws is None else "paired" if self.report.noise == "counter" else "whole"
        key = (
            self.runner,
            self.hp,
            id(self.oracle),
            n,
            handed_in,
            x.dtype,
            x.device,
            state.m is None,
            threads,
            keep_first and n > 1,
        )
        cached = _COMPILED.get(key)
        first_call = cached is None or cached[0] is not self.oracle
        started = time.perf_counter()
        step = (
            state.step
            if isinstance(state.step, Tensor)
            else torch.tensor(float(state.step), dtype=torch.float64)
        )
        arguments = (
            x,
            state.m,
            state.v,
            step.to(x.device),
            torch.full((), float(k), dtype=torch.float64, device=x.device),
            torch.tensor(factors, dtype=torch.float64).to(x.device, non_blocking=True),
            draws,
        )
        if first_call:
            for tensor in (x, state.m, state.v):
                if tensor is not None:
                    torch._dynamo.maybe_mark_dynamic(tensor, 0)
            for tensor in draws or []:
                torch._dynamo.maybe_mark_dynamic(tensor, 1)
            _COMPILED[key] = (
                self.oracle,
                torch.compile(
                    self._block_function(n, handed_in == "paired", keep_first and n > 1), fullgraph=True
                ),
            )
        with generated_for(threads):
            out = _COMPILED[key][1](*arguments)
        if first_call:
            self.report.compile_seconds += time.perf_counter() - started
        end = State(x=out[0], m=out[1], v=out[2], step=out[3])
        if not keep_first:
            return end, out[4], None
        if n == 1:
            return end, out[4], (end, int(out[4]))
        return end, out[4], (State(x=out[5], m=out[6], v=out[7], step=out[8]), int(out[9]))

    def _block_function(self, n: int, paired: bool, keep_first: bool) -> Callable[..., tuple]:
        runner, oracle, hp = self.runner, self.oracle, self.hp

        def block(
            x: Tensor,
            m: Tensor | None,
            v: Tensor | None,
            step: Tensor,
            k: Tensor,
            factors: Tensor,
            draws: list[Tensor] | None,
        ) -> tuple:
            state = State(x=x, m=m, v=v, step=step)
            kept: tuple = ()
            for i in range(n):
                source = KernelSource() if draws is None else PresampledSource(draws, i, paired)
                state = runner.advance(state, StepInputs(k + i, factors[i], oracle, hp, source))
                if keep_first and i == 0:
                    kept = (state.x, state.m, state.v, state.step, diverged(state.x).sum())
            return (state.x, state.m, state.v, state.step, diverged(state.x).sum(), *kept)

        return _private_copy(block)

    @contextlib.contextmanager
    def _kernel_seeds(self) -> Iterator[Callable[[int], None]]:
        """``reseed(i)`` seeds the device generator that compiled kernels draw from, for block
        ``i``, from one draw of the run's generator; afterwards the global stream is restored."""
        if self.report.noise != "in-kernel" or self.generator is None:
            yield lambda i: None
            return
        device = self.generator.device
        base = int(torch.randint(0, 2**62, (), generator=self.generator, device=device))
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            with torch.random.fork_rng(devices=[index], device_type="cuda"):
                yield lambda i: torch.cuda.default_generators[index].manual_seed(base + i)
        else:
            with torch.random.fork_rng(devices=[]):
                yield lambda i: torch.default_generator.manual_seed(base + i)


def _private_copy(function: Callable[..., object]) -> Callable[..., object]:
    """``function`` with a copy of its code: Dynamo keeps its compiled variants per code object,
    up to a small limit, so each engine and block length gets its own budget."""
    code = function.__code__.replace()
    return types.FunctionType(
        code, function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )  # type: ignore[arg-type]


DIVERGENCE_THRESHOLD = 1e30
"""A coordinate beyond this magnitude counts as diverged (overflow is on its way)."""


def diverged(x: Tensor) -> Tensor:
    """Per path: has any coordinate become NaN, infinite or astronomically large?"""
    return ~(torch.isfinite(x) & (x.abs() < DIVERGENCE_THRESHOLD)).all(dim=-1)
