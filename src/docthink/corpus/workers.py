"""Run tasks in worker processes that are allowed to die.

PDFium is not thread-safe and a hostile file can crash it, so PDF work runs in processes. Each
worker holds one task at a time over its own pipe, so when one dies (segfault, SIGKILL, os._exit)
the parent knows exactly which task it held: that task alone fails, with the exit status as its
reason, and a fresh worker takes the next one. (`ProcessPoolExecutor` cannot tell which task broke
the pool: every task in flight fails with it and has to be retried one by one.)
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# forkserver: workers fork from a clean single-threaded server (the parent may run a progress
# thread), and start in milliseconds once the server has imported PDFium.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["docthink.corpus.pdf"])


@dataclass(frozen=True, slots=True)
class WorkerDied:
    exitcode: int

    @property
    def reason(self) -> str:
        if self.exitcode < 0:
            return f"worker_crash: worker killed by {signal.Signals(-self.exitcode).name}"
        return f"worker_crash: worker exited with status {self.exitcode}"


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """The task raised: a bug or an unexpected library error, not a crash."""

    error: str  # "ValueError: ..."
    traceback: str


@dataclass(slots=True)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    task: int | None = None  # index of the task in flight


def run_isolated(
    fn: Callable[[T], R], tasks: Sequence[T], workers: int
) -> Iterator[tuple[int, R | WorkerDied | TaskFailed]]:
    """Yield (task index, outcome) as tasks finish, in completion order. `fn` must be a module-level
    function; tasks and results travel pickled."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    pending = deque(range(len(tasks)))
    pool: list[_Worker] = []
    try:
        while pending or any(w.task is not None for w in pool):
            while len(pool) < workers and len(pending) > sum(w.task is None for w in pool):
                pool.append(_start(fn))
            for index, worker in enumerate(pool):
                if worker.task is None and pending:
                    pool[index] = _assign(fn, worker, pending.popleft(), tasks)
            yield from _collect(pool)
    finally:
        _stop(pool)


def _collect(pool: list[_Worker]) -> Iterator[tuple[int, object]]:
    """Wait for any busy worker to answer or die; a dead one leaves the pool (the caller's loop
    starts a replacement if work remains)."""
    busy = [w for w in pool if w.task is not None]
    ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
    for worker in busy:
        if worker.conn not in ready and worker.process.sentinel not in ready:
            continue
        task = worker.task
        worker.task = None
        try:
            outcome = worker.conn.recv()
        except (EOFError, OSError):  # the pipe closed: the worker is gone
            worker.process.join()
            outcome = WorkerDied(worker.process.exitcode)
            worker.conn.close()
            pool.remove(worker)
        yield task, outcome


def _assign(fn: Callable[[T], R], worker: _Worker, task: int, tasks: Sequence[T]) -> _Worker:
    """Hand a task to an idle worker, or to a fresh one if the idle one died meanwhile."""
    try:
        worker.conn.send(tasks[task])
    except BrokenPipeError:
        worker.process.join()
        worker = _start(fn)
        worker.conn.send(tasks[task])
    worker.task = task
    return worker


def _start(fn: Callable[[T], R]) -> _Worker:
    parent_end, child_end = _CONTEXT.Pipe()
    process = _CONTEXT.Process(target=_serve, args=(child_end, fn), daemon=True)
    process.start()
    child_end.close()
    return _Worker(process, parent_end)


def _stop(pool: list[_Worker]) -> None:
    for worker in pool:
        worker.conn.close()  # an idle worker sees EOF and exits
        if worker.task is not None:  # interrupted mid-task (Ctrl-C, an error in the caller)
            worker.process.kill()
    for worker in pool:
        worker.process.join()


def _serve(conn: Connection, fn: Callable[[T], R]) -> None:
    # Ctrl-C reaches the whole process group; the parent decides, and closes our pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        try:
            outcome: R | TaskFailed = fn(task)
        except Exception as error:  # reported to the parent, which records or raises it
            outcome = TaskFailed(f"{type(error).__name__}: {error}", traceback.format_exc())
        conn.send(outcome)
