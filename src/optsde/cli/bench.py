"""``optsde bench``: Euler–Maruyama throughput against torchsde and the discrete optimizer.

``--nn`` is the per-network benchmark instead (:mod:`optsde.bench_nn`): one SDE step on an
estimation set of ``n`` examples against one optimizer step on a minibatch of ``n``, per
model and SDE, with the per-example and the projection variance paths, and peak memory.
Flags of one benchmark are refused with the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from optsde.bench import BenchSettings, format_table, run_benchmark
from optsde.bench_nn import NNBenchSettings, format_nn_table, run_nn_benchmark
from optsde.cli.common import positive_int, positive_int_list, resolve_device, resolve_dtype, seed, threads
from optsde.errors import OptsdeError
from optsde.results import check_new_file, write_new_file


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="Euler–Maruyama throughput of the AdamW SDE against torchsde and the discrete optimizer",
    )
    p.add_argument(
        "--paths",
        type=positive_int_list,
        default=None,
        help="path counts, e.g. 100,1000,10000 (the default); with --nn one count (default 16)",
    )
    p.add_argument("--steps", type=positive_int, default=None, help="EM steps per timed run (default 200)")
    p.add_argument("--dim", type=positive_int, default=None, help="dimension d of the quadratic (default 10)")
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="timed runs per method; best and median kept (default 3; with --nn timed steps, default 5)",
    )
    p.add_argument(
        "--block", type=positive_int, default=None, help="EM steps per compiled call (default 16 CPU, 20 GPU)"
    )
    p.add_argument(
        "--records",
        type=positive_int,
        default=None,
        help="record points of the optsde-simulate run, stratified as in experiments (default 10)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to time")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="floating point")
    p.add_argument("--seed", type=seed, default=0, help="random seed")
    p.add_argument(
        "--threads", type=threads, default=None, help="CPU threads (default: torch's, one per core)"
    )
    p.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="write the records as JSON to a new file FILE"
    )
    p.add_argument(
        "--no-compile", action="store_true", help="time the eager integrator only (no torch.compile)"
    )
    p.add_argument(
        "--nn", action="store_true", help="per-network benchmark: one SDE step against one optimizer step"
    )
    p.add_argument(
        "--models",
        default=None,
        help="with --nn: comma-separated models among mlp,cnn,transformer,resnet (default all four)",
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="with --nn: examples in the estimation set and in the minibatch (default 256)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=bench)


NN_ONLY = ("models", "n")
EM_ONLY = ("steps", "dim", "block", "records")


def _write_records(records: list[dict[str, Any]], path: Path | None) -> None:
    if path is not None:
        write_new_file(path, json.dumps(records, indent=2) + "\n", "--json")
        print(f"wrote {path}")


def bench(args: argparse.Namespace) -> int:
    if args.json is not None:
        check_new_file(args.json, "--json")
    if args.nn:
        return bench_nn(args)
    given = [name for name in NN_ONLY if getattr(args, name) is not None]
    if given:
        raise OptsdeError(f"--{given[0]} belongs to the network benchmark; add --nn")
    settings = BenchSettings(
        paths=tuple(args.paths or (100, 1000, 10_000)),
        steps=args.steps or 200,
        records=args.records or 10,
        dim=args.dim or 10,
        device=resolve_device(args.device).type,
        dtype=resolve_dtype(args.dtype),
        repeats=args.repeats or 3,
        block=args.block,
        compile=not args.no_compile,
        seed=args.seed,
        threads=args.threads,
    )
    progress = None if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
    records = run_benchmark(settings, report=progress)
    print(format_table(records))
    fast = next(r for r in records if r["method"] == "optsde-sde")
    if fast["path"] == "compiled":
        print(
            f"optsde-sde ran the compiled path ({fast['noise']} noise, {fast['block']} EM steps per call; "
            f"first run with compilation {fast['warmup_seconds']:.1f} s, not included in the timings)"
        )
    else:
        reason = fast.get("fallback_reason") or "--no-compile"
        print(f"optsde-sde ran the eager path ({reason})")
    _write_records(records, args.json)
    return 0


def bench_nn(args: argparse.Namespace) -> int:
    """``optsde bench --nn``: the table, the ratio lines, and the JSON records."""
    given = [name for name in EM_ONLY if getattr(args, name) is not None]
    if args.no_compile:
        given.append("no-compile")
    if given:
        raise OptsdeError(f"--{given[0]} belongs to the Euler–Maruyama benchmark; drop it or drop --nn")
    if args.paths is not None and len(args.paths) != 1:
        raise OptsdeError(f"--paths with --nn takes one path count, e.g. --paths 16; got {args.paths}")
    models = None if args.models is None else tuple(m.strip() for m in args.models.split(",") if m.strip())
    settings = NNBenchSettings(
        **({"models": models} if models is not None else {}),
        n=args.n or 256,
        paths=args.paths[0] if args.paths else 16,
        repeats=args.repeats or 5,
        device=resolve_device(args.device).type,
        dtype=resolve_dtype(args.dtype),
        seed=args.seed,
        threads=args.threads,
    )
    progress = None if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
    records = run_nn_benchmark(settings, report=progress)
    print(format_nn_table(records))
    _write_records(records, args.json)
    return 0
