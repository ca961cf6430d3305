"""`docthink eval run` end to end: the offline teacher and a real OpenAI-protocol server on
generated PDFs, the official request layout and its knobs, LLM extraction through a judge,
interrupt and resume, and rescoring."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
from PIL import Image

from docthink.evals.scoring import score
from docthink.runs import Registry
from tests.evals.conftest import Planted
from tests.evals.helpers import openai_server, read_jsonl
from tests.helpers import docthink

srv = openai_server()


def eval_args(planted: Planted, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["eval", "run", "--data", planted.data, "--documents", planted.documents, "--out", out,
            "--runs-dir", out.parent / "runs", *extra]


def question_of(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else [p["text"] for p in content
                                                     if p["type"] == "text"][-1]


def is_cot(body: dict[str, Any]) -> bool:
    return body["messages"][0]["role"] == "system"


def model_args(server: Any, name: str = "student") -> list[str]:
    return ["--model-url", server.url, "--model-name", name]


def registry_metrics(tmp_path: Path, kind: str = "eval") -> dict[str, object]:
    (record,) = Registry(tmp_path / "registry.sqlite").list(kind=kind)
    assert record.status == "ok"
    return record.metrics


# -- the offline teacher ----------------------------------------------------------------------------


def test_offline_teacher_end_to_end(planted: Planted, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    said = docthink(*eval_args(planted, out))
    report = json.loads((out / "report.json").read_text())
    n = len(planted.rows) - 1
    # Sentences, not reprs: the skipped reasons counted, tokens rounded.
    assert f"eval {out}: {n} evaluated, 1 skipped (1 pdf missing)  [run " in said
    tokens = {m: f"{report['modes'][m]['mean_output_tokens']:.1f}" for m in ("plain", "cot")}
    for mode in ("plain", "cot"):
        assert (f"  {mode}: acc 1.0000 f1 1.0000 ({n} questions, 0 failed, mean output tokens "
                f"{tokens[mode]})") in said
    markdown = (out / "report.md").read_text()
    assert f"- questions: {n} evaluated, 1 skipped (1 pdf missing)\n" in markdown
    assert "- answer extraction: rule\n" in markdown
    assert report["questions"] == {"evaluated": n, "skipped": 1,
                                   "skipped_reasons": {"pdf missing": 1}}
    assert str(report["model"]).startswith("docthink-teacher/bm25")
    assert report["extraction"] == {"method": "rule"}

    predictions = read_jsonl(out / "predictions.jsonl")
    assert [(p["index"], p["mode"]) for p in predictions] == [
        (i, mode) for mode in ("plain", "cot") for i in range(n)]
    for p in predictions:
        assert p["score"] == score(p["answer"], p["pred"], p["answer_format"])  # type: ignore[arg-type]
        assert p["output_tokens"] == len(str(p["response"]).split())  # the teacher's count
    # The teacher finds every planted fact ("20,954" is extracted as 20954) and declines the
    # unanswerable question, with and without <cot> (it ignores the system message).
    assert [p["score"] for p in predictions] == [1.0] * (2 * n)
    assert [p["pred"] for p in predictions if p["answer"] == "Not answerable"] == [
        "Not answerable"] * 2
    for mode in ("plain", "cot"):
        m = report["modes"][mode]
        assert (m["acc"], m["f1"], m["n"], m["failures"]) == (1.0, 1.0, n, 0)
        tokens = [p["output_tokens"] for p in predictions if p["mode"] == mode]
        assert m["mean_output_tokens"] == pytest.approx(sum(tokens) / n)
    assert report["acc"] == 1.0 and report["rows"] == report["modes"]["plain"]["rows"]

    metrics = registry_metrics(tmp_path)
    assert metrics["benchmark"] == "mmlongbench-doc"
    assert {k: metrics[k] for k in ("acc", "f1", "acc_cot", "f1_cot", "skipped")} == {
        "acc": 1.0, "f1": 1.0, "acc_cot": 1.0, "f1_cot": 1.0, "skipped": 1}
    assert "| accuracy | 100.0 | 100.0 |" in (out / "report.md").read_text()
    with Image.open(out / "report.png") as chart:
        assert chart.format == "PNG" and chart.width > 400

    # Rescoring the predictions with no model reproduces every per-mode number.
    rescored_path = tmp_path / "rescored.json"
    docthink("eval", "rescore", out / "predictions.jsonl", "--data", planted.data,
             "--out", rescored_path, "--runs-dir", tmp_path / "runs")
    rescored = json.loads(rescored_path.read_text())
    assert rescored["modes"] == report["modes"]
    assert (rescored["acc"], rescored["f1"], rescored["rows"]) == (
        report["acc"], report["f1"], report["rows"])


# -- an OpenAI-compatible server --------------------------------------------------------------------


def test_official_protocol_reaches_the_server(planted: Planted, server: Any,
                                              tmp_path: Path) -> None:
    server.reset()
    answers = planted.answers()
    server.responder = lambda body: srv.Reply(answers[question_of(body)])
    doc = planted.rows[0]["doc_id"]
    out = tmp_path / "eval"
    docthink(*eval_args(planted, out, "--docs", doc, *model_args(server)))

    questions = [r["question"] for r in planted.rows if r["doc_id"] == doc]
    bodies = [r.body for r in server.received]
    assert sorted(question_of(b) for b in bodies) == sorted(questions * 2)
    pdf = pdfium.PdfDocument(planted.documents / doc)
    width, height = pdf[0].get_size()
    for body in bodies:
        assert (body["model"], body["temperature"], body["max_tokens"]) == ("student", 0.0, 1024)
        *system, user = body["messages"]
        assert system == ([{"role": "system", "content": "<cot>"}] if is_cot(body) else [])
        parts = user["content"]
        images = [p for p in parts if p["type"] == "image_url"]
        # Every page (the document is under 120 pages), then the bare question.
        assert len(images) == len(pdf) and len(parts) == len(pdf) + 1
        assert parts[-1] == {"type": "text", "text": question_of(body)}
        url = images[0]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as page:
            assert page.size == (math.ceil(width * 2), math.ceil(height * 2))  # 144 dpi
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "student" and report["acc"] == 1.0
    # The server's token counts are what the report averages.
    assert report["modes"]["plain"]["mean_output_tokens"] == 3


def test_inference_knobs(planted: Planted, server: Any, tmp_path: Path) -> None:
    server.reset()
    server.responder = lambda body: srv.Reply("1")
    doc = planted.rows[0]["doc_id"]
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(
        "inference:\n"
        "  max_pages: 2\n"
        "  max_pixels: 250000\n"
        "  page_index: 'Page {i}:'\n"
        "  system: Answer briefly.\n"
        "  cot_placement: system\n"
        "  temperature: 0.3\n"
        "  max_tokens: 77\n"
    )
    docthink("eval", "run", recipe, *eval_args(planted, tmp_path / "eval", "--docs", doc,
                                                *model_args(server))[2:])
    for body in (r.body for r in server.received):
        assert (body["temperature"], body["max_tokens"]) == (0.3, 77)
        system = body["messages"][0]
        assert system == {"role": "system",
                          "content": "Answer briefly.\n<cot>" if "<cot>" in system["content"]
                          else "Answer briefly."}
        parts = body["messages"][-1]["content"]
        assert [p["text"] for p in parts if p["type"] == "text"][:2] == ["Page 1:", "Page 2:"]
        images = [p for p in parts if p["type"] == "image_url"]
        assert len(images) == 2
        for image in images:
            data = base64.b64decode(image["image_url"]["url"].split(",", 1)[1])
            with Image.open(io.BytesIO(data)) as page:
                assert page.width * page.height <= 250_000
                assert page.width * page.height > 200_000  # lowered just enough
    assert len({question_of(r.body) for r in server.received}) == len(
        [r for r in planted.rows if r["doc_id"] == doc])


def test_llm_extraction_through_a_judge(planted: Planted, server: Any, tmp_path: Path) -> None:
    """The judge gets the official layout (prompt as the user turn, question and response as an
    assistant turn) and its prompt's sha256 goes into the report and the run record."""
    server.reset()
    answers = planted.answers()
    judged: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> object:
        if body["model"] == "student":
            return srv.Reply(f"After reading every page, my conclusion: {answers[question_of(body)]}")
        judged.append(body)
        question = re.search(r"Question:(.*)\nAnalysis:", body["messages"][1]["content"]).group(1)
        if answers[question] == "Not answerable":
            return srv.Reply("I cannot tell.")  # no "Extracted answer:": an extraction failure
        return srv.Reply(f"Extracted answer: {answers[question]}\nAnswer format: Integer")

    server.responder = respond
    prompt = tmp_path / "official_prompt.md"
    prompt.write_text("Given the question and analysis, extract the answer.\n")
    out = tmp_path / "eval"
    docthink(*eval_args(planted, out, *model_args(server), "--judge-url", server.url,
                        "--judge-name", "judge", "--extract-prompt", prompt, "--mode", "plain"))
    n = len(planted.rows) - 1
    assert len(judged) == n
    for body in judged:
        user, assistant = body["messages"]
        assert user == {"role": "user", "content": prompt.read_text()}
        assert assistant["role"] == "assistant"
        assert re.fullmatch(r"\n\nQuestion:.*\nAnalysis:After reading every page, .*\n",
                            assistant["content"])
        assert (body["temperature"], body["max_tokens"]) == (0.0, 256)
    report = json.loads((out / "report.json").read_text())
    sha = hashlib.sha256(prompt.read_bytes()).hexdigest()
    assert report["extraction"] == {"method": "llm", "judge": "judge",
                                    "prompt": "official_prompt.md", "prompt_sha256": sha,
                                    "max_tokens": 256}
    assert list(report["modes"]) == ["plain"]
    predictions = read_jsonl(out / "predictions.jsonl")
    failed = [p for p in predictions if p["failure"]]
    assert [(p["answer"], p["pred"], p["score"]) for p in failed] == [
        ("Not answerable", "Failed to extract", 0.0)]
    assert report["modes"]["plain"]["failures"] == 1
    assert report["acc"] == pytest.approx((n - 1) / n)
    (record,) = Registry(tmp_path / "registry.sqlite").list(kind="eval")
    summary = json.loads((Path(record.run_dir) / "summary.json").read_text())
    assert summary["extraction"]["prompt_sha256"] == sha


def test_default_judge_prompt_is_ours_and_hashed(planted: Planted, server: Any,
                                                 tmp_path: Path) -> None:
    from docthink.evals.extract import DEFAULT_PROMPT

    server.reset()
    server.responder = lambda body: srv.Reply("Extracted answer: 1\nAnswer format: Integer")
    out = tmp_path / "eval"
    docthink(*eval_args(planted, out, "--doc", planted.rows[0]["doc_id"], "--mode", "cot",
                        "--judge-url", server.url, "--judge-name", "judge"))
    report = json.loads((out / "report.json").read_text())
    assert report["extraction"]["prompt"] == "extract.txt"
    assert report["extraction"]["prompt_sha256"] == hashlib.sha256(
        DEFAULT_PROMPT.read_bytes()).hexdigest()
    assert {r.body["messages"][0]["content"] for r in server.received} == {
        DEFAULT_PROMPT.read_text()}


# -- interrupt and resume ---------------------------------------------------------------------------


def test_interrupt_and_resume(planted: Planted, server: Any, tmp_path: Path) -> None:
    """SIGKILL a run while requests are in flight; the rerun asks only what was never answered,
    and writes the same predictions and report as an uninterrupted run."""
    answers = planted.answers()
    answered: list[tuple[str, bool]] = []
    first_batch = 5

    def respond_then_hang(body: dict[str, Any]) -> object:
        if len(answered) >= first_batch:
            return srv.Hang()
        return respond(body)

    def respond(body: dict[str, Any]) -> object:
        key = (question_of(body), is_cot(body))
        answered.append(key)
        return srv.Reply(answers[key[0]], completion_tokens=5 + 4 * key[1] + len(key[0]) % 3)

    server.reset()
    server.responder = respond_then_hang
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"model: {{kind: openai, model: student, endpoints: [{{base_url: "
                      f"'{server.url}', api_key_env: null}}]}}\nconcurrency: 2\n")
    out = tmp_path / "eval"
    args = [str(a) for a in eval_args(planted, out)]
    args[args.index("--runs-dir"):] = ["--runs-dir", str(tmp_path / "runs"),
                                       "--registry", str(tmp_path / "registry.sqlite")]
    with (tmp_path / "killed.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "docthink.cli", *args[:2], str(recipe),
                                    *args[2:]], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while len(server.received) < first_batch + 2 and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "killed.log").read_text()
            time.sleep(0.02)
        assert len(answered) == first_batch and server.in_flight == 2
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert not (out / "report.json").exists()
    killed_run = answered.copy()

    server.reset()
    server.responder = respond
    answered.clear()
    docthink("eval", "run", recipe, *eval_args(planted, out)[2:])
    n = len(planted.rows) - 1
    assert len(killed_run) + len(answered) == 2 * n
    assert not set(killed_run) & set(answered)  # nothing answered twice
    assert set(killed_run) | set(answered) == {(q, c) for q in answers if q != "Is this PDF here?"
                                               for c in (False, True)}

    server.reset()
    server.responder = respond
    fresh = tmp_path / "uninterrupted"
    docthink("eval", "run", recipe, *eval_args(planted, fresh)[2:])
    assert (out / "predictions.jsonl").read_text() == (fresh / "predictions.jsonl").read_text()
    assert json.loads((out / "report.json").read_text()) == json.loads(
        (fresh / "report.json").read_text())
    assert (out / "report.md").read_text() == (fresh / "report.md").read_text()
    statuses = sorted(r.status for r in Registry(tmp_path / "registry.sqlite").list(kind="eval"))
    assert statuses == ["ok", "ok", "running"]  # the killed run left its trace


def test_a_failing_request_is_recorded_and_scored_zero(planted: Planted, server: Any,
                                                       tmp_path: Path) -> None:
    server.reset()
    answers = planted.answers()
    victim = planted.rows[1]["question"]
    server.responder = lambda body: (srv.Error(400, "bad request") if question_of(body) == victim
                                     else srv.Reply(answers[question_of(body)]))
    out = tmp_path / "eval"
    docthink(*eval_args(planted, out, *model_args(server), "--mode", "plain"))
    failed = [p for p in read_jsonl(out / "predictions.jsonl") if p["failure"]]
    assert [(p["question"], p["score"], p["response"]) for p in failed] == [(victim, 0.0, None)]
    assert str(failed[0]["failure"]).startswith("request failed:")
    report = json.loads((out / "report.json").read_text())
    n = len(planted.rows) - 1
    assert report["modes"]["plain"]["failures"] == 1
    assert report["acc"] == pytest.approx((n - 1) / n)


# -- rescoring --------------------------------------------------------------------------------------


def test_rescore_writes_acc_f1_and_rows_with_no_model(planted: Planted, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    predictions = tmp_path / "predictions.jsonl"
    rows = [
        {"index": 0, "pred": planted.rows[0]["answer"]},  # right
        {"index": 1, "pred": "0"},  # wrong
        {"index": len(planted.rows) - 2, "pred": "Not answerable"},  # right: unanswerable
        {"index": 2, "pred": f"[__import__('os').system('touch {target}')]"},
    ]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report.json"
    docthink("eval", "rescore", predictions, "--data", planted.data, "--out", out,
             "--runs-dir", tmp_path / "runs")
    report = json.loads(out.read_text())
    assert not target.exists()
    assert report["rows"] == [{"index": 0, "score": 1.0}, {"index": 1, "score": 0.0},
                              {"index": 2, "score": 0.0},
                              {"index": len(planted.rows) - 2, "score": 1.0}]
    assert report["acc"] == 0.5
    # recall = 1 / 3 answerable rows; precision = 1 / 3 rows not predicted "Not answerable"
    assert report["f1"] == pytest.approx(1 / 3)
    assert report["questions"]["skipped_reasons"] == {"no prediction": len(planted.rows) - 4}
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").exists()
    assert registry_metrics(tmp_path, "eval-rescore")["acc"] == 0.5

    printed = docthink("eval", "rescore", predictions, "--data", planted.data,
                       "--runs-dir", tmp_path / "runs")
    assert json.loads(printed)["acc"] == 0.5


def test_rescore_rejects_an_unknown_index(planted: Planted, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from docthink.cli import app

    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"index": 0, "pred": "1"}\n{"index": 999, "pred": "1"}\n')
    result = CliRunner().invoke(app, ["eval", "rescore", str(predictions), "--data",
                                      str(planted.data), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "line 2: index 999 is not in the data" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("inference: {page_index: 'Page {n}:'}\n", "inference.page_index"),
        ("inference: {modes: [cot, cot]}\n", "modes repeat"),
        ("extract: {method: llm}\n", "extract.method llm needs extract.judge"),
        ("extract: {prompt: /nonexistent/prompt.md}\n", "extract.prompt"),
        ("corpus: /somewhere\n", "give one of documents (a PDF folder) or corpus, not both"),
    ],
)
def test_recipe_errors_name_the_field(planted: Planted, tmp_path: Path, yaml: str,
                                      message: str) -> None:
    from typer.testing import CliRunner

    from docthink.cli import app

    recipe = tmp_path / "eval.yaml"
    recipe.write_text(yaml)
    args = [str(a) for a in eval_args(planted, tmp_path / "eval")]
    result = CliRunner().invoke(app, [*args[:2], str(recipe), *args[2:]])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "eval").exists()


def _mmlbd_c_tsv(planted: Planted, path: Path) -> Path:
    """The planted benchmark as MMLBD-C ships it (VLMEvalKit's TSV): each document's PDF in base64
    in the `image` column of its first row, later rows of the same document naming that row."""
    import csv

    header = ["index", "image", "question", "answer", "doc_id", "doc_type", "evidence_pages",
              "evidence_sources", "answer_format"]
    holder: dict[str, int] = {}
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        for index, row in enumerate(planted.rows):
            pdf = planted.documents / row["doc_id"]
            if not pdf.is_file():
                continue  # the row about a PDF the benchmark lacks
            if row["doc_id"] in holder:
                image = str(holder[row["doc_id"]])
            else:
                holder[row["doc_id"]] = index
                image = base64.b64encode(pdf.read_bytes()).decode()
            writer.writerow([index, image, *(row[c] for c in header[2:])])
    return path


def test_an_mmlbd_c_tsv_brings_its_own_pdfs(planted: Planted, tmp_path: Path) -> None:
    """No PDF folder: the TSV's base64 column is decoded into the run's folder, ingested, and
    every row is asked over its own document, scoring as from the PDF folder."""
    data = _mmlbd_c_tsv(planted, tmp_path / "MMLBD-C.tsv")
    out = tmp_path / "eval"
    docthink("eval", "run", "--data", data, "--out", out, "--runs-dir", tmp_path / "runs")
    decoded = sorted(p.name for p in (out / "documents").iterdir())
    assert decoded == sorted({r["doc_id"] for r in planted.rows} - {"absent.pdf"})
    for name in decoded:
        assert (out / "documents" / name).read_bytes() == (planted.documents / name).read_bytes()
    from_tsv = read_jsonl(out / "predictions.jsonl")
    reference = tmp_path / "eval-pdfs"
    docthink(*eval_args(planted, reference))
    from_pdfs = {(r["question"], r["mode"]): r["pred"] for r in read_jsonl(
        reference / "predictions.jsonl")}
    assert len(from_tsv) == len(from_pdfs) > 0
    assert {(r["question"], r["mode"]): r["pred"] for r in from_tsv} == from_pdfs
    assert sum(r["score"] for r in from_tsv) > 0


def test_data_without_documents_is_refused_in_one_line(planted: Planted, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from docthink.cli import app

    result = CliRunner().invoke(app, ["eval", "run", "--data", str(planted.data), "--out",
                                      str(tmp_path / "eval"), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "carries no documents" in " ".join(result.output.split())


def test_an_existing_corpus_instead_of_a_pdf_folder(planted: Planted, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    docthink("ingest", planted.documents, "--out", corpus, "--runs-dir", tmp_path / "runs")
    out = tmp_path / "eval"
    docthink("eval", "run", "--data", planted.data, "--corpus", corpus, "--out", out,
             "--mode", "plain", "--runs-dir", tmp_path / "runs")
    report = json.loads((out / "report.json").read_text())
    assert report["questions"]["skipped_reasons"] == {"not in corpus": 1}
    assert report["acc"] == 1.0 and not (out / "corpus").exists()
    registry = Registry(tmp_path / "registry.sqlite")
    (ingest_run,) = registry.list(kind="ingest")
    (eval_run,) = registry.list(kind="eval")
    assert registry.get(eval_run.id).parents == (ingest_run.id,)
