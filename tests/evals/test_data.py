"""Benchmark loaders (samples.json, Hugging Face Parquet, MMLBD-C TSV) and row selection."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from docthink.evals.data import (
    FIELDS,
    DataError,
    load_benchmark,
    select_rows,
    stratified_sample,
)
from tests.evals.helpers import NO_SHARED_DATA, SAMPLES

RAW = [
    {"doc_id": "a.pdf", "doc_type": "Guidebook", "question": "How many?", "answer": "3",
     "evidence_pages": "[2]", "evidence_sources": "['Table']", "answer_format": "Int"},
    {"doc_id": "a.pdf", "doc_type": "Guidebook", "question": "Which colours?",
     "answer": "['red', 'blue']", "evidence_pages": "[2, 5]",
     "evidence_sources": "['Figure', 'Pure-text (Plain-text)']", "answer_format": "List"},
    {"doc_id": "b.pdf", "doc_type": "Brochure", "question": 'Say "hi"\tplease?',
     "answer": "Not answerable", "evidence_pages": "[]", "evidence_sources": "[]",
     "answer_format": "None"},
    {"doc_id": "b.pdf", "doc_type": "Brochure", "question": "Share?", "answer": "12.5",
     "evidence_pages": "[]", "evidence_sources": "['Chart']", "answer_format": "Float"},
]


def write_json(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, str]], extra: bool = False) -> Path:
    columns = {f: pa.array([r[f] for r in rows], pa.string()) for f in FIELDS}
    if extra:  # the Hugging Face layout may carry more columns; they are ignored
        columns["note"] = pa.array(["x"] * len(rows), pa.string())
    pq.write_table(pa.table(columns), path)
    return path


def write_tsv(path: Path, rows: list[dict[str, str]], indices: list[int]) -> Path:
    """An MMLBD-C / VLMEvalKit-style TSV: an index column, the seven fields in another order,
    and a base64 column (the PDF; large in the first row), as pandas writes it."""
    blob = base64.b64encode(b"%PDF-1.4 " * 40_000).decode()  # > csv's default 128 KiB field cap
    header = ["index", "image", "question", "answer", "doc_id", "doc_type", "evidence_pages",
              "evidence_sources", "answer_format"]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        for n, (index, row) in enumerate(zip(indices, rows, strict=True)):
            writer.writerow([index, blob if n == 0 else blob[:64], *(row[c] for c in header[2:])])
    return path


def test_three_layouts_load_the_same_rows(tmp_path: Path) -> None:
    from_json = load_benchmark(write_json(tmp_path / "samples.json", RAW))
    from_parquet = load_benchmark(write_parquet(tmp_path / "test.parquet", RAW, extra=True))
    from_tsv = load_benchmark(write_tsv(tmp_path / "MMLBD-C.tsv", RAW, [0, 1, 2, 3]))
    assert from_json.rows == from_parquet.rows == from_tsv.rows
    assert [b.layout for b in (from_json, from_parquet, from_tsv)] == ["samples.json", "parquet", "tsv"]
    row = from_json.rows[1]
    assert (row.index, row.evidence_pages, row.evidence_sources) == (
        1, (2, 5), ("Figure", "Pure-text (Plain-text)"))
    assert from_json.rows[2].question == 'Say "hi"\tplease?'
    for b in (from_json, from_parquet, from_tsv):
        assert b.sha256 == hashlib.sha256(b.path.read_bytes()).hexdigest()


def test_tsv_documents_decode_data_and_references(tmp_path: Path) -> None:
    """VLMEvalKit's layout: the PDF in base64 in a row, or the index of the row that holds it;
    two documents, the second named by reference from a later row."""
    from docthink.evals.data import tsv_carries_documents, tsv_documents

    pdf_a, pdf_b = b"%PDF-1.4 a" * 50, b"%PDF-1.7 b" * 50
    header = ["index", "image", "doc_id", "question", "answer", "doc_type", "evidence_pages",
              "evidence_sources", "answer_format"]
    rest = ["q", "1", "t", "[1]", "[]", "Int"]
    path = tmp_path / "c.tsv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerow([10, base64.b64encode(pdf_a).decode(), "a.pdf", *rest])
        writer.writerow([11, "10", "a.pdf", *rest])
        writer.writerow([12, base64.b64encode(pdf_b).decode(), "dir/b.pdf", *rest])
    assert tsv_carries_documents(path)
    assert tsv_documents(path, tmp_path / "docs") == ["a.pdf", "dir/b.pdf"]
    assert (tmp_path / "docs" / "a.pdf").read_bytes() == pdf_a
    assert (tmp_path / "docs" / "dir" / "b.pdf").read_bytes() == pdf_b
    before = (tmp_path / "docs" / "a.pdf").stat().st_mtime_ns
    tsv_documents(path, tmp_path / "docs")  # a rerun leaves identical files alone
    assert (tmp_path / "docs" / "a.pdf").stat().st_mtime_ns == before
    with path.open("a", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t").writerow([13, "99", "c.pdf", *rest])
    with pytest.raises(DataError, match=r"row 4: image '99' names no row holding a document"):
        tsv_documents(path, tmp_path / "docs")
    bad = tmp_path / "bad.tsv"
    bad.write_text("\t".join(header) + "\n" + "\t".join(["1", "x" * 80 + "!", "a.pdf", *rest])
                   + "\n")
    with pytest.raises(DataError, match="row 1: image is not base64"):
        tsv_documents(bad, tmp_path / "docs")
    assert not tsv_carries_documents(write_json(tmp_path / "samples.json", RAW))


def test_tsv_rows_are_keyed_by_their_index_column(tmp_path: Path) -> None:
    # MMLBD-C removed items from the 1,091 set: indices have gaps and keep their meaning.
    bench = load_benchmark(write_tsv(tmp_path / "c.tsv", RAW, [0, 4, 5, 1090]))
    assert [r.index for r in bench.rows] == [0, 4, 5, 1090]
    assert bench.by_index()[1090].answer == "12.5"


def test_page_kinds_follow_the_official_overlapping_split(tmp_path: Path) -> None:
    odd = {**RAW[2], "evidence_pages": "[4]"}  # unanswerable, yet one evidence page
    rows = load_benchmark(write_json(tmp_path / "samples.json", [*RAW, odd])).rows
    assert [r.page_kinds for r in rows] == [
        ("single-page",),
        ("cross-page",),
        ("unanswerable",),
        ("cross-page",),  # no evidence page but an answer
        ("single-page", "unanswerable"),  # counted in both, as the official code does
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"evidence_pages": "[2"}, "row 1: "),
        ({"evidence_pages": ""}, "row 1: "),
        ({"evidence_pages": "['x']"}, "row 1: field evidence_pages"),
        ({"answer_format": "Number"}, "row 1: field answer_format"),
        ({"question": None}, "row 1: field question"),
    ],
)
def test_a_bad_row_names_the_file_row_and_field(tmp_path: Path, change: dict[str, object],
                                                 message: str) -> None:
    rows = [RAW[0], {**RAW[1], **change}]
    path = write_json(tmp_path / "samples.json", rows)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=f"{path}: {message}"):
        load_benchmark(path)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing columns"):
        pq.write_table(pa.table({"doc_id": ["a.pdf"]}), tmp_path / "x.parquet")
        load_benchmark(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="index 0 repeats"):
        load_benchmark(write_tsv(tmp_path / "d.tsv", RAW[:2], [0, 0]))
    with pytest.raises(DataError, match="unknown layout"):
        load_benchmark(write_json(tmp_path / "rows.csv", RAW))
    with pytest.raises(DataError, match="no such file"):
        load_benchmark(tmp_path / "absent.json")


@pytest.mark.shared_data
@pytest.mark.skipif(not SAMPLES.exists(), reason=NO_SHARED_DATA)
def test_full_samples_json_through_every_layout(tmp_path: Path) -> None:
    raw = json.loads(SAMPLES.read_text())
    bench = load_benchmark(SAMPLES)
    assert len(bench.rows) == 1082
    assert Counter(r.answer_format for r in bench.rows) == {
        "Int": 299, "Str": 250, "None": 223, "Float": 159, "List": 151}
    kinds = Counter(k for r in bench.rows for k in r.page_kinds)
    assert kinds == {
        "single-page": sum(len(json.loads(r["evidence_pages"])) == 1 for r in raw),
        "cross-page": sum(len(json.loads(r["evidence_pages"])) != 1
                          and r["answer"] != "Not answerable" for r in raw),
        "unanswerable": 223,
    }
    # (doc_id, question) is not unique: rows are keyed by index.
    assert len({(r.doc_id, r.question) for r in bench.rows}) < 1082
    parquet = load_benchmark(write_parquet(tmp_path / "hf.parquet", raw))
    tsv = load_benchmark(write_tsv(tmp_path / "c.tsv", raw, list(range(1082))))
    assert parquet.rows == bench.rows == tsv.rows


# -- selection --------------------------------------------------------------------------------------


def _bench(tmp_path: Path, per_format: dict[str, int]):
    rows = []
    for fmt, n in per_format.items():
        for i in range(n):
            rows.append({**RAW[0], "doc_id": f"{fmt}-{i % 3}.pdf", "answer_format": fmt,
                         "question": f"{fmt} {i}"})
    return load_benchmark(write_json(tmp_path / "samples.json", rows))


def test_stratified_sample_keeps_format_proportions_and_is_reproducible(tmp_path: Path) -> None:
    bench = _bench(tmp_path, {"Int": 50, "Str": 30, "Float": 20})
    sample = stratified_sample(bench.rows, 10, seed=7)
    assert Counter(r.answer_format for r in sample) == {"Int": 5, "Str": 3, "Float": 2}
    assert sample == stratified_sample(bench.rows, 10, seed=7)
    assert sample != stratified_sample(bench.rows, 10, seed=8)
    assert [r.index for r in sample] == sorted(r.index for r in sample)
    # Largest remainder: 7 of (50, 30, 20) is 3.5, 2.1, 1.4 -> 4, 2, 1.
    assert Counter(r.answer_format for r in stratified_sample(bench.rows, 7, 0)) == {
        "Int": 4, "Str": 2, "Float": 1}
    # A larger sample keeps the smaller one's rows within each format.
    assert set(stratified_sample(bench.rows, 10, 3)) <= set(stratified_sample(bench.rows, 40, 3))


def test_select_skips_and_counts_missing_documents_before_sampling(tmp_path: Path) -> None:
    bench = _bench(tmp_path, {"Int": 30, "Str": 30})
    missing = {"Int-0.pdf": "pdf missing", "Str-1.pdf": "pdf missing"}
    selection = select_rows(bench, unavailable=missing, docs=None, sample=None, limit=None, seed=0)
    assert len(selection.skipped) == 20 and set(selection.skipped.values()) == {"pdf missing"}
    assert len(selection.rows) == 40
    assert not {r.doc_id for r in selection.rows} & missing.keys()

    docs = select_rows(bench, unavailable=missing, docs=["Int-0.pdf", "Int-1.pdf"], sample=None,
                       limit=None, seed=0)
    assert {r.doc_id for r in docs.rows} == {"Int-1.pdf"} and len(docs.skipped) == 10

    with pytest.raises(DataError, match=r"no question is about \['typo.pdf'\]"):
        select_rows(bench, unavailable=missing, docs=["typo.pdf"], sample=None, limit=None, seed=0)

    quick = select_rows(bench, unavailable=missing, docs=None, sample=10, limit=4, seed=0)
    assert len(quick.rows) == 4 and len(quick.skipped) == 20
    assert quick.rows == stratified_sample(selection.rows, 10, 0)[:4]
