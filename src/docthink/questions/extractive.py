"""The offline question writer: honest extractive questions from a page's text layer, so the
questions pipeline runs end to end with no server and no weights.

A *fact* is a sentence (or table cell) whose answer is printed verbatim on the page:
- numeric fact: a prose sentence of 8-40 words with exactly one number that is not a year, of
  at least two digits (or a percentage or an amount), not a reference ("Note 12"). "The 2015
  revenue of X was 8,044 million euros." becomes "What was the 2015 revenue of X, in million
  euros?" (a subject, a copula, the number, an optional unit); any other sentence becomes a cloze
  question, 'What number is missing from this statement: "... ___ ..."?'. The answer is the
  number without thousands separators, currency or percent sign (Int or Float).
- named entity: a prose sentence of 8-40 words with exactly one run of two or more capitalised
  words (not at its start, without digits): 'Which name is missing from this statement: "... ___
  ..."?' (Str).
- table or chart reading: a header line of 2+ years and a row "label v1 ... vk" with one number
  per year: "According to the table, what was <label> in <year>?" (Int or Float).
Multi-page questions combine two facts of two different pages: the sum of two answers of the same
kind (two table cells, or two numeric sentences; Int or Float), else both answers as a list
(List).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from docthink.questions.layout import lines, page_layout

NUMERIC, ENTITY, TABLE = "numeric fact", "named entity", "table or chart reading"
EXTRACTIVE_VERSION = 1  # in every question's `generator`: bump when a question can change
WRITER_NAME = f"extractive@{EXTRACTIVE_VERSION}"

MIN_WORDS, MAX_WORDS = 8, 40
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<cur>[$€£])?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<pct>\s?%)?(?!\w|[.,]\d)"
)
_YEAR = re.compile(r"(?:19|20)\d\d")
_COPULA = re.compile(
    r"^(?P<subject>(?:The|the|Its|its|Our|our) .{3,}?) (?P<verb>was|were|is|are|amounted to|"
    r"totalled|totaled|reached|stood at) (?P<cur>[$€£])?(?P<num>[\d,.]+)(?P<pct>\s?%)?"
    r"(?P<unit>(?: [a-zA-Z]+){0,3})\.$"
)
_REFERENCE = re.compile(
    r"\b(?:note|item|section|sections|figure|fig\.|table|exhibit|chapter|page|pages|appendix|"
    r"rule|part|article|step|no\.|version|v)$",
    re.IGNORECASE,
)
_NAME = re.compile(r"(?<![\w-])[A-Z][a-zA-Z'’&-]+(?: (?:of |de |and |& )?[A-Z][a-zA-Z'’&-]+)+")
_NAME_STOP = frozenset({"The", "A", "An", "In", "On", "At", "Our", "This", "These", "Its", "For"})


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str  # NUMERIC, ENTITY or TABLE
    question: str
    answer: str
    answer_format: str  # Int, Float, Str
    evidence: str  # the sentence or table row the answer is read from
    statement: str = ""  # cloze facts: the sentence with the answer blanked out

    @property
    def value(self) -> Decimal | None:
        return Decimal(self.answer) if self.answer_format in ("Int", "Float") else None


def _words(text: str) -> int:
    return len(text.split())


def _answer_number(raw: str) -> tuple[str, str]:
    value = raw.replace(",", "")
    return value, "Float" if "." in value else "Int"


def _askable(sentence: str, match: re.Match[str]) -> bool:
    """A number worth asking for: not a bare digit (a list index, a code argument, "nine (9)"),
    not a reference ("Note 12"), not after a minus sign or inside a word."""
    num = match.group("num")
    digits = len(num.replace(",", "").replace(".", ""))
    if digits < 2 and not (match.group("pct") or match.group("cur")):
        return False
    before = sentence[: match.start()].rstrip("( ")
    return not (_REFERENCE.search(before) or before.endswith(("-", "–", "#")))


def _numeric_fact(sentence: str) -> Fact | None:
    numbers = [m for m in _NUMBER.finditer(sentence) if not _YEAR.fullmatch(m.group("num"))]
    if len(numbers) != 1 or not _askable(sentence, numbers[0]):
        return None
    match = numbers[0]
    answer, fmt = _answer_number(match.group("num"))
    copula = _COPULA.match(sentence)
    if copula and copula.group("num").rstrip(".") == match.group("num"):
        verb = copula.group("verb")
        verb = verb if verb in ("was", "were", "is", "are") else "was"
        subject = copula.group("subject")
        subject = subject[0].lower() + subject[1:]
        unit = "percent" if copula.group("pct") else copula.group("unit").strip()
        question = f"What {verb} {subject}" + (f", in {unit}?" if unit else "?")
    else:
        blanked = sentence[: match.start("num")] + "___" + sentence[match.end("num") :]
        question = f'What number is missing from this statement: "{blanked}"?'
        return Fact(NUMERIC, question, answer, fmt, sentence, blanked)
    return Fact(NUMERIC, question, answer, fmt, sentence)


def _entity_fact(sentence: str) -> Fact | None:
    names = []
    for match in _NAME.finditer(sentence):
        words = match.group().split()
        if words[0] in _NAME_STOP:
            continue
        if match.start() == 0 or any(c.isdigit() for c in match.group()):
            continue
        names.append(match)
    if len(names) != 1 or sentence.count(names[0].group()) != 1:
        return None
    name = names[0]
    blanked = sentence[: name.start()] + "___" + sentence[name.end() :]
    question = f'Which name is missing from this statement: "{blanked}"?'
    return Fact(ENTITY, question, name.group(), "Str", sentence, blanked)


def _table_facts(text: str) -> list[Fact]:
    facts = []
    years: list[str] = []
    for line in lines(text):
        tokens = line.split()
        trailing_years = []
        for token in reversed(tokens):
            if not _YEAR.fullmatch(token):
                break
            trailing_years.insert(0, token)
        if len(trailing_years) >= 2:
            years = trailing_years
            continue
        if not years or len(tokens) <= len(years):
            continue
        cells = tokens[-len(years) :]
        label = " ".join(tokens[: -len(years)])
        if not all(re.fullmatch(r"\d{1,3}(?:,\d{3})*(?:\.\d+)?|\d+(?:\.\d+)?", c) for c in cells):
            continue
        if not re.search(r"[A-Za-z]", label):
            continue
        for year, cell in zip(years, cells, strict=True):
            answer, fmt = _answer_number(cell)
            question = f"According to the table, what was {label} in {year}?"
            facts.append(Fact(TABLE, question, answer, fmt, line))
    return facts


def page_facts(text: str) -> dict[str, list[Fact]]:
    """Every fact of the page by kind, in page order."""
    numeric, entity = [], []
    for paragraph in page_layout(text).paragraphs:
        for sentence in paragraph:
            if not MIN_WORDS <= _words(sentence) <= MAX_WORDS:
                continue
            fact = _numeric_fact(sentence)
            if fact is not None:
                numeric.append(fact)
            fact = _entity_fact(sentence)
            if fact is not None:
                entity.append(fact)
    return {NUMERIC: numeric, ENTITY: entity, TABLE: _table_facts(text)}


def combined_sum(first: Fact, second: Fact) -> tuple[str, str, str]:
    """(question, answer, format) asking for the sum of two numeric answers."""
    a, b = first.value, second.value
    assert a is not None and b is not None  # callers pass numeric facts
    total = a + b
    fmt = "Int" if first.answer_format == second.answer_format == "Int" else "Float"
    question = (
        "What is the sum of the answers to these two questions? "
        f"(1) {first.question} (2) {second.question}"
    )
    return question, format(total, "f"), fmt


def combined_list(first: Fact, second: Fact) -> tuple[str, str, str]:
    """(question, answer, format) asking for both answers, as a list."""
    question = (
        "Answer both questions and give the two answers as a list, in this order. "
        f"(1) {first.question} (2) {second.question}"
    )
    return question, repr([first.answer, second.answer]), "List"


def combined(first: Fact, second: Fact) -> tuple[str, str, str, str]:
    """(question, answer, format, question type) for two facts of two pages."""
    if first.kind == second.kind and first.value is not None:
        return (*combined_sum(first, second), "numeric fact")
    return (*combined_list(first, second), "list")
