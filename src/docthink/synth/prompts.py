"""Prompt files under `synth/prompts/`, versioned by content hash: the hash goes into the run
record, and the prompt text itself into every request's cache key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@cache
def prompt(name: str) -> Prompt:
    return Prompt(name, (PROMPT_DIR / f"{name}.txt").read_text(encoding="utf-8").strip())


def prompt_hashes() -> dict[str, str]:
    return {p.stem: prompt(p.stem).sha256[:16] for p in sorted(PROMPT_DIR.glob("*.txt"))}
