"""sha256 of inputs and outputs from the bytes the merge already holds in memory.

Hashing costs more CPU than the merge arithmetic here (~0.9 CPU-s/GB), so nothing is read
twice: inputs are hashed as the merge reads them (in file order: the merge walks the base in
file order and a tuned checkpoint saved by the same code has the same order) and outputs as
they are written. An input not read in file order is hashed from disk at the end.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class InputHash:
    """sha256 of a safetensors file, fed with the byte ranges the merge reads."""

    def __init__(self, path: Path) -> None:
        self.path, self.size = path, path.stat().st_size
        self.sha, self.pos, self.in_order = hashlib.sha256(), 0, True
        with open(path, "rb") as f:
            prefix = f.read(8)
            self.feed(0, memoryview(prefix + f.read(struct.unpack("<Q", prefix)[0])))

    def feed(self, offset: int, data: memoryview) -> None:
        """Bytes at `offset`; ranges already hashed are skipped, a range past a gap ends feeding."""
        if offset > self.pos:
            self.in_order = False
        if self.in_order and offset + len(data) > self.pos:
            self.sha.update(data[self.pos - offset :])
            self.pos = offset + len(data)

    def hexdigest(self) -> str:
        if self.in_order and self.pos == self.size:
            return self.sha.hexdigest()
        return file_sha256(self.path)
