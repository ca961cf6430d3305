"""The stages users run against vLLM, run against vLLM: a real server (the CPU build, a tiny
Qwen2.5-VL) answering `docthink synth`, `docthink questions` and `docthink eval run` through the
command line. What is asserted is what can fail, counted at the server from its `/metrics`: the
requests it received are the requests docthink says it sent, the tokens it processed are the
tokens the run records, a rerun over the request cache sends nothing, a resumed run sends nothing
that had finished, and a recipe the server cannot take is refused before the first request.

About 2 minutes on a quiet 2-core machine (5 at load average 11), the server's start-up the
largest part (see conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from docthink.cli import app
from docthink.corpus.corpus import Corpus
from docthink.runs import Registry
from docthink.serving import synth_demands
from docthink.synth.recipe import SynthRecipe
from tests.evals.helpers import read_jsonl
from tests.helpers import docthink
from tests.vllm.conftest import IMAGES, Served, synth_recipe, tiny_spec, write

pytestmark = pytest.mark.timeout(1200)  # the first test waits for the server's start-up


def last_run(kind: str) -> tuple[Any, dict[str, Any]]:
    """The newest run of `kind` in this test's registry, and its summary."""
    with Registry(Path(os.environ["DOCTHINK_REGISTRY"])) as registry:
        [record] = registry.list(kind=kind, limit=1)
    return record, json.loads((Path(record.run_dir) / "summary.json").read_text())


def sent(usage: dict[str, dict[str, Any] | None]) -> dict[str, int]:
    """docthink's own account of what it sent, summed over its models."""
    meters = [m for m in usage.values() if m is not None]
    return {"posts": sum(m["sent"] for m in meters),
            "prompt_tokens": sum(m["prompt_tokens"] for m in meters),
            "completion_tokens": sum(m["completion_tokens"] for m in meters)}


def at_server(delta: dict[str, int]) -> dict[str, int]:
    return {k: delta[k] for k in ("posts", "prompt_tokens", "completion_tokens")}


def table(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def evidence_requests(served: Served) -> int:
    """One per (question, context page): the sample questions' contexts are whole documents."""
    with Corpus.open(served.corpus) as corpus:
        return sum(corpus.n_pages(json.loads(line)["doc_id"]) for line in served.questions.open())


def synth_args(recipe: Path, runs: Path) -> list[str | Path]:
    return ["synth", "--recipe", recipe, "--runs-dir", runs]


def test_synth_through_vllm_counts_every_request_and_token(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    # a random model's answers rarely match the references: flagged (kept and listed), not
    # dropped, so every question reaches the export
    recipe = write(tmp_path / "r.yaml", synth_recipe(
        served.url, served.corpus, served.questions, out,
        answer={"max_tokens": 128, "vision_ratio": 0.5, "verify": {"on_mismatch": "flag"}}))
    before = served.server.metrics()
    docthink(*synth_args(recipe, tmp_path / "runs"))
    delta = served.server.metrics() - before
    record, summary = last_run("synth")
    assert record.status == "ok"
    usage, counts = summary["usage"], summary["counts"]
    # what the server received and processed is what the run records
    assert at_server(delta) == sent(usage), (delta, usage)
    assert delta["finished"] == delta["posts"]  # every request reached the engine: none refused
    # one evidence request per (question, context page); failures counted with their reasons
    evidence = table(out / "evidence.parquet")
    assert len(evidence) == counts["evidence_requests"] == usage["evidence"]["requests"] \
        == evidence_requests(served)
    failed = [e["failure"] for e in evidence if e["failure"] is not None]
    assert counts["evidence_failures"] == len(failed) == usage["evidence"]["failures"]
    assert sum(usage["evidence"]["failure_reasons"].values()) == len(failed)
    # with the server's image limit stated and top_k within it: no failures at all
    assert all(m["failures"] == 0 for m in usage.values()), usage
    assert counts["questions"] == counts["traces"] == counts["examples"] == 8
    # every answer checked against its reference; each mismatch flagged and listed, none dropped
    verdicts = table(out / "verification.parquet")
    assert counts["verified"] == len(verdicts) == 8 and counts["verify_dropped"] == 0
    assert sum(v["action"] == "flagged" for v in verdicts) == counts["verify_mismatches"]
    # both answer branches; the vision branch sends up to K images, K of them at least once
    answers = {a["qid"]: a for a in table(out / "answers.parquet")}
    traces = {t["qid"]: t for t in table(out / "traces.parquet")}
    assert {a["branch"] for a in answers.values()} == {"vision", "text"}
    vision = [len(traces[q]["positions"]) for q, a in answers.items() if a["branch"] == "vision"]
    assert max(vision) == IMAGES and all(a["failure"] is None for a in answers.values())
    # each answer's request took no more tokens than the limits check assumed (an upper bound)
    bound = {d.role: d.tokens for d in synth_demands(
        SynthRecipe.model_validate(json.loads(recipe.read_text())))}
    for a in answers.values():
        assert a["prompt_tokens"] + 128 <= bound[f"models.answer_{a['branch']}"], (a, bound)

    # the same run again: every request from the cache, nothing sent, the same examples
    examples = (out / "examples.jsonl").read_bytes()
    before = served.server.metrics()
    docthink(*synth_args(recipe, tmp_path / "runs"))
    assert served.server.metrics() - before == dict.fromkeys(delta, 0)
    _, again = last_run("synth")
    assert all(m["cache_hits"] == m["requests"] and m["sent"] == 0
               for m in again["usage"].values())
    assert (out / "examples.jsonl").read_bytes() == examples


def _refused(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_a_recipe_over_the_servers_limits_is_refused_before_the_first_request(
    served: Served, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    before = served.server.metrics()
    # top_k 16 against a server that takes 8 images per prompt (stated in the spec)
    too_many = write(tmp_path / "k16.yaml", synth_recipe(
        served.url, served.corpus, served.questions, tmp_path / "k16", trace={"top_k": 16}))
    line = _refused(*synth_args(too_many, runs))
    assert line.startswith("error: trace.top_k gives models.answer_vision 16 images in one "
                           "request"), line
    assert "at most 8 (models.answer_vision.limits.images_per_prompt)" in line
    assert "lower trace.top_k" in line and """--limit-mm-per-prompt '{"image": 16}'""" in line
    # answers longer than the model's context, which nobody stated: read from /v1/models
    too_long = write(tmp_path / "long.yaml", synth_recipe(
        served.url, served.corpus, served.questions, tmp_path / "long",
        answer={"max_tokens": 3000, "vision_ratio": 0.5}))
    line = _refused(*synth_args(too_long, runs))
    assert "models.answer_text's longest request (an answer from a trace of 8 pages)" in line
    assert f"but its server takes 3,840 (max_model_len read from {served.url}/models)" in line
    assert "answer.max_tokens" in line
    # an evaluation showing up to 120 pages (the official protocol's cap)
    samples = _samples(served.questions, tmp_path / "samples.json")
    model = tiny_spec(served.url, images_per_prompt=IMAGES)
    eval_recipe = write(tmp_path / "eval.yaml", {"data": str(samples), "corpus": str(served.corpus),
                                                 "out": str(tmp_path / "eval"), "model": model})
    line = _refused("eval", "run", eval_recipe, "--runs-dir", runs)
    assert line.startswith("error: inference.max_pages gives model 28 images in one request"), line
    assert served.server.metrics() - before == dict.fromkeys(before.counts(), 0)
    with Registry(Path(os.environ["DOCTHINK_REGISTRY"])) as registry:
        assert registry.list() == []  # refused before any run was recorded
    assert not (tmp_path / "k16").exists() and not (tmp_path / "eval").exists()


def _samples(questions: Path, out: Path) -> Path:
    """The sample questions as an MMLongBench-Doc samples.json."""
    rows = [{"doc_id": q["doc_id"], "doc_type": "Financial report", "question": q["question"],
             "answer": q["answer"], "evidence_pages": str(q["source_pages"]),
             "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Str"}
            for q in map(json.loads, questions.open())]
    out.write_text(json.dumps(rows), encoding="utf-8")
    return out


def test_eval_through_vllm_with_and_without_cot(served: Served, tmp_path: Path) -> None:
    samples = _samples(served.questions, tmp_path / "samples.json")
    recipe = write(tmp_path / "eval.yaml", {
        "data": str(samples), "corpus": str(served.corpus), "out": str(tmp_path / "eval"),
        "model": tiny_spec(served.url, images_per_prompt=IMAGES),
        "inference": {"max_pages": IMAGES, "max_tokens": 48, "page_index": "Page {i}:",
                      "modes": ["plain", "cot"]}})
    before = served.server.metrics()
    docthink("eval", "run", recipe, "--runs-dir", tmp_path / "runs")
    delta = served.server.metrics() - before
    record, summary = last_run("eval")
    assert record.status == "ok"
    assert at_server(delta) == sent(summary["usage"]), (delta, summary["usage"])
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").open()]
    rows = len(json.loads(samples.read_text()))
    assert sorted(p["mode"] for p in predictions) == ["cot"] * rows + ["plain"] * rows
    assert delta["posts"] == 2 * rows and all(p["failure"] is None or
                                              not p["failure"].startswith("request failed")
                                              for p in predictions)
    # output tokens per prediction are the server's
    assert sum(p["output_tokens"] for p in predictions) == delta["completion_tokens"]
    # <cot> reached the model: the same pages and question, other answers
    by_mode = {(p["index"], p["mode"]): p["response"] for p in predictions}
    assert any(by_mode[i, "plain"] != by_mode[i, "cot"] for i in range(rows))
    assert (record.metrics["questions"], record.metrics["questions_cot"]) == (rows, rows)


def test_questions_through_vllm_writer_and_judge(served: Served, tmp_path: Path) -> None:
    """The writer and the judge both go through the server. Whether a random model's multi-page
    draft names two seed pages depends on the machine's numerics (the same tree had some on one
    machine and none on another, an AMD EPYC), so every single-page question also gets an
    unanswerable twin: the judge reads those whatever the model wrote."""
    model = tiny_spec(served.url, images_per_prompt=IMAGES)
    out = tmp_path / "questions"
    recipe = write(tmp_path / "q.yaml", {
        "corpus": str(served.corpus), "out": str(out),
        "models": {"generator": model, "judge": model}, "embedding": {"model": "tfidf"},
        "single_page": {"max_per_document": 2}, "multi_page": {"pages": [2, 4]},
        "unanswerable": {"share": 1.0},
        "temperature": 0.0, "max_tokens": 384, "concurrency": 16})
    before = served.server.metrics()
    docthink("questions", "--recipe", recipe, "--runs-dir", tmp_path / "runs")
    delta = served.server.metrics() - before
    record, summary = last_run("questions")
    assert record.status == "ok"
    usage = summary["usage"]
    assert at_server(delta) == sent(usage), (delta, usage)
    assert delta["finished"] == delta["posts"]
    writer, judge = usage["generator"], usage["judge"]
    assert writer["requests"] > 0 and judge["requests"] > 0
    # every failed request is counted with its reason, and is why something was dropped
    for meter in (writer, judge):
        assert sum(meter["failure_reasons"].values()) == meter["failures"]
    counts = summary["counts"]
    assert counts["questions"] > 0
    # each multi-page seed (one per document of two pages or more) was judged or dropped with
    # its reason, none lost
    judged = {row["qid"] for row in read_jsonl(out / "judgements.jsonl")}
    dropped = {row["qid"]: row["reason"] for row in read_jsonl(out / "dropped.jsonl")}
    assert any(str(qid).startswith("unanswerable:") for qid in judged)
    with Corpus.open(served.corpus) as corpus:
        seeded = [doc_id for doc_id in corpus.documents if corpus.n_pages(doc_id) >= 2]
    assert seeded
    for doc_id in seeded:
        qid = f"multi:{doc_id}#0"
        assert qid in judged or dropped.get(qid), qid


def test_resume_after_sigkill_mid_evidence_sends_no_finished_request_again(
    served: Served, tmp_path: Path
) -> None:
    concurrency = 4
    out = tmp_path / "resumed"
    recipe = write(tmp_path / "r.yaml", synth_recipe(
        served.url, served.corpus, served.questions, out, concurrency=concurrency))
    total = evidence_requests(served)
    command = [sys.executable, "-m", "docthink.cli", *map(str, synth_args(recipe, tmp_path / "runs"))]
    before = served.server.metrics()
    with (tmp_path / "first.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while (served.server.metrics() - before)["finished"] < 60:
            assert process.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "no progress at the server"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    time.sleep(2)  # the server finishes or aborts what was in flight
    first = served.server.metrics() - before
    with sqlite3.connect(out / "cache.sqlite") as db:
        committed = db.execute("SELECT count(*) FROM results").fetchone()[0]
    # every committed answer came from the server; the kill came mid-evidence
    assert 0 < committed <= first["posts"] and committed < total

    before = served.server.metrics()
    docthink(*synth_args(recipe, tmp_path / "runs"))
    second = served.server.metrics() - before
    _, summary = last_run("synth")
    usage = summary["usage"]
    evidence = usage["evidence"]
    assert at_server(second) == sent(usage)
    # nothing that had finished is asked again; everything else once (and its re-asks)
    assert evidence["cache_hits"] == committed
    assert evidence["sent"] - evidence["retries"] == evidence["requests"] - committed
    rows = table(out / "evidence.parquet")
    keys = {(e["qid"], e["position"]) for e in rows}
    assert len(keys) == len(rows) == evidence["requests"] == total
    with sqlite3.connect(out / "cache.sqlite") as db:
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == (
            evidence["requests"] + usage["answer_vision"]["requests"]
            + usage["answer_text"]["requests"])
