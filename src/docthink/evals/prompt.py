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



@dataclass(frozen=True, slots=True)
class JudgeRecord:
    """Which judge model read the responses, with which prompt and token budget: what a report
    says of an LLM extraction or an LLM judge's scoring."""

    model: str
    prompt: str  # the prompt's file name
    prompt_sha256: str
    max_tokens: int

    @classmethod
    def of(cls, model: str, prompt: PromptFile, max_tokens: int) -> JudgeRecord:
        return cls(model, prompt.path.name, prompt.sha256, max_tokens)

    def to_json(self) -> dict[str, object]:
        return {"judge": self.model, "prompt": self.prompt, "prompt_sha256": self.prompt_sha256,
                "max_tokens": self.max_tokens}
