"""The offline extractive teacher: docthink's embedded default model.

It answers docthink's requests from the PDF *text layer*, so the whole pipeline runs on a laptop
with no server and no weights. It is a retrieval baseline, not a vision-language model: an image
part is read as the text layer of the page it shows (its `PageRef`), never as pixels, and a page
without a text layer is reported as unreadable rather than irrelevant.

Text is cut into units: lines of a page, with wrapped prose lines re-joined and split into sentences
(tables stay one row per unit). Terms are lowercased, lightly stemmed words and numbers minus
stopwords and question boilerplate.

Evidence (`response_model=EvidenceReply`), for question terms Q with weights w(t) = idf(t):
- idf is the BM25 idf over the pages of the page's document,
  idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)), N = pages with text, so a term printed on
  every page (a company name in the header) weighs almost nothing. It depends on the document only,
  never on which requests came before.
- cov(S) = sum of w(t) for t in Q found in S / sum of w(t) over Q: the idf-weighted share of the
  question a text S covers.
- lex = 0.6 * max over windows of 3 consecutive units of cov(window) + 0.4 * cov(page).
- minilm adds sem = clip((cos_max - 0.3) / (0.75 - 0.3), 0, 1), cos_max the best cosine between the
  question and a unit, and uses 0.5 * lex + 0.5 * sem.
- relevance_score = 10 * strength, rounded to 2 decimals: 10 when one window holds every question
  term, 0 for a page with no question term (bm25) or no term and no close unit (minilm).
- evidence = the top units (BM25 over units with the same idf, k1=1.2, b=0.75; with minilm
  0.5 * unit cov + 0.5 * unit sem), quoted verbatim one per line in page order, at most 3 units and
  120 words.

Answers (no `response_model`, or `ShortAnswer`): the context is the page text of every image part
(the vision branch) plus every user text part before the question (the text branch: a `Page {i}:`
trace); idf is computed over the context's units.
- A question made of numbered parts, "... (1) <question> (2) <question>", is answered part by part
  over the same context: the sum of the parts' numbers when the lead-in asks for a sum, else the
  parts' answers as a Python list literal in order; `Not answerable` if any part is.
- A cloze question (a quoted statement with a `___` blank) is answered by aligning the statement's
  words around the blank (up to 5 on each side) with a unit of the context: the words in the
  blank's place. A statement found nowhere is `Not answerable`: the fact is not in the context.
- Otherwise the best unit maximises lex = 0.5 * cov(unit) + 0.5 * cov(its window) (minilm:
  0.5 * lex + 0.5 * unit sem), ties broken by BM25, then position. If that window covers under 0.3
  of the question's idf weight, the answer is `Not answerable`, in both modes: MiniLM's cosine
  follows shared names more than the fact asked for, so it never vouches for an answer alone.
  Then: a numeric question (how many/much, percentage, year, "in int format", ...) that names a
  year, over a table row (a label, then k numbers) below a header line ending in k years that
  include it, gets the row's cell in that year's column; else the number of the unit (else of its
  window) nearest to the matched question terms, skipping numbers the question states and
  preferring the kind asked for (a year, a percentage, else not a year); a yes/no question gets
  Yes/No only if the unit alone covers the whole question (No when exactly one of question and
  unit is negated), else the unit; a "who" question gets the nearest run of capitalised words not
  in the question; anything else gets the unit (at most 40 words around the matched terms).

Usage is counted in whitespace-separated tokens: prompt_tokens = the request's text parts plus the
text layer read for each image part; completion_tokens = the returned text (the JSON for structured
output). The document-wide pass that builds the idf is cached and not counted, so counts do not
depend on call order. Temperature and seed are ignored: same request, same output.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Protocol

import numpy as np

from docthink.core.embedding import EmbeddingUnavailable, minilm, model_dir, unavailable
from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.core.vocab import NOT_ANSWERABLE
from docthink.models.base import ChatRequest, ChatResult, RequestFailed, Usage, UsageMeter
from docthink.models.specs import TeacherSpec
from docthink.models.tasks import EvidenceReply, ShortAnswer

NO_EVIDENCE = "This page does not address the question."
NO_TEXT_LAYER = "This page has no text layer, so the offline teacher cannot read it."

WINDOW = 3  # consecutive units counted together: a table row and its header, a sentence pair
WINDOW_WEIGHT = 0.6  # lex = 0.6 * best window coverage + 0.4 * page coverage
LEX_WEIGHT = 0.5  # minilm: strength = 0.5 * lex + 0.5 * sem
COS_FLOOR, COS_FULL = 0.3, 0.75  # MiniLM cosine mapped linearly to sem in [0, 1]
K1, B = 1.2, 0.75
EVIDENCE_UNITS, EVIDENCE_WORDS = 3, 120
MAX_UNIT_WORDS = 50
ANSWERABLE_COVERAGE = 0.3
YES_NO_COVERAGE = 0.99
SPAN_WORDS = 40
DOC_CACHE, UNIT_CACHE, EMBED_CACHE = 32, 4096, 512  # documents, page texts, unit lists


class PageTextSource(Protocol):
    """The text layer of PDF pages; the corpus implements it.

    Called on the event loop's thread, so both should be cheap (text stored at ingest)."""

    def page_text(self, ref: PageRef) -> str: ...

    def n_pages(self, doc_id: str) -> int: ...


# -- text ---------------------------------------------------------------------------------------

_STOPWORD_TEXT = """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each either few for
    from further had has have having he her here hers herself him himself his how i if in into
    is it its itself just me more most my myself neither no nor not of off on once only or other
    our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom whose why will with would you your yours yourself
    yourselves according document documents report reports page pages question given mention
    mentioned show shown shows provided described listed stated many much among based please
    tell list table
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_NEGATIONS = frozenset({"no", "not", "never", "none", "nor", "neither", "cannot"})

# A number as printed: 1,234.5 / $ 2,952 / 37.2 % / (0.3)% / 45 percent / 1.2 billion.
_NUMBER = re.compile(
    r"(?<![\w.,])\(?[$€£]?\s?\d+(?:,\d{3})*(?:\.\d+)?\)?"
    r"(?:\s?%|\s(?:percent|million|billion|thousand)\b)?",
    re.IGNORECASE,
)
_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“‘(\[]?[A-Z0-9])")
# A page label or bare page number (a lone year such as a table header "2023" is kept).
_PAGE_LABEL = re.compile(r"(?:page\s*\d+|\d{1,3})(?:\s*(?:of|/)\s*\d+)?:?", re.IGNORECASE)
_QUOTE_LINE = re.compile(r'^[-•·*]?\s*"(.*)"$')


def _stem(word: str) -> str:
    if word[0].isdigit():
        return word.replace(",", "")
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def terms(text: str) -> tuple[str, ...]:
    """Content terms of `text` in order: lowercased, stemmed, without stopwords."""
    return tuple(
        _stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1
    )


@dataclass(frozen=True, slots=True)
class Unit:
    text: str
    terms: tuple[str, ...]


def _continues(previous: str, line: str) -> bool:
    """Whether `line` is the wrapped continuation of `previous` (prose, not a table row)."""
    if previous.endswith((".", "!", "?", ":", ";")):
        return False
    if line[0].islower() or previous.endswith(("-", ",")):
        return True
    return len(previous) >= 40 and previous[-1].isalpha() and previous[-1].islower()


def _chunks(sentence: str) -> list[str]:
    words = sentence.split()
    return [" ".join(words[i : i + MAX_UNIT_WORDS]) for i in range(0, len(words), MAX_UNIT_WORDS)]


@lru_cache(maxsize=UNIT_CACHE)
def split_units(text: str) -> tuple[Unit, ...]:
    """Cut a page (or a trace) into quotable units; bare page labels and empty lines are dropped."""
    text = text.replace("\x02\r\n", "").replace("\x02\n", "").replace("\x02", "")
    blocks: list[str] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        quoted = _QUOTE_LINE.match(line)
        line = quoted.group(1) if quoted else line
        if not line or _PAGE_LABEL.fullmatch(line) or line in (NO_EVIDENCE, NO_TEXT_LAYER):
            continue
        if blocks and not quoted and _continues(blocks[-1], line):
            blocks[-1] = f"{blocks[-1]} {line}"
        else:
            blocks.append(line)
    return tuple(
        Unit(chunk, terms(chunk))
        for block in blocks
        for sentence in _SENTENCE_END.split(block)
        for chunk in _chunks(sentence)
    )


# -- lexical scoring ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Idf:
    n: int
    df: dict[str, int]

    @classmethod
    def over(cls, collections: Sequence[set[str]]) -> Idf:
        df: dict[str, int] = {}
        for collection in collections:
            for term in collection:
                df[term] = df.get(term, 0) + 1
        return cls(len(collections), df)

    def __call__(self, term: str) -> float:
        df = self.df.get(term, 0)  # a term absent from the collection is simply rare
        return math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))


def coverage(weights: dict[str, float], found: set[str]) -> float:
    """Idf-weighted share of the question's terms present in `found`."""
    total = sum(weights.values())
    return sum(w for t, w in weights.items() if t in found) / total if total else 0.0


def window_coverages(weights: dict[str, float], units: Sequence[Unit]) -> list[float]:
    """Coverage of the window of `WINDOW` units centred on each unit."""
    half = WINDOW // 2
    return [
        coverage(weights, {t for u in units[max(0, i - half) : i + half + 1] for t in u.terms})
        for i in range(len(units))
    ]


def bm25(weights: dict[str, float], unit: Unit, avg_len: float) -> float:
    norm = K1 * (1.0 - B + B * len(unit.terms) / avg_len)
    score = 0.0
    for term, w in weights.items():
        tf = unit.terms.count(term)
        if tf:
            score += w * tf * (K1 + 1.0) / (tf + norm)
    return score


def _avg_len(units: Sequence[Unit]) -> float:
    return max(1.0, sum(len(u.terms) for u in units) / max(1, len(units)))


@dataclass(frozen=True, slots=True)
class DocStats:
    idf: Idf
    avg_unit_len: float


# -- semantic scoring ---------------------------------------------------------------------------


class _Encoder:
    """all-MiniLM-L6-v2 (`docthink.core.embedding`) on CPU, loaded on first use. Encodes run one at a
    time in a worker thread; embeddings of unit lists are cached."""

    def __init__(self) -> None:
        try:
            model_dir()
        except EmbeddingUnavailable:
            raise unavailable("TeacherSpec(similarity='minilm')",
                              "use similarity='bm25'") from None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()

    def _encode(self, texts: tuple[str, ...]) -> np.ndarray:
        with self._lock:
            if texts in self._cache:
                self._cache.move_to_end(texts)
                return self._cache[texts]
            vectors = minilm().encode(texts, batch_size=64)
            self._cache[texts] = vectors
            if len(self._cache) > EMBED_CACHE:
                self._cache.popitem(last=False)
            return vectors

    async def cosines(self, question: str, groups: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Cosine of the question with each text of each group, concatenated. A group (one page's
        units, one trace) is always encoded as one batch, so a cached and a fresh encode give the
        same numbers, and the answer stage reuses the pages encoded for evidence."""
        q = await asyncio.to_thread(self._encode, (question,))
        vectors = [await asyncio.to_thread(self._encode, g) for g in groups if g]
        if not vectors:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(vectors) @ q[0]


def semantic(cos: np.ndarray) -> np.ndarray:
    return np.clip((cos - COS_FLOOR) / (COS_FULL - COS_FLOOR), 0.0, 1.0)


# -- answers ------------------------------------------------------------------------------------

_NUMERIC_QUESTION = re.compile(
    r"\b(how (many|much|long|old|far|large|big|high|often)|what (percentage|percent|proportion|"
    r"share|fraction|ratio|rate|number|amount|year|age|total|sum|gap|difference|average)|"
    r"which year|in what year|(int|integer|float) format|in (millions?|billions?|thousands?))\b",
    re.IGNORECASE,
)
_PERCENT_QUESTION = re.compile(r"percent|proportion|share|\brate\b|%", re.IGNORECASE)
_YEAR_QUESTION = re.compile(r"\b(what|which|in what) year\b|^when\b", re.IGNORECASE)
_YES_NO_QUESTION = re.compile(
    r"^(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should|shall)\b",
    re.IGNORECASE,
)
_CAPITALISED_RUN = re.compile(r"(?:[A-Z][\w'’.-]*)(?:\s+(?:of\s+|de\s+|van\s+)?[A-Z][\w'’.-]*)*")


def _word_positions(text: str) -> list[tuple[int, str]]:
    return [(m.start(), _stem(m.group().lower())) for m in _WORD.finditer(text)]


def _anchors(unit: Unit, weights: dict[str, float]) -> list[int]:
    """Character offsets of the question terms in the unit."""
    return [pos for pos, term in _word_positions(unit.text) if term in weights]


def _nearest(candidates: list[tuple[int, str]], anchors: list[int]) -> str:
    """The candidate (offset, text) closest to any anchor offset; the first one on ties."""

    def distance(candidate: tuple[int, str]) -> tuple[int, int]:
        return min((abs(candidate[0] - a) for a in anchors), default=0), candidate[0]

    return min(candidates, key=distance)[1]


def _number_value(number: str) -> str:
    return re.sub(r"[^\d.]", "", number).rstrip(".")


def numeric_answer(
    question: str, unit: Unit, weights: dict[str, float], strict: bool
) -> str | None:
    """The number of the unit nearest to the question's terms, skipping numbers the question itself
    contains; `strict`: only of the kind asked for (a year, a percentage, else not a year)."""
    asked = {_number_value(m.group()) for m in _NUMBER.finditer(question)}
    numbers = [
        (m.start(), " ".join(m.group().strip("() ").split()))
        for m in _NUMBER.finditer(unit.text)
        if _number_value(m.group()) not in asked
    ]
    if not numbers:
        return None

    def is_year(n: str) -> bool:
        return re.fullmatch(r"(19|20)\d\d", n) is not None

    if _YEAR_QUESTION.search(question):
        preferred = [c for c in numbers if is_year(c[1])]
    elif _PERCENT_QUESTION.search(question):
        preferred = [c for c in numbers if c[1].endswith("%") or "percent" in c[1].lower()]
    else:
        preferred = [c for c in numbers if not is_year(c[1])]
    candidates = preferred if strict else numbers
    return _nearest(candidates, _anchors(unit, weights)) if candidates else None


def yes_no_answer(question: str, unit: Unit, unit_coverage: float) -> str | None:
    if unit_coverage < YES_NO_COVERAGE:
        return None
    negated_q = bool(_NEGATIONS & set(_WORD.findall(question.lower()))) or "n't" in question
    negated_u = bool(_NEGATIONS & set(_WORD.findall(unit.text.lower()))) or "n't" in unit.text
    return "No" if negated_q != negated_u else "Yes"


def who_answer(question: str, unit: Unit, weights: dict[str, float]) -> str | None:
    asked = set(terms(question))
    names = [
        (m.start(), m.group().rstrip(".,"))
        for m in _CAPITALISED_RUN.finditer(unit.text)
        if not set(terms(m.group())) <= asked  # also drops a capitalised "The", "Under"
    ]
    return _nearest(names, _anchors(unit, weights)) if names else None


def span_answer(unit: Unit, weights: dict[str, float]) -> str:
    words = unit.text.split()
    if len(words) <= SPAN_WORDS:
        return unit.text
    hits = [i for i, w in enumerate(words) if set(terms(w)) & weights.keys()]
    centre = sorted(hits)[len(hits) // 2] if hits else 0
    start = max(0, min(centre - SPAN_WORDS // 2, len(words) - SPAN_WORDS))
    return " ".join(words[start : start + SPAN_WORDS])


_PART = re.compile(r"\((\d)\)\s*")
_SUM_LEAD = re.compile(r"\bsum\b", re.IGNORECASE)


def numbered_parts(question: str) -> tuple[str, list[str]] | None:
    """(lead-in, parts) of "lead (1) first (2) second ...", parts numbered 1, 2, ... in order;
    None for a question without two such parts."""
    marks = list(_PART.finditer(question))
    numbers = [int(m.group(1)) for m in marks]
    if len(marks) < 2 or numbers != list(range(1, len(marks) + 1)):
        return None
    ends = [m.start() for m in marks[1:]] + [len(question)]
    parts = [question[m.end() : end].strip() for m, end in zip(marks, ends, strict=True)]
    return question[: marks[0].start()].strip(), parts


def _value(answer: str) -> Decimal | None:
    match = _NUMBER.search(answer)
    return None if match is None else Decimal(_number_value(match.group()) or "0")


def combine_parts(lead: str, answers: Sequence[str]) -> str:
    """The parts' answers as the lead-in asks: their sum, or a list in order."""
    if NOT_ANSWERABLE in answers:
        return NOT_ANSWERABLE
    if _SUM_LEAD.search(lead):
        values = [_value(a) for a in answers]
        if any(v is None for v in values):
            return NOT_ANSWERABLE
        return format(sum(v for v in values if v is not None), "f")
    return repr(list(answers))


_CLOZE = re.compile(r"[\"“](?P<statement>[^\"”]*___[^\"”]*)[\"”]")
CLOZE_WORDS = 5  # words of the statement matched on each side of the blank
_BLANK_WORDS = 12  # the most words a blank can stand for


def cloze(question: str) -> tuple[list[str], list[str]] | None:
    """The words left and right of the blank of a quoted statement with one `___`."""
    match = _CLOZE.search(question)
    if match is None or match.group("statement").count("___") != 1:
        return None
    left, right = match.group("statement").split("___")
    return left.split()[-CLOZE_WORDS:], right.split()[:CLOZE_WORDS]


def fill_blank(blank: tuple[list[str], list[str]], units: Sequence[Unit]) -> str | None:
    """The words that stand in the blank's place in the first unit the statement aligns with."""
    left, right = blank
    gap = r"(?P<fill>\S+(?:\s+\S+){0,%d}?)" % (_BLANK_WORDS - 1)
    pattern = re.compile(
        (r"(?:^|(?<=\s))" if not left else r"\s+".join(map(re.escape, left)) + r"\s+")
        + gap
        + (r"(?=\s|$)" if not right else r"\s*" + r"\s+".join(map(re.escape, right)))
    )
    for unit in units:
        match = pattern.search(unit.text)
        if match is not None:
            return match.group("fill").strip(" ,;:")
    return None


_YEAR = re.compile(r"\b(?:19|20)\d\d\b")
_CELL = re.compile(r"\(?[$€£]?\d[\d,]*(?:\.\d+)?\)?%?")


def _trailing(tokens: Sequence[str], pattern: re.Pattern[str]) -> int:
    """How many of the last tokens match `pattern`."""
    n = 0
    for token in reversed(tokens):
        if not pattern.fullmatch(token):
            break
        n += 1
    return n


def table_cell(
    question: str, units: Sequence[Unit], best: int, weights: dict[str, float]
) -> str | None:
    """The cell of a table row in the column of the year the question names. The row is `best`
    when it ends in k numbers under a header line (the nearest line above ending in years) of k
    years; when `best` is that header, the row below it that covers most of the question."""
    asked = _YEAR.findall(question)
    if not asked:
        return None
    tokens = [u.text.split() for u in units]
    if _trailing(tokens[best], _YEAR) >= 2:
        header = best
        width = _trailing(tokens[header], _YEAR)
        rows = []
        for i in range(header + 1, len(units)):
            if _trailing(tokens[i], _YEAR) >= 2 or _trailing(tokens[i], _CELL) != width:
                break
            rows.append(i)
        if not rows:
            return None
        row = max(rows, key=lambda i: (coverage(weights, set(units[i].terms)), -i))
    else:
        row = best
        above = [i for i in range(best) if _trailing(tokens[i], _YEAR) >= 2]
        if not above:
            return None
        header = above[-1]
    columns = tokens[header][-_trailing(tokens[header], _YEAR):]
    cells = _trailing(tokens[row], _CELL)
    if cells != len(columns) or cells == len(tokens[row]):
        return None
    year = next((y for y in asked if y in columns), None)
    if year is None:
        return None
    return tokens[row][len(tokens[row]) - cells + columns.index(year)]


# -- the model ----------------------------------------------------------------------------------


def _whitespace_tokens(text: str) -> int:
    return len(text.split())


# Part of the model name, so of every cache key: bump it when an output can change.
TEACHER_VERSION = 2


class ExtractiveTeacher:
    """`ChatModel` over the PDF text layer: BM25 (and optionally MiniLM) retrieval with extractive
    answers. See the module docstring for every formula and how usage is counted."""

    def __init__(self, spec: TeacherSpec, pages: PageTextSource) -> None:
        self.spec = spec
        self.name = f"docthink-teacher/{spec.similarity}@{TEACHER_VERSION}"
        self.usage = UsageMeter()
        self._pages = pages
        self._encoder = _Encoder() if spec.similarity == "minilm" else None
        self._docs: OrderedDict[str, DocStats] = OrderedDict()

    async def complete(self, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        try:
            if request.response_model is EvidenceReply:
                parsed, read = await self._evidence(request)
                text: str = parsed.model_dump_json()
            elif request.response_model in (None, ShortAnswer):
                answer, read = await self._answer(request)
                parsed = ShortAnswer(answer=answer) if request.response_model else None
                text = parsed.model_dump_json() if parsed else answer
            else:
                raise RequestFailed(
                    "unsupported: the offline teacher cannot produce "
                    f"{request.response_model.__name__}",
                    1,
                )
        except RequestFailed as error:
            self.usage.record_failure(error)
            raise
        result = ChatResult(
            text=text,
            parsed=parsed,
            usage=Usage(prompt_tokens=read, completion_tokens=_whitespace_tokens(text)),
            model=self.name,
            latency_s=time.perf_counter() - started,
        )
        self.usage.record(result)
        return result

    async def aclose(self) -> None:
        return None

    # -- reading the request

    def _page_of(self, part: ImagePart) -> PageRef:
        if part.page is None:
            raise RequestFailed(
                "unsupported: the offline teacher reads PDF text layers and this image has no "
                f"page reference ({part.sha256[:12]})",
                1,
            )
        return part.page

    def _prompt_tokens(self, request: ChatRequest, page_texts: Sequence[str]) -> int:
        texts = [p.text for m in request.messages for p in m.content if isinstance(p, TextPart)]
        return sum(_whitespace_tokens(t) for t in [*texts, *page_texts])

    def _doc_stats(self, doc_id: str) -> DocStats:
        if doc_id in self._docs:
            self._docs.move_to_end(doc_id)
            return self._docs[doc_id]
        pages = [
            split_units(self._pages.page_text(PageRef(doc_id, p)))
            for p in range(1, self._pages.n_pages(doc_id) + 1)
        ]
        stats = DocStats(
            # Pages without a text layer say nothing about how common a term is.
            idf=Idf.over([{t for u in units for t in u.terms} for units in pages if units]),
            avg_unit_len=_avg_len([u for units in pages for u in units]),
        )
        self._docs[doc_id] = stats
        if len(self._docs) > DOC_CACHE:
            self._docs.popitem(last=False)
        return stats

    async def _semantic(self, question: str, groups: Sequence[tuple[Unit, ...]]) -> np.ndarray:
        """sem of every unit of every group, in order (zeros without MiniLM)."""
        if self._encoder is None:
            return np.zeros(sum(len(g) for g in groups))
        texts = [tuple(u.text for u in g) for g in groups]
        return semantic(await self._encoder.cosines(question, texts))

    # -- evidence

    async def _evidence(self, request: ChatRequest) -> tuple[EvidenceReply, int]:
        images = [p for m in request.messages for p in m.content if isinstance(p, ImagePart)]
        if len(images) != 1:
            raise RequestFailed(
                f"unsupported: an evidence request shows exactly one page, this one {len(images)}",
                1,
            )
        ref = self._page_of(images[0])
        page_text = self._pages.page_text(ref)
        read = self._prompt_tokens(request, [page_text])
        units = split_units(page_text)
        if not units:
            return EvidenceReply(evidence=NO_TEXT_LAYER, relevance_score=0.0), read

        question = request.question()
        stats = self._doc_stats(ref.doc_id)
        weights = {t: stats.idf(t) for t in terms(question)}
        windows = window_coverages(weights, units)
        page_terms = {t for u in units for t in u.terms}
        lex = WINDOW_WEIGHT * max(windows) + (1 - WINDOW_WEIGHT) * coverage(weights, page_terms)
        lexical = [bm25(weights, u, stats.avg_unit_len) for u in units]
        if self._encoder is None:
            strength, unit_scores = lex, lexical
        else:
            sem = await self._semantic(question, [units])
            strength = LEX_WEIGHT * lex + (1 - LEX_WEIGHT) * float(sem.max())
            unit_scores = [
                LEX_WEIGHT * coverage(weights, set(u.terms)) + (1 - LEX_WEIGHT) * float(s)
                for u, s in zip(units, sem, strict=True)
            ]
        chosen = self._quoted(units, unit_scores, request.max_tokens)
        if strength <= 0.0 or not chosen:
            return EvidenceReply(evidence=NO_EVIDENCE, relevance_score=0.0), read
        evidence = "\n".join(f'"{units[i].text}"' for i in chosen)
        return EvidenceReply(evidence=evidence, relevance_score=round(10.0 * strength, 2)), read

    @staticmethod
    def _quoted(units: Sequence[Unit], scores: Sequence[float], max_tokens: int) -> list[int]:
        """Indices of the best-scoring units, in page order, within the word budget."""
        ranked = sorted((i for i, s in enumerate(scores) if s > 0.0), key=lambda i: -scores[i])
        budget = min(EVIDENCE_WORDS, max_tokens)
        chosen: list[int] = []
        for i in ranked[:EVIDENCE_UNITS]:
            words = _whitespace_tokens(units[i].text)
            if words <= budget:
                chosen.append(i)
                budget -= words
        return sorted(chosen)

    # -- answers

    async def _answer(self, request: ChatRequest) -> tuple[str, int]:
        question = request.question()
        page_texts = [
            self._pages.page_text(self._page_of(p))
            for m in request.messages
            if m.role == "user"
            for p in m.content
            if isinstance(p, ImagePart)
        ]
        # The question is the last user text part; every earlier one is context (the trace).
        user_texts = [
            p.text
            for m in request.messages
            if m.role == "user"
            for p in m.content
            if isinstance(p, TextPart)
        ][:-1]
        read = self._prompt_tokens(request, page_texts)
        groups = [split_units(text) for text in [*page_texts, *user_texts]]
        if not any(groups):
            return NOT_ANSWERABLE, read
        parts = numbered_parts(question)
        if parts is None:
            return await self._respond(question, groups), read
        lead, questions = parts
        answers = [await self._respond(q, groups) for q in questions]
        return combine_parts(lead, answers), read

    async def _respond(self, question: str, groups: Sequence[tuple[Unit, ...]]) -> str:
        """The answer to one question over the context's units (grouped by page or trace)."""
        units = [u for g in groups for u in g]
        blank = cloze(question)
        if blank is not None:
            return fill_blank(blank, units) or NOT_ANSWERABLE
        idf = Idf.over([set(u.terms) for u in units])
        weights = {t: idf(t) for t in terms(question)}
        windows = [w for g in groups for w in window_coverages(weights, g)]  # within a page
        avg_len = _avg_len(units)
        unit_cov = [coverage(weights, set(u.terms)) for u in units]
        sem = await self._semantic(question, groups)
        # A unit's own words count as much as its window's: a table row beats the sentence next
        # to it when the row holds the question's terms.
        lex = [0.5 * (c + w) for c, w in zip(unit_cov, windows, strict=True)]
        primary = (
            [LEX_WEIGHT * x + (1 - LEX_WEIGHT) * float(s) for x, s in zip(lex, sem, strict=True)]
            if self._encoder
            else lex
        )
        best = max(
            range(len(units)),
            key=lambda i: (primary[i], bm25(weights, units[i], avg_len), -i),
        )
        if windows[best] < ANSWERABLE_COVERAGE:
            return NOT_ANSWERABLE
        first = 0  # the best unit's page (or trace): its neighbours never cross into another
        for g in groups:
            if first + len(g) > best:
                break
            first += len(g)
        page = units[first : first + len(g)]
        return self._extract(question, page, best - first, weights, unit_cov[best])

    @staticmethod
    def _extract(
        question: str,
        units: Sequence[Unit],
        best: int,
        weights: dict[str, float],
        best_coverage: float,
    ) -> str:
        unit = units[best]
        q = question.strip()
        cell = table_cell(q, units, best, weights)
        if cell is not None:
            return cell
        if _NUMERIC_QUESTION.search(q) or _YEAR_QUESTION.search(q):
            # The unit itself, else its window neighbours (a table row's header line); a number
            # of the kind asked for first, else any.
            half = WINDOW // 2
            order = [best, *range(max(0, best - half), min(len(units), best + half + 1))]
            for strict in (True, False):
                for i in order:
                    number = numeric_answer(q, units[i], weights, strict)
                    if number is not None:
                        return number
        if _YES_NO_QUESTION.match(q) and " or " not in q.lower():
            yes_no = yes_no_answer(q, unit, best_coverage)
            if yes_no is not None:
                return yes_no
        if re.match(r"^who\b", q, re.IGNORECASE):
            name = who_answer(q, unit, weights)
            if name is not None:
                return name
        return span_answer(unit, weights)
