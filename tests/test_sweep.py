"""``optsde sweep``: each cell is the ordinary run it names; local processes and Ray give the
same numbers; an interrupted sweep resumes with only its missing cells; a failing cell is
retried, then reported, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optsde.cli import main
from optsde.sweep import FAIL_ENV, MAX_SETTING_CHARS, cell_name

# A 2 × 2 grid × 2 seeds of the cheapest experiment, shrunk further: the cells take well under a
# second each, so the time goes to starting the worker processes, which is what is under test.
SWEEP = """\
experiment: simulate
set: {steps: 200, paths: 16}
grid: {lr: [0.001, 0.002], sigma: [0.1, 0.3]}
seeds: [0, 1]
"""
CELLS = [
    f"simulate/lr={lr},sigma={sigma}/seed={seed}"
    for lr in ("0.001", "0.002")
    for sigma in ("0.1", "0.3")
    for seed in (0, 1)
]


def summaries(root: Path) -> dict[str, dict]:
    """Every run's summary.json under ``root`` by cell name, less its wall time."""
    found = {}
    for path in sorted(root.rglob("summary.json")):
        summary = json.loads(path.read_text())
        summary.pop("wall_time_s")
        found[path.parent.relative_to(root).as_posix()] = summary
    return found


def hidden_entries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*")]


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweepfile") / "grid.yaml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def local_sweep(sweep_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the sweep on two local worker processes, uninterrupted."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--workers", "2"]) == 0
    return out


def test_a_sweep_writes_one_ordinary_run_per_cell(
    local_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = summaries(local_sweep)
    assert sorted(found) == sorted(CELLS)
    assert hidden_entries(local_sweep) == []
    assert (local_sweep / "index.html").is_file()
    config = json.loads((local_sweep / "simulate/lr=0.002,sigma=0.3/seed=1/config.json").read_text())
    assert (config["seed"], config["params"]["lr"], config["params"]["sigma"]) == (1, 0.002, 0.3)
    # The cell is the `optsde simulate` command it stands for: the same numbers, bit for bit.
    flags = ["--lr", "0.002", "--sigma", "0.3", "--steps", "200", "--paths", "16", "--seed", "1"]
    assert main(["simulate", *flags, "--no-progress", "--out", str(tmp_path / "by-hand")]) == 0
    by_hand = json.loads((tmp_path / "by-hand/summary.json").read_text())
    by_hand.pop("wall_time_s")
    assert by_hand == found["simulate/lr=0.002,sigma=0.3/seed=1"]
    # Seeds are used: the two seeds of one grid point differ.
    assert found["simulate/lr=0.001,sigma=0.1/seed=0"] != found["simulate/lr=0.001,sigma=0.1/seed=1"]
    capsys.readouterr()
    assert main(["results", str(local_sweep), "--where", "seed=1", "--where", "lr=2e-3"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + 2  # header, rule, and the two values of sigma


def test_ray_gives_the_numbers_of_local_workers(sweep_file: Path, local_sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--ray", "--workers", "2"]) == 0
    assert summaries(out) == summaries(local_sweep)
    for cell in CELLS:
        assert (out / cell / "series.csv").read_bytes() == (local_sweep / cell / "series.csv").read_bytes()


def test_an_interrupted_sweep_resumes_with_only_the_missing_cells(
    sweep_file: Path, local_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cut"
    command = [sys.executable, "-c", "import sys; from optsde.cli import main; sys.exit(main())"]
    # One worker: cells finish one at a time, so the interrupt lands with most of them to go.
    process = subprocess.Popen(
        [*command, "sweep", str(sweep_file), "--out", str(out), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while process.poll() is None and not any((out / "simulate").glob("*/seed=*")):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate()
    assert process.returncode == 130, stdout + stderr
    assert "Resume with: optsde sweep" in stderr
    assert hidden_entries(out) == []
    complete = sorted(summaries(out))
    assert 1 <= len(complete) < len(CELLS), stdout

    assert main(["sweep", str(sweep_file), "--out", str(out), "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[1] for line in lines if line.startswith("skipped ")) == complete
    assert sum(" done " in line for line in lines) == len(CELLS) - len(complete)
    assert summaries(out) == summaries(local_sweep)


def test_a_failing_cell_is_retried_then_reported_and_the_others_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # hessian 1,-1 is no convex quadratic: that cell fails inside the run, on every attempt.
    # The testing hook makes one good cell fail once, after its run is written but before it
    # is moved into place: the retry must succeed and nothing of the failed attempt remain.
    sweep = tmp_path / "faulty.yaml"
    sweep.write_text(
        "experiment: simulate\nset: {steps: 100, paths: 8}\ngrid: {hessian: [[1, 2], [1, -1]]}\n"
    )
    monkeypatch.setenv(FAIL_ENV, "simulate/hessian=1_2/*:1")
    out = tmp_path / "out"
    code = main(["sweep", str(sweep), "--out", str(out), "--workers", "2", "--retries", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(summaries(out)) == ["simulate/hessian=1_2/seed=0"]
    assert hidden_entries(out) == []
    assert not (out / "simulate/hessian=1_-1").exists()
    assert (
        "retry simulate/hessian=1_2/seed=0 (attempt 2 of 2): RuntimeError: failure injected" in captured.out
    )
    assert "retry simulate/hessian=1_-1/seed=0 (attempt 2 of 2): --hessian: give positive" in captured.out
    assert captured.err.strip() == (
        "optsde: cell simulate/hessian=1_-1/seed=0 failed: "
        "--hessian: give positive curvatures like 1,3,10 for a convex quadratic"
    )


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("experiment: no-such\n", "unknown experiment 'no-such'"),
        ("experiment: simulate\ngird: {lr: [0.1]}\n", "unknown key 'gird'"),
        ("experiment: simulate\ngrid: {learning_rate: [0.1]}\n", "no parameter 'learning_rate'"),
        ("experiment: simulate\ngrid: {lr: [0.1, fast]}\n", "grid point lr=fast"),
        ("experiment: simulate\ngrid: {lr: []}\n", "non-empty list"),
        ("experiment: simulate\nset: {lr: 0.1}\ngrid: {lr: [0.2]}\n", "both in set and in grid"),
        ("experiment: simulate\nseeds: [0, 0]\n", "repeat a seed"),
        ("experiment: simulate\nresources: {num_tpus: 1}\n", "resources has no 'num_tpus'"),
        ("experiment: simulate\ngrid: {optimizer: [a/b, a_b]}\n", "give the directory"),
        ("experiment: [simulate\n", "not valid YAML"),
    ],
)
def test_a_bad_sweep_file_is_one_line_before_anything_runs(
    text: str, complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(text)
    code = main(["sweep", str(sweep), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and complaint in err, err
    assert not (tmp_path / "out").exists()


def test_ray_missing_is_one_line_with_the_install_command(
    sweep_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a)
    )
    code = main(["sweep", str(sweep_file), "--out", str(tmp_path / "out"), "--ray"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "optsde: error: --ray needs Ray, which is not installed: pip install 'optsde[ray]'"
    assert not (tmp_path / "out").exists()


def test_cell_names_are_deterministic_safe_and_short() -> None:
    point = {"lr": 0.001, "nus": ["1", "3"], "flag": True, "label": "a b/c"}
    name = cell_name("heavy-tails", point, 3)
    assert name == "heavy-tails/lr=0.001,nus=1_3,flag=true,label=a_b_c/seed=3"
    assert cell_name("heavy-tails", {}, 0) == "heavy-tails/seed=0"
    long_a = cell_name("x", {f"key{i}": i for i in range(30)}, 0)
    long_b = cell_name("x", {f"key{i}": i + (i == 29) for i in range(30)}, 0)
    assert len(long_a.split("/")[1]) == MAX_SETTING_CHARS
    assert long_a != long_b
    assert os.sep not in long_a.split("/")[1]
