"""Artifact identity: the digest of a file or a folder, and the algorithm that made it.

New artifacts are hashed with BLAKE3 (the `blake3` package, a binding of the Rust crate):
0.29 CPU-s/GB on the development machine against 0.64 for sha256 (with SHA-NI), and it spreads
one file over every core. Records written before (registry migration 5) say sha256, and are
checked with it: every digest travels with its algorithm's name.

A folder's digest is the digest of its sorted `relative/path\\0file digest\\n` lines, so it changes
iff a file in it changes. Content-addressed stores (corpus texts and images, request caches) are
keyed by sha256 of their own and do not use this module: their keys are not artifact identity.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import blake3

ALGORITHM = "blake3"  # new artifacts
ALGORITHMS = ("blake3", "sha256")
_READ = 8 << 20  # bytes per read: big enough for BLAKE3's threads to share one update


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def hasher(algorithm: str = ALGORITHM, *, threads: bool = False) -> Hasher:
    """An incremental hasher; `threads`: BLAKE3 may split each update over every core (worth it
    for updates of megabytes, when nothing else keeps the cores busy)."""
    if algorithm == "blake3":
        return blake3.blake3(max_threads=blake3.blake3.AUTO if threads else 1)
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown digest algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")


def bytes_digest(data: bytes | memoryview, algorithm: str = ALGORITHM) -> str:
    h = hasher(algorithm)
    h.update(data)
    return h.hexdigest()


def file_digest(path: Path, algorithm: str = ALGORITHM) -> str:
    h = hasher(algorithm, threads=True)
    buffer = bytearray(_READ)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


def folder_digest(file_digests: Mapping[str, str], algorithm: str = ALGORITHM) -> str:
    """The digest of a folder from its files' digests (relative posix path -> digest)."""
    h = hasher(algorithm)
    for name in sorted(file_digests):
        h.update(f"{name}\0{file_digests[name]}\n".encode())
    return h.hexdigest()


def folder_files(folder: Path, ignore: Collection[str] = ()) -> list[Path]:
    """The files a folder's digest covers, sorted (files named in `ignore` left out)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in ignore)


def tree_digest(path: Path, algorithm: str = ALGORITHM,
                ignore: Collection[str] = ()) -> tuple[str, int]:
    """Digest and total size of a file, or of a folder (see the module docstring)."""
    if path.is_file():
        return file_digest(path, algorithm), path.stat().st_size
    files = folder_files(path, ignore)
    digests = {f.relative_to(path).as_posix(): file_digest(f, algorithm) for f in files}
    return folder_digest(digests, algorithm), sum(f.stat().st_size for f in files)


# -- reusing a digest for a file that did not change ---------------------------------------------

QUIET_NS = 2 * 10**9


@dataclass(frozen=True)
class Fingerprint:
    """What changes when a file's bytes can have changed. The kernel sets ctime to the current time
    on every write, truncate, chmod or rename, and nothing can set it back (unlike mtime:
    `touch -d`, `cp -p`), so a file whose fingerprint is unchanged was not written since."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, info: os.stat_result) -> Fingerprint:
        return cls(info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)


@dataclass(frozen=True)
class FileDigest:
    """A file's digest, with its fingerprint when the digest can be reused while the file keeps
    it (None: the file was not quiet when hashed, see `quiet`)."""

    path: str  # absolute
    algorithm: str
    digest: str
    fingerprint: Fingerprint | None


def fingerprint(path: Path) -> Fingerprint:
    return Fingerprint.of(path.stat())


def quiet(before: Fingerprint, after: Fingerprint, looked_ns: int) -> bool:
    """Whether a digest taken between `before` (looked at at `looked_ns`, wall clock) and `after`
    can be reused while the fingerprint stays `after`: the file did not change while it was hashed,
    nor in the QUIET_NS before. A file
    written in the same clock tick as it was looked at could change again without its ctime moving
    (timestamps are coarse); one quiet for seconds cannot (as git's "racily clean" rule)."""
    return before == after and after.ctime_ns < looked_ns - QUIET_NS
