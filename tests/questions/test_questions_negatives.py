"""Hard negatives: the blocked exact search equals the brute-force ranking, never returns a page of
the query's own document, breaks ties the same way every time; decontamination lists; and, on the
MMLongBench-Doc PDFs, negatives more similar than random pages and long contexts whose components
follow the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from docthink.core.errors import UserError
from docthink.corpus.corpus import Corpus
from docthink.corpus.ingest import ingest
from docthink.questions.card import context_section
from docthink.questions.contexts import ContextSource, build_context
from docthink.questions.embed import PageIndex
from docthink.questions.negatives import (
    HardNegatives,
    excluded_doc_ids,
    rank_negatives,
    similarity_gap,
)
from docthink.questions.recipe import ContextSettings, EmbeddingSettings

DOCUMENTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlongbench" / "documents"
# Four short documents of different kinds (two papers, a brochure, a report) for the MiniLM check
# (all 37 take minutes on two cores; benchmarks/bench_embed.py reports the full-set gap).
MINILM_DOCS = (
    "2023.findings-emnlp.248.pdf", "2310.07609v1.pdf",
    "GPL-Graduate-Studies-Professional-Learning-Brochure-Jul-2021.pdf",
    "a5879805d70c854ea4361e43a84e3bb2.pdf",
)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force_negatives(vectors: np.ndarray, docs: np.ndarray, k: int) -> HardNegatives:
    """The oracle: the whole n x n similarity matrix and a stable full sort of every row (equal
    scores in row order), a different route to the ranking than the blocked argpartition."""
    sims = vectors @ vectors.T
    sims[docs[:, None] == docs[None, :]] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(sims, order, axis=1)
    found = np.isfinite(top_scores)
    return HardNegatives(
        np.where(found, order, -1).astype(np.int32),
        np.where(found, top_scores, -np.inf).astype(np.float32),
    )


def test_blocked_search_equals_brute_force_and_skips_own_document() -> None:
    vectors = unit_vectors(300, 16, 0)
    docs = np.repeat(np.arange(30), 10).astype(np.int32)
    blocked = rank_negatives(vectors, docs, k=40, block=37)
    brute = brute_force_negatives(vectors, docs, k=40)
    assert np.array_equal(blocked.rows, brute.rows)
    assert np.allclose(blocked.scores, brute.scores, atol=1e-6)
    assert (docs[blocked.rows] != docs[:, None]).all()
    assert (np.diff(blocked.scores, axis=1) <= 0).all()  # best first


def test_ties_break_by_row_and_missing_negatives_are_padded() -> None:
    vectors = np.ones((5, 4), dtype=np.float32) / 2.0  # every pair equally similar
    docs = np.array([0, 0, 1, 1, 2], dtype=np.int32)
    ranked = rank_negatives(vectors, docs, k=4, block=2)
    assert ranked.rows.tolist() == [[2, 3, 4, -1], [2, 3, 4, -1], [0, 1, 4, -1],
                                    [0, 1, 4, -1], [0, 1, 2, 3]]
    assert np.isneginf(ranked.scores[0, 3]) and list(ranked.ranked(0)) == [2, 3, 4]


def test_decontamination_lists_name_documents_by_id_or_file_name(tmp_path: Path) -> None:
    (tmp_path / "samples.json").write_text(json.dumps([{"doc_id": "bench.pdf"}, {"doc_id": "x"}]))
    (tmp_path / "list.txt").write_text("other.pdf\n\n")
    corpus_ids = ["bench.pdf", "sub/bench.pdf", "other.pdf", "keep.pdf"]
    found = excluded_doc_ids(corpus_ids, ["keep.pdf"], [tmp_path / "samples.json",
                                                        tmp_path / "list.txt"])
    assert found == {"bench.pdf", "sub/bench.pdf", "other.pdf", "keep.pdf"}
    (tmp_path / "bad.json").write_text(json.dumps({"doc_id": "a"}))
    with pytest.raises(UserError, match="bad.json: expected a JSON list"):
        excluded_doc_ids(corpus_ids, [], [tmp_path / "bad.json"])
    with pytest.raises(UserError, match=r"gone\.txt: no such file \(decontamination"):
        excluded_doc_ids(corpus_ids, [], [tmp_path / "gone.txt"])


@pytest.fixture(scope="module")
def mmlongbench(tmp_path_factory) -> Path:
    if not DOCUMENTS.is_dir():
        pytest.skip(f"shared data absent: {DOCUMENTS} (MMLongBench-Doc PDFs)")
    corpus = tmp_path_factory.mktemp("mmlb") / "corpus"
    ingest(DOCUMENTS, corpus, workers=2, progress=False)
    return corpus


def _gap_on(corpus: Path, doc_ids: list[str], settings: EmbeddingSettings) -> dict[str, float]:
    with Corpus.open(corpus) as c:
        index = PageIndex.build(c, doc_ids, settings)
    negatives = rank_negatives(index.vectors, index.docs, settings.negatives, settings.block)
    for row in range(len(index.refs)):
        found = negatives.ranked(row)
        assert (index.docs[found] != index.docs[row]).all()
        assert {index.refs[r].doc_id for r in found}.isdisjoint({index.refs[row].doc_id})
    gap = similarity_gap(index, negatives, seed=0).as_dict()
    print(f"\n{index.embedder} on {len(doc_ids)} documents: {gap}")
    return gap


@pytest.mark.shared_data
def test_minilm_hard_negatives_are_other_documents_and_more_similar_than_random(mmlongbench):
    gap = _gap_on(mmlongbench, list(MINILM_DOCS), EmbeddingSettings())
    assert gap["pages"] > 50 and gap["gap"] > 0.1, gap


@pytest.mark.shared_data
def test_tfidf_hard_negatives_on_every_document(mmlongbench):
    with Corpus.open(mmlongbench) as c:
        doc_ids = sorted(c.documents)
    gap = _gap_on(mmlongbench, doc_ids, EmbeddingSettings(model="tfidf"))
    assert gap["pages"] > 1500 and gap["gap"] > 0.1, gap


@pytest.mark.shared_data
def test_context_lengths_per_component_follow_the_recipe(mmlongbench, tmp_path: Path):
    """Every indexed page of a document that every component can take (5-336 pages) as a
    single-page question: component shares follow the weights 1:1:1:2:2 and lengths fill each
    component's range; the card draws one histogram per component."""
    settings = ContextSettings()
    with Corpus.open(mmlongbench) as c:
        n_pages = {d.doc_id: d.n_pages for d in c.documents.values()}
        index = PageIndex.build(c, sorted(n_pages), EmbeddingSettings(model="tfidf"))
    negatives = rank_negatives(index.vectors, index.docs, 288, 1024)
    source = ContextSource(index, negatives, n_pages)
    lengths: dict[str, list[int]] = {}
    for ref in index.refs:
        if not 5 <= n_pages[ref.doc_id] <= 336:
            continue
        context = build_context(f"single:{ref}", [ref], source, settings, seed=0)
        assert context is not None and ref in context.pages
        lengths.setdefault(context.kind, []).append(len(context.pages))
        twin = build_context(f"unanswerable:{ref}", [ref], source, settings, seed=0,
                             drop_source=True)
        assert twin is not None and ref not in twin.pages
        low, high = settings.components()[twin.kind].pages
        assert low <= len(twin.pages) <= high or twin.kind == "document"
        if context.kind in ("far", "near", "negatives"):
            row = index.row[ref]
            ranks = settings.components()[context.kind].ranks
            allowed = {index.refs[r] for r in negatives.ranked(row)[ranks[0]:ranks[1]]}
            assert set(context.pages) - {ref} <= allowed
    total = sum(len(v) for v in lengths.values())
    weights = {name: c.weight for name, c in settings.components().items()}
    for name, component in settings.components().items():
        share = len(lengths[name]) / total
        assert abs(share - weights[name] / sum(weights.values())) < 0.04, (name, share)
        low, high = component.pages
        assert low <= min(lengths[name]) and max(lengths[name]) <= high
        if name != "document":  # drawn lengths reach both ends of the range
            assert min(lengths[name]) <= low + 2 and max(lengths[name]) >= high - 2, name
    print("\ncontext lengths:", {k: (len(v), min(v), int(np.median(v)), max(v))
                                 for k, v in sorted(lengths.items())})
    lines = context_section(lengths, settings, tmp_path)
    assert all((tmp_path / f"card_context_{name}.png").stat().st_size > 0 for name in weights)
    assert len([line for line in lines if line.startswith("| far |")]) == 1
