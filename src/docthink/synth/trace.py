"""Stage 2: page evidence -> a `<think>` trace.

The default (paper 2's second version) drops irrelevant pages and sorts the rest most relevant
first: the first version listed every page ("Page i: irrelevant") and taught students to loop on
"irrelevant". The first version stays available (`style: all_pages`) so that ablation can be rerun,
as does ordering the kept pages by their place in the document (`order: page`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from docthink.questions.rows import Dropped
from docthink.synth.rows import PageEvidence, Trace

TraceStyle = Literal["sorted", "all_pages"]
TraceOrder = Literal["score", "page"]
IRRELEVANT = "irrelevant"  # what the first version wrote for a page below the threshold


def floored_score(score: float, is_source: bool, floor: float) -> float:
    """Source pages are known to be relevant: their score is raised to at least `floor`."""
    return max(score, floor) if is_source else score


def _relevant(e: PageEvidence, threshold: float) -> bool:
    return e.failure is None and e.relevance_score > threshold and bool(e.evidence.strip())


def build_trace(
    qid: str,
    evidence: Sequence[PageEvidence],
    *,
    threshold: float,
    top_k: int,
    style: TraceStyle = "sorted",
    order: TraceOrder = "score",
) -> Trace | Dropped:
    """`sorted`: pages scoring above `threshold` with non-empty evidence, the `top_k` best (ties:
    page order), listed by score or by page. `all_pages`: every page whose request did not fail,
    in document order, those not relevant written as `Page {i}: irrelevant`. Either way each page
    is a `Page {i}:` block, blocks separated by a blank line; no relevant page drops the
    question."""
    relevant = [e for e in evidence if _relevant(e, threshold)]
    if not relevant:
        return Dropped(qid, "trace", "no relevant page")
    if style == "all_pages":
        pages = sorted((e for e in evidence if e.failure is None), key=lambda e: e.position)
        text = "\n\n".join(
            f"Page {e.position}:\n{e.evidence.strip()}" if _relevant(e, threshold)
            else f"Page {e.position}: {IRRELEVANT}"
            for e in pages
        )
        return Trace(qid, tuple(e.position for e in pages), text)
    kept = sorted(relevant, key=lambda e: (-e.relevance_score, e.position))[:top_k]
    if order == "page":
        kept.sort(key=lambda e: e.position)
    text = "\n\n".join(f"Page {e.position}:\n{e.evidence.strip()}" for e in kept)
    return Trace(qid, tuple(e.position for e in kept), text)
