"""Sample PDFs: same seed, same bytes; every planted fact sits on its page's text layer."""

from __future__ import annotations

from pathlib import Path

from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.corpus.ingest import ingest
from docthink.corpus.samples import write_sample_pdfs


def test_samples_are_deterministic_and_facts_are_on_their_pages(tmp_path: Path):
    paths, facts = write_sample_pdfs(tmp_path / "a", n_docs=6, seed=11)
    again, facts_again = write_sample_pdfs(tmp_path / "b", n_docs=6, seed=11)
    other, _ = write_sample_pdfs(tmp_path / "c", n_docs=6, seed=12)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert facts == facts_again
    assert [p.read_bytes() for p in paths] != [p.read_bytes() for p in other]

    summary = ingest(tmp_path / "a", tmp_path / "corpus", workers=2, progress=False)
    assert (summary.ok, summary.rejected) == (6, {})
    assert {f.doc_id for f in facts} == {p.name for p in paths}
    with Corpus.open(tmp_path / "corpus") as corpus:
        for document in corpus.documents.values():
            assert 5 <= document.n_pages <= 30
        for fact in facts:
            page_text = corpus.page_text(PageRef(fact.doc_id, fact.page))
            assert fact.fact_text in page_text
            assert fact.answer.replace(".", "").isdigit()
            # The fact is stated once in the document: no other page gives the answer away.
            others = [ref for ref in corpus.document(fact.doc_id).pages() if ref.page != fact.page]
            assert not any(fact.fact_text in corpus.page_text(ref) for ref in others)
