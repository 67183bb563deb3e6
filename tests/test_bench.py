"""The benchmark measures what it claims: its records, its torchsde twin, and the fused integrator.

- ``optsde bench`` and :func:`run_benchmark` produce the promised records, ratios and
  errors (tiny sizes, eager path; no wall-clock assertions anywhere).
- The torchsde version of the AdamW SDE is an independent implementation of docs/theory.md §3;
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
from optsde.noise import StudentTNoise
from optsde.optimizers import Hyperparameters
from optsde.optimizers.adam import ADAM_SDES
from optsde.optimizers.signsgd import student_t_sde
from optsde.problems import NoisyProblem, Quadratic
from optsde.sde import Engine, SDERunner, SolverError, record_steps, simulate

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
ORACLE, _, _ = bench_problem(3)


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
    runner = SDERunner(ADAM_SDES["paper"])
    with pytest.raises(SolverError, match="block"):
        Engine(runner, ORACLE, BENCH_HYPERPARAMETERS, block=0)
    with pytest.raises(SolverError, match="noise"):
        Engine(runner, ORACLE, BENCH_HYPERPARAMETERS, noise="fast")
    with pytest.raises(SolverError, match="compile"):
        Engine(runner, ORACLE, BENCH_HYPERPARAMETERS, compile="maybe")


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


# --- compiled segments ------------------------------------------------------------------------

BLOCK, SUBSTEPS = 4, 2


def _run(runner, compile: str, seed: int, paths: int = 64, steps: int = 200, **kw):
    """``simulate`` with 12 stratified records (so segments of many lengths, every block size)."""
    x0 = torch.linspace(-1.0, 2.0, paths * 3, dtype=torch.float64).reshape(paths, 3)
    return simulate(
        runner,
        ORACLE,
        FAST_RELAXING,
        x0,
        paths=paths,
        steps=steps,
        generator=torch.Generator().manual_seed(seed),
        compile=compile,
        block=BLOCK,
        record_at=record_steps(steps, 12),
        **kw,
    )


@needs_compiler
@pytest.mark.parametrize("noise", ["presampled", "counter"])
@pytest.mark.parametrize("key", ["paper", "refined"])
def test_compiled_segments_equal_eager_steps_on_the_same_draws(key, noise):
    """The compiled path runs the same map on the same draws as the eager path (presampled, or
    computed from counters inside the kernel and by the eager step alike): recordings equal
    to rounding, for every block length a segment is cut into."""
    runner = SDERunner(ADAM_SDES[key], SUBSTEPS)
    compiled, eager = _run(runner, "on", seed=5, noise=noise), _run(runner, "off", seed=5, noise=noise)
    assert compiled.engine["path"] == "compiled", compiled.engine["fallback_reason"]
    assert eager.engine["path"] == "eager"
    assert compiled.engine["noise"] == eager.engine["noise"] == noise
    assert len(set(np.diff(compiled.steps))) > 3  # stratified: segments of several lengths
    for name in ("loss", "x", "x2"):
        np.testing.assert_allclose(compiled.values[name], eager.values[name], rtol=1e-9, atol=1e-12)


def test_auto_noise_computes_counters_for_large_compiled_cpu_blocks_only():
    """``noise="auto"``: a compiled CPU block over at least 2¹⁴ elements gets Threefry normals
    (measured faster than presampling there, docs/simulate.md); smaller blocks and eager runs
    presample; Student-t noise, which also draws Gamma variables, presamples and refuses
    ``counter``.  ``prepare`` decides without compiling."""
    from optsde.optimizers.adam import AdamW
    from optsde.sde import DiscreteRunner
    from optsde.sde.compiled import COUNTER_MIN_ELEMENTS

    runner = SDERunner(ADAM_SDES["paper"])

    def noise(compile: str, elements: int, oracle=ORACLE, mode: str = "auto", runner=runner) -> str:
        engine = Engine(runner, oracle, FAST_RELAXING, compile=compile, noise=mode)
        engine.prepare(runner.init_state(torch.zeros(elements // 3, 3, dtype=torch.float64)), 10)
        return engine.report.noise

    assert noise("on", 3 * (COUNTER_MIN_ELEMENTS // 3 + 1)) == "counter"
    assert noise("on", 3 * (COUNTER_MIN_ELEMENTS // 3 - 1)) == "presampled"
    assert noise("off", 3 * (COUNTER_MIN_ELEMENTS // 3 + 1)) == "presampled"

    class GammaScaledNoise(StudentTNoise):
        """Student-t noise as a pure-torch model: it draws Gamma variables, which only presample."""

        pure_torch = True

    heavy = NoisyProblem(Quadratic(torch.ones(3, dtype=torch.float64)), GammaScaledNoise(3, nu=3.0))
    optimizer = DiscreteRunner(AdamW())  # the optimizer samples the noise itself: Gamma draws
    assert noise("on", 3 * (COUNTER_MIN_ELEMENTS // 3 + 1), heavy, runner=optimizer) == "presampled"
    with pytest.raises(SolverError, match="use noise='presampled'"):
        noise("on", 30, heavy, "counter", runner=optimizer)


@pytest.mark.parametrize("compile", ["on", "off"])
def test_a_record_pair_from_one_call_equals_two_calls(compile):
    """``advance_keeping_first`` (how ``simulate`` records a pair of consecutive steps with counter
    noise) gives the states of stepping to the pair's second step and on in separate calls."""
    if compile == "on" and shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    runner = SDERunner(ADAM_SDES["paper"], SUBSTEPS)
    start = runner.init_state(torch.linspace(-1.0, 2.0, 96, dtype=torch.float64).reshape(32, 3))

    def engine() -> Engine:
        made = Engine(
            runner,
            ORACLE,
            FAST_RELAXING,
            generator=torch.Generator().manual_seed(3),
            compile=compile,
            block=BLOCK,
            noise="counter",
        )
        made.prepare(start, 30)
        return made

    separate = engine()
    before, _ = separate.advance(start, 1, 7)
    second, _ = separate.advance(before, 8, 1)
    end, _ = separate.advance(second, 9, 10)
    together = engine()
    before_too, _ = together.advance(start, 1, 7)
    end_too, bad, second_too, bad_second = together.advance_keeping_first(before_too, 8, 11)
    assert bad == bad_second == 0
    for a, b in ((second, second_too), (end, end_too)):
        for name in ("x", "m", "v"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-13)


@needs_compiler
def test_compiled_discrete_optimizer_equals_its_eager_steps():
    from optsde.optimizers.adam import AdamW
    from optsde.sde import DiscreteRunner

    runner = DiscreteRunner(AdamW())
    compiled = _run(runner, "on", seed=6, noise="counter")
    eager = _run(runner, "off", seed=6, noise="counter")
    assert compiled.engine["path"] == "compiled", compiled.engine["fallback_reason"]
    np.testing.assert_allclose(compiled.values["x"], eager.values["x"], rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("noise", ["in-kernel", "counter"])
def test_kernel_noise_is_seeded_and_has_the_presampled_stationary_loss(noise):
    runner = SDERunner(ADAM_SDES["paper"], SUBSTEPS)
    runs = [_run(runner, "on", seed=s, paths=256, steps=8, noise=noise) for s in (1, 1, 2)]
    assert runs[0].engine["path"] == "compiled" and runs[0].engine["noise"] == noise
    np.testing.assert_array_equal(runs[0].values["x"], runs[1].values["x"])
    assert not np.allclose(runs[0].values["x"], runs[2].values["x"])
    kw = {"paths": 2000, "steps": 1000, "noise": noise}  # t = 10: stationary after ρ₂ t ≈ 5
    fused = _run(runner, "on", seed=31, **kw)
    eager = _run(runner, "off", seed=32, **{**kw, "noise": "presampled"})
    half = fused.steps > 500
    assert_agree(
        estimate(fused.values["loss"][half].mean(axis=0)),
        estimate(eager.values["loss"][half].mean(axis=0)),
        what=f"stationary loss, {noise} noise vs presampled",
    )


def test_a_model_that_cannot_compile_runs_eagerly_with_the_same_numbers():
    """The Student-t SignSGD SDE calls scipy, which torch.compile cannot trace: asked to compile,
    the engine says so and runs the eager path, with the numbers of an eager run."""
    oracle = NoisyProblem(Quadratic(torch.tensor([1.0, 2.0])), StudentTNoise(2, nu=3.0))
    hp = Hyperparameters(lr=0.01)
    x0 = torch.ones(16, 2, dtype=torch.float64)
    runner = SDERunner(student_t_sde(3.0))
    runs = [
        simulate(
            runner, oracle, hp, x0, paths=16, steps=8, generator=torch.Generator().manual_seed(3), compile=c
        )
        for c in ("on", "off")
    ]
    assert runs[0].engine["path"] == "eager" and runs[0].engine["fallback_reason"]
    np.testing.assert_array_equal(runs[0].values["x"], runs[1].values["x"])
