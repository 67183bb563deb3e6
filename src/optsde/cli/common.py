"""Flag parsers and checks shared by the subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from optsde.errors import OptsdeError


def register(subparsers: argparse._SubParsersAction) -> None:
    """This module adds no subcommand."""


def float_list(text: str) -> list[float]:
    """``1,3,10`` → ``[1.0, 3.0, 10.0]``, or a one-line error naming the bad element."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 1,3,10, got {text!r}"
        ) from None
    return values


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 100,1000, got {text!r}"
        ) from None
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda``; asking for CUDA without a GPU is a clear error, not a crash later."""
    if name == "cuda" and not torch.cuda.is_available():
        raise OptsdeError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def check_output_dir(out: Path) -> Path:
    """Refuse an output path that cannot become a run directory, before any work is done."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptsdeError(f"--out {out}: a file with that name exists; choose another directory")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise OptsdeError(f"--out {out}: {parent} is not writable; choose another directory")
    return out


def add_run_flags(parser: argparse.ArgumentParser, default_paths: bool = True) -> None:
    """``--device --dtype --seed --out --no-progress``, common to every run."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to simulate")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same numbers (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/NAME)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_flag(parser)


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads for torch (default 1: the many small tensors of a simulation run "
        "fastest on one thread; raise it for large networks)",
    )


def apply_threads(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
