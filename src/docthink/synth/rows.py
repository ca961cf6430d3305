"""Typed rows that flow between the trace stages (their input rows are `questions.rows`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from docthink.core.parts import PageRef

Branch = Literal["vision", "text"]


@dataclass(frozen=True, slots=True)
class PageEvidence:
    qid: str
    position: int  # 1-based position in the question's context
    page: PageRef
    is_source: bool
    evidence: str
    relevance_score: float  # after the source-page floor
    relevant: bool  # relevance_score > 0
    model: str
    prompt_hash: str
    failure: str | None = None  # the reason, when the request failed after its retries


@dataclass(frozen=True, slots=True)
class Trace:
    qid: str
    positions: tuple[int, ...]  # context positions in trace order (most relevant first)
    text: str


@dataclass(frozen=True, slots=True)
class Answer:
    qid: str
    branch: Branch
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    failure: str | None = None
