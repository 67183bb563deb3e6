"""Ctrl-C, as a user sends it: SIGINT to a running ``optsde`` process.

The interrupted command must stop (exit 130) and print a command that, run as printed,
continues the run and ends with exactly the numbers of a run that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import optsde.cli.run
from optsde.cli import main
from optsde.experiments.base import discover
from optsde.sde import DiscreteRunner

SRC = str(Path(__file__).resolve().parents[1] / "src")


def start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "optsde.cli", *argv],
        cwd=cwd,
        env=env,
        # A job started with `&` by a non-interactive shell ignores SIGINT, and so would the child
        # (Python keeps an ignored SIGINT ignored): give the child the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, process: subprocess.Popen[str]) -> None:  # type: ignore[no-untyped-def]
    """Poll until ``condition()`` holds; fail if the process ends first."""
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(
                f"the run ended (exit {process.returncode}) before it could be interrupted:\n{out}\n{err}"
            )
        time.sleep(0.05)


def interrupt(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate()
    return process.returncode, out, err


def printed_resume_command(err: str) -> list[str]:
    """The command after 'to continue:' on stderr, as the user would paste it."""
    line = next(line for line in err.splitlines() if "to continue:" in line)
    words = shlex.split(line.split("to continue:", 1)[1])
    assert words[0] == "optsde" and "--resume" in words
    return words[1:]


def test_simulate_interrupted_by_sigint_resumes_to_the_uninterrupted_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["simulate", "--steps", "4000", "--paths", "64", "--no-progress"]
    assert main([*flags, "--out", str(tmp_path / "whole")]) == 0
    capsys.readouterr()

    process = start([*flags, "--out", "cut"], tmp_path)
    checkpoints = tmp_path / ".cut.optsde-work" / ".checkpoints" / "simulate"
    wait_for(lambda: any(checkpoints.glob("*.pt")), process)
    code, _, err = interrupt(process)
    assert code == 130, err
    assert "Traceback" not in err
    assert not (tmp_path / "cut").exists()  # nothing half-written where the results go
    assert any(checkpoints.glob("*.pt"))

    resumed = start(printed_resume_command(err), tmp_path)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert (tmp_path / "cut" / "series.csv").read_bytes() == (tmp_path / "whole" / "series.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "whole"]


@pytest.mark.slow
def test_demo_interrupted_by_sigint_stops_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C stops the whole demo (no later experiment starts); the printed command skips
    what was complete, continues the interrupted experiment, and gives the uninterrupted numbers."""
    names = ["heavy-tails", "signsgd-phases"]
    flags = ["demo", "--only", ",".join(names), "--no-progress"]
    assert main([*flags, "--out", str(tmp_path / "whole")]) == 0
    capsys.readouterr()

    process = start([*flags, "--out", "cut"], tmp_path)
    work = tmp_path / ".cut.optsde-work"
    wait_for(lambda: any(work.glob(".checkpoints/*/*.pt")), process)
    code, _, err = interrupt(process)
    assert code == 130, err
    assert "Traceback" not in err
    statuses = [
        json.loads((work / name / "summary.json").read_text())["status"]
        if (work / name / "summary.json").exists()
        else None
        for name in names
    ]
    # Complete experiments, then at most the interrupted one; nothing after it ran.
    interrupted = next(i for i, status in enumerate(statuses) if status != "complete")
    assert all(status is None for status in statuses[interrupted + 1 :]), statuses
    assert not any((work / ".checkpoints" / name).exists() for name in names[interrupted + 1 :])
    assert not (tmp_path / "cut").exists()

    resumed = start(printed_resume_command(err), tmp_path)
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    for name in names[:interrupted]:
        assert f"{name}: complete already, skipped" in out
    for name in names:
        cut, whole = tmp_path / "cut" / name / "series.csv", tmp_path / "whole" / name / "series.csv"
        assert cut.read_bytes() == whole.read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "whole"]


TINY_QUICK = {
    "heavy-tails": {"paths": 8, "min_steps": 20, "max_steps": 40, "groups": 2, "nus": [2.0, 10.0]},
    "signsgd-phases": {
        "paths": 8,
        "steps": 60,
        "record_points": 6,
        "schedule_steps": 60,
        "schedule_paths": 4,
    },
}


def test_demo_stops_as_a_whole_and_resume_skips_what_was_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same contract as the SIGINT test above, in-process and on tiny experiments: Ctrl-C
    (a KeyboardInterrupt inside the second experiment) stops the demo; the printed command
    skips the first, continues the second, and both end with the uninterrupted numbers."""
    tiny = {name: dataclasses.replace(discover()[name], quick=quick) for name, quick in TINY_QUICK.items()}
    monkeypatch.setattr(optsde.cli.run, "discover", lambda: tiny)
    flags = ["demo", "--no-progress"]
    assert main([*flags, "--out", str(tmp_path / "whole")]) == 0

    original = DiscreteRunner.advance
    second = tmp_path / ".cut.optsde-work" / ".checkpoints" / "signsgd-phases"
    calls = {"n": 0}

    def advance(self, state, k, *args, **kwargs):  # type: ignore[no-untyped-def]
        if second.exists():  # a few steps into the second experiment
            calls["n"] += 1
            if calls["n"] == 30:
                raise KeyboardInterrupt
        return original(self, state, k, *args, **kwargs)

    monkeypatch.setattr(DiscreteRunner, "advance", advance)
    capsys.readouterr()
    assert main([*flags, "--out", str(tmp_path / "cut")]) == 130
    err = capsys.readouterr().err
    work = tmp_path / ".cut.optsde-work"
    assert json.loads((work / "heavy-tails" / "summary.json").read_text())["status"] == "complete"
    assert any(work.glob(".checkpoints/signsgd-phases/*.pt"))
    assert not (tmp_path / "cut").exists()

    monkeypatch.setattr(DiscreteRunner, "advance", original)
    assert main(printed_resume_command(err)) == 0
    assert "heavy-tails: complete already, skipped" in capsys.readouterr().out
    for name in TINY_QUICK:
        cut, whole = tmp_path / "cut" / name / "series.csv", tmp_path / "whole" / name / "series.csv"
        assert cut.read_bytes() == whole.read_bytes(), name
