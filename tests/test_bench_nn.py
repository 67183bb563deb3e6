"""``optsde bench --nn`` measures what it claims: its records, its table, its command line.

Tiny sizes (n = 8 examples, 2 paths, one timed step) on the MLP only; no wall-clock
assertions anywhere.  What is checked: one record per (SDE, variance path) with the
promised fields and a ratio that is the quotient of its own timings, every timed step
at a fresh ``x`` (so no step rides on the oracle's cached forward pass of an earlier
one), and bad input refused with one line and exit status 2.
"""

from __future__ import annotations

import json

import pytest
import torch

from optsde.bench import BenchError
from optsde.bench_nn import SDES, NNBenchSettings, format_nn_table, run_nn_benchmark
from optsde.cli import main
from optsde.problems.network import NetworkProblem

REQUIRED_FIELDS = {
    "model",
    "method",
    "variance_path",
    "n",
    "paths",
    "sde_step_ms",
    "optimizer_step_ms",
    "ratio",
    "peak_memory_mb",
    "device",
    "threads",
}

TINY = {"models": ("mlp",), "n": 8, "paths": 2, "repeats": 1, "warmup": 0}


def test_records_cover_every_sde_and_variance_path(monkeypatch):
    # Every oracle evaluation of a timed SDE step must see a new x: record the points asked for.
    seen: list[torch.Tensor] = []
    evaluate = NetworkProblem.evaluate

    def recording_evaluate(self: NetworkProblem, x: torch.Tensor, *args):
        seen.append(x.clone())
        return evaluate(self, x, *args)

    monkeypatch.setattr(NetworkProblem, "evaluate", recording_evaluate)
    settings = NNBenchSettings(**{**TINY, "repeats": 3})
    records = run_nn_benchmark(settings)

    expected = {
        (f"{opt}/sde-{key}", v) for opt, keys in SDES.items() for key in keys for v in settings.variances
    }
    assert {(r["method"], r["variance_path"]) for r in records} == expected
    assert len(records) == len(expected)
    for r in records:
        assert r.keys() >= REQUIRED_FIELDS
        assert (r["model"], r["n"], r["paths"], r["device"]) == ("mlp", 8, 2, "cpu")
        assert len(r["sde_step_ms_all"]) == len(r["optimizer_step_ms_all"]) == 3
        assert r["sde_step_ms"] > 0 and r["optimizer_step_ms"] > 0
        assert r["ratio"] == pytest.approx(r["sde_step_ms"] / r["optimizer_step_ms"])
        assert r["meets_bar"] == (r["ratio"] <= 3.0)
        assert r["peak_memory_mb"] is None or isinstance(r["peak_memory_mb"], float)
        assert r["threads"] == torch.get_num_threads()

    # Every SDE starts at the same x0; its 2nd and 3rd timed steps must be at points of their own
    # (a benchmark that re-timed one state would see x0 only, and its forward pass cached).
    distinct = {tuple(x.flatten().tolist()) for x in seen}
    assert len(distinct) >= 1 + 2 * len(records)


def test_table_says_which_variance_path_meets_the_bar(tmp_path):
    records = run_nn_benchmark(NNBenchSettings(**TINY))
    table = format_nn_table(records)
    assert all(r["method"] in table for r in records)
    for variance, bar in (("per-example", 2.0), ("projection", 3.0)):
        worst = max((r for r in records if r["variance_path"] == variance), key=lambda r: r["ratio"])
        verdict = "within" if worst["ratio"] <= bar else "more than"
        assert (
            f"mlp, variance={variance}: dearest SDE step {worst['method']} costs {worst['ratio']:.2f} "
            f"optimizer steps ({verdict} {bar:g}×)"
        ) in table


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "nn.json"
    args = ["bench", "--nn", "--models", "mlp", "--n", "8", "--paths", "2", "--repeats", "1"]
    assert main([*args, "--no-progress", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert {r["model"] for r in records} == {"mlp"}
    assert {r["variance_path"] for r in records} == {"per-example", "projection"}
    assert all(r.keys() >= REQUIRED_FIELDS for r in records)
    printed = capsys.readouterr().out
    assert "optimizer steps (within" in printed or "optimizer steps (more than" in printed
    assert f"wrote {out}" in printed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nn", "--models", "mlp,vgg"], "unknown model 'vgg'"),
        (["--nn", "--models", ","], "name at least one"),
        (["--nn", "--models", "mlp", "--n", "10000"], "has 569 examples"),
        (["--nn", "--paths", "2,4"], "one path count"),
        (["--nn", "--steps", "3"], "--steps belongs to the Euler–Maruyama benchmark"),
        (["--nn", "--no-compile"], "--no-compile belongs"),
        (["--models", "mlp"], "add --nn"),
    ],
)
def test_cli_refuses_bad_input_with_one_line(flags, message, capsys):
    assert main(["bench", *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "\n" not in err and "Traceback" not in err


def test_settings_refuse_impossible_values():
    with pytest.raises(BenchError, match="--n must be"):
        NNBenchSettings(n=0)
    with pytest.raises(BenchError, match="variance paths"):
        NNBenchSettings(variances=("exact",))
    with pytest.raises(BenchError, match="warmup"):
        NNBenchSettings(warmup=-1)
