"""Progress on stderr: a rich bar on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_LINE_INTERVAL_S = 2.0


class Reporter(Protocol):
    def advance(self, n: int = 1, note: str = "") -> None:
        """`note` describes the finished item; plain-line output prints every noted item."""


@contextmanager
def progress(label: str, total: int, enabled: bool) -> Iterator[Reporter]:
    if not enabled:
        yield _Silent()
    elif sys.stderr.isatty():
        with _bar(label, total) as reporter:
            yield reporter
    else:
        yield _Lines(label, total)


class _Silent:
    def advance(self, n: int = 1, note: str = "") -> None:
        pass


class _Lines:
    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.last_print = time.monotonic()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if note or self.done == self.total or now - self.last_print >= _LINE_INTERVAL_S:
            self.last_print = now
            line = f"{self.label} {self.done}/{self.total} {note}".rstrip()
            print(line, file=sys.stderr, flush=True)


class _Bar:
    def __init__(self, bar: Progress, task: int) -> None:
        self.bar = bar
        self.task = task

    def advance(self, n: int = 1, note: str = "") -> None:
        self.bar.advance(self.task, n)


@contextmanager
def _bar(label: str, total: int) -> Iterator[Reporter]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield _Bar(bar, bar.add_task(label, total=total))
