"""The whole synth pipeline with the offline teacher: determinism, seeds, invariants, lineage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from docthink.runs import Registry
from tests.helpers import docthink


def synth(corpus: Path, questions: Path, out: Path, *extra: str) -> None:
    docthink("synth", "--corpus", corpus, "--questions", questions, "--out", out,
             "--runs-dir", out.parent / "runs", *extra)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "docthink_run.json"}


def examples(out: Path) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, (out / "examples.jsonl").open())}


def test_same_recipe_gives_byte_identical_exports(sample_corpus, tmp_path: Path) -> None:
    corpus, questions = sample_corpus
    for name in ("a", "b"):
        synth(corpus, questions, tmp_path / name)
        for fmt in ("trl", "llamafactory"):
            docthink("export", tmp_path / name, "--format", fmt, "--out",
                     tmp_path / f"{name}-{fmt}", "--runs-dir", tmp_path / "runs")
    for fmt in ("trl", "llamafactory"):
        assert files(tmp_path / f"a-{fmt}") == files(tmp_path / f"b-{fmt}")
    assert (tmp_path / "a" / "examples.jsonl").read_bytes() == (
        tmp_path / "b" / "examples.jsonl").read_bytes()


def test_seed_changes_branch_and_placement_only(sample_corpus, tmp_path: Path) -> None:
    corpus, questions = sample_corpus
    synth(corpus, questions, tmp_path / "s0", "--seed", "0")
    synth(corpus, questions, tmp_path / "s1", "--seed", "1")
    for table in ("evidence.parquet", "traces.parquet"):
        assert pq.read_table(tmp_path / "s0" / table).equals(pq.read_table(tmp_path / "s1" / table))
    a, b = examples(tmp_path / "s0"), examples(tmp_path / "s1")
    assert a.keys() == b.keys()
    assert [(x["branch"], x["placement"]) for x in a.values()] != [
        (x["branch"], x["placement"]) for x in b.values()]
    for qid in a:
        assert [p for p in a[qid]["user"] if isinstance(p, dict)] == [
            p for p in b[qid]["user"] if isinstance(p, dict)]
        if a[qid]["branch"] == b[qid]["branch"] and a[qid]["placement"] == b[qid]["placement"]:
            assert a[qid] == b[qid]


def test_trace_invariants_on_planted_facts(sample_corpus, tmp_path: Path) -> None:
    corpus, questions = sample_corpus
    synth(corpus, questions, tmp_path / "out")
    rows = {json.loads(line)["qid"]: json.loads(line) for line in questions.open()}
    evidence = pq.read_table(tmp_path / "out" / "evidence.parquet").to_pylist()
    traces = {t["qid"]: t for t in pq.read_table(tmp_path / "out" / "traces.parquet").to_pylist()}
    assert traces.keys() == rows.keys()
    for qid, trace in traces.items():
        mine = {e["position"]: e for e in evidence if e["qid"] == qid}
        assert len(mine) == max(mine)  # one evidence row per context page
        for source in rows[qid]["source_pages"]:
            assert mine[source]["relevance_score"] >= 6.0
            assert source in trace["positions"]
        scores = [mine[p]["relevance_score"] for p in trace["positions"]]
        assert scores == sorted(scores, reverse=True)
        assert all(s > 1.0 for s in scores) and len(scores) <= 16
        assert trace["text"].startswith(f"Page {trace['positions'][0]}:\n")
    # the offline teacher reads the planted sentence: answers contain the planted number
    answers = examples(tmp_path / "out")
    right = sum(rows[q]["answer"] in answers[q]["assistant"].replace(",", "") for q in answers)
    assert right >= 0.75 * len(answers), (right, len(answers))


def test_runs_are_linked_ingest_to_synth_to_export(sample_corpus, tmp_path: Path) -> None:
    corpus, questions = sample_corpus
    synth(corpus, questions, tmp_path / "out")
    docthink("export", tmp_path / "out", "--format", "trl", "--out", tmp_path / "exp",
             "--runs-dir", tmp_path / "runs")
    registry = Registry(Path(__import__("os").environ["DOCTHINK_REGISTRY"]))
    export_run = registry.list(kind="export")[0]
    synth_run = registry.get(export_run.parents[0])
    assert synth_run.kind == "synth" and synth_run.status == "ok"
    assert len(synth_run.parents) == 1  # the ingest run that made the corpus
    assert synth_run.metrics["examples"] == export_run.metrics["examples"] > 0


def test_rerun_sends_no_request_twice(sample_corpus, tmp_path: Path) -> None:
    corpus, questions = sample_corpus
    synth(corpus, questions, tmp_path / "out")
    first = (tmp_path / "out" / "examples.jsonl").read_bytes()
    synth(corpus, questions, tmp_path / "out")
    assert (tmp_path / "out" / "examples.jsonl").read_bytes() == first
    registry = Registry(Path(__import__("os").environ["DOCTHINK_REGISTRY"]))

    def last_summary() -> dict:
        run_dir = Path(registry.list(kind="synth")[0].run_dir)
        return json.loads((run_dir / "summary.json").read_text())

    second = last_summary()  # every shard was committed: nothing is asked at all
    assert second["shards"] == {"total": 1, "processed": 0, "reused": 1}
    assert all(u["requests"] == 0 for u in second["usage"].values()), second["usage"]
    assert all(u["requests"] > 0 for u in second["data_usage"].values())  # the data's cost
    # without its shards, the run is redone from the request cache alone
    shutil.rmtree(tmp_path / "out" / "shards")
    synth(corpus, questions, tmp_path / "out")
    assert (tmp_path / "out" / "examples.jsonl").read_bytes() == first
    usage = last_summary()["usage"]
    assert all(u["cache_hits"] == u["requests"] > 0 for u in usage.values()), usage


def test_first_version_trace_on_the_sample_corpus(sample_corpus, tmp_path: Path) -> None:
    """Paper 2's first trace: every context page, in document order, irrelevant ones marked."""
    corpus, questions = sample_corpus
    recipe = tmp_path / "v1.yaml"
    recipe.write_text("trace: {style: all_pages}\n")
    synth(corpus, questions, tmp_path / "v1", "--recipe", recipe)
    rows = {json.loads(line)["qid"]: json.loads(line) for line in questions.open()}
    evidence = pq.read_table(tmp_path / "v1" / "evidence.parquet").to_pylist()
    traces = {t["qid"]: t for t in pq.read_table(tmp_path / "v1" / "traces.parquet").to_pylist()}
    assert traces.keys() == rows.keys()
    marked = 0
    for qid, trace in traces.items():
        mine = {e["position"]: e for e in evidence if e["qid"] == qid}
        assert trace["positions"] == list(range(1, len(mine) + 1))  # every page, document order
        blocks = trace["text"].split("\n\n")
        assert [b.split(":")[0] for b in blocks] == [f"Page {p}" for p in trace["positions"]]
        for p, block in zip(trace["positions"], blocks, strict=True):
            relevant = mine[p]["relevance_score"] > 1.0 and mine[p]["evidence"].strip()
            assert (block == f"Page {p}: irrelevant") == (not relevant), block
            marked += not relevant
        for source in rows[qid]["source_pages"]:
            assert not blocks[source - 1].endswith(": irrelevant")
    assert marked > 0
