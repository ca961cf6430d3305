"""The worker pool: a dying worker fails only its own task; an abandoned run leaves no workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from docthink.corpus.workers import TaskFailed, WorkerDied, run_isolated


def crash_on_three_raise_on_five(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 5:
        raise ValueError("five")
    time.sleep(0.02)  # keep both workers busy at once
    return x * 10


def note_pid_then_sleep(task: tuple[str, float]) -> int:
    """Leave this worker's pid in `folder`; the 0-second task returns once both workers have."""
    folder, seconds = task
    Path(folder, str(os.getpid())).touch()
    while seconds == 0 and len(list(Path(folder).iterdir())) < 2:
        time.sleep(0.01)
    time.sleep(seconds)
    return os.getpid()


def test_each_failure_is_attributed_to_its_own_task():
    outcomes = dict(run_isolated(crash_on_three_raise_on_five, list(range(10)), workers=2))
    assert outcomes.pop(3) == WorkerDied(-signal.SIGKILL)
    failed = outcomes.pop(5)
    assert isinstance(failed, TaskFailed) and failed.error == "ValueError: five"
    assert 'raise ValueError("five")' in failed.traceback
    assert outcomes == {x: x * 10 for x in range(10) if x not in (3, 5)}


def test_leaving_a_run_early_stops_its_workers(tmp_path: Path):
    started = time.monotonic()
    tasks = [(str(tmp_path), 0.0), (str(tmp_path), 60.0)]
    for _, first_pid in run_isolated(note_pid_then_sleep, tasks, workers=2):  # noqa: B007
        break  # the caller stops listening while the second task still sleeps
    assert time.monotonic() - started < 20
    pids = {int(p.name) for p in tmp_path.iterdir()}
    assert first_pid in pids and len(pids) == 2
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
