"""Property: whatever a user types, ``optsde run/simulate/scale/bench`` answers with exit code 0, 1
(a documented divergence) or 2, never a traceback; a refused run (exit 2) leaves the disk as it
found it; and files the user had beside or inside the output directory are never touched.

Every flag of the four commands is drawn from a mix of valid values (kept tiny so that a run
takes a fraction of a second) and malformed ones (non-finite, empty, zero, negative, text,
impossible paths).  The default test tries a fixed set of cases; ``-m slow`` tries many more.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optsde.cli import main
from optsde.results import MARKER

CASES = {"tried": 0, "codes": {}}

BAD_NUMBERS = ["nan", "inf", "-inf", "NaN", "", " ", "abc", "1e999", "1,2", ",", "0x10", "1e", "--", "1_0"]
BAD_COUNTS = ["0", "-1", "-7", "1.5", "1e3", "", "nan", "inf", "abc", ",", "99999999999999999999999"]
BAD_LISTS = ["", ",", "1,,2", "1,nan", "inf,1", "a,b", "1;2", " , "]


def valid_or(valid: st.SearchStrategy[str], bad: list[str], p_bad: float = 0.1) -> st.SearchStrategy[str]:
    """A valid value, or with probability about ``p_bad`` a malformed one."""
    return st.integers(0, 99).flatmap(lambda r: st.sampled_from(bad) if r >= 100 * (1 - p_bad) else valid)


def num(lo: float, hi: float) -> st.SearchStrategy[str]:
    return st.floats(lo, hi, allow_nan=False).map(lambda v: f"{v:.4g}")


def count(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(str)


def num_list(lo: float, hi: float, n: int) -> st.SearchStrategy[str]:
    return st.lists(num(lo, hi), min_size=1, max_size=n).map(",".join)


FLOAT = valid_or(num(0.0, 1.0), [*BAD_NUMBERS, "-1", "0", "-0.5", "2", "1e300"])
SEED = valid_or(count(0, 5), ["-1", "2.5", "x", "", str(2**63), "99999999999999999999999"])
THREADS = valid_or(st.just("1"), [*BAD_COUNTS, "100000"])

# Output places, relative to the case's scratch directory (the process's working directory).
OUT_PLACES = [
    "out",  # new
    "deep/er/out",  # new, parents created
    "empty",  # exists, empty
    "userdir",  # exists, holds the user's thesis.tex
    "prev",  # an earlier optsde result
    "prevnotes",  # an earlier optsde result to which the user added notes.txt
    "afile/sub",  # below a file
    "afile",  # a file
    ".",
    "..",
    "/proc/nope",
    "/proc/nope/deeper",
    "",
]
OUT = st.sampled_from(OUT_PLACES)


def flags(spec: dict[str, st.SearchStrategy[str]], p_given: float = 0.4) -> st.SearchStrategy[list[str]]:
    """Each flag of ``spec`` given a drawn value with probability ``p_given``, as ``--flag=value``
    so that values starting with '-' reach the flag's own check."""

    def build(chosen: dict[str, str | None]) -> list[str]:
        argv = []
        for flag, value in chosen.items():
            if value is None:
                continue
            argv += [flag] if value == "<on>" else [f"{flag}={value}"]
        return argv

    def maybe(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
        return st.integers(0, 9).flatmap(lambda r: strategy if r >= 10 * (1 - p_given) else st.none())

    return st.fixed_dictionaries({flag: maybe(strategy) for flag, strategy in spec.items()}).map(build)


SWITCH = st.just("<on>")
RARE_SWITCH = st.sampled_from(["<on>", *[None] * 9])

RUN_FLAGS = {
    "--device": valid_or(st.just("cpu"), ["gpu", "", "cuda" if not torch.cuda.is_available() else "tpu"]),
    "--dtype": valid_or(st.sampled_from(["float32", "float64"]), ["float16", ""]),
    "--seed": SEED,
    "--out": OUT,
    "--overwrite": SWITCH,
    "--resume": RARE_SWITCH,
    "--no-progress": SWITCH,
    "--threads": THREADS,
}

SIMULATE = flags(
    {
        "--problem": valid_or(st.sampled_from(["quadratic", "saddle"]), ["cube", ""]),
        "--hessian": valid_or(num_list(0.1, 5.0, 2), [*BAD_LISTS, "-1,2", "0"]),
        "--noise": valid_or(st.sampled_from(["gaussian", "student-t"]), ["cauchy", ""]),
        "--sigma": valid_or(num(0.01, 2.0), [*BAD_NUMBERS, "0", "-1", "1e200", "1e30"]),
        "--nu": valid_or(num(0.5, 20.0), [*BAD_NUMBERS, "0", "-3"]),
        "--batch-size": valid_or(count(1, 8), BAD_COUNTS),
        "--optimizer": valid_or(
            st.sampled_from(["sgd", "signsgd", "rmsprop", "rmspropw", "adam", "adamw"]), ["lion", ""]
        ),
        "--lr": valid_or(num(1e-4, 0.5), [*BAD_NUMBERS, "0", "-0.1", "1e300"]),
        "--beta1": FLOAT,
        "--beta2": FLOAT,
        "--eps": valid_or(num(0.0, 1e-3), [*BAD_NUMBERS, "-1"]),
        "--weight-decay": valid_or(num(0.0, 2.0), [*BAD_NUMBERS, "-1"]),
        "--x0": valid_or(num_list(-2.0, 2.0, 3), BAD_LISTS),
        "--steps": valid_or(count(1, 20), BAD_COUNTS),
        "--paths": valid_or(count(1, 4), BAD_COUNTS),
        "--sde": valid_or(
            st.sampled_from(
                ["paper", "malladi", "refined", "none", "gaussian", "phase1", "phase3", "paper,malladi"]
            ),
            ["", ",", "nope", "paper,nope"],
        ),
        "--substeps": valid_or(count(1, 3), BAD_COUNTS),
        **RUN_FLAGS,
    },
    p_given=0.2,
)

EXPERIMENT_SETTINGS = {
    "heavy-tails": {
        "nus": valid_or(num_list(1.0, 10.0, 2), BAD_LISTS),
        "scale": valid_or(num(0.1, 2.0), BAD_NUMBERS),
        "optimizers": valid_or(st.sampled_from(["sgd", "signsgd", "adamw", "sgd,adamw"]), ["", "lion"]),
        "lr": valid_or(num(1e-3, 0.1), BAD_NUMBERS),
        "min_steps": valid_or(count(1, 10), BAD_COUNTS),
        "max_steps": valid_or(count(5, 20), BAD_COUNTS),
        "groups": valid_or(count(1, 4), BAD_COUNTS),
        "quantiles": valid_or(num_list(0.1, 0.9, 3), BAD_LISTS),
    },
    "signsgd-phases": {
        "lr": valid_or(num(1e-3, 0.1), BAD_NUMBERS),
        "sigma": valid_or(num(0.05, 1.0), BAD_NUMBERS),
        "hessian": valid_or(num_list(0.5, 3.0, 2), BAD_LISTS),
        "steps": valid_or(count(2, 20), BAD_COUNTS),
        "record_points": valid_or(count(2, 6), BAD_COUNTS),
        "schedule_steps": valid_or(count(2, 20), BAD_COUNTS),
        "schedule_paths": valid_or(count(1, 4), BAD_COUNTS),
    },
}
# Sizes every run gets unless the drawn settings replace them: a case must take well under a second.
TINY = {
    "heavy-tails": ["min_steps=5", "max_steps=10", "groups=2", "nus=2,10", "optimizers=sgd,adamw"],
    "signsgd-phases": ["steps=10", "record_points=4", "schedule_steps=10", "schedule_paths=2"],
}


@st.composite
def run_argv(draw: st.DrawFn) -> list[str]:
    name = draw(valid_or(st.sampled_from(sorted(EXPERIMENT_SETTINGS)), ["nope", "", "--quick"]))
    argv = ["run", name, "--quick", "--paths=" + draw(valid_or(count(1, 4), BAD_COUNTS))]
    settings_spec = EXPERIMENT_SETTINGS.get(name, {})
    drawn = draw(st.fixed_dictionaries({key: st.none() | s for key, s in settings_spec.items()}))
    tiny = dict(pair.split("=", 1) for pair in TINY.get(name, []))
    tiny.update({key: value for key, value in drawn.items() if value is not None})
    for key, value in tiny.items():
        argv += ["--set", f"{key}={value}"]
    argv += draw(st.sampled_from([*[[]] * 9, ["--set", "nokey=1"], ["--set", "noequals"], ["--set", "=3"]]))
    return argv + draw(flags(RUN_FLAGS))


GOOD = {"optimizer": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "batch_size": 64, "weight_decay": 0.1}
# Config files for ``scale --config``: name → text (None: the name does not exist; "/": a directory).
SCALE_CONFIGS: dict[str, str | None] = {
    "good.json": json.dumps(GOOD),
    "good.yaml": "optimizer: rmspropw\nlr: 0.01\nalpha: 0.99\nbatch_size: 32\n",
    "bare.json": json.dumps({"lr": 1e-3, "batch_size": 64}),
    "inf.json": '{"lr": Infinity, "batch_size": 64}',
    "nan.json": '{"lr": NaN, "batch_size": 64}',
    "inf.yaml": "lr: .inf\nbatch_size: 64\n",
    "nanbeta.yaml": "optimizer: adam\nlr: 0.001\nbetas: [.nan, 0.9]\nbatch_size: 8\n",
    "zerobatch.json": json.dumps({"lr": 1e-3, "batch_size": 0}),
    "halfbatch.json": json.dumps({"lr": 1e-3, "batch_size": 1.5}),
    "hugebatch.json": '{"lr": 0.001, "batch_size": 1e400}',
    "onebeta.json": json.dumps({**GOOD, "betas": [0.9]}),
    "textbeta.json": json.dumps({**GOOD, "betas": ["a", 0.9]}),
    "negeps.json": json.dumps({**GOOD, "eps": -1}),
    "listlr.json": json.dumps({"lr": [1], "batch_size": 64}),
    "list.json": "[1, 2]",
    "broken.yaml": "lr: [1,\n",
    "empty.json": "",
    "missing.json": None,
    "adir.json": "/",
}

SCALE = flags(
    {
        "--optimizer": valid_or(
            st.sampled_from(["rmspropw", "adam", "adamw"]), ["lion", "sgd", "signsgd", ""]
        ),
        "--from-batch": valid_or(st.sampled_from(["64", "32", "8"]), BAD_COUNTS),
        "--to-batch": valid_or(count(1, 512), BAD_COUNTS),
        "--lr": valid_or(num(1e-5, 1.0), [*BAD_NUMBERS, "0", "-1"]),
        "--beta1": FLOAT,
        "--beta2": FLOAT,
        "--eps": valid_or(num(0.0, 1e-3), [*BAD_NUMBERS, "-1"]),
        "--weight-decay": valid_or(num(0.0, 1.0), [*BAD_NUMBERS, "-1"]),
        "--config": valid_or(
            st.sampled_from(["good.json", "good.yaml", "bare.json"]), sorted(SCALE_CONFIGS), 0.3
        ),
        "--write": valid_or(
            st.sampled_from(["new.yaml", "new.json", "deep/new.json"]),
            ["keep.txt", "userdir", "/proc/x.yaml", "afile/x.json", ""],
        ),
        "--rule": valid_or(st.sampled_from(["paper", "malladi", "linear", "square-root"]), ["", "cubic"]),
        "--json": SWITCH,
    }
)


@st.composite
def bench_argv(draw: st.DrawFn) -> list[str]:
    """Mostly malformed values; a valid case is the cheapest benchmark there is."""
    spec = {
        "--paths": valid_or(st.just("1"), [*BAD_LISTS, *BAD_COUNTS, "1,2"], p_bad=0.5),
        "--repeats": valid_or(st.just("1"), BAD_COUNTS, p_bad=0.5),
        "--device": valid_or(st.just("cpu"), ["gpu", "", "cuda" if not torch.cuda.is_available() else "tpu"]),
        "--dtype": valid_or(st.sampled_from(["float32", "float64"]), ["half"]),
        "--seed": SEED,
        "--threads": THREADS,
        "--json": st.sampled_from(["b.json", "deep/b.json", "keep.txt", "userdir", "/proc/x.json", ""]),
        "--no-progress": SWITCH,
    }
    if draw(st.booleans()):
        spec |= {
            "--models": valid_or(st.just("mlp"), ["", ",", "vgg", "mlp,vgg"], p_bad=0.5),
            "--n": valid_or(count(1, 2), BAD_COUNTS, p_bad=0.5),
            "--steps": st.sampled_from(["1", "0", "x"]),
        }
        forced = ["--nn", "--models=mlp", "--n=1"]
    else:
        spec |= {
            "--steps": valid_or(count(1, 2), BAD_COUNTS, p_bad=0.5),
            "--dim": valid_or(count(1, 2), BAD_COUNTS, p_bad=0.5),
            "--block": valid_or(count(1, 2), BAD_COUNTS, p_bad=0.5),
            "--n": st.sampled_from(["1", "0"]),
        }
        forced = ["--no-compile", "--paths=1", "--steps=1", "--dim=1", "--repeats=1"]
    # Drawn flags come after the forced cheap ones, so they win where they repeat one.
    return ["bench", *forced, *draw(flags(spec))]


def prepare(root: Path) -> None:
    """The user's files and earlier results that every case finds."""
    (root / "keep.txt").write_text("the user's own file\n")
    (root / "empty").mkdir()
    (root / "userdir").mkdir()
    (root / "userdir" / "thesis.tex").write_text("\\chapter{One}\n")
    (root / "afile").write_text("a file, not a directory\n")
    for name, extra in (("prev", None), ("prevnotes", "notes.txt")):
        (root / name).mkdir()
        (root / name / "report.md").write_text("# an earlier run\n")
        marker = {"written_by": "optsde", "version": "0", "files": ["report.md"]}
        (root / name / MARKER).write_text(json.dumps(marker))
        if extra:
            (root / name / extra).write_text("the user's notes\n")
    for name, text in SCALE_CONFIGS.items():
        if text == "/":
            (root / name).mkdir()
        elif text is not None:
            (root / name).write_text(text)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root``: a file's bytes, None for a directory."""
    entries: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        entries[rel] = (
            None if path.is_dir() and not path.is_symlink() else path.read_bytes() if path.is_file() else b"@"
        )
    return entries


USER_FILES = ("keep.txt", "userdir/thesis.tex", "prevnotes/notes.txt", "prevnotes/report.md", "afile")


def check_case(argv: list[str]) -> None:
    """Run ``optsde ARGV`` in a fresh scratch directory and check the contract."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        prepare(root)
        before = snapshot(root)
        err, out = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(root)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(argv)
        except BaseException:
            pytest.fail(f"optsde {' '.join(argv)} raised:\n{traceback.format_exc()}")
        finally:
            os.chdir(cwd)
            torch.set_num_threads(1)
        CASES["tried"] += 1
        CASES["codes"][code] = CASES["codes"].get(code, 0) + 1
        message = err.getvalue()
        assert code in (0, 1, 2), f"optsde {' '.join(argv)}: exit {code}\n{message}"
        assert "Traceback" not in message, message
        after = snapshot(root)
        if code == 2:
            assert len(message.strip().splitlines()) == 1, f"optsde {' '.join(argv)}:\n{message}"
            # The message names the actual cause: Student-t's ν only where Student-t noise was asked for.
            assert "ν" not in message or "--noise=student-t" in argv, message
            assert after == before, (
                f"optsde {' '.join(argv)} refused ({message.strip()}) but changed the disk"
            )
        for name in USER_FILES:
            assert after[name] == before[name], f"optsde {' '.join(argv)} changed the user's {name}"
        for entry in after:
            assert not entry.endswith((".optsde-work", ".optsde-old", ".optsde-probe")) or code == 2, entry


COMMANDS: dict[str, st.SearchStrategy[list[str]]] = {
    "simulate": SIMULATE.map(lambda a: ["simulate", "--steps=10", "--paths=2", *a]),
    "run": run_argv(),
    "scale": st.sampled_from([[], ["--optimizer=adamw", "--from-batch=64", "--lr=0.001"]]).flatmap(
        lambda base: SCALE.map(lambda a: ["scale", "--to-batch=128", *base, *a])
    ),
    "bench": bench_argv(),
}


def property_test(examples: int) -> Callable[[str], None]:
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=examples <= 100,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(data=st.data())
    def test(command: str, data: st.DataObject) -> None:
        check_case(data.draw(COMMANDS[command], label="argv"))

    return test


def run_property(command: str, examples: int, capsys: pytest.CaptureFixture[str]) -> None:
    CASES.update(tried=0, codes={})
    property_test(examples)(command)
    with capsys.disabled():  # the number of cases tried, shown with -s
        print(f"\n{command}: {CASES['tried']} cases, exit codes {CASES['codes']}")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_never_fails_a_user(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_property(command, {"simulate": 40, "run": 25, "scale": 80, "bench": 25}[command], capsys)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_never_fails_a_user_many_cases(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_property(command, {"simulate": 600, "run": 300, "scale": 2000, "bench": 300}[command], capsys)
