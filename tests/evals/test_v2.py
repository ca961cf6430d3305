"""MMLongBench-Doc-V2 beside V1, on generated PDFs: V2's loader and labels, its judge (a real
OpenAI-protocol server scripting the judge and the evaluated model) with the request it gets, the
metric as V2 defines it, the run record, the cache, the refusal without a judge, the leaderboard's
column per benchmark, and the same predictions under V1's rules and V2's judge side by side."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from docthink.cli import app
from docthink.evals.benchmarks import BENCHMARKS
from docthink.evals.data import DataError, load_v2
from docthink.evals.judge import DEFAULT_JUDGE_PROMPT
from docthink.evals.recipe import BenchmarkName
from docthink.models.tasks import JudgeVerdict
from docthink.registry.leaderboard import build_leaderboard
from docthink.runs import Registry
from tests.evals.conftest import Planted
from tests.evals.helpers import openai_server, read_jsonl
from tests.helpers import docthink

srv = openai_server()

ITEM = re.compile(r"Question: (?P<question>.*)\nReference answer: (?P<reference>.*)\n"
                  r"Answer format: (?P<format>.*)\nResponse:\n(?P<response>.*)", re.DOTALL)


@dataclass(frozen=True)
class Versions:
    """V2 over the planted PDFs (samples.json, question_types.json, corrections_diff.json), and a
    V1 file it corrects: row 1's answer was wrong, row 2's question reworded, row 3's reference
    one V1's rules cannot score ("yes" as Int), and V1 asks row 4's question twice."""

    v2: Path
    v1: Path
    rows: list[dict[str, str]]  # V2's
    labels: list[dict[str, object]]


@pytest.fixture(scope="module")
def versions(planted: Planted, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    root = tmp_path_factory.mktemp("v2")
    rows = [dict(r) for r in planted.rows]
    reworded = "What was Sandvik Robotics' revenue in 2021, in million euros?"
    original = rows[2]["question"]
    rows[2]["question"] = reworded
    labels = [{"doc_id": r["doc_id"], "question": r["question"],
               "task_type": ("lookup", "derive")[i % 2], "requires_visual": i % 3 == 0}
              for i, r in enumerate(rows)]
    (root / "v2").mkdir()
    (root / "v2" / "samples.json").write_text(json.dumps(rows))
    (root / "v2" / "question_types.json").write_text(json.dumps(labels[::-1]))  # joined by key
    corrections = [
        {"doc_id": rows[1]["doc_id"], "dispute_type": "wrong_answer",
         "answer": {"v1": "31.2", "v2": rows[1]["answer"]}},
        {"doc_id": rows[2]["doc_id"], "dispute_type": "ambiguous_question",
         "question": {"v1": original, "v2": reworded}},
        {"doc_id": rows[3]["doc_id"], "dispute_type": "wrong_answer",
         "answer": {"v1": "yes", "v2": rows[3]["answer"]}},
    ]
    (root / "v2" / "corrections_diff.json").write_text(json.dumps(corrections))
    v1 = [dict(r) for r in planted.rows]
    v1[1]["answer"] = "31.2"
    v1[3]["answer"] = "yes"
    v1.insert(5, {**v1[4], "answer": "Not answerable", "answer_format": "None"})
    (root / "v1.json").write_text(json.dumps(v1))
    return Versions(root / "v2" / "samples.json", root / "v1.json", rows, labels)


# -- the evaluated model and the judge, scripted on one server ------------------------------------

# What the student says to each planted question (by row): a sentence the string metric cannot
# read (0), the answer with a % sign (1), a marked answer (2, 3), a hedge between two values (4),
# a wrong value (5) and a decline (6).
def student_reply(rows: list[dict[str, str]], i: int) -> str:
    answer = rows[i]["answer"]
    match i:
        case 0:
            return (f"<think>Page 2 gives the headcount.</think>\nThe company employed "
                    f"{int(answer):,} people at the end of 2021.")
        case 1:
            return f"The answer is {answer}%."
        case 2:
            return f"<think>The revenue line.</think>\nFinal answer: {int(answer):,}"
        case 3:
            return f"Final answer: {answer}"
        case 4:
            return f"It is either {rows[4]['answer']} or {rows[5]['answer']}."
        case 5:
            return f"Final answer: {answer[::-1]}"
    return "The document does not mention how many lighthouses there are."


def judge_reading(body: dict[str, Any]) -> JudgeVerdict:
    """A rule a test can predict, read off the request: the reference among the numbers of the
    response's last line, no hedge; a decline is an abstention, equivalent when the reference is
    `Not answerable`."""
    item = ITEM.fullmatch(body["messages"][1]["content"])
    assert item is not None, body["messages"][1]["content"]
    reference, response = item["reference"], item["response"]
    abstained = "does not mention" in response
    numbers = [n.replace(",", "") for n in re.findall(r"\d[\d,]*(?:\.\d+)?",
                                                      response.splitlines()[-1])]
    equivalent = (abstained if reference == "Not answerable"
                  else reference in numbers and "either" not in response)
    return JudgeVerdict(verdict="equivalent" if equivalent else "not_equivalent",
                        abstained=abstained)


class Scripted:
    """The student answers; the judge reads; questions in `broken` get a judge reply that is not
    JSON. Judge requests are kept for the test to inspect."""

    def __init__(self, rows: list[dict[str, str]], planted: Planted) -> None:
        self.rows = rows
        # V2's questions and V1's (row 2 was reworded): the student answers both the same way
        self.index = {r["question"]: i for i, r in enumerate(planted.rows)} | {
            r["question"]: i for i, r in enumerate(rows)}
        self.broken: set[str] = set()
        self.judged: list[dict[str, Any]] = []

    def __call__(self, body: dict[str, Any]) -> object:
        if body["model"] == "student":
            question = [p["text"] for p in body["messages"][-1]["content"]
                        if p["type"] == "text"][-1]
            return srv.Reply(student_reply(self.rows, self.index[question]), completion_tokens=9)
        self.judged.append(body)
        item = ITEM.fullmatch(body["messages"][1]["content"])
        assert item is not None
        if item["question"] in self.broken:
            return srv.Reply("I think it is wrong.")
        return srv.Reply(judge_reading(body).model_dump_json())


def v2_args(versions: Versions, planted: Planted, out: Path, server: Any,
            *extra: str | Path) -> list[str | Path]:
    return ["eval", "run", "--benchmark", "mmlongbench-v2", "--data", versions.v2,
            "--documents", planted.documents, "--out", out, "--runs-dir", out.parent / "runs",
            "--model-url", server.url, "--model-name", "student", "--mode", "plain",
            "--scoring-judge-url", server.url, "--scoring-judge-name", "judge", *extra]


# -- loading ----------------------------------------------------------------------------------------


def test_every_benchmark_name_has_a_loader_and_a_metric() -> None:
    assert set(BENCHMARKS) == set(BenchmarkName.__args__)  # type: ignore[attr-defined]
    assert [name for name, kind in BENCHMARKS.items() if kind.judged] == ["mmlongbench-v2"]


def test_v2_rows_carry_their_labels(versions: Versions) -> None:
    bench = load_v2(versions.v2)
    assert len(bench.rows) == len(versions.rows)
    for row, label in zip(bench.rows, versions.labels, strict=True):
        assert (row.question, row.task_type, row.requires_visual) == (
            label["question"], label["task_type"], label["requires_visual"])
    assert bench.files() == [versions.v2, versions.v2.parent / "question_types.json"]
    assert bench.labels_sha256 == hashlib.sha256(bench.files()[1].read_bytes()).hexdigest()


def test_a_question_without_labels_is_named(versions: Versions, tmp_path: Path) -> None:
    (tmp_path / "samples.json").write_text(versions.v2.read_text())
    labels = json.loads((versions.v2.parent / "question_types.json").read_text())
    (tmp_path / "question_types.json").write_text(json.dumps(labels[1:]))  # drops the last row's
    with pytest.raises(DataError, match=r"no labels for row 7 of samples.json"):
        load_v2(tmp_path / "samples.json")
    (tmp_path / "question_types.json").unlink()
    with pytest.raises(DataError, match=r"question_types.json: no such file"):
        load_v2(tmp_path / "samples.json")


def test_a_correct_answer_counts_as_answered_whatever_abstained_says() -> None:
    """Precision is correct answerable / answered: a judge that calls a correct answer to an
    answerable question an abstention must not push precision above 1."""
    from docthink.evals.data import BenchRow
    from docthink.evals.judge import JudgeMetric
    from docthink.evals.metrics import Answer
    from docthink.models.base import ChatResult, Usage

    def scored(answer: str, verdict: str, abstained: bool) -> bool:
        row = BenchRow(index=0, doc_id="d.pdf", doc_type="Brochure", question="q", answer=answer,
                       answer_format="Str", evidence_pages=(), evidence_sources=())
        reading = JudgeVerdict(verdict=verdict, abstained=abstained)  # type: ignore[arg-type]
        result = ChatResult(reading.model_dump_json(), reading, Usage(), "judge", 0.0)
        return JudgeMetric._scored(Answer(row, "plain", "r", "p", None, 1), result).answered

    assert scored("Paris", "equivalent", True)
    assert not scored("Paris", "not_equivalent", True)
    assert not scored("Not answerable", "equivalent", True)
    assert scored("Not answerable", "not_equivalent", False)


# -- end to end -------------------------------------------------------------------------------------


def test_v2_end_to_end_with_a_scripted_judge(planted: Planted, versions: Versions, server: Any,
                                             tmp_path: Path) -> None:
    server.reset()
    script = Scripted(versions.rows, planted)
    script.broken = {versions.rows[5]["question"]}
    server.responder = script
    out = tmp_path / "eval"
    docthink(*v2_args(versions, planted, out, server))

    predictions = read_jsonl(out / "predictions.jsonl")
    n = len(versions.rows) - 1  # the last row's PDF is missing
    assert [p["index"] for p in predictions] == list(range(n))
    # The judge got our rubric, then the question, the reference, its format and the FULL
    # response (reasoning included), asked for strict JSON at temperature 0.
    rubric = DEFAULT_JUDGE_PROMPT.read_text()
    assert len(script.judged) == n + 2  # row 5's reply never validates: 2 re-asks
    by_question = {ITEM.fullmatch(b["messages"][1]["content"])["question"]: b  # type: ignore[index]
                   for b in script.judged}
    for p in predictions:
        body = by_question[str(p["question"])]
        assert body["messages"][0] == {"role": "system", "content": rubric}
        assert body["messages"][1] == {"role": "user", "content": (
            f"Question: {p['question']}\nReference answer: {p['answer']}\n"
            f"Answer format: {p['answer_format']}\nResponse:\n{p['response']}")}
        assert p["response"] == student_reply(versions.rows, int(p["index"]))  # type: ignore[arg-type]
        assert (body["model"], body["temperature"], body["max_tokens"]) == ("judge", 0.0, 256)
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "JudgeVerdict", "schema": JudgeVerdict.model_json_schema(), "strict": True}}
    assert "<think>" in by_question[versions.rows[0]["question"]]["messages"][1]["content"]

    # Verdicts as scripted: the sentence, the % sign and the decline are equivalent; the hedge
    # is not; row 5's judge never answered in JSON (a failure, 0).
    assert [(p["verdict"], p["abstained"], p["score"]) for p in predictions] == [
        ("equivalent", False, 1.0), ("equivalent", False, 1.0), ("equivalent", False, 1.0),
        ("equivalent", False, 1.0), ("not_equivalent", False, 0.0), (None, None, 0.0),
        ("equivalent", True, 1.0)]
    assert str(predictions[5]["judge_failure"]).startswith("judge failed: invalid output")
    assert predictions[0]["pred"] != versions.rows[0]["answer"]  # V1's rules could not read it

    report = json.loads((out / "report.json").read_text())
    plain = report["modes"]["plain"]
    # V2's definitions: accuracy over all rows; recall over the 6 answerable rows; precision =
    # correct answerable / rows answered (not abstained: the failure counts as answered).
    assert (plain["acc"], plain["recall"], plain["precision"]) == pytest.approx((5 / 7, 4 / 6, 4 / 6))
    assert plain["f1"] == pytest.approx(4 / 6)
    assert (plain["answered"], plain["failures"], plain["n"]) == (6, 1, 7)
    for name in ("acc", "recall", "precision", "f1"):
        low, high = plain[f"{name}_ci95"]
        assert low <= plain[name] <= high
    assert {k: g["n"] for k, g in plain["by_task_type"].items()} == {"derive": 3, "lookup": 4}
    assert {k: g["n"] for k, g in plain["by_requires_visual"].items()} == {
        "needs the images": 3, "text suffices": 4}
    assert "by_page_kind" in plain and "by_evidence_source" in plain
    sha = hashlib.sha256(DEFAULT_JUDGE_PROMPT.read_bytes()).hexdigest()
    assert report["scoring"] == {"metric": "judge", "judge": "judge", "prompt": "judge_v2.txt",
                                 "prompt_sha256": sha, "max_tokens": 256}
    assert report["benchmark"] == "mmlongbench-v2"
    assert "not comparable with V1" in report["note"]
    markdown = (out / "report.md").read_text()
    assert "V2 numbers are not comparable with V1 numbers" in markdown
    assert f"LLM judge judge on the full response (prompt judge_v2.txt, sha256 {sha[:16]}" in markdown
    assert "## Task type (V2 labels)" in markdown and "| derive | 3 |" in markdown

    (record,) = Registry(tmp_path / "registry.sqlite").list(kind="eval")
    assert record.metrics["benchmark"] == "mmlongbench-v2"
    assert (record.metrics["judge"], record.metrics["judge_prompt_sha256"]) == ("judge", sha)
    assert record.metrics["acc"] == pytest.approx(5 / 7)
    summary = json.loads((Path(record.run_dir) / "summary.json").read_text())
    assert summary["scoring"]["prompt_sha256"] == sha
    inputs = {Path(a.path).name for a in record.artifacts if a.role == "input"}
    assert {"samples.json", "question_types.json"} <= inputs

    # A rerun asks nothing that was answered: only row 5's judge again (failures are not cached),
    # which now answers.
    received = len(server.received)
    script.broken = set()
    script.judged.clear()
    docthink(*v2_args(versions, planted, out, server))
    assert len(server.received) - received == 1
    assert [ITEM.fullmatch(b["messages"][1]["content"])["question"]  # type: ignore[index]
            for b in script.judged] == [versions.rows[5]["question"]]
    report = json.loads((out / "report.json").read_text())
    assert report["modes"]["plain"]["failures"] == 0
    assert report["acc"] == pytest.approx(5 / 7)  # row 5's wrong value: not equivalent


def test_leaderboard_has_a_column_per_benchmark(planted: Planted, versions: Versions, server: Any,
                                                tmp_path: Path) -> None:
    """The same model evaluated on V1 (its rules) and on V2 (its judge): one row, the two scores
    under their own benchmark, never in one column."""
    server.reset()
    server.responder = Scripted(versions.rows, planted)
    docthink(*v2_args(versions, planted, tmp_path / "v2", server))
    docthink("eval", "run", "--data", planted.data, "--documents", planted.documents,
             "--out", tmp_path / "v1", "--runs-dir", tmp_path / "runs", "--model-url", server.url,
             "--model-name", "student", "--mode", "plain")
    v1 = json.loads((tmp_path / "v1" / "report.json").read_text())
    v2 = json.loads((tmp_path / "v2" / "report.json").read_text())
    assert v1["acc"] != v2["acc"]
    board = build_leaderboard(Registry(tmp_path / "registry.sqlite"))
    (row,) = board.rows
    assert sorted(row.scores) == ["mmlongbench-doc", "mmlongbench-v2"]
    assert row.value("mmlongbench-doc", "acc") == v1["acc"]
    assert row.value("mmlongbench-v2", "acc") == v2["acc"]
    (record,) = board.records()
    assert record["mmlongbench-doc acc"] == v1["acc"] and record["mmlongbench-v2 acc"] == v2["acc"]


def test_v2_without_a_judge_is_refused_in_one_line(planted: Planted, versions: Versions,
                                                   server: Any, tmp_path: Path) -> None:
    server.reset()
    out = tmp_path / "eval"
    args = [str(a) for a in v2_args(versions, planted, out, server)]
    args = args[:args.index("--scoring-judge-url")]
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"index": 0, "pred": "1", "response": "1"}\n')
    for command in (args, ["eval", "rescore", str(predictions), "--benchmark", "mmlongbench-v2",
                           "--data", str(versions.v2), "--runs-dir", str(tmp_path / "runs")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines == ["error: mmlongbench-v2 is scored by an LLM judge and none is set: give "
                         "scoring.judge in the recipe (any OpenAI-compatible endpoint) or "
                         "--scoring-judge-url and --scoring-judge-name"]
    assert server.received == [] and not out.exists()
    assert Registry(tmp_path / "registry.sqlite").list() == []  # refused before a run began


def test_a_misspelt_benchmark_is_not_scored_by_v1_rules(planted: Planted, versions: Versions,
                                                        tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "run", "--benchmark", "mmlongbench-V2", "--data",
                                      str(versions.v2), "--documents", str(planted.documents),
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 2
    assert "benchmark" in result.output and "mmlongbench-v2" in result.output
    assert not (tmp_path / "eval").exists()


# -- side by side -----------------------------------------------------------------------------------


def test_rescore_puts_v1_rules_beside_v2_judge(planted: Planted, versions: Versions, server: Any,
                                               tmp_path: Path) -> None:
    server.reset()
    script = Scripted(versions.rows, planted)
    server.responder = script
    out = tmp_path / "eval"
    docthink(*v2_args(versions, planted, out, server))
    judged = len(script.judged)

    compared = tmp_path / "compare.json"
    docthink("eval", "rescore", out / "predictions.jsonl", "--benchmark", "mmlongbench-v2",
             "--data", versions.v2, "--v1-data", versions.v1, "--scoring-judge-url", server.url,
             "--scoring-judge-name", "judge", "--out", compared, "--runs-dir", tmp_path / "runs")
    assert len(script.judged) == judged  # every verdict came from the eval run's cache
    report = json.loads(compared.read_text())
    evaluated = json.loads((out / "report.json").read_text())
    assert report["modes"]["plain"]["acc"] == evaluated["modes"]["plain"]["acc"]

    comparison = report["comparison"]
    # Row 4's question is asked twice in V1; the other six are compared (row 2 through the
    # corrections diff's rewording).
    assert (comparison["compared"], comparison["not_compared"]) == (6, {"2 V1 rows ask it": 1})
    sides = comparison["modes"]["plain"]
    assert sides["v1"]["acc"] == pytest.approx(2 / 6)  # rows 2 and 6
    assert sides["v1_rules_v2_reference"]["acc"] == pytest.approx(4 / 6)  # + rows 1 and 3
    assert sides["v2"]["acc"] == pytest.approx(5 / 6)  # + row 0; row 5 is wrong
    assert {d["index"]: (d["v1_index"], d["v1_score"], d["v2_verdict"], d["cause"])
            for d in comparison["differ"]} == {
        0: (0, 0.0, "equivalent", "metric"),  # a sentence the string metric cannot read
        1: (1, 0.0, "equivalent", "reference corrected in V2"),
        3: (3, 0.0, "equivalent", "V1 cannot score its reference"),
    }
    assert comparison["differ_by_cause"] == {"V1 cannot score its reference": 1,
                                             "metric": 1, "reference corrected in V2": 1}
    (unscoreable,) = comparison["v1_unscoreable"]
    assert (unscoreable["index"], unscoreable["v1_answer"], unscoreable["v1_format"],
            unscoreable["unscoreable"], unscoreable["v2_score"]) == (
        3, "yes", "Int", ["V1's reference"], 1.0)
    markdown = compared.with_suffix(".md").read_text()
    assert "## V1's rules and V2's judge on the same predictions" in markdown
    assert "| accuracy | 33.3 | 66.7 | 83.3 |" in markdown
    assert "### Rows whose verdicts differ: 3" in markdown
    assert "### Rows V1's rules cannot score: 1" in markdown
    assert "| 3 | 3 | plain |" in markdown


def test_rescore_for_the_judge_needs_the_response(versions: Versions, server: Any,
                                                  tmp_path: Path) -> None:
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"index": 0, "pred": "1", "response": "1"}\n'
                           '{"index": 1, "pred": "13.2"}\n')
    result = CliRunner().invoke(app, [
        "eval", "rescore", str(predictions), "--benchmark", "mmlongbench-v2", "--data",
        str(versions.v2), "--scoring-judge-url", server.url, "--scoring-judge-name", "judge",
        "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "line 2: response: the judge reads the full response" in " ".join(result.output.split())
