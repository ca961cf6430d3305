"""The trace stages on real MMLongBench-Doc questions and PDFs, with the offline teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from docthink.questions.rows import mmlongbench_rows
from tests.helpers import docthink

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlongbench"
DOCS = ("2310.07609v1.pdf", "a5879805d70c854ea4361e43a84e3bb2.pdf",
        "3276a5b991c49cf5f9a4af0f7d6fce67.pdf")

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"MMLongBench-Doc data not found at {SHARED}"),
]


def test_adapter_keys_rows_by_index_and_keeps_evidence_pages() -> None:
    rows = mmlongbench_rows(SHARED / "samples.json")
    assert len(rows) == 1082
    assert [r.qid for r in rows[:3]] == ["0", "1", "2"]
    raw = json.loads((SHARED / "samples.json").read_text())
    assert rows[5].source_pages == json.loads(raw[5]["evidence_pages"])
    assert all(r.source_pages == [] for r, s in zip(rows, raw) if s["answer"] == "Not answerable"
               and s["evidence_pages"] == "[]")


def test_trace_invariants_on_real_documents(tmp_path: Path) -> None:
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    for name in DOCS:
        (pdfs / name).symlink_to(SHARED / "documents" / name)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "trace: {top_k: 4}\n"
        "answer: {verify: {on_mismatch: flag}}\n"  # the teacher misses most: keep them all
        "export: {placement: {system: 1, prefix: 1, suffix: 1, none: 1}}\n"
    )
    docthink("ingest", pdfs, "--out", tmp_path / "corpus", "--runs-dir", tmp_path / "runs")
    docthink("synth", "--corpus", tmp_path / "corpus", "--questions", SHARED / "samples.json",
             "--out", tmp_path / "out", "--recipe", recipe, "--runs-dir", tmp_path / "runs")
    out = tmp_path / "out"
    raw = json.loads((SHARED / "samples.json").read_text())
    ours = {str(i) for i, r in enumerate(raw) if r["doc_id"] in DOCS}
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").open()]
    assert sum(d["reason"].startswith("document not in corpus") for d in dropped) == 1082 - len(ours)
    evidence = pq.read_table(out / "evidence.parquet").to_pylist()
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    assert {t["qid"] for t in traces} | {d["qid"] for d in dropped} >= ours
    for trace in traces:
        rows = {e["position"]: e for e in evidence if e["qid"] == trace["qid"]}
        assert len(trace["positions"]) <= 4
        scores = [rows[p]["relevance_score"] for p in trace["positions"]]
        assert scores == sorted(scores, reverse=True) and min(scores) > 1.0
        sources = [p for p, e in rows.items() if e["is_source"]]
        assert all(rows[p]["relevance_score"] >= 6.0 for p in sources)
        if len(sources) <= 4:
            assert set(sources) <= set(trace["positions"]), trace["qid"]
    examples = [json.loads(line) for line in (out / "examples.jsonl").open()]
    assert len(examples) == len(traces)
    # every answer was checked against the row's reference, by the row's answer format
    verdicts = pq.read_table(out / "verification.parquet").to_pylist()
    assert sorted(v["qid"] for v in verdicts) == sorted(t["qid"] for t in traces)
    for v in verdicts:
        assert (v["reference"], v["answer_format"]) == (raw[int(v["qid"])]["answer"],
                                                        raw[int(v["qid"])]["answer_format"])
        assert v["action"] == ("kept" if v["match"] else "flagged")
    for example in examples:
        question = example["user"][-1]
        placement = example["placement"]
        assert (example["system"] == "<cot>") == (placement == "system")
        assert example["user"][0].startswith("<cot> ") == (placement == "prefix")
        assert question.endswith(" <cot>") == (placement == "suffix")
        assert example["assistant"].startswith("<think>Page ") == (placement != "none")
        n_images = sum(isinstance(p, dict) for p in example["user"])
        first = example["user"][0].removeprefix("<cot> ")
        assert first == "Page 1:" and f"Page {n_images}:" in example["user"]
    assert {e["placement"] for e in examples} == {"system", "prefix", "suffix", "none"}
