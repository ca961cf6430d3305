"""Structure read from a page's text layer: lines, paragraphs, sentences, printed page numbers.

The model-free tasks count and quote these, so the definitions are fixed here, once:
- lines: the text layer's lines, whitespace collapsed, empty ones dropped (soft-hyphen markers
  removed);
- blocks: consecutive lines, a block ending at a line shorter than 0.8 x the page's line width (the
  90th percentile of its line lengths), and before a line that starts with a bullet;
- paragraphs: blocks of prose, i.e. whose text ends with . ! or ? (a closing quote or bracket may
  follow) and has at least `PROSE_WORDS` words; headings, labels and table rows are not
  paragraphs;
- sentences: a paragraph split after . ! ? followed by whitespace and a capital letter, digit or
  opening quote, except after a few common abbreviations (e.g., Inc., No., Fig., ...);
- printed page numbers: a page label ("12", "Page 12", "12 of 80", "- 12 -") on one of the first or
  last three lines whose value is the physical page number plus an offset shared by at least
  `MIN_OFFSET_SUPPORT` pages of the document (so a stray number in a table does not count).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

PROSE_WORDS = 6
SHORT_LINE = 0.8
EDGE_LINES = 3
MIN_OFFSET_SUPPORT = 3

_BULLET = re.compile(r"^[•·▪◦‣*-]\s")
_PROSE_END = re.compile(r"[.!?][\"'”’)\]]*$")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_ABBREVIATIONS = frozenset(
    [
        "e.g.", "i.e.", "etc.", "vs.", "inc.", "ltd.", "co.", "corp.", "no.", "nos.", "fig.", "figs.",
        "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jan.", "feb.", "mar.", "apr.", "jun.", "jul.",
        "aug.", "sep.", "sept.", "oct.", "nov.", "dec.", "approx.", "u.s.", "u.k.", "p.", "pp.",
    ]
)
_PAGE_LABEL = re.compile(
    r"(?:page\s*)?[-–—]?\s*(\d{1,4})\s*[-–—]?(?:\s*(?:of|/)\s*\d{1,4})?", re.IGNORECASE
)


def lines(text: str) -> list[str]:
    text = text.replace("\x02\r\n", "").replace("\x02\n", "").replace("\x02", "")
    cleaned = (" ".join(raw.split()) for raw in text.splitlines())
    return [line for line in cleaned if line]


def _blocks(page_lines: Sequence[str]) -> list[list[str]]:
    if not page_lines:
        return []
    lengths = sorted(len(line) for line in page_lines)
    width = lengths[round(0.9 * (len(lengths) - 1))]
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in page_lines:
        if current and _BULLET.match(line):
            blocks.append(current)
            current = []
        current.append(line)
        if len(line) < SHORT_LINE * width:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def sentences(paragraph: str) -> tuple[str, ...]:
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_BREAK.finditer(paragraph):
        head = paragraph[start : match.start()]
        last_word = head.rsplit(" ", 1)[-1]
        if last_word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Z]\.", last_word):
            continue
        pieces.append(paragraph[start : match.end()].strip())
        start = match.end()
    pieces.append(paragraph[start:].strip())
    return tuple(p for p in pieces if p)


@dataclass(frozen=True, slots=True)
class PageLayout:
    lines: tuple[str, ...]
    paragraphs: tuple[tuple[str, ...], ...]  # each paragraph as its sentences

    @property
    def n_sentences(self) -> int:
        return sum(len(p) for p in self.paragraphs)


@lru_cache(maxsize=4096)
def page_layout(text: str) -> PageLayout:
    page_lines = lines(text)
    paragraphs = []
    for block in _blocks(page_lines):
        joined = " ".join(block)
        if _PROSE_END.search(joined) and len(joined.split()) >= PROSE_WORDS:
            paragraphs.append(sentences(joined))
    return PageLayout(tuple(page_lines), tuple(paragraphs))


def flat(text: str) -> str:
    """The page's text with all whitespace collapsed: what a quoted answer is searched in."""
    return " ".join(lines(text))


def _label_numbers(page_lines: Sequence[str]) -> set[int]:
    edge = [*page_lines[:EDGE_LINES], *page_lines[-EDGE_LINES:]]
    numbers = set()
    for line in edge:
        match = _PAGE_LABEL.fullmatch(line)
        if match:
            numbers.add(int(match.group(1)))
    return numbers


def printed_page_numbers(page_texts: Sequence[str]) -> dict[int, int]:
    """Physical page (1-based) -> the page number printed on it, for pages whose label follows a
    numbering shared by at least `MIN_OFFSET_SUPPORT` pages of the document."""
    labels = {p: _label_numbers(lines(t)) for p, t in enumerate(page_texts, start=1)}
    support = Counter(n - p for p, numbers in labels.items() for n in numbers)
    offsets = sorted(o for o, count in support.items() if count >= MIN_OFFSET_SUPPORT)
    printed = {}
    for page, numbers in labels.items():
        for offset in offsets:
            if page + offset in numbers:
                printed[page] = page + offset
                break
    return printed
