"""The 37 MMLongBench-Doc PDFs: all ingest, page counts agree with an independent parser (qpdf via
pikepdf), and pages render within the policy. Text of every page is extracted; few are rendered."""

from __future__ import annotations

from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.corpus.ingest import ingest
from docthink.corpus.policy import RenderPolicy

DOCUMENTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlongbench" / "documents"

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def documents() -> Path:
    if not DOCUMENTS.is_dir():
        pytest.skip(f"shared data absent: {DOCUMENTS} (MMLongBench-Doc PDFs)")
    return DOCUMENTS


def test_real_pdfs_ingest_with_page_counts_agreeing_with_qpdf(documents: Path, tmp_path: Path):
    summary = ingest(documents, tmp_path / "corpus", workers=2, progress=False)

    pdf_names = sorted(p.name for p in documents.glob("*.pdf"))
    assert (summary.files, summary.ok, summary.rejections) == (len(pdf_names), len(pdf_names), {})
    with Corpus.open(tmp_path / "corpus") as corpus:
        for name in pdf_names:
            with pikepdf.open(documents / name) as pdf:
                assert corpus.document(name).n_pages == len(pdf.pages), name
        assert "3M" in corpus.page_text(PageRef("3M_2018_10K.pdf", 1))
        with_text = sum(
            bool(corpus.page_text(r).strip()) for d in corpus.documents.values() for r in d.pages()
        )
        assert with_text > 0.85 * summary.pages  # scanned slide decks have no text layer

        refs = [PageRef(name, 1) for name in pdf_names[:6]]
        parts = corpus.ensure_images(refs, RenderPolicy(), workers=2)
        for part in parts:
            assert max(Image.open(part.path).size) <= 1280
        assert corpus.rendered == len(refs)
