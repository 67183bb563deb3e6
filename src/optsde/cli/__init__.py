"""The ``optsde`` command line: argument parsing and error reporting only, no science.

Each subcommand lives in a module of this package that defines
``register(subparsers)``; its parser sets ``handler(args) -> int``.  Bad input
(an :class:`~optsde.errors.OptsdeError`, or an argparse complaint) becomes one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from optsde import __version__
from optsde.cli.common import HelpFormatter
from optsde.errors import OptsdeError

EXIT_BAD_INPUT = 2


class UsageError(OptsdeError):
    """A command-line flag is malformed."""


class Parser(argparse.ArgumentParser):
    """argparse, but a complaint is one line (``optsde run: error: …``) and exit code 2, and
    every ``--help`` shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        # argparse reads ``--flag=--`` as an empty list without calling the flag's type;
        # none of our types returns an empty list, so an empty list is always that.
        for action in self._actions:
            if action.type is not None and getattr(namespace, action.dest, None) == []:
                self.error(f"argument {'/'.join(action.option_strings)}: expected a value")
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> Parser:
    parser = Parser(prog="optsde", description="Optimizers through the lens of SDEs.")
    parser.add_argument("--version", action="version", version=f"optsde {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    import optsde.cli as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        importlib.import_module(f"{package.__name__}.{module.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``optsde ARGS``: the exit code (0 done, 1 a documented divergence, 2 bad input, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return int(args.handler(args))
    except OptsdeError as exc:
        message = str(exc)
        print(message if message.startswith("optsde") else f"optsde: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("optsde: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
