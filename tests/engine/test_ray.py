"""The stages on a local Ray cluster of 2 CPUs (one for the module): the same bytes as the local
executor for the same recipe and seed, on the sample corpus and on MMLongBench-Doc questions over
the shared PDFs; a model actor killed mid-run loses and duplicates no row; a killed driver's rerun
resumes from the committed shards and sends none of their requests again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray

from tests.helpers import docthink
from tests.synth.test_synth_server import (
    Teacher,
    _committed_qids,
    classify,
    synth_args,
    table,
    write_recipe,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlongbench"
TABLES = ("evidence.parquet", "traces.parquet", "answers.parquet", "verification.parquet",
          "dropped.jsonl", "examples.jsonl")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local cluster this process drives; in-process commands use it, others join its address."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def synth(corpus: Path, questions: Path, out: Path, *extra: str | Path) -> None:
    docthink("synth", "--corpus", corpus, "--questions", questions, "--out", out,
             "--runs-dir", out.parent / "runs", *extra)


def export(run: Path) -> dict[str, bytes]:
    docthink("export", run, "--format", "trl", "--out", run.parent / f"{run.name}-trl",
             "--runs-dir", run.parent / "runs")
    folder = run.parent / f"{run.name}-trl"
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "docthink_run.json"}


def same_outputs(a: Path, b: Path) -> None:
    for name in TABLES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert export(a) == export(b)


def test_sample_corpus_exports_equal_the_local_executor(cluster, sample_corpus,
                                                       tmp_path: Path) -> None:
    corpus, questions = sample_corpus
    synth(corpus, questions, tmp_path / "local", "--shard-size", "3")
    synth(corpus, questions, tmp_path / "ray", "--shard-size", "3", "--executor", "ray")
    same_outputs(tmp_path / "local", tmp_path / "ray")
    assert len(list((tmp_path / "ray" / "shards").glob("*.json"))) == 3


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"MMLongBench-Doc data not found at {SHARED}")
def test_mmlongbench_exports_equal_the_local_executor(cluster, tmp_path: Path) -> None:
    """Two of the shared PDFs (all three of the synth baseline with DOCTHINK_SLOW=full)."""
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    names = ["2310.07609v1.pdf", "3276a5b991c49cf5f9a4af0f7d6fce67.pdf"]
    if os.environ.get("DOCTHINK_SLOW") == "full":
        names.append("a5879805d70c854ea4361e43a84e3bb2.pdf")
    for name in names:
        (pdfs / name).symlink_to(SHARED / "documents" / name)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("trace: {top_k: 4}\nexecutor: {shard_size: 8}\n")
    docthink("ingest", pdfs, "--out", tmp_path / "corpus", "--runs-dir", tmp_path / "runs")
    for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
        synth(tmp_path / "corpus", SHARED / "samples.json", tmp_path / name, "--recipe", recipe,
              *extra)
    same_outputs(tmp_path / "local", tmp_path / "ray")
    assert len(table(tmp_path / "ray" / "traces.parquet")) > 8  # more than one shard's


def _model_actors() -> list[psutil.Process]:
    """This cluster's model actors (its processes are this test process's descendants)."""
    actors = []
    for process in psutil.Process().children(recursive=True):
        try:  # processes that exit meanwhile, or are exited and not yet reaped, are not actors
            if "MapWorker(MapBatches(_ShardWorker))" in " ".join(process.cmdline()):
                actors.append(process)
        except psutil.Error:
            continue
    return actors


def test_killed_model_actor_loses_and_duplicates_no_row(cluster, sample_corpus, pages, questions,
                                                        server, tmp_path: Path) -> None:
    corpus, questions_path = sample_corpus
    server.responder = Teacher(pages, delay_s=0.05)
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=2,
                          executor={"shard_size": 2, "actors": 2})
    command = [sys.executable, "-m", "docthink.cli", *map(str, synth_args(
        corpus, questions_path, tmp_path / "ray", recipe)), "--executor", "ray",
        "--ray-address", cluster]
    with (tmp_path / "ray.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while len(server.received) < 30 and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "ray.log").read_text()
            time.sleep(0.01)
        actors = _model_actors()
        committed = list((tmp_path / "ray" / "shards").glob("*.json"))
        assert len(actors) == 2 and len(committed) < 4 and process.poll() is None  # mid-run
        os.kill(actors[0].pid, signal.SIGKILL)
        assert process.wait(timeout=180) == 0, (tmp_path / "ray.log").read_text()
    assert not psutil.pid_exists(actors[0].pid) or actors[0].status() == psutil.STATUS_ZOMBIE

    server.responder = Teacher(pages)
    docthink(*synth_args(corpus, questions_path, tmp_path / "local", recipe))
    same_outputs(tmp_path / "local", tmp_path / "ray")
    for name, key in (("traces.parquet", "qid"), ("answers.parquet", "qid")):
        qids = [row[key] for row in table(tmp_path / "ray" / name)]
        assert len(qids) == len(set(qids)) == len(questions)
    examples = [json.loads(line)["id"] for line in (tmp_path / "ray" / "examples.jsonl").open()]
    assert len(examples) == len(set(examples)) == len(questions)


def test_killed_ray_driver_resumes_from_committed_shards(cluster, sample_corpus, pages, questions,
                                                        server, tmp_path: Path) -> None:
    """SIGKILL of `docthink synth --executor ray` once a shard is committed: Ray ends the job's
    actors; the rerun on the same cluster sends no request of a committed shard again (counted at
    the server), resends at most what was in flight, and ends with a straight local run's bytes."""
    corpus, questions_path = sample_corpus
    concurrency, actors = 2, 2
    server.responder = Teacher(pages, delay_s=0.05)
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=concurrency,
                          executor={"shard_size": 2, "actors": actors})
    out = tmp_path / "resumed"
    args = [*map(str, synth_args(corpus, questions_path, out, recipe)), "--executor", "ray",
            "--ray-address", cluster]
    with (tmp_path / "first.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "docthink.cli", *args], stdout=log,
                                   stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not list((out / "shards").glob("[0-9]*.json")) and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    deadline = time.monotonic() + 60  # the job's actors go with its driver
    while _model_actors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _model_actors()
    time.sleep(0.2)  # let the server finish handling what was in flight
    committed = _committed_qids(out)
    assert 2 <= len(committed) < len(questions)
    first = classify(list(server.received), pages)
    server.received.clear()

    docthink(*args)
    second = classify(list(server.received), pages)
    qid_of = {q.text: q.qid for q in questions.values()}
    assert second and not {s.question for s in second if qid_of[s.question] in committed}
    again = {json.dumps(s.body, sort_keys=True) for s in first} & {
        json.dumps(s.body, sort_keys=True) for s in second}
    assert len(again) <= concurrency * actors  # only what was in flight at the kill
    summary = json.loads(max((tmp_path / "runs").glob("*-synth-*")).joinpath(
        "summary.json").read_text())
    assert summary["shards"]["reused"] == len(committed) // 2 and summary["shards"]["total"] == 4

    server.responder = Teacher(pages)
    docthink(*synth_args(corpus, questions_path, tmp_path / "straight", recipe))
    same_outputs(tmp_path / "straight", out)


def test_eval_run_in_shards_and_on_ray_equals_one_shard(cluster, sample_corpus,
                                                        tmp_path: Path) -> None:
    """The planted sample questions as a benchmark over the sample corpus: one shard, shards of
    three rows, and the same shards on Ray write the same predictions and report."""
    corpus, questions = sample_corpus
    rows = [json.loads(line) for line in questions.open()]
    data = tmp_path / "samples.json"
    data.write_text(json.dumps([
        {"doc_id": r["doc_id"], "doc_type": "Financial report", "question": r["question"],
         "answer": r["answer"], "evidence_pages": str(r["source_pages"]),
         "evidence_sources": "['Pure-text (Plain-text)']",
         "answer_format": "Float" if "." in r["answer"] else "Int"} for r in rows]))
    for name, extra in (("one", []), ("local", ["--shard-size", "3"]),
                        ("ray", ["--shard-size", "3", "--executor", "ray"])):
        docthink("eval", "run", "--data", data, "--corpus", corpus, "--out", tmp_path / name,
                 "--mode", "plain", "--mode", "cot", "--runs-dir", tmp_path / "runs", *extra)
    for name in ("predictions.jsonl", "report.json"):
        one = (tmp_path / "one" / name).read_bytes()
        assert one == (tmp_path / "local" / name).read_bytes() == (
            tmp_path / "ray" / name).read_bytes(), name
    predictions = [json.loads(line) for line in (tmp_path / "ray" / "predictions.jsonl").open()]
    assert [p["mode"] for p in predictions] == ["plain"] * len(rows) + ["cot"] * len(rows)
    assert len(list((tmp_path / "ray" / "shards").glob("*.json"))) == 3


def test_questions_in_shards_and_on_ray_equal_one_shard(cluster, sample_corpus,
                                                        tmp_path: Path) -> None:
    """Shards of one document, here and on Ray, write the questions, dropped rows and judgements
    of a run in one shard."""
    corpus, _ = sample_corpus
    for name, extra in (("one", []), ("local", ["--shard-size", "1"]),
                        ("ray", ["--shard-size", "1", "--executor", "ray"])):
        docthink("questions", "--corpus", corpus, "--out", tmp_path / name,
                 "--runs-dir", tmp_path / "runs", *extra)
    for name in ("questions.jsonl", "dropped.jsonl", "judgements.jsonl"):
        one = (tmp_path / "one" / name).read_bytes()
        assert one == (tmp_path / "local" / name).read_bytes() == (
            tmp_path / "ray" / name).read_bytes(), name
    assert len(list((tmp_path / "ray" / "shards").glob("*.json"))) == 4  # the sample's documents
