"""Benchmark questions in: MMLongBench-Doc's GitHub `samples.json`, its Hugging Face Parquet
layout, the TSV layout used for MMLBD-C, and MMLongBench-Doc-V2 (`samples.json` with its
`question_types.json` beside it), all read into one typed row model.

The TSV layout (VLMEvalKit's, which MMLBD-C keeps) carries the documents too: its `image` column
holds each row's PDF in base64, or, to save space, the `index` of an earlier row holding the same
PDF (a value of at most 64 characters). `tsv_documents` writes those PDFs out for ingestion.

Validated here, once: a bad row is an error naming the file, the row and the field. Rows are keyed
by their index (the position in the file, or the TSV's `index` column): `(doc_id, question)` is not
unique. Every load records the file's sha256, so a report says exactly which data it scored.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from docthink.core.errors import UserError
from docthink.core.hashing import file_digest
from docthink.core.seeded import uniform
from docthink.core.vocab import NOT_ANSWERABLE
from docthink.evals.scoring import AnswerFormat

FIELDS = ("doc_id", "doc_type", "question", "answer", "evidence_pages", "evidence_sources",
          "answer_format")


TaskType = Literal["lookup", "count", "enumerate", "derive", "compare", "verify"]
V2_LABELS = "question_types.json"


class DataError(UserError, ValueError):
    """A benchmark file that cannot be read; the message names the file, row and field."""


class BenchRow(BaseModel):
    """One benchmark question. `evidence_pages` and `evidence_sources` arrive as Python-literal
    list strings (`"[5, 6]"`, `"['Chart']"`) and are parsed with a literal parser."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    index: int
    doc_id: str
    doc_type: str
    question: str
    answer: str
    answer_format: AnswerFormat
    evidence_pages: tuple[int, ...]
    evidence_sources: tuple[str, ...]
    # MMLongBench-Doc-V2's per-question labels (model-produced, not ground truth); None elsewhere.
    task_type: TaskType | None = None
    requires_visual: bool | None = None

    @field_validator("evidence_pages", "evidence_sources", mode="before")
    @classmethod
    def _literal_list(cls, value: object) -> object:
        return ast.literal_eval(value) if isinstance(value, str) else value

    @property
    def unanswerable(self) -> bool:
        return self.answer == NOT_ANSWERABLE

    @property
    def page_kinds(self) -> tuple[str, ...]:
        """The official single-page / cross-page / unanswerable groups, which overlap: single-page
        is exactly one evidence page, cross-page is not one page and answerable, unanswerable is
        the reference `Not answerable` (a row with one evidence page and that reference counts in
        both; a row with no evidence page and an answer counts as cross-page)."""
        kinds = ("single-page",) if len(self.evidence_pages) == 1 else ()
        if not self.unanswerable and len(self.evidence_pages) != 1:
            kinds += ("cross-page",)
        return kinds + (("unanswerable",) if self.unanswerable else ())


@dataclass(frozen=True, slots=True)
class Benchmark:
    path: Path
    sha256: str
    layout: str  # "samples.json" | "parquet" | "tsv"
    rows: tuple[BenchRow, ...]
    labels: Path | None = None  # V2's question_types.json, joined into the rows
    labels_sha256: str | None = None

    def by_index(self) -> dict[int, BenchRow]:
        return {row.index: row for row in self.rows}

    def files(self) -> list[Path]:
        """The files read: the data, then the labels joined into it."""
        return [self.path, *([self.labels] if self.labels is not None else [])]


def load_benchmark(path: Path) -> Benchmark:
    """Rows of a benchmark file; the layout is chosen by the file's suffix."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        layout, raw = "samples.json", _json_rows(path)
    elif suffix == ".parquet":
        layout, raw = "parquet", _parquet_rows(path)
    elif suffix in (".tsv", ".tab"):
        layout, raw = "tsv", _tsv_rows(path)
    else:
        raise DataError(f"{path}: unknown layout (expected .json, .parquet or .tsv)")
    rows = _validated(path, raw)
    return Benchmark(path=path, sha256=file_digest(path, "sha256"), layout=layout, rows=tuple(rows))


class _Labels(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    doc_id: str
    question: str
    task_type: TaskType
    requires_visual: bool


def load_v2(path: Path) -> Benchmark:
    """MMLongBench-Doc-V2: its `samples.json` (V1's schema) with `task_type` and `requires_visual`
    joined on (doc_id, question) from the `question_types.json` beside it. Every question must
    have its labels; labels of questions the file does not hold are not used."""
    benchmark = load_benchmark(path)
    if benchmark.layout != "samples.json":
        raise DataError(f"{path}: mmlongbench-v2 reads its samples.json (with {V2_LABELS} beside it)")
    labels_path = path.parent / V2_LABELS
    if not labels_path.is_file():
        raise DataError(f"{labels_path}: no such file (mmlongbench-v2's task labels, beside "
                        f"{path.name})")
    labels: dict[tuple[str, str], _Labels] = {}
    for index, raw in _json_rows(labels_path):
        try:
            label = _Labels.model_validate(raw)
        except ValidationError as exc:
            raise DataError(f"{labels_path}: row {index}: {_reason(exc)}") from None
        key = (label.doc_id, label.question)
        if key in labels:
            raise DataError(f"{labels_path}: row {index}: repeats the labels of {key}")
        labels[key] = label
    rows = []
    for row in benchmark.rows:
        label = labels.get((row.doc_id, row.question))
        if label is None:
            raise DataError(f"{labels_path}: no labels for row {row.index} of {path.name} "
                            f"({row.doc_id}: {row.question!r})")
        rows.append(row.model_copy(update={"task_type": label.task_type,
                                           "requires_visual": label.requires_visual}))
    return Benchmark(path=path, sha256=benchmark.sha256, layout=benchmark.layout,
                     rows=tuple(rows), labels=labels_path,
                     labels_sha256=file_digest(labels_path, "sha256"))


def _json_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of question objects")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {index}: expected an object")
        yield index, {**row, "index": index}


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [f for f in FIELDS if f not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (have {table.column_names})")
    for index, row in enumerate(table.select(list(FIELDS)).to_pylist()):
        yield index, {**row, "index": index}


def _tsv_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    # MMLBD-C-style TSVs may carry each document as a base64 column: lift the field size cap.
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = reader.fieldnames or []
        missing = [c for c in ("index", *FIELDS) if c not in columns]
        if missing:
            raise DataError(f"{path}: missing columns {missing} (have {columns})")
        for number, row in enumerate(reader, start=1):
            try:
                index = int(row["index"])
            except ValueError:
                raise DataError(f"{path}: row {number}: index {row['index']!r} is not an int") from None
            yield number, {k: row[k] for k in ("index", *FIELDS)} | {"index": index}


TSV_DOCUMENTS = "image"  # the column of a TSV that holds each row's PDF
_REFERENCE_CHARS = 64  # VLMEvalKit: a shorter value names the row that holds the data


def tsv_carries_documents(path: Path) -> bool:
    """Whether `path` is a TSV with the documents in its `image` column."""
    if path.suffix.lower() not in (".tsv", ".tab"):
        return False
    with path.open(encoding="utf-8", newline="") as f:
        return TSV_DOCUMENTS in (csv.DictReader(f, delimiter="\t").fieldnames or [])


def tsv_documents(path: Path, folder: Path) -> list[str]:
    """Decode the PDFs of a TSV's `image` column into `folder/<doc_id>` (a file already there
    with the same bytes is left alone, so a rerun writes nothing); the doc_ids written, sorted.
    A value that is not base64, that names a row without data, or two PDFs for one doc_id are
    errors naming the row."""
    csv.field_size_limit(sys.maxsize)
    by_index: dict[str, str] = {}  # index -> base64, for rows holding the data
    references: list[tuple[int, str, str]] = []  # (row, doc_id, index referred to)
    pdfs: dict[str, bytes] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if TSV_DOCUMENTS not in (reader.fieldnames or []):
            raise DataError(f"{path}: no {TSV_DOCUMENTS} column, so no documents (give a PDF "
                            "folder or a corpus)")
        for number, row in enumerate(reader, start=1):
            value, doc_id = row[TSV_DOCUMENTS].strip(), row["doc_id"]
            if Path(doc_id).is_absolute() or ".." in Path(doc_id).parts:
                raise DataError(f"{path}: row {number}: doc_id {doc_id!r} is not a relative path")
            if len(value) <= _REFERENCE_CHARS:
                references.append((number, doc_id, value))
                continue
            by_index[row["index"]] = value
            if doc_id not in pdfs:
                pdfs[doc_id] = _decoded(path, number, value)
    for number, doc_id, index in references:
        if index not in by_index:
            raise DataError(f"{path}: row {number}: {TSV_DOCUMENTS} {index!r} names no row "
                            "holding a document")
        if doc_id not in pdfs:
            pdfs[doc_id] = _decoded(path, number, by_index[index])
    for doc_id, data in pdfs.items():
        target = folder / doc_id
        if target.is_file() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
    return sorted(pdfs)


def _decoded(path: Path, number: int, value: str) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise DataError(f"{path}: row {number}: {TSV_DOCUMENTS} is not base64: {exc}") from None
    if not data.startswith(b"%PDF"):
        raise DataError(f"{path}: row {number}: {TSV_DOCUMENTS} does not decode to a PDF")
    return data


def _validated(path: Path, raw: Iterable[tuple[int, dict[str, object]]]) -> list[BenchRow]:
    rows: list[BenchRow] = []
    seen: set[int] = set()
    for where, data in raw:
        try:
            row = BenchRow.model_validate(data)
        except (ValidationError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: row {where}: {_reason(exc)}") from None
        if row.index in seen:
            raise DataError(f"{path}: row {where}: index {row.index} repeats an earlier row")
        seen.add(row.index)
        rows.append(row)
    return rows


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"field {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


# -- selection ------------------------------------------------------------------------------------



def stratified_sample(rows: Sequence[BenchRow], n: int, seed: int) -> list[BenchRow]:
    """`n` rows with each answer format represented in proportion (largest remainder), chosen by
    (seed, row index); returned in index order. A larger `n` keeps the rows of a smaller one
    within each format."""
    if n >= len(rows):
        return list(rows)
    strata: dict[str, list[BenchRow]] = {}
    for row in rows:
        strata.setdefault(row.answer_format, []).append(row)
    quotas = {fmt: n * len(group) / len(rows) for fmt, group in strata.items()}
    counts = {fmt: int(q) for fmt, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda fmt: (-(quotas[fmt] - counts[fmt]), fmt))
    for fmt in by_remainder[: n - sum(counts.values())]:
        counts[fmt] += 1
    chosen = [
        row
        for fmt, group in strata.items()
        for row in sorted(group, key=lambda r: uniform(seed, r.index, "sample"))[: counts[fmt]]
    ]
    return sorted(chosen, key=lambda r: r.index)


@dataclass(frozen=True, slots=True)
class Selection:
    rows: list[BenchRow]  # to evaluate, in index order
    skipped: dict[int, str]  # row index -> why it is not evaluated (its PDF is missing or bad)


def select_rows(
    benchmark: Benchmark,
    *,
    unavailable: Mapping[str, str],
    docs: Sequence[str] | None,
    sample: int | None,
    limit: int | None,
    seed: int,
) -> Selection:
    """Rows to evaluate: restricted to `docs`; rows whose document is in `unavailable` (doc_id ->
    why: missing, rejected at ingest) are skipped with that reason; then a stratified sample; then
    the first `limit`."""
    unknown = sorted(set(docs or ()) - {r.doc_id for r in benchmark.rows})
    if unknown:
        raise DataError(f"{benchmark.path}: no question is about {unknown}")
    rows = [r for r in benchmark.rows if docs is None or r.doc_id in docs]
    skipped = {r.index: unavailable[r.doc_id] for r in rows if r.doc_id in unavailable}
    usable = [r for r in rows if r.doc_id not in unavailable]
    if sample is not None:
        usable = stratified_sample(usable, sample, seed)
    if limit is not None:
        usable = usable[:limit]
    return Selection(rows=usable, skipped=skipped)
