"""Reading a corpus: documents, text, page images rendered once per policy within the pixel cap."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import pytest
from PIL import Image

from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.corpus.ingest import ingest
from docthink.corpus.policy import RenderPolicy
from tests.corpus.corpus_pdfs import write_encrypted, write_pdf, write_rotated, write_sized_pdf

LETTER_LANDSCAPE = (792.0, 612.0)
SIZES = [
    (595.276, 841.89),  # A4: 144 dpi gives 1191 x 1684, capped to 1280 on the long side
    LETTER_LANDSCAPE,
    (3000.0, 2000.0),  # a poster: the cap decides
    (200.0, 100.0),  # small: the dpi decides (400 x 200)
    (613.3, 1000.7),  # awkward fractions
    (700.0, 1050.0),  # 1280 / 1050 * 1050 > 1280 in floating point: ceil would give 1281
]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reading")
    pdfs = root / "pdfs"
    write_pdf(pdfs / "report.pdf", ["First page\nsecond line", "Second page", "Third page"])
    write_sized_pdf(pdfs / "sizes.pdf", SIZES)
    write_rotated(pdfs / "rotated.pdf", write_pdf(root / "upright.pdf", ["turned"]), rotate=90)
    write_encrypted(pdfs / "locked.pdf", ["hidden"])
    ingest(pdfs, root / "corpus", workers=2, progress=False)
    return root / "corpus"


@pytest.fixture
def corpus(corpus_dir: Path):
    with Corpus.open(corpus_dir) as opened:
        yield opened


def test_documents_and_text(corpus: Corpus):
    report = corpus.document("report.pdf")
    assert (report.n_pages, report.path.name, len(report.sha256)) == (3, "report.pdf", 64)
    assert report.pages() == [PageRef("report.pdf", p) for p in (1, 2, 3)]
    # PDFium ends lines with \r\n; the corpus hands out \n.
    assert corpus.page_text(PageRef("report.pdf", 1)) == "First page\nsecond line"
    assert corpus.page_text(PageRef("report.pdf", 3)) == "Third page"
    assert corpus.document("rotated.pdf").page_sizes == ((841.89, 595.276),)
    assert sorted(corpus.documents) == ["report.pdf", "rotated.pdf", "sizes.pdf"]


def test_unknown_rejected_and_out_of_range_pages_are_named(corpus: Corpus):
    with pytest.raises(KeyError, match=r"unknown doc_id 'nope\.pdf'"):
        corpus.page_text(PageRef("nope.pdf", 1))
    with pytest.raises(KeyError, match=r"'locked\.pdf' was rejected at ingest \(encrypted"):
        corpus.page_text(PageRef("locked.pdf", 1))
    for page in (0, 4):
        with pytest.raises(
            ValueError, match=rf"report\.pdf#p{page}: page {page} is out of range 1\.\.3"
        ):
            corpus.page_image(PageRef("report.pdf", page), RenderPolicy())


def test_a_page_is_rendered_once_per_policy(corpus_dir: Path):
    ref, policy = PageRef("report.pdf", 2), RenderPolicy(dpi=72)
    with Corpus.open(corpus_dir) as corpus:
        first = corpus.page_image(ref, policy)
        mtime = os.stat(first.path).st_mtime_ns
        again = corpus.page_image(ref, policy)
        assert corpus.rendered == 1
    with Corpus.open(corpus_dir) as reopened:  # the index outlives the reader
        assert reopened.page_image(ref, policy) == first == again
        assert reopened.ensure_images([ref, ref], policy) == [first, first]
        assert reopened.rendered == 0
    assert os.stat(first.path).st_mtime_ns == mtime
    assert first.path == corpus_dir / "images" / first.sha256[:2] / f"{first.sha256}.png"


def test_pixel_cap_and_dpi(corpus: Corpus):
    policy = RenderPolicy()  # 144 dpi, longest side at most 1280
    parts = corpus.ensure_images(corpus.document("sizes.pdf").pages(), policy)
    sizes = [Image.open(part.path).size for part in parts]
    assert sizes[0] == (906, 1280)  # ceil(595.276 * 1280 / 841.89)
    assert sizes[1] == (1280, 990)
    assert sizes[2] == (1280, 854)
    assert sizes[3] == (400, 200)
    assert max(sizes[4]) == max(sizes[5]) == 1280
    for (width_pt, height_pt), size in zip(SIZES, sizes, strict=True):
        assert max(size) <= 1280
        expected_scale = min(2.0, 1280 / max(width_pt, height_pt))
        assert size == pytest.approx((width_pt * expected_scale, height_pt * expected_scale), abs=1)
    rotated = corpus.page_image(PageRef("rotated.pdf", 1), policy)
    assert Image.open(rotated.path).size == (1280, math.ceil(595.276 * 1280 / 841.89))


def test_png_and_jpeg_live_side_by_side(corpus: Corpus):
    ref = PageRef("report.pdf", 1)
    png = corpus.page_image(ref, RenderPolicy(format="png"))
    jpeg = corpus.page_image(ref, RenderPolicy(format="jpeg", jpeg_quality=80))
    assert (png.mime, png.path.suffix, png.path.read_bytes()[:8]) == (
        "image/png",
        ".png",
        b"\x89PNG\r\n\x1a\n",
    )
    assert (jpeg.mime, jpeg.path.suffix, jpeg.path.read_bytes()[:3]) == (
        "image/jpeg",
        ".jpg",
        b"\xff\xd8\xff",
    )
    decoded_png = Image.open(io.BytesIO(png.path.read_bytes())).convert("RGB")
    decoded_jpeg = Image.open(io.BytesIO(jpeg.path.read_bytes())).convert("RGB")
    assert decoded_png.size == decoded_jpeg.size
    # The page is white with black text: both encodings show the same dark pixels, roughly.
    dark_png = sum(decoded_png.convert("L").histogram()[:128])
    dark_jpeg = sum(decoded_jpeg.convert("L").histogram()[:128])
    assert dark_png > 100 and abs(dark_png - dark_jpeg) < 0.1 * dark_png
    assert png.sha256 != jpeg.sha256


def test_ensure_images_renders_only_the_missing_pages_in_workers(corpus: Corpus):
    policy = RenderPolicy(dpi=50)
    pages = corpus.document("report.pdf").pages()
    single = corpus.page_image(pages[0], policy)
    parts = corpus.ensure_images([pages[2], pages[0], pages[1], pages[2]], policy, workers=2)
    assert corpus.rendered == 3  # one in-process, two in the pool
    assert [p.page for p in parts] == [pages[2], pages[0], pages[1], pages[2]]
    assert parts[1] == single and parts[0] == parts[3]
    assert corpus.ensure_images(pages, policy, workers=2) == [parts[1], parts[2], parts[0]]
    assert corpus.rendered == 3


def test_a_pdf_edited_after_ingest_is_not_rendered(tmp_path: Path):
    pdf = write_pdf(tmp_path / "pdfs" / "a.pdf", ["before"])
    ingest(tmp_path / "pdfs", tmp_path / "corpus", workers=1, progress=False)
    write_pdf(pdf, ["after", "and longer"])
    with (
        Corpus.open(tmp_path / "corpus") as corpus,
        pytest.raises(ValueError, match=r"a\.pdf changed since it was ingested"),
    ):
        corpus.page_image(PageRef("a.pdf", 1), RenderPolicy())


def test_policy_keys_are_stable_names():
    assert RenderPolicy().key == "png-144dpi-max1280-z1"
    assert RenderPolicy(format="jpeg").key == "jpeg-144dpi-max1280-q90"
    assert RenderPolicy(jpeg_quality=50).key == RenderPolicy().key  # a JPEG knob on a PNG policy
