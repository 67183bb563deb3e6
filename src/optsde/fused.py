"""Fused Euler–Maruyama: a block of EM steps of any SDE model in one compiled call.

An eager EM step of an adaptive SDE is some twenty small tensor operations, each a
separate pass over the ``(P, d)`` state; at the sizes the experiments use, the time
goes into dispatch and memory traffic, not arithmetic.  ``torch.compile`` (inductor:
C++/OpenMP on the CPU, Triton on a GPU) turns ``K`` consecutive calls of the
model's own ``em_step`` into one loop that reads the state once and writes it once.
Nothing here knows a particular SDE: the model and the oracle are traced as they are
(SPEC §3 lives in ``optsde.optimizers``), so the fused path runs the same equations as
:class:`~optsde.integrate.SDERunner` — which is also the fallback when compilation is
switched off or fails (:attr:`FusedSDERunner.path` says which one ran, and why).

What a model must allow: pure torch operations on the state (the analytic oracles
qualify; the Student-t SignSGD SDE, which calls scipy, does not and runs eagerly),
and a time ``t`` and schedule factor that may arrive as 0-d tensors (they do, so that
one compilation serves every block).

Noise, two ways (``noise=``):

- ``"presampled"``: the block's standard normals are drawn by one ``torch.randn`` call
  with the caller's generator and handed, in order, to the model's ``torch.randn``
  calls.  The CPU default: inductor's in-kernel CPU generator is a scalar Philox per
  element, several times slower than ATen's vectorised ``randn``.
- ``"in-kernel"``: the normals are generated inside the compiled kernel (Philox), so
  the block touches no memory but the state.  The GPU default.  Its seed is drawn
  from the caller's generator at each block, so a seed still fixes the run.
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
from torch.overrides import TorchFunctionMode

from optsde.errors import OptsdeError
from optsde.integrate import SDERunner
from optsde.optimizers.base import Hyperparameters, Schedule, SDEModel, State, constant_schedule
from optsde.problems.base import GradientOracle

NOISE_MODES = ("auto", "presampled", "in-kernel")

Reseed = Callable[[int], None]


class FusedError(OptsdeError):
    """A fused-runner setting is invalid; the message says how to fix it."""


def _randn_shape(args: tuple) -> tuple[int, ...]:
    """The shape of ``torch.randn(*args)``: sizes given as one sequence or as separate ints."""
    return tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args)


class _ReplayNormals(TorchFunctionMode):
    """Answers the model's ``torch.randn`` calls with the presampled ``normals[i]``, in order."""

    def __init__(self, normals: Tensor) -> None:
        super().__init__()
        self.normals = normals
        self.used = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not torch.randn:
            return func(*args, **kwargs)
        shape = _randn_shape(args)
        if self.used >= len(self.normals) or tuple(self.normals[self.used].shape) != shape:
            raise RuntimeError(f"randn draw {self.used} of shape {shape} was not presampled")
        self.used += 1
        return self.normals[self.used - 1]


class _KernelNormals(TorchFunctionMode):
    """Leaves the model's ``torch.randn`` calls to the compiled kernel's generator.  Only drops an
    explicit ``generator=None``, which sends ``randn`` to an overload that cannot take the
    symbolic path count."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.randn and "generator" in kwargs and kwargs["generator"] is None:
            kwargs = {key: value for key, value in kwargs.items() if key != "generator"}
        return func(*args, **kwargs)


class _CountNormals(TorchFunctionMode):
    """Records the shapes of one EM step's ``torch.randn`` calls, answering them with zeros
    so that the probe consumes no randomness."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not torch.randn:
            return func(*args, **kwargs)
        self.shapes.append(_randn_shape(args))
        kwargs.pop("generator", None)
        return torch.zeros(self.shapes[-1], **kwargs)


@contextlib.contextmanager
def _device_rng_from(device: torch.device, generator: torch.Generator | None) -> Iterator[Reseed]:
    """Inside: ``reseed(i)`` seeds the device's default generator (which compiled kernels draw
    their Philox seeds from) for block ``i`` from one draw of ``generator``; afterwards the
    global stream is restored.  With no generator the global stream is used as it is."""
    if generator is None:
        yield lambda i: None
        return
    # One draw per call (with a CUDA generator, one device sync), then distinct seeds per block.
    base = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            yield lambda i: torch.cuda.default_generators[index].manual_seed(base + i)
    else:
        with torch.random.fork_rng(devices=[]):
            yield lambda i: torch.default_generator.manual_seed(base + i)


def _block_function(
    model: SDEModel, oracle: GradientOracle, hp: Hyperparameters, dt: float, em_steps: int, replay: bool
) -> Callable[..., tuple[Tensor | None, ...]]:
    """``em_steps`` EM steps of ``model`` as one function of tensors, ready for ``torch.compile``.

    ``start`` is the 0-d time of the first step; ``factors`` holds the schedule ``φ`` per step;
    ``normals`` the presampled draws (``replay``) or None (in-kernel noise).
    """

    def block(
        x: Tensor, m: Tensor | None, v: Tensor | None, start: Tensor, factors: Tensor, normals: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        state = State(x=x, m=m, v=v)
        with _ReplayNormals(normals) if replay else _KernelNormals():  # type: ignore[arg-type]
            for j in range(em_steps):
                state = model.em_step(state, start + j * dt, dt, oracle, hp, factors[j], None)
        return state.x, state.m, state.v

    # Dynamo keeps its compiled variants per code object, up to a small limit; a private copy
    # of the code gives each (model, oracle, hyperparameters, block size) its own budget.
    return types.FunctionType(
        block.__code__.replace(), block.__globals__, block.__name__, block.__defaults__, block.__closure__
    )


@dataclass
class FusedSDERunner:
    """Euler–Maruyama for an SDE model, ``block`` optimizer steps (each of ``substeps`` EM steps
    of ``dt = η/substeps``, as :class:`~optsde.integrate.SDERunner`) per compiled call.

    :meth:`advance_block` is the fast entry point; :meth:`advance` (one optimizer step)
    makes the runner usable wherever a :class:`~optsde.integrate.Runner` is.  With
    ``compile=False``, or once compilation has failed, both run the eager ``SDERunner``
    with the same generator.  The path count is a dynamic dimension: one compilation
    serves every ``P``; each block length compiles once.

    Presampled noise is one ``torch.randn((K·n, *shape), generator=generator)`` call per
    block of ``K`` EM steps whose model draws ``n`` normals of ``shape`` per step, consumed
    in order; a model whose draws per step differ in shape runs eagerly.
    """

    model: SDEModel
    substeps: int = 1
    block: int = 16
    compile: bool = True
    noise: str = "auto"
    path: str = field(init=False, default="not run")
    """``compiled`` or ``eager``: which code ran the last block."""
    fallback_reason: str | None = field(init=False, default=None)
    """Why the compiled path was abandoned, when it was."""
    compile_seconds: float = field(init=False, default=0.0)
    """Wall time of the first call of each compiled variant (tracing and code generation)."""
    _eager: SDERunner = field(init=False, repr=False)
    _compiled: dict[tuple, Callable[..., tuple[Tensor | None, ...]]] = field(
        init=False, repr=False, default_factory=dict
    )
    _draws: dict[tuple, list[tuple[int, ...]]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.block < 1:
            raise FusedError(f"block must be a positive number of steps, got {self.block}")
        if self.noise not in NOISE_MODES:
            raise FusedError(f"noise must be one of {', '.join(NOISE_MODES)}, got {self.noise!r}")
        self._eager = SDERunner(self.model, self.substeps)  # validates substeps
        if self.compile and not torch._dynamo.is_dynamo_supported():
            self.compile = False
            self.fallback_reason = "torch.compile is not supported on this Python or platform"

    @property
    def name(self) -> str:
        return self.model.name

    def noise_mode(self, device: torch.device) -> str:
        """The noise mode on ``device``; ``auto`` is presampled on the CPU, in-kernel elsewhere."""
        if self.noise != "auto":
            return self.noise
        return "presampled" if device.type == "cpu" else "in-kernel"

    def init_state(self, x0: Tensor) -> State:
        return self.model.init_state(x0)

    def advance(
        self,
        state: State,
        k: int,
        oracle: GradientOracle,
        hp: Hyperparameters,
        schedule: Schedule,
        generator: torch.Generator | None,
    ) -> State:
        """From step ``k − 1`` to step ``k`` (the :class:`~optsde.integrate.Runner` protocol)."""
        return self.advance_block(state, k, 1, oracle, hp, schedule, generator)

    def advance_block(
        self,
        state: State,
        k: int,
        steps: int,
        oracle: GradientOracle,
        hp: Hyperparameters,
        schedule: Schedule = constant_schedule,
        generator: torch.Generator | None = None,
    ) -> State:
        """From step ``k − 1`` to step ``k − 1 + steps``, in calls of at most ``block`` steps."""
        if steps < 1:
            raise FusedError(f"steps must be a positive integer, got {steps}")
        in_kernel = self.compile and self.noise_mode(state.x.device) == "in-kernel"
        rng = _device_rng_from(state.x.device, generator) if in_kernel else contextlib.nullcontext()
        with torch.no_grad(), rng as reseed:
            for i, first in enumerate(range(k, k + steps, self.block)):
                n = min(self.block, k + steps - first)
                if reseed is not None:
                    reseed(i)
                state = self._advance(state, first, n, oracle, hp, schedule, generator)
        return state

    def _advance(
        self,
        state: State,
        k: int,
        steps: int,
        oracle: GradientOracle,
        hp: Hyperparameters,
        schedule: Schedule,
        generator: torch.Generator | None,
    ) -> State:
        if self.compile:
            key = (steps, id(oracle), hp, state.x.dtype, state.x.device, state.m is None, state.v is None)
            saved = generator.get_state() if generator is not None else None
            try:
                state = self._advance_compiled(key, state, k, steps, oracle, hp, schedule, generator)
                self.path = "compiled"
                return state
            except Exception as exc:
                # Tracing and code generation fail in many ways.  The compiled call does not
                # touch its inputs, so the eager run below restarts the block from the same
                # generator state, and raises again if the error was the model's.
                if generator is not None:
                    generator.set_state(saved)
                self.compile = False
                self.fallback_reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        self.path = "eager"
        for j in range(steps):
            state = self._eager.advance(state, k + j, oracle, hp, schedule, generator)
        return state

    def _advance_compiled(
        self,
        key: tuple,
        state: State,
        k: int,
        steps: int,
        oracle: GradientOracle,
        hp: Hyperparameters,
        schedule: Schedule,
        generator: torch.Generator | None,
    ) -> State:
        x = state.x
        em_steps = steps * self.substeps
        dt = hp.lr / self.substeps
        # Step times in units of η, walked exactly as SDERunner walks them.
        step_times = [(k - 1) + i / self.substeps for i in range(em_steps)]
        # A fill, not a host-to-device copy: nothing waits for the queued kernels.
        start = torch.full((), step_times[0] * hp.lr, dtype=torch.float64, device=x.device)
        factors = _schedule_factors(schedule, step_times, x.device)
        normals = _presample(self._draw_shapes(key, state, oracle, hp, dt), em_steps, x, generator)
        first_call = key not in self._compiled
        started = time.perf_counter()
        if first_call:
            for tensor in (x, state.m, state.v):
                if tensor is not None:
                    torch._dynamo.maybe_mark_dynamic(tensor, 0)
            if normals is not None:
                torch._dynamo.maybe_mark_dynamic(normals, 1)
            block = _block_function(self.model, oracle, hp, dt, em_steps, normals is not None)
            self._compiled[key] = torch.compile(block, fullgraph=True)
        out = self._compiled[key](x, state.m, state.v, start, factors, normals)
        if first_call:
            self.compile_seconds += time.perf_counter() - started
        return State(x=out[0], m=out[1], v=out[2])  # type: ignore[arg-type]

    def _draw_shapes(
        self, key: tuple, state: State, oracle: GradientOracle, hp: Hyperparameters, dt: float
    ) -> list[tuple[int, ...]] | None:
        """The shapes of one EM step's normal draws (presampled mode; else None), found once
        by a probing step that draws nothing."""
        if self.noise_mode(state.x.device) != "presampled":
            return None
        shape_key = (*key, tuple(state.x.shape))
        if shape_key not in self._draws:
            probe = _CountNormals()
            with probe:
                self.model.em_step(state, 0.0, dt, oracle, hp, 1.0, None)
            self._draws[shape_key] = probe.shapes
        return self._draws[shape_key]


def _schedule_factors(schedule: Schedule, step_times: list[float], device: torch.device) -> Tensor:
    """``φ`` at each EM step as a tensor on ``device`` (a constant schedule needs no host work)."""
    if schedule is constant_schedule:
        return torch.ones(len(step_times), dtype=torch.float64, device=device)
    values = torch.tensor([schedule(s) for s in step_times], dtype=torch.float64)
    if device.type == "cuda":
        # A pageable host-to-device copy would wait for the queued kernels; a pinned one does not.
        return values.pin_memory().to(device, non_blocking=True)
    return values


def _presample(
    shapes: list[tuple[int, ...]] | None, em_steps: int, like: Tensor, generator: torch.Generator | None
) -> Tensor | None:
    """All of a block's standard normals in one ``randn`` call: ``(em_steps · draws, *shape)``."""
    if not shapes:
        return None
    if len(set(shapes)) > 1:
        raise RuntimeError(f"presampled noise needs draws of one shape per step, got {shapes}")
    return torch.randn(
        (em_steps * len(shapes), *shapes[0]), generator=generator, dtype=like.dtype, device=like.device
    )
