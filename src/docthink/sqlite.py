"""Opening docthink's SQLite files (registry, request cache, render index): autocommit, WAL."""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path


def open_wal(path: Path, timeout_s: float = 60.0) -> sqlite3.Connection:
    """An autocommit connection to `path` in WAL mode, waiting up to `timeout_s` for locks.

    Switching a file to WAL does not wait on SQLite's busy handler: processes opening a new file
    at the same moment fail with "database is locked". They take turns on a sibling lock file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
