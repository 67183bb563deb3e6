"""Progress of a long loop, readable on a terminal and in a log file alike.

``progress(total, desc, enabled)`` returns a counter with ``update(n)`` and ``close()``:
a tqdm bar when stderr is a terminal; otherwise one plain line on stderr every
``interval`` seconds (``desc: 1200/5000 (24%), 31 s, about 98 s left``), so that a run
under ``nohup``, a job scheduler or a pipe shows it is alive without filling its log
with carriage returns.  Disabled, it does nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from tqdm.auto import tqdm

INTERVAL_S = 20.0
"""Seconds between two plain progress lines."""

_last_line = [time.monotonic()]
"""When the process last printed a plain progress line, or began to be busy: shared by every
counter, so that a run made of many short loops still prints at a steady interval."""

_last_update = [-float("inf")]
"""When any counter last counted: a counter created after a longer idle spell starts the clock
anew, so that an idle process does not print at once when work resumes."""


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """Plain progress lines at a steady interval, counted across every counter of the process, so
    that a run of many short loops (an experiment's simulations) prints one line per interval."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        initial: int = 0,
        interval: float = INTERVAL_S,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.done, self.interval = total, desc, initial, interval
        self.stream = stream if stream is not None else sys.stderr
        self.initial = initial
        self.started = time.monotonic()
        self.printed = False
        if self.started - _last_update[0] > interval:
            _last_line[0] = self.started
        _last_update[0] = self.started

    def update(self, n: int = 1) -> None:
        self.done += n
        now = _last_update[0] = time.monotonic()
        if now - _last_line[0] >= self.interval:
            _last_line[0] = now
            self.printed = True
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.started
        line = f"{self.desc}: {self.done}/{self.total}"
        if self.total > 0:
            line += f" ({self.done / self.total:.0%})"
        line += f", {elapsed:.0f} s"
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        if rate > 0 and self.total > self.done:
            line += f", about {(self.total - self.done) / rate:.0f} s left"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """A last line for a loop that printed any, so the log shows where it ended."""
        if self.printed:
            self._line(time.monotonic())


def progress(total: int, desc: str, enabled: bool = True, *, initial: int = 0) -> Progress:
    """A progress counter for ``total`` units of work named ``desc`` (see the module docstring)."""
    if not enabled:
        return _Silent()
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, leave=False)
    return LineProgress(total, desc, initial=initial)
