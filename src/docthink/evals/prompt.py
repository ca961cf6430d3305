"""Judge prompts are files under `evals/prompts/` (or a path the recipe gives), sent exactly as
written and named in reports by file name and sha256, so a score says which prompt made it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True, slots=True)
class PromptFile:
    path: Path
    text: str  # exactly as in the file: the official runner sends its prompt unstripped

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @classmethod
    def read(cls, path: Path) -> PromptFile:
        return cls(path, path.read_text(encoding="utf-8"))

    def record(self) -> dict[str, str]:
        return {"prompt": self.path.name, "prompt_sha256": self.sha256}
