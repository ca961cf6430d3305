"""Where a corpus keeps what, and the two ways it writes: atomically (temp file + rename) and by
appending whole lines to a journal."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from docthink.core.errors import UserError


class CorpusError(UserError):
    """A folder that is not the corpus asked for: missing, not a corpus, another folder's, or
    being written by another ingest."""


@dataclass(frozen=True, slots=True)
class Layout:
    """The files of a corpus folder."""

    root: Path

    @property
    def info(self) -> Path:  # corpus.json: format version and source folder
        return self.root / "corpus.json"

    @property
    def manifest(self) -> Path:  # one JSON line per input file, rewritten atomically
        return self.root / "manifest.jsonl"

    @property
    def journal(self) -> Path:  # manifest lines of the run in progress; gone after a clean finish
        return self.root / "journal.jsonl"

    @property
    def texts(self) -> Path:  # texts/ab/<pdf sha256>.json
        return self.root / "texts"

    @property
    def images(self) -> Path:  # images/ab/<image sha256>.png|.jpg
        return self.root / "images"

    @property
    def render_index(self) -> Path:  # SQLite: (pdf sha256, page, policy key) -> image sha256
        return self.root / "renders.sqlite"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def lock(self) -> Path:
        return self.root / ".ingest.lock"


def sharded(folder: Path, sha256: str, suffix: str) -> Path:
    return folder / sha256[:2] / f"{sha256}{suffix}"


def atomic_write(path: Path, data: bytes, tmp_dir: Path, *, durable: bool = False) -> None:
    """Readers see the old file or the new one, never a part. `durable` adds fsync, for files whose
    loss after a power cut would lose finished work (the manifest); a SIGKILL needs no fsync."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets `sweep_tmp` tell an abandoned temp file from one being written.
    tmp = tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(tmp, path)


def write_once(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Content-addressed files never change, so an existing one is already right."""
    if not path.exists():
        atomic_write(path, data, tmp_dir)


def sweep_tmp(tmp_dir: Path) -> None:
    """Remove temp files whose writer died (killed mid-write)."""
    if not tmp_dir.is_dir():
        return
    for tmp in tmp_dir.glob("*.tmp"):
        if not _pid_alive(int(tmp.name.split("-", 1)[0])):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Journal:
    """Append-only JSON lines, one write(2) per line, fsynced: a SIGKILL (or power cut) loses at
    most the line being written, which readers drop because it lacks its newline."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, line: bytes) -> None:
        os.write(self._fd, line + b"\n")
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """One ingest per corpus at a time; the kernel drops the lock when its holder dies."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorpusError(
                f"another ingest is writing {path.parent} (it holds {path})"
            ) from None
        yield
    finally:
        os.close(fd)
