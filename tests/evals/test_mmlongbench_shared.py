"""Evaluations on the real MMLongBench-Doc questions and PDFs in ../shared/data/mmlongbench, with
the offline teacher and with a local OpenAI-protocol server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest

from docthink.evals.scoring import score
from docthink.runs import Registry
from tests.evals.helpers import DOCUMENTS, NO_SHARED_DATA, SAMPLES, openai_server, read_jsonl
from tests.helpers import docthink

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not DOCUMENTS.is_dir(), reason=NO_SHARED_DATA),
]

# Four short documents (10-17 pages, 32 questions) keep the run well under a minute.
SMALL_DOCS = ("2310.07609v1.pdf", "a5879805d70c854ea4361e43a84e3bb2.pdf",
              "3276a5b991c49cf5f9a4af0f7d6fce67.pdf", "fd76bbefe469561966e5387aa709c482.pdf")


def run_args(out: Path, *extra: str | Path) -> list[str | Path]:
    return ["eval", "run", "--data", SAMPLES, "--documents", DOCUMENTS, "--out", out,
            "--runs-dir", out.parent / "runs", *extra]


def test_offline_teacher_on_real_documents(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    docthink(*run_args(out, *(a for d in SMALL_DOCS for a in ("--doc", d))))
    samples = json.loads(SAMPLES.read_text())
    expected = [i for i, r in enumerate(samples) if r["doc_id"] in SMALL_DOCS]
    report = json.loads((out / "report.json").read_text())
    assert report["questions"] == {"evaluated": len(expected), "skipped": 0, "skipped_reasons": {}}
    assert report["data"]["rows"] == 1082 and report["data"]["layout"] == "samples.json"

    predictions = read_jsonl(out / "predictions.jsonl")
    assert [(p["index"], p["mode"]) for p in predictions] == [
        (i, m) for m in ("plain", "cot") for i in expected]
    for p in predictions:
        reference = samples[p["index"]]  # type: ignore[index]
        assert p["answer"] == reference["answer"]
        assert p["score"] == score(reference["answer"], p["pred"], reference["answer_format"])
        assert p["failure"] is None
    # The teacher reads text layers and ignores the <cot> system message: same answers.
    plain = [p["pred"] for p in predictions if p["mode"] == "plain"]
    assert plain == [p["pred"] for p in predictions if p["mode"] == "cot"]
    for mode in ("plain", "cot"):
        m = report["modes"][mode]
        scores = [p["score"] for p in predictions if p["mode"] == mode]
        assert m["acc"] == pytest.approx(sum(scores) / len(scores))  # type: ignore[arg-type]
        low, high = m["acc_ci95"]
        assert low <= m["acc"] <= high
        rows = [samples[i] for i in expected]
        pages = [json.loads(r["evidence_pages"]) for r in rows]
        assert {k: g["n"] for k, g in m["by_page_kind"].items()} == {
            "single-page": sum(len(p) == 1 for p in pages),
            "cross-page": sum(len(p) != 1 and r["answer"] != "Not answerable"
                              for p, r in zip(pages, rows, strict=True)),
            "unanswerable": sum(r["answer"] == "Not answerable" for r in rows),
        }
        assert sum(g["n"] for g in m["by_doc_type"].values()) == len(expected)
        assert m["mean_output_tokens"] > 0

    (record,) = Registry(tmp_path / "registry.sqlite").list(kind="eval")
    assert record.metrics["acc"] == report["acc"] and "acc_cot" in record.metrics

    rescored = tmp_path / "rescored.json"
    docthink("eval", "rescore", out / "predictions.jsonl", "--data", SAMPLES, "--out", rescored,
             "--runs-dir", tmp_path / "runs")
    assert json.loads(rescored.read_text())["modes"] == report["modes"]


def test_missing_pdfs_are_skipped_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    docthink(*run_args(out, "--limit", "6", "--mode", "plain"))
    report = json.loads((out / "report.json").read_text())
    # 292 of the 1,082 questions have their PDF in the sample; --limit applies after skipping.
    assert report["questions"] == {"evaluated": 6, "skipped": 1082 - 292,
                                   "skipped_reasons": {"pdf missing": 1082 - 292}}
    assert [p["index"] for p in read_jsonl(out / "predictions.jsonl")] == [7, 8, 9, 10, 11, 12]
    assert sorted(p.name for p in (out / "pdfs").iterdir()) == ["Independents-Report.pdf"]


def test_local_openai_server_on_real_documents(tmp_path: Path) -> None:
    """A server that answers each question with its reference: every row scores what the
    reference scores against itself, and each request carries every page (under 120)."""
    srv = openai_server()
    samples = json.loads(SAMPLES.read_text())
    docs = SMALL_DOCS[:2]
    answers = {r["question"]: r["answer"] for r in samples if r["doc_id"] in docs}

    def respond(body: dict[str, Any]) -> object:
        question = [p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text"][-1]
        return srv.Reply(answers[question], completion_tokens=len(answers[question].split()))

    with srv.OpenAIServer(respond) as server:
        out = tmp_path / "eval"
        docthink(*run_args(out, "--doc", docs[0], "--doc", docs[1], "--model-url", server.url,
                           "--model-name", "reference-oracle"))
        pages = {d: len(pdfium.PdfDocument(DOCUMENTS / d)) for d in docs}
        received = [r.body for r in server.received]
    assert len(received) == 2 * len(answers)
    for body in received:
        images = [p for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
        assert len(images) in pages.values()
    report = json.loads((out / "report.json").read_text())
    predictions = read_jsonl(out / "predictions.jsonl")
    for p in predictions:
        assert (p["pred"], p["score"]) == (p["answer"], 1.0)
    assert report["acc"] == 1.0 and report["modes"]["cot"]["acc"] == 1.0
    assert report["f1"] == 1.0
