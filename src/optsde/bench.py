"""Euler–Maruyama throughput: the project's engine against torchsde and the discrete optimizer.

The workload is the paper's AdamW SDE (docs/theory.md §3, ``ADAM_SDES["paper"]``) on a diagonal
quadratic with Gaussian gradient noise, ``P`` paths of dimension ``d``, ``dt = η``.
Ways to advance it, timed in the same run, interleaved, from the same start:

- ``optsde-simulate``: :func:`optsde.sde.simulate` itself, recording loss, x and x² at
  ``records`` stratified steps as the experiments do — what a user's run costs;
- ``optsde-sde``: the raw compiled block (:class:`optsde.sde.compiled.Engine` advancing the
  whole run with no record points), the ceiling ``simulate`` is measured against;
- ``optsde-sde-eager``: the same engine with compilation off, one eager step at a time;
- ``optsde-discrete``: the AdamW optimizer itself through the same engine, compiled, so that
  optimizer and SDE are compared on equal terms;
- ``torchsde``: ``torchsde.sdeint(method="euler")`` on the same SDE, written below from
  docs/theory.md §3 as a torchsde SDE over the flattened state ``(X, M, V)`` with diagonal noise;
- ``torchsde-hinted``: the same with a Brownian motion told the step size, torchsde's
  fastest set-up for fixed steps (the ratio to it is reported beside the plain one).

Throughput is path-steps per second (one path advanced by one step) and
element-steps per second (path-steps × d; the state holds three numbers per element:
X, M, V).  Each method is warmed up (compilation happens there and is reported
separately), then timed ``repeats`` times; the record keeps the best and the median.
On a GPU every timing waits for the device.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from optsde.errors import OptsdeError
from optsde.noise import GaussianNoise
from optsde.optimizers.adam import ADAM_SDES, AdamW
from optsde.optimizers.base import Hyperparameters
from optsde.problems.analytic import NoisyProblem, Quadratic
from optsde.sde import DiscreteRunner, Engine, SDERunner, record_steps, simulate

METHODS = (
    "optsde-simulate",
    "optsde-sde",
    "optsde-sde-eager",
    "optsde-discrete",
    "torchsde",
    "torchsde-hinted",
)

BENCH_HYPERPARAMETERS = Hyperparameters(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
"""AdamW as torch.optim's defaults, with η = 0.01 and decoupled decay θ = 0.1."""

NOISE_SCALE = 1.0
"""Per-coordinate gradient-noise scale ``s``."""


class BenchError(OptsdeError):
    """A benchmark setting is invalid; the message says how to fix it."""


def check_device_and_dtype(device: str, dtype: torch.dtype) -> None:
    """A benchmark's device exists here and its dtype is one the engine runs."""
    if device not in ("cpu", "cuda"):
        raise BenchError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available here; use --device cpu")
    if dtype not in (torch.float32, torch.float64):
        raise BenchError(f"dtype must be float32 or float64, got {dtype}")


@dataclass(frozen=True)
class BenchSettings:
    """What to measure.  ``block`` is the number of EM steps per compiled call (default:
    16 on the CPU, 20 on a GPU, where a longer block saves more memory traffic)."""

    paths: tuple[int, ...] = (100, 1000, 10_000)
    steps: int = 200
    dim: int = 10
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    repeats: int = 3
    records: int = 10
    """Record points of the ``optsde-simulate`` run (stratified, as the experiments record)."""
    block: int | None = None
    compile: bool = True
    seed: int = 0
    threads: int | None = None
    """CPU threads for the run (``torch.set_num_threads``); None keeps torch's default."""

    def __post_init__(self) -> None:
        if not self.paths or any(p < 1 for p in self.paths):
            raise BenchError(f"path counts must be positive integers, got {list(self.paths)}")
        for name in ("steps", "dim", "repeats", "records"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("block", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BenchError(f"{name} must be a positive integer, got {value}")
        check_device_and_dtype(self.device, self.dtype)

    @property
    def em_block(self) -> int:
        return self.block if self.block is not None else (16 if self.device == "cpu" else 20)


def bench_problem(dim: int) -> tuple[NoisyProblem, Tensor, Tensor]:
    """The benchmark's quadratic: curvatures ``h`` spread over ``[1, 10]``, minimum at 0,
    Gaussian noise of scale ``s`` per coordinate.  Returns ``(oracle, h, s)``."""
    hessian = torch.linspace(1.0, 10.0, dim, dtype=torch.float64)
    scale = torch.full((dim,), NOISE_SCALE, dtype=torch.float64)
    return NoisyProblem(Quadratic(hessian), GaussianNoise(dim, scale=scale)), hessian, scale


class TorchsdeAdamW(torch.nn.Module):
    """The paper's AdamW SDE (docs/theory.md §3) as a torchsde SDE, written independently of
    :mod:`optsde.optimizers.adam`, on ``f(x) = ½ Σ h_i x_i²`` with noise ``Σ = diag(s²)``.

    torchsde integrates one state vector, so ``(X, M, V)`` is flattened to ``(P, 3d)``;
    the noise is diagonal (M is driven by ``√η ρ₁ s dW``, X and V by nothing), not a
    dense ``3d × 3d`` matrix.  The start-up look-ahead of docs/theory.md §3 (``V + dt·dV`` in ``P``,
    ``ι₂`` at ``t + dt``, ``ι₁`` at ``t + η``) depends on the step, so the EM step ``dt``
    is a parameter of the SDE and ``sdeint`` must be called with that ``dt``.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, hessian: Tensor, scale: Tensor, hp: Hyperparameters, dt: float) -> None:
        super().__init__()
        self.h, self.s2, self.hp, self.dt = hessian, scale**2, hp, dt
        self.dim = hessian.shape[0]
        diffusion = math.sqrt(hp.lr) * hp.rho1 * scale
        zeros = torch.zeros_like(scale)
        self.register_buffer("diffusion", torch.cat([zeros, diffusion, zeros]))

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        hp, d = self.hp, self.dim
        x, m, v = y[:, :d], y[:, d : 2 * d], y[:, 2 * d :]
        gradient = self.h * x
        dv = hp.rho2 * (gradient**2 + self.s2 - v)
        iota1 = -torch.expm1(-hp.rho1 * (t + hp.lr))
        iota2 = -torch.expm1(-hp.rho2 * (t + self.dt))
        preconditioner = (v + self.dt * dv).sqrt() + hp.eps * iota2.sqrt()
        dx = -(iota2.sqrt() / iota1) * (m + hp.lr * hp.rho1 * (gradient - m)) / preconditioner
        dx = dx - hp.weight_decay * x
        return torch.cat([dx, hp.rho1 * (gradient - m), dv], dim=1)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.diffusion.expand_as(y)

    def start(self, x0: Tensor) -> Tensor:
        """``(x₀, M = 0, V = 0)`` flattened."""
        return torch.cat([x0, torch.zeros_like(x0), torch.zeros_like(x0)], dim=1)


def torchsde_run(
    sde: TorchsdeAdamW,
    x0: Tensor,
    steps: int,
    *,
    record_every: int | None = None,
    hint_dt: bool = False,
    entropy: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``steps`` EM steps of ``dt = sde.dt`` by ``torchsde.sdeint``; returns the times and
    ``X`` at them, ``(T, P, d)`` — the end only, or every ``record_every`` steps.

    By default ``sdeint`` builds its own Brownian motion, as a plain call does.  ``hint_dt``
    passes a ``BrownianInterval`` told the step size, torchsde's documented speed-up for
    fixed-step solvers; ``entropy`` seeds the Brownian motion (otherwise Python's ``random``).
    """
    import torchsde

    every = record_every or steps
    ts = torch.arange(0, steps + 1, every, dtype=x0.dtype, device=x0.device) * sde.dt
    y0 = sde.start(x0)
    bm = None
    if hint_dt or entropy is not None:
        bm = torchsde.BrownianInterval(
            t0=ts[0],
            t1=ts[-1],
            size=y0.shape,
            dtype=y0.dtype,
            device=y0.device,
            entropy=entropy,
            dt=sde.dt if hint_dt else None,
        )
    ys = torchsde.sdeint(sde, y0, ts, bm=bm, method="euler", dt=sde.dt)
    return ts, ys[..., : sde.dim]


def _require_torchsde() -> None:
    try:
        import torchsde  # noqa: F401
    except ImportError:
        raise BenchError(
            "torchsde is not installed; install it with `pip install torchsde` (or `pip install -e .[bench]`)"
        ) from None


def _timed(
    device: torch.device, run: Callable[[Tensor, int], Tensor], x0: Tensor, steps: int
) -> tuple[float, Tensor]:
    """Wall time of ``run(x0, steps)`` (waiting for the device) and its final ``X``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    x = run(x0, steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, x


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def run_benchmark(
    settings: BenchSettings, report: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Measure every method at every path count; one record per (method, paths).

    ``report`` receives one progress line per measurement (and per compilation).
    """
    _require_torchsde()
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _measure(settings, report or (lambda line: None))
    finally:
        torch.set_num_threads(threads)


Run = Callable[[Tensor, int], Tensor]
"""``(x0, steps)`` ↦ ``X`` after ``steps`` EM (or optimizer) steps from ``(x0, 0, 0)``."""


def _contenders(settings: BenchSettings, oracle: NoisyProblem) -> tuple[dict[str, Run], dict[str, Engine]]:
    """Every method as a :data:`Run` over the same problem, hyperparameters and seed, and the
    engines whose compile times and paths the records report."""
    device = torch.device(settings.device)
    hp = BENCH_HYPERPARAMETERS
    compile_mode = "on" if settings.compile else "off"
    sde = SDERunner(ADAM_SDES["paper"])
    _, hessian, scale = bench_problem(settings.dim)
    as_state = {"device": device, "dtype": settings.dtype}
    twin = TorchsdeAdamW(hessian.to(**as_state), scale.to(**as_state), hp, dt=hp.lr)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    engines = {
        "optsde-sde": Engine(
            sde, oracle, hp, generator=generator, compile=compile_mode, block=settings.em_block
        ),
        "optsde-sde-eager": Engine(sde, oracle, hp, generator=generator, compile="off"),
        "optsde-discrete": Engine(
            DiscreteRunner(AdamW()),
            oracle,
            hp,
            generator=generator,
            compile=compile_mode,
            block=settings.em_block,
        ),
    }
    records = record_steps(settings.steps, settings.records)

    def engine_run(method: str) -> Run:
        engine = engines[method]

        def run(x0: Tensor, steps: int) -> Tensor:
            state = engine.runner.init_state(x0)
            engine.prepare(state, steps)
            return engine.advance(state, 1, steps)[0].x

        return run

    def simulate_run(x0: Tensor, steps: int) -> Tensor:
        recording = simulate(
            sde,
            oracle,
            hp,
            x0,
            paths=x0.shape[0],
            steps=steps,
            record_at=records if steps == settings.steps else None,
            generator=generator,
            compile=compile_mode,
            block=settings.em_block,
        )
        engines["optsde-simulate"] = recording.engine  # type: ignore[assignment]
        return torch.as_tensor(recording.snapshots[-1])

    runs: dict[str, Run] = {
        "optsde-simulate": simulate_run,
        **{method: engine_run(method) for method in engines},
        "torchsde": lambda x0, n: torchsde_run(twin, x0, n)[1][-1],
        "torchsde-hinted": lambda x0, n: torchsde_run(twin, x0, n, hint_dt=True)[1][-1],
    }
    if not settings.compile:
        del runs["optsde-sde-eager"]  # optsde-sde is this same eager integrator then
    return runs, engines


def _measure(settings: BenchSettings, say: Callable[[str], None]) -> list[dict[str, Any]]:
    device = torch.device(settings.device)
    oracle, _, _ = bench_problem(settings.dim)
    block = settings.em_block
    runs, engines = _contenders(settings, oracle)
    # The warm-up compiles every block length a timed run uses.
    records: list[dict[str, Any]] = []
    with torch.no_grad():
        for paths in settings.paths:
            x0 = torch.ones(paths, settings.dim, dtype=settings.dtype, device=device)
            compile_seconds: dict[str, float] = {}
            for method, run in runs.items():
                started = time.perf_counter()
                _timed(device, run, x0, settings.steps)
                compile_seconds[method] = time.perf_counter() - started
            seconds: dict[str, list[float]] = {method: [] for method in runs}
            last: dict[str, Tensor] = {}
            load = _load_average()
            for repeat in range(settings.repeats):
                # Rotate the order so that no method always runs right after the same other one.
                order = list(runs)[repeat % len(runs) :] + list(runs)[: repeat % len(runs)]
                for method in order:
                    elapsed, last[method] = _timed(device, runs[method], x0, settings.steps)
                    seconds[method].append(elapsed)
            for method in runs:
                record = _record(method, paths, settings, seconds[method], device, load)
                # Same SDE, same start: the ends must agree up to Monte Carlo noise (the
                # discrete optimizer up to the SDE's approximation error as well).
                record["mean_loss_end"] = float(oracle.loss(last[method].double()).mean())
                engine = engines.get(method)
                if engine is not None:
                    report = engine if isinstance(engine, dict) else engine.report.to_dict()
                    record.update(
                        path=report["path"],
                        noise=report["noise"],
                        block=block,
                        warmup_seconds=round(compile_seconds[method], 3),
                        fallback_reason=report["fallback_reason"],
                    )
                    if method == "optsde-simulate":
                        record["records"] = settings.records
                records.append(record)
                say(
                    f"paths={paths:>9,}  {method:<17} {record['path_steps_per_s'] / 1e6:10.3f} M path-steps/s"
                    f"  ({record['element_steps_per_s'] / 1e9:.3f} G element-steps/s)"
                )
    _add_ratios(records)
    return records


def _record(
    method: str,
    paths: int,
    settings: BenchSettings,
    seconds: list[float],
    device: torch.device,
    load: float | None,
) -> dict[str, Any]:
    work = paths * settings.steps
    best, median = min(seconds), statistics.median(seconds)
    descriptions = {
        "torchsde": ("sdeint euler", "BrownianInterval"),
        "torchsde-hinted": ("sdeint euler", "BrownianInterval(dt)"),
    }
    path, noise = descriptions.get(method, ("", ""))
    return {
        "method": method,
        "paths": paths,
        "steps": settings.steps,
        "dim": settings.dim,
        "dtype": str(settings.dtype).removeprefix("torch."),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "load_average": load,
        "repeats": settings.repeats,
        "seconds_best": best,
        "seconds_median": median,
        "path_steps_per_s": work / best,
        "median_path_steps_per_s": work / median,
        "element_steps_per_s": work * settings.dim / best,
        "path": path,
        "noise": noise,
    }


def _add_ratios(records: list[dict[str, Any]]) -> None:
    """``ratio_to_torchsde`` and ``ratio_to_discrete`` (best against best) for every record."""
    reference = {(r["method"], r["paths"]): r["path_steps_per_s"] for r in records}
    for record in records:
        for key, method in (
            ("ratio_to_torchsde", "torchsde"),
            ("ratio_to_torchsde_hinted", "torchsde-hinted"),
            ("ratio_to_discrete", "optsde-discrete"),
            ("ratio_to_block", "optsde-sde"),
            ("ratio_to_eager", "optsde-sde-eager"),
        ):
            base = reference.get((method, record["paths"]))
            record[key] = record["path_steps_per_s"] / base if base else None


def format_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table: one row per (paths, method), throughput and the ratios."""

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"

    header = (
        f"{'paths':>9}  {'method':<17} {'M path-steps/s':>14} {'(median)':>9} {'G elem-steps/s':>14} "
        f"{'×torchsde':>10} {'×hinted':>8} {'×discrete':>10}  how"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        how = f"{r['path']}, {r['noise']}" + (f", block {r['block']}" if "block" in r else "")
        lines.append(
            f"{r['paths']:>9,}  {r['method']:<17} {r['path_steps_per_s'] / 1e6:>14.3f} "
            f"{r['median_path_steps_per_s'] / 1e6:>9.3f} {r['element_steps_per_s'] / 1e9:>14.4f} "
            f"{ratio(r['ratio_to_torchsde']):>10} {ratio(r['ratio_to_torchsde_hinted']):>8} "
            f"{ratio(r['ratio_to_discrete']):>10}  {how}"
        )
    return "\n".join(lines)


def write_json(records: list[dict[str, Any]], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")
