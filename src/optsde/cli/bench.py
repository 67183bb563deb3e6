"""``optsde bench``: Euler–Maruyama throughput against torchsde and the discrete optimizer.

``--nn`` is reserved for the per-network benchmark (SDE step against optimizer step),
which will be a second section of this command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optsde.bench import BenchSettings, format_table, run_benchmark, write_json
from optsde.cli.common import int_list, positive_int, resolve_device, resolve_dtype
from optsde.errors import OptsdeError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="Euler–Maruyama throughput of the AdamW SDE against torchsde and the discrete optimizer",
    )
    p.add_argument(
        "--paths", type=int_list, default=[100, 1000, 10_000], help="path counts, e.g. 100,1000,10000"
    )
    p.add_argument("--steps", type=positive_int, default=100, help="EM steps per timed run (default 100)")
    p.add_argument("--dim", type=positive_int, default=10, help="dimension d of the quadratic (default 10)")
    p.add_argument(
        "--repeats", type=positive_int, default=3, help="timed runs per method; best and median kept"
    )
    p.add_argument(
        "--block", type=positive_int, default=None, help="EM steps per compiled call (default 10 CPU, 20 GPU)"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads (default: torch's, one per core)"
    )
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the records as JSON")
    p.add_argument(
        "--no-compile", action="store_true", help="time the eager integrator only (no torch.compile)"
    )
    p.add_argument("--nn", action="store_true", help="per-network benchmark (not yet available)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    if args.nn:
        raise OptsdeError(
            "optsde bench --nn: the network benchmark is not yet available; "
            "`optsde bench` without --nn measures the Euler–Maruyama integrator"
        )
    if args.json is not None and args.json.is_dir():
        raise OptsdeError(f"--json {args.json}: that is a directory; give a file name such as bench.json")
    settings = BenchSettings(
        paths=tuple(args.paths),
        steps=args.steps,
        dim=args.dim,
        device=resolve_device(args.device).type,
        dtype=resolve_dtype(args.dtype),
        repeats=args.repeats,
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
            f"compilation {fast['compile_seconds']:.1f} s, not included in the timings)"
        )
    else:
        reason = fast.get("fallback_reason") or "--no-compile"
        print(f"optsde-sde ran the eager path ({reason})")
    if args.json is not None:
        write_json(records, args.json)
        print(f"wrote {args.json}")
    return 0
