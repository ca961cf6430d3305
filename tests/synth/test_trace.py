"""Stage 2 rules: threshold, order, top-K, `Page {i}:` blocks, drops."""

from __future__ import annotations

from docthink.core.parts import PageRef
from docthink.questions.rows import Dropped
from docthink.synth.rows import PageEvidence, Trace
from docthink.synth.trace import build_trace, floored_score


def ev(position: int, score: float, text: str = "", *, failure: str | None = None) -> PageEvidence:
    return PageEvidence(
        qid="q", position=position, page=PageRef("d.pdf", position), is_source=False,
        evidence=text or f"evidence of page {position}", relevance_score=score,
        relevant=score > 0, model="m", prompt_hash="h", failure=failure,
    )


def test_keeps_pages_above_threshold_sorted_by_score_then_page_order() -> None:
    rows = [ev(1, 0.0), ev(2, 7.5), ev(3, 1.0), ev(4, 9.0), ev(5, 7.5), ev(6, 1.01)]
    trace = build_trace("q", rows, threshold=1.0, top_k=16)
    assert isinstance(trace, Trace)
    # 1.0 is not above the threshold; ties (7.5) keep page order
    assert trace.positions == (4, 2, 5, 6)
    assert trace.text.split("\n\n")[0] == "Page 4:\nevidence of page 4"
    assert trace.text.count("Page ") == 4


def test_top_k_cuts_the_least_relevant() -> None:
    rows = [ev(i, float(i % 10) + 0.5) for i in range(1, 41)]
    trace = build_trace("q", rows, threshold=1.0, top_k=5)
    assert isinstance(trace, Trace)
    # four pages score 9.5; the fifth place goes to the first of the 8.5 ties
    assert trace.positions == (9, 19, 29, 39, 8)


def test_empty_evidence_and_failed_pages_are_skipped() -> None:
    rows = [ev(1, 8.0, "   "), ev(2, 9.0, failure="timeout"), ev(3, 5.0)]
    trace = build_trace("q", rows, threshold=1.0, top_k=16)
    assert isinstance(trace, Trace) and trace.positions == (3,)


def test_question_without_relevant_page_is_dropped_with_reason() -> None:
    outcome = build_trace("q", [ev(1, 0.0), ev(2, 0.5)], threshold=1.0, top_k=16)
    assert outcome == Dropped("q", "trace", "no relevant page")


def test_source_floor() -> None:
    assert floored_score(2.0, True, 6.0) == 6.0
    assert floored_score(8.5, True, 6.0) == 8.5
    assert floored_score(2.0, False, 6.0) == 2.0


def test_first_version_lists_every_page_in_document_order_irrelevant_ones_marked() -> None:
    rows = [ev(3, 0.0), ev(1, 7.5), ev(2, 1.0), ev(4, 9.0, "  "), ev(5, 2.0, failure="timeout")]
    trace = build_trace("q", rows, threshold=1.0, top_k=1, style="all_pages")
    assert isinstance(trace, Trace)
    # top_k does not apply; a failed page is left out, not called irrelevant
    assert trace.positions == (1, 2, 3, 4)
    assert trace.text == ("Page 1:\nevidence of page 1\n\nPage 2: irrelevant\n\n"
                          "Page 3: irrelevant\n\nPage 4: irrelevant")
    assert build_trace("q", [ev(1, 0.5)], threshold=1.0, top_k=16, style="all_pages") == Dropped(
        "q", "trace", "no relevant page")


def test_order_by_page_keeps_the_same_top_k() -> None:
    rows = [ev(i, float(i % 10) + 0.5) for i in range(1, 41)]
    by_score = build_trace("q", rows, threshold=1.0, top_k=5)
    by_page = build_trace("q", rows, threshold=1.0, top_k=5, order="page")
    assert isinstance(by_score, Trace) and isinstance(by_page, Trace)
    assert by_page.positions == (8, 9, 19, 29, 39) == tuple(sorted(by_score.positions))
    assert by_page.text.split("\n\n")[0] == "Page 8:\nevidence of page 8"
