"""Network benchmark: one SDE step against one optimizer step on the same network.

For each model (the MLP on breast-cancer, the CNN, Transformer and ResNet on digits) and
each SDE — SignSGD's (paper Thm 3.2, Gaussian form), RMSpropW's (the paper's) and AdamW's
(the paper's and the refined one; docs/theory.md §3) — the benchmark times one Euler–Maruyama step
of :class:`~optsde.sde.SDERunner` on a :class:`~optsde.problems.network.NetworkProblem`
whose ``∇f``, noise and ``diag C`` come from an estimation set of ``n`` examples, and one
step of the discrete optimizer (:class:`~optsde.sde.DiscreteRunner`) on minibatches of
the same ``n`` examples, both advancing ``P`` paths.  The ratio of the two is the price of
simulating the SDE instead of running the optimizer.

Two ways to get ``diag C`` (docs/theory.md §4) are timed side by side:

- ``per-example``: exact, from per-example gradients (``torch.func.vmap(grad)``); for the
  MLP, whose parameters all sit in ``nn.Linear`` layers, layer-wise from one backward pass
  per path.  The same pass gives ``∇f`` and the step's noise sample, so an SDE step costs
  one pass over per-example gradients (docs/networks.md, "Exact per-example statistics");
- ``projection``: unbiased, from one more backward pass of a randomly weighted loss.

Every runner advances its own state, one step per timing, so no step reuses the oracle's
cached forward pass of an earlier one.  The runners of one optimizer are warmed up, then
timed in rotating order for ``repeats`` rounds; the record keeps the medians.  On a GPU
every timing waits for the device.

Peak memory is measured on one further step per runner, after the timings:

- CUDA: ``torch.cuda.max_memory_allocated`` after a peak reset, minus the memory allocated
  before the step (tensors allocated during the step, at their peak);
- CPU (Linux, glibc): the process's resident-set high-water mark ``VmHWM`` after resetting
  it (``/proc/self/clear_refs``), minus ``VmRSS`` before the step.  glibc keeps freed memory
  for reuse, which would hide a step's working set, so for that step its mmap threshold is
  set to 64 KiB (every buffer of 64 KiB or more comes from the OS and goes back when freed);
  afterwards the thresholds are left at 32 MiB / 64 MiB, where glibc's own adjustment settles
  in a long-running process.  Elsewhere the field is None.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from optsde.bench import BenchError, check_device_and_dtype
from optsde.optimizers import Hyperparameters, State, get_optimizer
from optsde.problems.datasets import load_dataset
from optsde.problems.models import ARCHITECTURES, build_model
from optsde.problems.network import VARIANCE_MODES, NetworkProblem
from optsde.randomness import GeneratorSource
from optsde.sde import DiscreteRunner, Runner, SDERunner, StepInputs

MODEL_DATASETS = {"mlp": "breast-cancer", "cnn": "digits", "transformer": "digits", "resnet": "digits"}
"""The data set each architecture is benchmarked on (as in ``nn-signsgd``'s quick setting)."""

SDES: dict[str, tuple[str, ...]] = {
    "signsgd": ("paper",),
    "rmspropw": ("paper",),
    "adamw": ("paper", "refined"),
}
"""Optimizer → the SDE models timed against it (the paper's, and AdamW's refined one)."""

HYPERPARAMETERS = {
    "signsgd": Hyperparameters(lr=1e-3),
    "rmspropw": Hyperparameters(lr=1e-3, beta2=0.99, weight_decay=0.1),
    "adamw": Hyperparameters(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1),
}
"""``nn-adaptive``'s settings; the cost of a step does not depend on them."""

RATIO_BAR = 3.0
"""The ratio the table marks: an SDE step that costs at most this many optimizer steps makes
simulating the SDE about as affordable as training with the optimizer."""

EXACT_BAR = 2.0
"""The cost the exact ``diag C`` is held to: an SDE step with it at most this many optimizer steps."""

MEMORY_CPU = (
    "peak RSS increase during one step (VmHWM after reset − VmRSS before; glibc mmap threshold 64 KiB)"
)
MEMORY_CUDA = "torch.cuda.max_memory_allocated during one step − memory allocated before"


@dataclass(frozen=True)
class NNBenchSettings:
    """What to measure: ``n`` examples per estimation set and per minibatch, ``paths`` paths."""

    models: tuple[str, ...] = ARCHITECTURES
    n: int = 256
    paths: int = 16
    variances: tuple[str, ...] = VARIANCE_MODES
    repeats: int = 5
    warmup: int = 2
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    seed: int = 0
    threads: int | None = None
    """CPU threads for the run (``torch.set_num_threads``); None keeps the current setting."""

    def __post_init__(self) -> None:
        if not self.models:
            raise BenchError(f"--models: name at least one of {', '.join(ARCHITECTURES)}")
        for model in self.models:
            if model not in ARCHITECTURES:
                raise BenchError(f"--models: unknown model {model!r}; choose from {', '.join(ARCHITECTURES)}")
        if not self.variances or any(v not in VARIANCE_MODES for v in self.variances):
            raise BenchError(
                f"variance paths must be among {', '.join(VARIANCE_MODES)}, got {self.variances}"
            )
        for name in ("n", "paths", "repeats"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        if self.warmup < 0:
            raise BenchError(f"warmup must be 0 or a positive integer, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"--threads must be a positive integer, got {self.threads}")
        check_device_and_dtype(self.device, self.dtype)


def run_nn_benchmark(
    settings: NNBenchSettings, report: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """One record per (model, SDE, variance path); ``report`` receives a progress line per record."""
    say = report or (lambda line: None)
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        # Every problem first: a data set smaller than n fails before anything is timed.
        problems = [
            _problem(settings, model, variance)
            for model in settings.models
            for variance in settings.variances
        ]
        records = []
        for model, problem in problems:
            for record in _measure(settings, model, problem):
                records.append(record)
                say(_progress_line(record))
        return records
    finally:
        torch.set_num_threads(threads)


def _problem(settings: NNBenchSettings, model: str, variance: str) -> tuple[str, NetworkProblem]:
    """``model``'s network problem with an estimation set and minibatches of ``n`` examples each."""
    data = load_dataset(MODEL_DATASETS[model], seed=settings.seed)
    if settings.n > len(data):
        raise BenchError(
            f"--n {settings.n}: {model}'s data set {data.name} has {len(data)} examples; "
            f"use --n {len(data)} or less"
        )
    network = build_model(model, data.input_shape, data.num_classes, seed=settings.seed)
    problem = NetworkProblem(
        model=network,
        data=data,
        batch_size=settings.n,
        estimation_size=settings.n,
        variance=variance,
        seed=settings.seed,
    )
    return model, problem


def _measure(settings: NNBenchSettings, model: str, problem: NetworkProblem) -> list[dict[str, Any]]:
    """Time every optimizer of :data:`SDES` and its SDEs on ``problem``; one record per SDE."""
    device = torch.device(settings.device)
    x0 = problem.x0(settings.seed, settings.dtype).to(device).expand(settings.paths, -1).clone()
    records = []
    for name, keys in SDES.items():
        spec = get_optimizer(name)
        hp = HYPERPARAMETERS[name]
        runners: dict[str, Runner] = {"optimizer": DiscreteRunner(spec.discrete)}
        runners.update({spec.sdes[key].name: SDERunner(spec.sdes[key]) for key in keys})
        milliseconds = _time_steps(settings, runners, problem, hp, x0)
        memory = {
            method: _peak_memory_mb(device, runner, problem, hp, x0) for method, runner in runners.items()
        }
        optimizer_ms = statistics.median(milliseconds["optimizer"])
        load = _load_average()
        for method in runners:
            if method == "optimizer":
                continue
            sde_ms = statistics.median(milliseconds[method])
            records.append(
                {
                    "model": model,
                    "dataset": problem.data.name,
                    "parameters": problem.dim,
                    "method": f"{name}/{method}",
                    "optimizer": name,
                    "sde": method,
                    "variance_path": problem.variance,
                    "n": settings.n,
                    "paths": settings.paths,
                    "sde_step_ms": sde_ms,
                    "optimizer_step_ms": optimizer_ms,
                    "ratio": sde_ms / optimizer_ms,
                    "meets_bar": sde_ms / optimizer_ms <= RATIO_BAR,
                    "peak_memory_mb": memory[method],
                    "optimizer_peak_memory_mb": memory["optimizer"],
                    "memory_measured": _memory_description(device),
                    "repeats": settings.repeats,
                    "sde_step_ms_all": milliseconds[method],
                    "optimizer_step_ms_all": milliseconds["optimizer"],
                    "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                    "dtype": str(settings.dtype).removeprefix("torch."),
                    "threads": torch.get_num_threads(),
                    "load_average": load,
                }
            )
    return records


def _time_steps(
    settings: NNBenchSettings,
    runners: dict[str, Runner],
    problem: NetworkProblem,
    hp: Hyperparameters,
    x0: torch.Tensor,
) -> dict[str, list[float]]:
    """Milliseconds of each of ``repeats`` single steps per runner, after ``warmup`` steps.

    Each runner advances its own state, so every step sees a new ``x`` (no cached forward
    pass); the order rotates per round, so no runner always follows the same other one.
    """
    device = torch.device(settings.device)
    states = {method: runner.init_state(x0) for method, runner in runners.items()}
    generators = {
        method: torch.Generator(device=device).manual_seed(settings.seed + i)
        for i, method in enumerate(runners)
    }
    steps = dict.fromkeys(runners, 0)
    times: dict[str, list[float]] = {method: [] for method in runners}

    def step(method: str) -> float:
        steps[method] += 1
        _synchronize(device)
        started = time.perf_counter()
        inputs = StepInputs(steps[method], [1.0], problem, hp, GeneratorSource(generators[method]))
        states[method] = runners[method].advance(states[method], inputs)
        _synchronize(device)
        return (time.perf_counter() - started) * 1e3

    order = list(runners)
    with torch.no_grad():
        for _ in range(settings.warmup):
            for method in order:
                step(method)
        for repeat in range(settings.repeats):
            for method in order[repeat % len(order) :] + order[: repeat % len(order)]:
                times[method].append(step(method))
    return times


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(
    device: torch.device, runner: Runner, problem: NetworkProblem, hp: Hyperparameters, x0: torch.Tensor
) -> float | None:
    """Peak memory of one step (MiB; see the module docstring), after a first step that fills caches."""
    random = GeneratorSource(torch.Generator(device=device).manual_seed(0))
    with torch.no_grad():
        state: State = runner.advance(runner.init_state(x0), StepInputs(1, [1.0], problem, hp, random))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            runner.advance(state, StepInputs(2, [1.0], problem, hp, random))
            torch.cuda.synchronize(device)
            return (torch.cuda.max_memory_allocated(device) - before) / 2**20
        with _memory_returned_to_os() as available:
            if not available:
                return None
            before = _status_kib("VmRSS")
            _reset_peak_rss()
            runner.advance(state, StepInputs(2, [1.0], problem, hp, random))
            return (_status_kib("VmHWM") - before) / 1024


def _memory_description(device: torch.device) -> str:
    if device.type == "cuda":
        return MEMORY_CUDA
    return MEMORY_CPU if _glibc() is not None and _can_reset_peak_rss() else "unavailable on this platform"


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@contextlib.contextmanager
def _memory_returned_to_os() -> Iterator[bool]:
    """glibc returns freed buffers of 64 KiB or more to the OS inside the block; yields whether
    the peak RSS can be measured here at all."""
    libc = _glibc()
    if libc is None or not _can_reset_peak_rss():
        yield False
        return
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 0)
    libc.malloc_trim(0)
    try:
        yield True
    finally:
        # Where glibc's dynamic thresholds settle once large buffers have been freed.
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(M_TRIM_THRESHOLD, 64 * 2**20)


def _can_reset_peak_rss() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK) and os.path.exists("/proc/self/status")


def _reset_peak_rss() -> None:
    """``echo 5 > /proc/self/clear_refs``: VmHWM becomes the current RSS (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/self/status has no {field}")


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _progress_line(r: dict[str, Any]) -> str:
    return (
        f"{r['model']:<11} {r['method']:<18} {r['variance_path']:<11} SDE {r['sde_step_ms']:8.2f} ms  "
        f"optimizer {r['optimizer_step_ms']:8.2f} ms  ratio {r['ratio']:5.2f}"
    )


def format_nn_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table, one row per record, then what an AdamW-SDE step costs on the MLP
    with each variance path."""

    def memory(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    header = (
        f"{'model':<11} {'method':<18} {'variance':<11} {'n':>5} {'paths':>5} {'SDE ms':>9} "
        f"{'opt ms':>9} {'ratio':>6} {f'≤{RATIO_BAR:g}×':>4} {'SDE MiB':>8} {'opt MiB':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        lines.append(
            f"{r['model']:<11} {r['method']:<18} {r['variance_path']:<11} {r['n']:>5} {r['paths']:>5} "
            f"{r['sde_step_ms']:>9.2f} {r['optimizer_step_ms']:>9.2f} {r['ratio']:>6.2f} "
            f"{'yes' if r['meets_bar'] else 'no':>4} {memory(r['peak_memory_mb']):>8} "
            f"{memory(r['optimizer_peak_memory_mb']):>8}"
        )
    first = records[0] if records else None
    if first is not None:
        lines.append(
            f"median of {first['repeats']} single steps each; {first['threads']} thread(s), "
            f"{first['device']}, {first['dtype']}; memory: {first['memory_measured']}"
        )
    lines.extend(bar_verdict(records))
    return "\n".join(lines)


def bar_verdict(records: list[dict[str, Any]]) -> list[str]:
    """One line per architecture and variance path: the dearest SDE step, in optimizer steps,
    against its limit: :data:`EXACT_BAR` for the exact ``diag C``, :data:`RATIO_BAR` otherwise."""
    lines = []
    for model, path in dict.fromkeys((r["model"], r["variance_path"]) for r in records):
        bar = EXACT_BAR if path == "per-example" else RATIO_BAR
        worst = max(
            (r for r in records if r["model"] == model and r["variance_path"] == path),
            key=lambda r: r["ratio"],
        )
        within = "within" if worst["ratio"] <= bar else "more than"
        lines.append(
            f"{model}, variance={path}: dearest SDE step {worst['method']} costs {worst['ratio']:.2f} "
            f"optimizer steps ({within} {bar:g}×)"
        )
    return lines
