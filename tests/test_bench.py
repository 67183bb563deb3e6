"""The benchmark measures what it claims: its records, its torchsde twin, and the fused integrator.

- ``optsde bench`` and :func:`run_benchmark` produce the promised records, ratios and
  errors (tiny sizes, eager path; no wall-clock assertions anywhere).
- The torchsde version of the AdamW SDE is an independent implementation of SPEC §3;
  it must agree in distribution with the project's ``SDERunner`` — otherwise the
  benchmark would compare two different computations.
- The fused, compiled block computes the same map as the eager EM steps (same
  normals: equal to rounding) and, with its own noise, the same stationary loss
  within Monte Carlo error.

Tolerances are ``Z_TOL`` standard errors computed from the data (see ``conftest``).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import assert_agree, estimate
from optsde.bench import (
    BENCH_HYPERPARAMETERS,
    METHODS,
    BenchError,
    BenchSettings,
    TorchsdeAdamW,
    bench_problem,
    format_table,
    run_benchmark,
    torchsde_run,
    write_json,
)
from optsde.cli import main
from optsde.fused import FusedError, FusedSDERunner, _ReplayNormals
from optsde.sde import SDERunner, simulate
from optsde.noise import StudentTNoise
from optsde.optimizers import Hyperparameters, constant_schedule
from optsde.optimizers.adam import ADAM_SDES
from optsde.optimizers.signsgd import student_t_sde
from optsde.problems import NoisyProblem, Quadratic

pytest.importorskip("torchsde")

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile on the CPU needs a C++ compiler"
)

REQUIRED_FIELDS = {
    "method",
    "paths",
    "steps",
    "dim",
    "device",
    "path_steps_per_s",
    "element_steps_per_s",
    "ratio_to_torchsde",
}

FAST_RELAXING = Hyperparameters(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1)
"""ρ₁ = 10, ρ₂ = 1: stationary by t ≈ 5 (500 steps), so a stationary check stays cheap."""


# --- records and command line ---------------------------------------------------------------


def test_records_carry_every_method_its_throughput_and_ratios(tmp_path):
    settings = BenchSettings(paths=(4, 8), steps=3, dim=2, repeats=2, compile=False)
    records = run_benchmark(settings)

    # --no-compile: optsde-sde is the eager integrator, so its duplicate is not timed twice.
    expected = set(METHODS) - {"optsde-sde-eager"}
    for paths in (4, 8):
        assert {r["method"] for r in records if r["paths"] == paths} == expected
    torchsde_rate = {r["paths"]: r["path_steps_per_s"] for r in records if r["method"] == "torchsde"}
    for r in records:
        assert r.keys() >= REQUIRED_FIELDS
        assert (r["steps"], r["dim"], r["device"]) == (3, 2, "cpu")
        assert r["path_steps_per_s"] == pytest.approx(r["paths"] * 3 / r["seconds_best"])
        assert r["element_steps_per_s"] == pytest.approx(r["path_steps_per_s"] * 2)
        assert r["median_path_steps_per_s"] <= r["path_steps_per_s"]
        assert r["ratio_to_torchsde"] == pytest.approx(r["path_steps_per_s"] / torchsde_rate[r["paths"]])
        assert np.isfinite(r["mean_loss_end"])
    fast = [r for r in records if r["method"] == "optsde-sde"]
    assert all(r["path"] == "eager" for r in fast)

    out = tmp_path / "nested" / "bench.json"
    write_json(records, out)
    assert json.loads(out.read_text()) == records
    table = format_table(records)
    assert all(method in table for method in expected)


def test_cli_writes_json_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--paths", "4,6", "--steps", "2", "--dim", "2", "--repeats", "1"]
    assert main([*args, "--no-compile", "--no-progress", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert {(r["method"], r["paths"]) for r in records} >= {("torchsde", 4), ("optsde-sde", 6)}
    assert "optsde-sde ran the eager path" in capsys.readouterr().out

    for bad in (["--paths", "10,x"], ["--paths", "0"], ["--json", str(tmp_path)]):
        assert main(["bench", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err and "\n" not in err and "Traceback" not in err


def test_settings_refuse_impossible_values():
    with pytest.raises(BenchError, match="path counts"):
        BenchSettings(paths=(100, -1))
    with pytest.raises(BenchError, match="steps"):
        BenchSettings(steps=0)
    with pytest.raises(BenchError, match="threads"):
        BenchSettings(threads=0)
    with pytest.raises(FusedError, match="block"):
        FusedSDERunner(ADAM_SDES["paper"], block=0)
    with pytest.raises(FusedError, match="noise"):
        FusedSDERunner(ADAM_SDES["paper"], noise="fast")


# --- the torchsde twin is the same SDE ---------------------------------------------------------


@pytest.mark.parametrize(
    ("hp", "steps", "checkpoints"),
    [
        (BENCH_HYPERPARAMETERS, 200, (5, 20, 200)),  # the benchmark's own setting: the transient
        (FAST_RELAXING, 800, (20, 800)),  # stationary at the end (ρ₂ t = 8)
    ],
    ids=["bench-transient", "stationary"],
)
def test_torchsde_twin_and_sde_runner_agree_in_distribution(hp, steps, checkpoints, generator):
    paths, dim = 2000, 3
    oracle, hessian, scale = bench_problem(dim)
    x0 = torch.ones(dim, dtype=torch.float64)
    rec = simulate(
        SDERunner(ADAM_SDES["paper"]),
        oracle,
        hp,
        x0,
        paths=paths,
        steps=steps,
        record_at=checkpoints,
        generator=generator(11),
    )
    twin = TorchsdeAdamW(hessian, scale, hp, dt=hp.lr)
    ts, xs = torchsde_run(twin, x0.expand(paths, dim), steps, record_every=5, hint_dt=True, entropy=12)
    assert rec.divergence is None
    for i, k in enumerate(rec.steps):
        x_twin = xs[k // 5]
        assert float(ts[k // 5]) == pytest.approx(k * hp.lr)
        loss_twin = oracle.loss(x_twin)
        assert_agree(estimate(rec.values["loss"][i]), estimate(loss_twin), what=f"E f at step {k}")
        for j in range(dim):
            assert_agree(
                estimate(rec.values["x"][i][:, j]), estimate(x_twin[:, j]), what=f"E x_{j} at step {k}"
            )


# --- the fused integrator ----------------------------------------------------------------------

ORACLE, _, _ = bench_problem(3)
BLOCK, SUBSTEPS = 4, 2


@pytest.fixture(scope="module")
def fused_runner():
    """One compiled variant (block of 4 steps × 2 substeps, float64) shared by the tests below."""
    return FusedSDERunner(ADAM_SDES["paper"], substeps=SUBSTEPS, block=BLOCK, noise="presampled")


@needs_compiler
def test_compiled_block_equals_eager_steps_on_the_same_normals(fused_runner):
    paths, seed = 64, 5
    x0 = torch.linspace(-1.0, 2.0, paths * 3, dtype=torch.float64).reshape(paths, 3)
    fused = fused_runner.advance_block(
        fused_runner.init_state(x0),
        1,
        3 * BLOCK,
        ORACLE,
        FAST_RELAXING,
        generator=torch.Generator().manual_seed(seed),
    )
    assert fused_runner.path == "compiled", fused_runner.fallback_reason

    # The reference: SDERunner's eager steps, fed the normals the presampled contract promises.
    eager, state = SDERunner(ADAM_SDES["paper"], SUBSTEPS), None
    state = eager.init_state(x0)
    draws = torch.Generator().manual_seed(seed)
    for block in range(3):
        normals = torch.randn((BLOCK * SUBSTEPS, paths, 3), generator=draws, dtype=torch.float64)
        with torch.no_grad(), _ReplayNormals(normals):
            for k in range(1 + block * BLOCK, 1 + (block + 1) * BLOCK):
                state = eager.advance(state, k, ORACLE, FAST_RELAXING, constant_schedule, None)
    for name, a, b in zip("xmv", fused[:3], state[:3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"{name} differs")


def _stationary_loss(runner, steps: int, seed: int, paths: int = 2000) -> np.ndarray:
    """Per-path time average of f over the second half of ``steps`` (recorded every 40 steps,
    a whole number of blocks, so no second block length is compiled)."""
    x0 = torch.ones(paths, 3, dtype=torch.float64)
    state, losses = runner.init_state(x0), []
    generator = torch.Generator().manual_seed(seed)
    for first in range(1, steps + 1, 40):
        if isinstance(runner, FusedSDERunner):
            state = runner.advance_block(state, first, 40, ORACLE, FAST_RELAXING, generator=generator)
        else:
            with torch.no_grad():
                for k in range(first, first + 40):
                    state = runner.advance(state, k, ORACLE, FAST_RELAXING, constant_schedule, generator)
        if first + 39 > steps // 2:
            losses.append(ORACLE.loss(state.x))
    return torch.stack(losses).mean(dim=0).numpy()


@needs_compiler
def test_compiled_runner_has_the_eager_stationary_loss(fused_runner):
    steps = 1000  # t = 10: stationary after ρ₂ t ≈ 5
    fused = _stationary_loss(fused_runner, steps, seed=21)
    assert fused_runner.path == "compiled"
    eager = _stationary_loss(SDERunner(ADAM_SDES["paper"], SUBSTEPS), steps, seed=22)
    assert_agree(estimate(fused), estimate(eager), what="stationary loss, compiled vs eager")


@pytest.mark.slow
@needs_compiler
def test_in_kernel_noise_is_seeded_and_has_the_eager_stationary_loss():
    runner = FusedSDERunner(ADAM_SDES["paper"], substeps=SUBSTEPS, block=BLOCK, noise="in-kernel")
    x0 = torch.ones(256, 3, dtype=torch.float64)
    runs = [
        runner.advance_block(
            runner.init_state(x0), 1, 8, ORACLE, FAST_RELAXING, generator=torch.Generator().manual_seed(s)
        )
        for s in (1, 1, 2)
    ]
    assert runner.path == "compiled", runner.fallback_reason
    torch.testing.assert_close(runs[0].x, runs[1].x, rtol=0, atol=0)
    assert not torch.allclose(runs[0].x, runs[2].x)
    fused = _stationary_loss(runner, 1000, seed=31)
    eager = _stationary_loss(SDERunner(ADAM_SDES["paper"], SUBSTEPS), 1000, seed=32)
    assert_agree(estimate(fused), estimate(eager), what="stationary loss, in-kernel noise vs eager")


def test_a_model_that_cannot_compile_runs_eagerly_with_the_same_numbers():
    """The Student-t SignSGD SDE calls scipy, which torch.compile cannot trace."""
    oracle = NoisyProblem(Quadratic(torch.tensor([1.0, 2.0])), StudentTNoise(2, nu=3.0))
    hp = Hyperparameters(lr=0.01)
    x0 = torch.ones(16, 2, dtype=torch.float64)
    model = student_t_sde(3.0)
    runner = FusedSDERunner(model, block=4)
    fused = runner.advance_block(
        runner.init_state(x0), 1, 8, oracle, hp, generator=torch.Generator().manual_seed(3)
    )
    assert runner.path == "eager" and runner.fallback_reason
    reference, state = SDERunner(model), SDERunner(model).init_state(x0)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for k in range(1, 9):
            state = reference.advance(state, k, oracle, hp, constant_schedule, generator)
    torch.testing.assert_close(fused.x, state.x, rtol=0, atol=0)
