"""Sweeps: one experiment over a grid of settings and seeds, each cell an ordinary run.

A sweep file (YAML) names an experiment (one of ``optsde list``, or ``simulate``), fixed
settings (``set``), grid axes (``grid``) and ``seeds``.  A *cell* is one grid point with one
seed; it runs exactly as ``optsde run NAME --set ... --seed S`` would and writes the usual
results directory at ``OUT/<experiment>/<k=v,...>/seed=S``.

Nothing half-done is ever visible: a cell runs in a hidden staging directory beside its
final place and is renamed into place only when complete, so re-running a sweep skips
complete cells and resumes an interrupted one with the same numbers.  Cells run in local
worker processes, or as Ray tasks (``--ray``) on this machine or a cluster.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import io
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from optsde.cli.common import resolve_device, resolve_dtype
from optsde.cli.run import execute, prepare_checkpoints
from optsde.errors import OptsdeError
from optsde.experiments.base import Context, Experiment, get_experiment

SWEEP_KEYS = ("experiment", "quick", "set", "grid", "seeds", "resources", "device", "dtype")
RESOURCE_KEYS = ("num_cpus", "num_gpus")
FAIL_ENV = "OPTSDE_FAIL_CELLS"
"""Testing hook: whitespace-separated ``GLOB[:N]``; a cell whose name matches GLOB fails its
first N attempts (every attempt without ``:N``) just before it would be moved into place."""
RAY_HINT = "pip install 'optsde[ray]'"
MAX_SETTING_CHARS = 80


class SweepError(OptsdeError):
    """A sweep file or flag that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Cell:
    """One grid point with one seed: the arguments of one ordinary run."""

    name: str
    experiment: str
    params: dict[str, Any]
    seed: int
    quick: bool
    device: str
    dtype: str
    threads: int


@dataclass(frozen=True)
class Sweep:
    file: Path
    experiment: str
    cells: list[Cell]
    resources: dict[str, float]


@dataclass(frozen=True)
class CellOutcome:
    """What a worker hands back: ``error`` is None for a cell now complete on disk."""

    error: str | None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def simulate_experiment() -> Experiment:
    """``optsde simulate`` as an experiment of a sweep: its flags are the parameters."""
    from optsde.experiments.custom import CUSTOM_DEFAULTS, custom_comparison

    def run(ctx: Context) -> None:
        # The divergence flag it returns is also in summary.json, which is what a sweep reads.
        custom_comparison(ctx)

    return Experiment("simulate", "custom comparison", run, dict(CUSTOM_DEFAULTS), {})


def experiment_named(name: str) -> Experiment:
    return simulate_experiment() if name == "simulate" else get_experiment(name)


def _as_text(value: Any) -> str:
    """A YAML value in the ``--set`` syntax that :meth:`Experiment.resolve` parses."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def resolve_params(exp: Experiment, quick: bool, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment's parameters with ``settings`` applied, checked as ``--set`` checks them."""
    base = {**exp.defaults, **(exp.quick if quick else {})}
    # A parameter without a default (simulate's x0: "all ones") has no type to parse
    # text to; YAML already gave it one, so it is taken as a list of numbers.
    untyped = {key: value for key, value in settings.items() if key in base and base[key] is None}
    params = exp.resolve(quick, {k: _as_text(v) for k, v in settings.items() if k not in untyped}, None)
    for key, value in untyped.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise SweepError(f"{key}: expected a list of numbers like [1, 1], got {value!r}")
        params[key] = [float(v) for v in values]
    return params


def _token(value: Any) -> str:
    """A value as it appears in a cell's directory name: short, readable, safe on any filesystem."""
    if isinstance(value, (list, tuple)):
        return "_".join(_token(v) for v in value)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def cell_name(experiment: str, point: Mapping[str, Any], seed: int) -> str:
    """``experiment/k=v,k=v/seed=S`` (no middle part without grid); a long middle part is cut
    and ends in a hash of the whole, so the name stays short and distinct."""
    parts = [experiment]
    if point:
        setting = ",".join(f"{_token(key)}={_token(value)}" for key, value in point.items())
        if len(setting) > MAX_SETTING_CHARS:
            digest = f"{zlib.crc32(setting.encode()):08x}"
            setting = f"{setting[: MAX_SETTING_CHARS - 9]}~{digest}"
        parts.append(setting)
    parts.append(f"seed={seed}")
    return "/".join(parts)


def _mapping(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise SweepError(f"{path}: {key} must be a mapping like {{lr: 0.01}}, got {value!r}")
    return value


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep file; every cell's parameters are resolved here, before anything runs."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SweepError(f"{path}: cannot read the sweep file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise SweepError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected a mapping with at least `experiment: NAME`")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r}; a sweep file has: {', '.join(SWEEP_KEYS)}")
    name = data.get("experiment")
    if not isinstance(name, str):
        raise SweepError(f"{path}: name the experiment, e.g. `experiment: heavy-tails` (see `optsde list`)")
    try:
        exp = experiment_named(name)
    except OptsdeError as exc:
        raise SweepError(f"{path}: {exc}") from None
    quick = data.get("quick", False)
    if not isinstance(quick, bool):
        raise SweepError(f"{path}: quick must be true or false, got {quick!r}")
    fixed = _mapping(data, "set", path)
    grid = _mapping(data, "grid", path)
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid axis {axis!r} needs a non-empty list of values, got {values!r}")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise SweepError(f"{path}: {both[0]!r} is both in set and in grid; keep it in one")
    seeds = data.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if not (isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds)):
        raise SweepError(f"{path}: seeds must be a list of integers like [0, 1, 2], got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{path}: seeds {seeds} repeat a seed; each seed is one cell")
    resources = _resources(_mapping(data, "resources", path), path)
    device, dtype = data.get("device", "cpu"), data.get("dtype", "float64")
    if device not in ("cpu", "cuda") or dtype not in ("float32", "float64"):
        raise SweepError(f"{path}: device is cpu or cuda and dtype float32 or float64, got {device}, {dtype}")

    cells = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        try:
            params = resolve_params(exp, quick, {**fixed, **point})
        except OptsdeError as exc:
            at = f" at grid point {','.join(f'{k}={_as_text(v)}' for k, v in point.items())}" if point else ""
            raise SweepError(f"{path}{at}: {exc}") from None
        threads = max(1, int(resources["num_cpus"]))
        cells += [
            Cell(cell_name(name, point, seed), name, params, seed, quick, device, dtype, threads)
            for seed in seeds
        ]
    names = [cell.name for cell in cells]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise SweepError(f"{path}: two grid points give the directory {twice}; make their values differ")
    return Sweep(path, name, cells, resources)


def _resources(given: dict[str, Any], path: Path) -> dict[str, float]:
    unknown = sorted(set(given) - set(RESOURCE_KEYS))
    if unknown:
        raise SweepError(f"{path}: resources has no {unknown[0]!r}; it takes {', '.join(RESOURCE_KEYS)}")
    resources = {"num_cpus": 1.0, "num_gpus": 0.0}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SweepError(f"{path}: resources.{key} must be a number ≥ 0, got {value!r}")
        resources[key] = float(value)
    return resources


def failures_to_inject(cells: Iterable[Cell], spec: str | None) -> dict[str, int]:
    """The ``OPTSDE_FAIL_CELLS`` testing hook: how many first attempts of each cell must fail."""
    counts: dict[str, int] = {}
    for entry in (spec or "").split():
        pattern, _, times = entry.partition(":")
        if times and not times.isdigit():
            raise SweepError(f"{FAIL_ENV}={spec!r}: write GLOB or GLOB:N with N a count of attempts")
        for cell in cells:
            if fnmatch.fnmatchcase(cell.name, pattern):
                counts[cell.name] = int(times) if times else 1 << 30
    return counts


def staging_dir(final: Path) -> Path:
    """Where a cell is written before it is renamed to ``final`` (hidden: no reader sees it)."""
    return final.with_name(f".{final.name}.staging")


def is_complete(run_dir: Path) -> bool:
    """A results directory whose run finished (an interrupted or failed run is redone)."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def one_line(exc: BaseException) -> str:
    """An exception as the one line a user reads: its message, with its type unless it is ours."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    message = text if isinstance(exc, OptsdeError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return message if len(message) <= 300 else message[:297] + "..."


def run_cell(cell: Cell, root: str, inject_failure: bool = False) -> CellOutcome:
    """Run ``cell`` in this process and move its directory into place; never raises.

    This is ``optsde run`` (docs/sweeps.md): the same context, the same :func:`execute`, so a
    cell's numbers are those of the equivalent ``optsde run`` command.
    """
    final = Path(root) / cell.name
    staging = staging_dir(final)
    started = time.perf_counter()
    try:
        shutil.rmtree(staging, ignore_errors=True)  # left by a worker that was killed
        staging.mkdir(parents=True)
        torch.set_num_threads(cell.threads)
        ctx = Context(
            experiment=cell.experiment,
            params=dict(cell.params),
            seed=cell.seed,
            quick=cell.quick,
            device=resolve_device(cell.device),
            dtype=resolve_dtype(cell.dtype),
        )
        out = staging / "run"
        prepare_checkpoints(ctx, out, resume=False)
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            code = execute(experiment_named(cell.experiment), ctx, out)
        if code != 0:
            raise RuntimeError(f"the run stopped early (exit code {code})")
        if inject_failure:
            raise RuntimeError(f"failure injected by {FAIL_ENV}")
        if final.exists():  # an interrupted or failed run from before: this one replaces it
            shutil.rmtree(final)
        os.replace(out, final)
        warnings = [line for line in log.getvalue().splitlines() if line.startswith("warning:")]
        return CellOutcome(None, time.perf_counter() - started, warnings)
    except Exception as exc:
        return CellOutcome(one_line(exc), time.perf_counter() - started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class Pool(Protocol):
    """Where cells run: local worker processes or Ray tasks."""

    capacity: int

    def submit(self, cell: Cell, root: Path, inject_failure: bool) -> Any: ...

    def wait(self, handles: Iterable[Any], timeout: float) -> list[tuple[Any, CellOutcome]]: ...

    def abandon(self, handles: Iterable[Any]) -> None: ...

    def close(self) -> None: ...


def _init_worker() -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent abandons a cell with SIGTERM; as SystemExit it unwinds the cell, whose
    # staging directory and the worker's own resources are then cleaned up on the way out.
    signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class LocalPool:
    """``workers`` processes on this machine (spawned: no state shared with the parent)."""

    def __init__(self, workers: int) -> None:
        self.capacity = workers
        self.executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.capacity, mp_context=context, initializer=_init_worker)

    def submit(self, cell: Cell, root: Path, inject_failure: bool) -> Future[CellOutcome]:
        try:
            return self.executor.submit(run_cell, cell, str(root), inject_failure)
        except BrokenProcessPool:
            # A worker died (killed for memory, say): its cells are reported; the rest go on.
            self.executor = self._new_executor()
            return self.executor.submit(run_cell, cell, str(root), inject_failure)

    def wait(self, handles: Iterable[Future[CellOutcome]], timeout: float) -> list[tuple[Any, CellOutcome]]:
        done, _ = wait_futures(list(handles), timeout=timeout, return_when=FIRST_COMPLETED)
        return [(future, _outcome(future.result)) for future in done]

    def abandon(self, handles: Iterable[Future[CellOutcome]]) -> None:
        """SIGTERM to every worker (see :func:`_init_worker`), then wait for them to stop."""
        # ProcessPoolExecutor.terminate_workers() exists from Python 3.14; before, only its
        # private process table reaches the workers.
        terminate = getattr(self.executor, "terminate_workers", None)
        if terminate is not None:
            terminate()
        else:
            for process in list((getattr(self.executor, "_processes", None) or {}).values()):
                process.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _outcome(result: Callable[[], CellOutcome]) -> CellOutcome:
    """A task's outcome; a worker that died or a task that could not run becomes its error."""
    try:
        return result()
    except Exception as exc:
        return CellOutcome(f"the worker running it stopped: {one_line(exc)}")


class RayPool:
    """Cells as Ray tasks: a local Ray instance (``address=None``) or a running cluster."""

    def __init__(self, address: str | None, workers: int | None, resources: Mapping[str, float]) -> None:
        self.check_installed()
        import ray

        self.ray = ray
        try:
            if address is None:
                # "local" starts a fresh instance even where RAY_ADDRESS names another cluster.
                ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level="WARNING")
            else:
                ray.init(address=address, logging_level="WARNING")
        except Exception as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise SweepError(f"--ray: could not start or reach {where}: {one_line(exc)}") from None
        # Ray queues what the cluster cannot run yet, so every cell is handed to it at once.
        self.capacity = 1 << 30
        self.task = ray.remote(run_cell).options(
            num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], max_retries=0
        )

    @staticmethod
    def check_installed() -> None:
        if importlib.util.find_spec("ray") is None:
            raise SweepError(f"--ray needs Ray, which is not installed: {RAY_HINT}")

    def submit(self, cell: Cell, root: Path, inject_failure: bool) -> Any:
        return self.task.remote(cell, str(root), inject_failure)

    def wait(self, handles: Iterable[Any], timeout: float) -> list[tuple[Any, CellOutcome]]:
        refs = list(handles)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        return [(ref, _outcome(lambda ref=ref: self.ray.get(ref))) for ref in ready]

    def abandon(self, handles: Iterable[Any]) -> None:
        refs = list(handles)
        for ref in refs:
            self.ray.cancel(ref, force=True)
        # Let the kills land before the caller removes the cells' staging directories.
        self.ray.wait(refs, num_returns=len(refs), timeout=10)

    def close(self) -> None:
        self.ray.shutdown()


@dataclass
class SweepOutcome:
    total: int
    skipped: int = 0
    ran: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    remaining: int = 0


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """SIGINT/SIGTERM set a flag instead of raising, so the scheduler stops at a clean point."""
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda s, _f: received.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_sweep(
    sweep: Sweep,
    root: Path,
    make_pool: Callable[[], Pool],
    retries: int = 0,
    echo: Callable[[str], None] = print,
    fail_spec: str | None = None,
) -> SweepOutcome:
    """Run every incomplete cell of ``sweep`` under ``root``; retry a failure ``retries`` times.

    On SIGINT or SIGTERM nothing new starts, running cells are abandoned (their staging
    directories removed) and the outcome says ``interrupted``: complete cells stay, so the
    same command resumes.
    """
    outcome = SweepOutcome(total=len(sweep.cells))
    todo = []
    for cell in sweep.cells:
        if is_complete(root / cell.name):
            echo(f"skipped {cell.name} (complete)")
            outcome.skipped += 1
        else:
            todo.append(cell)
    if not todo:
        return outcome
    inject = failures_to_inject(todo, fail_spec)
    queue: deque[tuple[Cell, int]] = deque((cell, 1) for cell in todo)
    running: dict[Any, tuple[Cell, int]] = {}
    finished = outcome.skipped
    with _stop_on_signals() as stop:
        pool = make_pool()
        try:
            while (queue or running) and not stop:
                while queue and len(running) < pool.capacity:
                    cell, attempt = queue.popleft()
                    handle = pool.submit(cell, root, attempt <= inject.get(cell.name, 0))
                    running[handle] = (cell, attempt)
                for handle, result in pool.wait(running, timeout=0.5):
                    cell, attempt = running.pop(handle)
                    if result.error is None:
                        finished += 1
                        outcome.ran += 1
                        echo(f"[{finished}/{outcome.total}] done {cell.name} ({result.seconds:.1f} s)")
                        for line in result.warnings:
                            echo(f"  {cell.name}: {line}")
                    elif attempt <= retries:
                        echo(f"retry {cell.name} (attempt {attempt + 1} of {retries + 1}): {result.error}")
                        queue.append((cell, attempt + 1))
                    else:
                        finished += 1
                        outcome.failed[cell.name] = result.error
                        echo(f"[{finished}/{outcome.total}] FAILED {cell.name}: {result.error}")
            if stop:
                outcome.interrupted = True
                outcome.remaining = len(queue) + len(running)
                pool.abandon(list(running))
        finally:
            pool.close()
            for cell, _attempt in running.values():
                shutil.rmtree(staging_dir(root / cell.name), ignore_errors=True)
            # No worker runs now: the directories made for cells that left nothing can go.
            for name in [*outcome.failed, *(cell.name for cell, _attempt in running.values())]:
                _remove_empty_parents(root / name, root)
    return outcome


def _remove_empty_parents(path: Path, root: Path) -> None:
    for parent in path.parents:
        if parent == root or root not in parent.parents:
            return
        try:
            parent.rmdir()
        except OSError:  # not empty: other cells live there
            return


def default_workers(resources: Mapping[str, float]) -> int:
    """The cores this process may use, divided by each cell's CPUs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, int(cores // max(resources["num_cpus"], 1.0)))
