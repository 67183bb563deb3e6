"""Flag types, the help layout and the checks shared by the subcommands.

Every value is checked here, at the boundary, once: the ``type=`` functions refuse
non-finite numbers, empty lists and non-positive counts with a message that argparse
prefixes with the flag's name, so the code behind them can trust what it gets.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Sequence
from pathlib import Path

import torch

from optsde.errors import OptsdeError
from optsde.experiments.base import MAX_COUNT

MAX_THREADS = 256
SEED_LIMIT = 2**63


def register(subparsers: argparse._SubParsersAction) -> None:
    """This module adds no subcommand."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless it says its default itself)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A finite number (``inf`` and ``nan`` are refused)."""
    return _number(text)


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ≥ 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}")
    return value


def float_list(text: str) -> list[float]:
    """``1,3,10`` → ``[1.0, 3.0, 10.0]``: finite numbers, at least one."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts) or not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1,3,10, got {text!r}")
    try:
        return [_number(part) for part in parts]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number from 1 to :data:`MAX_COUNT`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a positive integer up to {MAX_COUNT}, got {value}")
    return value


def positive_int_list(text: str) -> list[int]:
    """``100,1000`` → ``[100, 1000]``: positive integers, at least one."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 100,1000, got {text!r}"
        ) from None
    if min(values) < 1 or max(values) > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected positive integers up to {MAX_COUNT}, got {text!r}")
    return values


def seed(text: str) -> int:
    """A random seed: a whole number in [0, 2⁶³)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a seed between 0 and 2^63 - 1, got {value}")
    return value


def threads(text: str) -> int:
    """A thread count in [1, MAX_THREADS]."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads, got {value}")
    return value


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda``; asking for CUDA without a GPU is a clear error, not a crash later."""
    if name == "cuda" and not torch.cuda.is_available():
        raise OptsdeError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def add_run_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    """``--device --dtype --seed --out --overwrite --resume --no-progress --threads``, common to every run."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to simulate")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="floating point")
    parser.add_argument("--seed", type=seed, default=0, help="same seed, same numbers")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"results directory, created afresh (default: {default_out})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier optsde result in --out (a directory holding other files is never replaced)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its checkpoints (same flags; same numbers as an "
        "uninterrupted run)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress output on stderr",
    )
    add_threads_flag(parser)


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=threads,
        default=1,
        help="CPU threads for torch (1 suits the many small tensors of a simulation; "
        "raise it for large networks)",
    )


def apply_threads(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)


def show_progress(args: argparse.Namespace) -> bool:
    """Whether long runs report progress (a bar on a terminal, else a line every 20 s), unless
    ``--no-progress``."""
    return not args.no_progress


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues an interrupted run: the same flags plus ``--resume``."""
    words = [*argv] if "--resume" in argv else [*argv, "--resume"]
    return shlex.join(["optsde", *words])


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """``["lr=0.01", "nus=1,2"]`` → ``{"lr": "0.01", "nus": "1,2"}``; values are parsed later."""
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptsdeError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set lr=0.01")
        settings[key.strip()] = value.strip()
    return settings
