"""MMLongBench-Doc-V2 on the real data in ../shared/data: all 1,071 questions and their labels,
the questions over V1's 37 shared PDFs evaluated end to end with a scripted judge, and the rows
V1's rules cannot score, scored by V2's judge beside V1's rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from docthink.evals.data import load_benchmark, load_v2, select_rows
from docthink.evals.judge import DEFAULT_JUDGE_PROMPT
from docthink.evals.scoring import scoreable
from docthink.models.tasks import JudgeVerdict
from docthink.runs import Registry
from tests.evals.helpers import (
    DOCUMENTS,
    NO_SHARED_V2,
    SAMPLES,
    SAMPLES_V2,
    SHARED_V2,
    openai_server,
    read_jsonl,
)
from tests.evals.test_mmlongbench_shared import SMALL_DOCS
from tests.evals.test_v2 import ITEM
from tests.helpers import docthink

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not (SAMPLES_V2.is_file() and DOCUMENTS.is_dir()), reason=NO_SHARED_V2),
]
srv = openai_server()


def test_loads_all_1071_rows_with_their_labels() -> None:
    bench = load_v2(SAMPLES_V2)
    labels = json.loads((SHARED_V2 / "question_types.json").read_text())
    assert len(bench.rows) == len(labels) == 1071
    assert len({r.doc_id for r in bench.rows}) == 134
    by_key = {(x["doc_id"], x["question"]): x for x in labels}
    for row in bench.rows:
        label = by_key[(row.doc_id, row.question)]
        assert (row.task_type, row.requires_visual) == (label["task_type"], label["requires_visual"])
    # 292 questions are about the 37 PDFs shipped with V1; the other 779 are skipped as missing.
    pdfs = {p.name for p in DOCUMENTS.iterdir()}
    missing = {r.doc_id: "pdf missing" for r in bench.rows if r.doc_id not in pdfs}
    selection = select_rows(bench, unavailable=missing, docs=None, sample=None, limit=None, seed=0)
    assert (len(pdfs), len(selection.rows), len(selection.skipped)) == (37, 292, 779)
    assert {r.doc_id for r in selection.rows} == pdfs


def judge_by_substring(body: dict[str, Any]) -> object:
    """Equivalent when the reference occurs in the response (any case); a response that says
    `Not answerable` abstains."""
    item = ITEM.fullmatch(body["messages"][1]["content"])
    assert item is not None
    response = item["response"].lower()
    verdict = JudgeVerdict(
        verdict="equivalent" if item["reference"].lower() in response else "not_equivalent",
        abstained="not answerable" in response)
    return srv.Reply(verdict.model_dump_json())


def test_v2_on_the_shared_pdfs_with_a_scripted_judge(tmp_path: Path) -> None:
    """The offline teacher answers the V2 questions about four short shared PDFs; the judge gets
    each question, its V2 reference and format and the teacher's full response."""
    with srv.OpenAIServer(judge_by_substring) as server:
        out = tmp_path / "eval"
        docthink("eval", "run", "--benchmark", "mmlongbench-v2", "--data", SAMPLES_V2,
                 "--documents", DOCUMENTS, "--out", out, "--runs-dir", tmp_path / "runs",
                 "--mode", "plain", "--scoring-judge-url", server.url,
                 "--scoring-judge-name", "judge", *(a for d in SMALL_DOCS for a in ("--doc", d)))
        bodies = [r.body for r in server.received]
    bench = load_v2(SAMPLES_V2)
    expected = [r for r in bench.rows if r.doc_id in SMALL_DOCS]
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["index"] for p in predictions] == [r.index for r in expected]
    rubric = DEFAULT_JUDGE_PROMPT.read_text()
    assert len(bodies) == len(expected)
    contents = sorted(b["messages"][1]["content"] for b in bodies)
    assert all(b["messages"][0]["content"] == rubric for b in bodies)
    assert contents == sorted(
        f"Question: {r.question}\nReference answer: {r.answer}\nAnswer format: "
        f"{r.answer_format}\nResponse:\n{p['response']}"
        for r, p in zip(expected, predictions, strict=True))
    scores = [p["score"] for p in predictions]
    assert scores == [float(str(r.answer).lower() in str(p["response"]).lower())
                      for r, p in zip(expected, predictions, strict=True)]
    report = json.loads((out / "report.json").read_text())
    assert report["questions"] == {"evaluated": len(expected), "skipped": 0, "skipped_reasons": {}}
    assert report["data"]["rows"] == 1071 and report["data"]["labels"]["file"] == "question_types.json"
    plain = report["modes"]["plain"]
    assert plain["acc"] == pytest.approx(sum(scores) / len(scores))  # type: ignore[arg-type]
    tasks: dict[str, int] = {}
    for r in expected:
        tasks[str(r.task_type)] = tasks.get(str(r.task_type), 0) + 1
    assert {k: g["n"] for k, g in plain["by_task_type"].items()} == tasks
    (record,) = Registry(tmp_path / "registry.sqlite").list(kind="eval")
    assert record.metrics["benchmark"] == "mmlongbench-v2" and record.metrics["judge"] == "judge"


# The rows whose reference V1's rules cannot score (it scores 0 against itself), in V1 or in V2:
# V2 row -> (V1 row, V1's reference and format, V2's reference and format). V1's GPT-4 row is
# V2's 961 through the corrections diff, which rewrote its question.
UNSCOREABLE = {
    73: (73, ("[]", "List"), ("[]", "List")),
    210: (210, ("21%", "Int"), ("21%", "Int")),
    731: (732, ("14:04 CET", "Int"), ("13:51 CET", "Int")),
    733: (734, ("yes", "Int"), ("no", "Str")),
    961: (972, ("GPT-4", "Int"), ("GPT-4", "Str")),
}


def test_rows_v1_cannot_score_are_scored_by_v2s_judge(tmp_path: Path) -> None:
    """Responses stating V2's reference: V2's judge credits all of them; V1's rules none (five
    questions, six references: V2 corrected 14:04 CET to 13:51 CET, still as Int)."""
    v2 = load_v2(SAMPLES_V2)
    rows = v2.by_index()
    duplicate = 504  # V1 asks this question twice (rows 504 and 505)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(
        json.dumps({"index": i, "pred": rows[i].answer,
                    "response": f"<think>Reading the pages.</think>\nIt is {rows[i].answer}."})
        + "\n" for i in (*UNSCOREABLE, duplicate)))
    out = tmp_path / "compare.json"
    with srv.OpenAIServer(judge_by_substring) as server:
        docthink("eval", "rescore", predictions, "--benchmark", "mmlongbench-v2", "--data",
                 SAMPLES_V2, "--v1-data", SAMPLES, "--scoring-judge-url", server.url,
                 "--scoring-judge-name", "judge", "--out", out, "--runs-dir", tmp_path / "runs")
    report = json.loads(out.read_text())
    assert report["rows"] == [{"index": i, "score": 1.0} for i in sorted((*UNSCOREABLE, duplicate))]
    comparison = report["comparison"]
    assert (comparison["compared"], comparison["not_compared"]) == (5, {"2 V1 rows ask it": 1})
    listed = {u["index"]: u for u in comparison["v1_unscoreable"]}
    assert sorted(listed) == sorted(UNSCOREABLE)
    v1 = load_benchmark(SAMPLES).by_index()
    references = set()
    for index, (v1_index, v1_ref, v2_ref) in UNSCOREABLE.items():
        u = listed[index]
        assert (u["v1_index"], (u["v1_answer"], u["v1_format"]), (u["v2_answer"], u["v2_format"])
                ) == (v1_index, v1_ref, v2_ref)
        assert (u["v1_score"], u["v2_score"], u["v2_verdict"]) == (0.0, 1.0, "equivalent")
        assert (v1[v1_index].answer, v1[v1_index].answer_format) == v1_ref
        references |= {ref for ref, side in ((v1_ref, "V1's reference"), (v2_ref, "V2's reference"))
                       if side in u["unscoreable"]}
    assert references == {("[]", "List"), ("21%", "Int"), ("14:04 CET", "Int"), ("yes", "Int"),
                          ("GPT-4", "Int"), ("13:51 CET", "Int")}
    assert all(not scoreable(ref, fmt) for ref, fmt in references)  # type: ignore[arg-type]
    assert {d["index"]: d["cause"] for d in comparison["differ"]} == dict.fromkeys(
        UNSCOREABLE, "V1 cannot score its reference")
    sides = comparison["modes"]["plain"]
    assert (sides["v1"]["acc"], sides["v2"]["acc"]) == (0.0, 1.0)
    markdown = out.with_suffix(".md").read_text()
    assert "### Rows V1's rules cannot score: 5" in markdown
    assert "| 961 | 972 | plain |" in markdown
