"""Questions in: JSONL or Parquet rows `{qid, doc_id, question, source_pages, context_pages?,
answer?, answer_format?}`, or MMLongBench-Doc's `samples.json` through a small adapter.
Validated here, once; a bad row is an error naming the file, the row and the field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from docthink.core.errors import UserError
from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.evals.scoring import AnswerFormat


@dataclass(frozen=True, slots=True)
class Question:
    qid: str
    doc_id: str
    text: str
    source: tuple[PageRef, ...]  # the pages the question was written from
    context: tuple[PageRef, ...]  # the long page list the student sees; contains `source`
    answer: str | None = None  # a reference answer, when the input has one (kept, never trained on)
    answer_format: AnswerFormat | None = None  # the reference's format, when the input says

    def position(self, page: PageRef) -> int:
        """1-based position of `page` in the context: the `i` of `Page {i}:`."""
        return self.context.index(page) + 1


@dataclass(frozen=True, slots=True)
class Dropped:
    """A question left out at a stage, and why (counted in the data card)."""

    qid: str
    stage: str
    reason: str


class QuestionsError(UserError, ValueError):
    """A questions file that cannot be read; the message names the file, row and field."""


PageSpec = int | tuple[str, int]


class QuestionRow(BaseModel):
    """One input row. Pages are 1-based; an int is a page of `doc_id`, a pair `[doc_id, page]`
    names a page of any document (hard-negative contexts span documents)."""

    model_config = ConfigDict(extra="ignore")

    qid: str
    doc_id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    source_pages: list[PageSpec]
    context_pages: list[PageSpec] | None = None
    answer: str | None = None
    answer_format: AnswerFormat | None = None  # MMLongBench-Doc's: Int, Float, Str, List, None

    @field_validator("qid", mode="before")
    @classmethod
    def _qid_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


def _refs(doc_id: str, pages: list[PageSpec]) -> tuple[PageRef, ...]:
    return tuple(PageRef(doc_id, p) if isinstance(p, int) else PageRef(p[0], p[1]) for p in pages)


def _raw_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(1-based row number, raw mapping) for each row of a JSONL or Parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield number, row
        return
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise QuestionsError(f"{path}: row {number}: not JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise QuestionsError(f"{path}: row {number}: expected an object")
            yield number, row


def read_question_rows(path: Path) -> list[QuestionRow]:
    return list(question_rows(path))


def question_rows(path: Path) -> Iterator[QuestionRow]:
    """The rows of a questions file, validated one by one as they are read (a JSONL or Parquet
    file is never held whole; MMLongBench-Doc's samples.json is one JSON document)."""
    if not path.is_file():
        raise QuestionsError(f"{path}: no such file")
    if path.name == "samples.json":
        yield from mmlongbench_rows(path)
        return
    seen: dict[str, int] = {}
    for number, raw in _raw_rows(path):
        try:
            row = QuestionRow.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise QuestionsError(f"{path}: row {number}: field {field}: {err['msg']}") from None
        if row.qid in seen:
            raise QuestionsError(
                f"{path}: row {number}: qid {row.qid!r} repeats row {seen[row.qid]}"
            )
        seen[row.qid] = number
        yield row


def mmlongbench_rows(path: Path) -> list[QuestionRow]:
    """MMLongBench-Doc's `samples.json`, read by the evaluation's own loader: qid = the row's
    index (`(doc_id, question)` is not unique), evidence pages become source pages, the reference
    answer is kept."""
    from docthink.evals.data import load_benchmark

    return [
        QuestionRow(qid=str(row.index), doc_id=row.doc_id, question=row.question,
                    source_pages=list(row.evidence_pages), answer=row.answer,
                    answer_format=row.answer_format)
        for row in load_benchmark(path).rows
    ]


def check_documents(rows: Iterable[QuestionRow], corpus: Corpus, source: Path) -> int:
    """Reads every row (so a bad one fails before any model call) and returns how many there are.
    Questions none of which is about a document of the corpus fail here, saying which folder to
    ingest: document ids are paths under the folder ingested, so ingesting the folder above the
    PDFs prefixes every id. A few unknown documents are only dropped per row, by `resolve`."""
    n, asked, known = 0, "", False
    for row in rows:
        n += 1
        asked = asked or row.doc_id
        known = known or row.doc_id in corpus.documents
    if n == 0 or known:
        return n
    where = (f"{source}: none of its {n} questions is about a document of corpus "
             f"{corpus.layout.root}")
    ids = sorted(corpus.documents)
    if not ids:
        raise QuestionsError(f"{where}: it has no documents (see its manifest.jsonl)")
    above = [doc_id for doc_id in ids if doc_id.endswith("/" + asked)]
    found = (f"the questions name {asked!r}, the corpus has {(above or ids)[0]!r} (document ids "
             f"are paths under the folder ingested, {corpus.ingested})")
    if not above:
        raise QuestionsError(f"{where}: {found}")
    folder = corpus.ingested / above[0].removesuffix("/" + asked)
    raise QuestionsError(f"{where}: {found}; ingest {folder} into a new corpus folder")


def resolve(
    rows: Iterable[QuestionRow], n_pages: Mapping[str, int], source: Path
) -> tuple[list[Question], list[Dropped]]:
    questions: list[Question] = []
    dropped: list[Dropped] = []
    for row in rows:
        resolved = resolve_row(row, n_pages, source)
        if isinstance(resolved, Dropped):
            dropped.append(resolved)
        else:
            questions.append(resolved)
    return questions, dropped


def resolve_row(row: QuestionRow, n_pages: Mapping[str, int], source: Path) -> Question | Dropped:
    """The question over the corpus's pages. A row whose document is not in the corpus, or that
    names a page outside its document (MMLongBench-Doc has two rows with evidence page 0), is
    dropped with its reason and counted."""
    src = _refs(row.doc_id, row.source_pages)
    context = (
        _refs(row.doc_id, row.context_pages)
        if row.context_pages is not None
        else tuple(PageRef(row.doc_id, p) for p in range(1, n_pages.get(row.doc_id, 0) + 1))
    )
    missing = sorted({r.doc_id for r in (*src, *context, PageRef(row.doc_id, 1))} - n_pages.keys())
    if missing:
        return Dropped(row.qid, "input", f"document not in corpus: {missing[0]}")
    outside = [r for r in (*src, *context) if not 1 <= r.page <= n_pages[r.doc_id]]
    if outside:
        ref = outside[0]
        return Dropped(row.qid, "input", f"page {ref.page} outside {ref.doc_id} "
                       f"({n_pages[ref.doc_id]} pages)")
    if len(set(context)) != len(context):
        raise QuestionsError(f"{source}: qid {row.qid}: context_pages repeats a page")
    if not set(src) <= set(context):
        raise QuestionsError(f"{source}: qid {row.qid}: a source page is not in context_pages")
    return Question(row.qid, row.doc_id, row.question, src, context, row.answer,
                    row.answer_format)
