"""Prompt files, versioned by content hash: the hash goes into the run record, and the prompt text
itself into every request's cache key. Each stage package keeps its prompts in its own
`prompts/` folder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class PromptFolder:
    path: Path

    def __getitem__(self, name: str) -> Prompt:
        return _read(self.path / f"{name}.txt")

    def hashes(self) -> dict[str, str]:
        """name -> first 16 hex digits of its sha256, for every prompt in the folder."""
        return {p.stem: self[p.stem].sha256[:16] for p in sorted(self.path.glob("*.txt"))}


@cache
def _read(path: Path) -> Prompt:
    return Prompt(path.stem, path.read_text(encoding="utf-8").strip())
