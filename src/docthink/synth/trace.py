"""Stage 2: page evidence -> a `<think>` trace.

Irrelevant pages are dropped and the rest sorted most relevant first: an earlier design that
listed every page ("Page i: irrelevant") taught students to loop on "irrelevant"."""

from __future__ import annotations

from collections.abc import Sequence

from docthink.questions.rows import Dropped
from docthink.synth.rows import PageEvidence, Trace


def floored_score(score: float, is_source: bool, floor: float) -> float:
    """Source pages are known to be relevant: their score is raised to at least `floor`."""
    return max(score, floor) if is_source else score


def build_trace(
    qid: str, evidence: Sequence[PageEvidence], *, threshold: float, top_k: int
) -> Trace | Dropped:
    """Pages scoring above `threshold` with non-empty evidence, sorted by score (ties: page order),
    cut to `top_k`, written as `Page {i}:` blocks separated by a blank line."""
    kept = sorted(
        (
            e
            for e in evidence
            if e.failure is None and e.relevance_score > threshold and e.evidence.strip()
        ),
        key=lambda e: (-e.relevance_score, e.position),
    )[:top_k]
    if not kept:
        return Dropped(qid, "trace", "no relevant page")
    text = "\n\n".join(f"Page {e.position}:\n{e.evidence.strip()}" for e in kept)
    return Trace(qid, tuple(e.position for e in kept), text)
