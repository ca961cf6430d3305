"""The rule-based extractor, the judge's reply parser, and the metrics over scored rows."""

from __future__ import annotations

import hashlib

import pytest

from docthink.evals.benchmarks import BENCHMARKS, RulesScoring
from docthink.evals.data import BenchRow
from docthink.evals.extract import (
    FAILED_TO_EXTRACT,
    extraction_request,
    parse_judge,
    rule_extract,
)
from docthink.evals.metrics import Scored, bootstrap_ci, compute, f1_parts
from docthink.evals.prompt import PromptFile
from docthink.evals.report import Questions, build_report, render_markdown, run_metrics
from docthink.models.base import ChatResult, RequestFailure, Usage

# -- rule-based extraction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "response", "pred"),
    [
        ("How many people work there?", "20,954", "20954"),
        ("What was the revenue, in million euros?", "6,406 million", "6406"),
        ("What percentage came from renewables?", "77.9%", "77.9"),
        ("How much did it cost?", "$ 2,952", "2952"),
        ("How many offices?", "<think>Page 3 lists 4 in 2020 and 7 in 2021.</think>\nThere are 7 offices.", "7"),
        ("How many offices?", "I count 7 offices in 2021 and 4 in 2020, and more.", "I count 7 offices in 2021 and 4 in 2020, and more"),
        ("Who chairs the board?", "Extracted answer: Jane Doe\nAnswer format: String", "Jane Doe"),
        ("Who chairs the board?", "Reasoning...\nFinal answer: **Jane Doe**.", "Jane Doe"),
        ("Which city?", "The answer is U.S.", "U.S."),
        ("Which colours are used?", "The logo uses:\n- dark blue\n- orange", "['dark blue', 'orange']"),
        ("Which colours are used?", "1. red\n2. green\n3. blue", "['red', 'green', 'blue']"),
        ("Which colours are used?", "Answer: ['red', 'green']", "['red', 'green']"),
        ("Is the plant in Ohio?", "Yes, according to page 4.", "Yes"),
        ("Does it list a CEO?", "no", "No"),
        ("Who is the CEO?", "The document does not provide this information.", "Not answerable"),
        ("Who is the CEO?", "Not answerable", "Not answerable"),
        ("Who is the CEO?", "Less well-off.", "Less well-off"),
        ("Who is the CEO?", "First line.\nSecond line, the conclusion.", "Second line, the conclusion"),
    ],
)
def test_rule_extract(question: str, response: str, pred: str) -> None:
    extraction = rule_extract(question, response)
    assert (extraction.pred, extraction.failure) == (pred, None)


def test_rule_extract_fails_when_reasoning_never_closed() -> None:
    extraction = rule_extract("How many?", "<think>Let me count the offices on page")
    assert extraction.pred == FAILED_TO_EXTRACT
    assert extraction.failure == "no answer after the reasoning"


# -- the judge ----------------------------------------------------------------------------------------


def _reply(text: str) -> ChatResult:
    return ChatResult(text, None, Usage(10, 4), "judge", 0.0)


def test_parse_judge_as_the_official_runner() -> None:
    assert parse_judge(_reply("Extracted answer: 10\nAnswer format: Integer")).pred == "10"
    assert parse_judge(_reply("x Extracted answer: ['a', 'b'] Answer format: List")).pred == (
        "['a', 'b']")
    missing = parse_judge(_reply("The answer is 10."))
    assert (missing.pred, missing.failure) == (
        FAILED_TO_EXTRACT, "judge reply has no 'Extracted answer:'")
    failed = parse_judge(RequestFailure("extract", "http 500: boom", 3))
    assert failed.failure == "judge failed: http 500: boom"


def test_extraction_request_follows_the_official_layout(tmp_path) -> None:
    path = tmp_path / "prompt.md"
    path.write_text("Extract.\n\n")  # sent unstripped, hashed as is
    prompt = PromptFile.read(path)
    request = extraction_request(prompt, "How many?", "Seven.", 256)
    assert [(m.role, m.content[0].text) for m in request.messages] == [  # type: ignore[union-attr]
        ("user", "Extract.\n\n"), ("assistant", "\n\nQuestion:How many?\nAnalysis:Seven.\n")]
    assert (request.temperature, request.max_tokens) == (0.0, 256)
    assert prompt.sha256 == hashlib.sha256(b"Extract.\n\n").hexdigest()


# -- metrics ----------------------------------------------------------------------------------------


def row(index: int, answer: str, pages: tuple[int, ...] = (1,), sources: tuple[str, ...] = (),
        fmt: str = "Str", doc_type: str = "Brochure") -> BenchRow:
    return BenchRow(index=index, doc_id="d.pdf", doc_type=doc_type, question=f"q{index}",
                    answer=answer, answer_format=fmt, evidence_pages=pages,  # type: ignore[arg-type]
                    evidence_sources=sources)


def v1(r: BenchRow, pred: str, score: float, tokens: int | None,
       failure: str | None = None) -> Scored:
    """Scored as V1's rules score: answered unless the prediction is `Not answerable`."""
    return Scored(r, pred, score, tokens, failure, answered=pred != "Not answerable")


SCORED = [
    v1(row(0, "a", (1,), ("Chart", "Table"), "Str", "Brochure"), "a", 1.0, 10),
    v1(row(1, "b", (1, 2), ("Chart",), "Int", "Brochure"), "c", 0.5, 20),
    v1(row(2, "c", (), ("Table",), "Str", "Guidebook"), "Not answerable", 0.0, 30),
    v1(row(3, "Not answerable", (), (), "None", "Guidebook"), "Not answerable", 1.0, 40),
    v1(row(4, "Not answerable", (), (), "None", "Guidebook"), "x", 0.0, None, "request failed"),
]


def test_generalized_f1_as_the_official_formula() -> None:
    recall, precision, f1 = f1_parts(SCORED)
    assert recall == pytest.approx(1.5 / 3)  # answerable rows 0, 1, 2
    assert precision == pytest.approx(1.5 / 3)  # rows 0, 1, 4 are not predicted "Not answerable"
    assert f1 == pytest.approx(0.5)
    assert f1_parts(SCORED[:2]) == pytest.approx((0.75, 0.75, 0.75))
    assert f1_parts([SCORED[3]])[2] == 0.0  # no answerable row: undefined, 0


def test_breakdowns_and_counts() -> None:
    m = compute(SCORED, seed=0)
    assert (m.n, m.acc, m.failures) == (5, pytest.approx(0.5), 1)
    assert m.mean_output_tokens == pytest.approx(25.0)  # the failed row has no tokens
    assert list(m.breakdowns) == ["by_page_kind", "by_answer_format", "by_evidence_source",
                                  "by_doc_type"]
    page = {k: (g.acc, g.n) for k, g in m.breakdowns["by_page_kind"].items()}
    assert page == {"single-page": (1.0, 1), "cross-page": (0.25, 2), "unanswerable": (0.5, 2)}
    source = {k: (g.acc, g.n) for k, g in m.breakdowns["by_evidence_source"].items()}
    assert source == {"Chart": (0.75, 2), "Table": (0.5, 2)}  # row 0 counts under both labels
    assert {k: g.n for k, g in m.breakdowns["by_answer_format"].items()} == {
        "Int": 1, "None": 2, "Str": 2}
    assert {k: g.n for k, g in m.breakdowns["by_doc_type"].items()} == {
        "Brochure": 2, "Guidebook": 3}


def test_bootstrap_interval_is_reproducible_and_brackets_accuracy() -> None:
    scores = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_ci(scores, seed=3)  # type: ignore[misc]
    assert (low, high) == bootstrap_ci(scores, seed=3)
    assert bootstrap_ci(scores, seed=4) != (low, high)
    assert low < 0.3 < high and 0.18 < low and high < 0.42
    assert bootstrap_ci([1.0] * 5, seed=0) == (1.0, 1.0)
    assert bootstrap_ci([], seed=0) is None


def test_report_puts_modes_side_by_side_and_flattens_metrics(tmp_path) -> None:
    from docthink.evals.data import Benchmark

    data = tmp_path / "samples.json"
    data.write_text("[]")
    bench = Benchmark(data, "0" * 64, "samples.json", tuple(s.row for s in SCORED))
    cot = [v1(s.row, s.pred, 1.0, 100) for s in SCORED]
    report = build_report(kind=BENCHMARKS["mmlongbench-doc"], data=bench,
                          scored={"plain": SCORED, "cot": cot}, seed=0,
                          questions=Questions.of(5, {10: "pdf missing", 11: "pdf missing"}),
                          scoring=RulesScoring(), model="m")
    written = report.to_json()
    assert written["acc"] == pytest.approx(0.5) and written["modes"]["cot"]["acc"] == 1.0
    assert written["rows"][1] == {"index": 1, "score": 0.5}
    assert written["questions"] == {"evaluated": 5, "skipped": 2,
                                    "skipped_reasons": {"pdf missing": 2}}
    flat = run_metrics(report)
    assert flat["acc"] == pytest.approx(0.5) and flat["acc_cot"] == 1.0
    assert flat["mean_output_tokens_cot"] == 100 and flat["skipped"] == 2
    assert flat["benchmark"] == "mmlongbench-doc"
    markdown = render_markdown(report)
    assert "| metric | plain | cot |" in markdown
    assert "| accuracy | 50.0 | 100.0 |" in markdown
    assert "| Chart | 2 | 75.0 | 100.0 |" in markdown
