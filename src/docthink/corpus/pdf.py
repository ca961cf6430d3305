"""Every PDFium call in docthink. PDFium is not thread-safe and can crash on hostile input, so these
functions run in worker processes (see `workers.py`), except single-page renders for a reader."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import PIL
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image
from pypdfium2.version import PDFIUM_INFO

from docthink.corpus.policy import RenderPolicy

# Everything besides the policy that decides the image bytes; stored with every render.
RENDERER = f"pdfium {PDFIUM_INFO.build}; pillow {PIL.__version__}"

# The PDF spec lets the header start anywhere in the first 1024 bytes; writers put %%EOF last.
_ENVELOPE_WINDOW = 1024

_LOAD_ERRORS = {
    pdfium_c.FPDF_ERR_FILE: ("corrupt", "PDFium could not read the file"),
    pdfium_c.FPDF_ERR_FORMAT: ("corrupt", "PDFium could not parse the file (format error)"),
    pdfium_c.FPDF_ERR_PASSWORD: ("encrypted", "a password is required to open it"),
    pdfium_c.FPDF_ERR_SECURITY: ("encrypted", "unsupported security handler"),
}


class Rejected(Exception):
    """A file that is not a usable PDF. `reason` reads "kind: detail"; the kind is what summaries
    count (not_pdf, truncated, corrupt, encrypted, empty, ...)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.reason = f"{kind}: {detail}"


@dataclass(frozen=True, slots=True)
class PdfContent:
    page_sizes: tuple[tuple[float, float], ...]  # points, as displayed (page rotation applied)
    texts: tuple[str, ...]  # text layer per page, line endings normalised to \n


@dataclass(frozen=True, slots=True)
class RenderedPage:
    page: int  # 1-based
    data: bytes  # encoded image
    width: int
    height: int


def read_pdf(data: bytes) -> PdfContent:
    """Page sizes and text layer of every page; raises `Rejected` for anything unusable."""
    check_envelope(data)
    with _open(data) as pdf:
        n_pages = len(pdf)
        if n_pages == 0:
            raise Rejected("empty", "the document has no pages")
        pages = [_read_page(pdf, index) for index in range(n_pages)]
    return PdfContent(tuple(size for size, _ in pages), tuple(text for _, text in pages))


def read_page_sizes(path: Path) -> tuple[tuple[float, float], ...]:
    """The page sizes of a PDF file, as `read_pdf` gives them, without its text layer; raises
    `Rejected` for a file ingest would reject on opening."""
    data = path.read_bytes()
    check_envelope(data)
    with _open(data) as pdf:
        return tuple(_page_size(pdf, index) for index in range(len(pdf)))


def _page_size(pdf: pdfium.PdfDocument, index: int) -> tuple[float, float]:
    page = pdf[index]
    width, height = page.get_size()  # as displayed, like _read_page
    page.close()
    return round(width, 3), round(height, 3)


def check_envelope(data: bytes) -> None:
    """Cheap checks PDFium does not make: it repairs some truncated files and silently loses the
    pages past the cut, so a missing %%EOF is a rejection of its own."""
    if not data:
        raise Rejected("not_pdf", "the file is empty")
    if b"%PDF-" not in data[:_ENVELOPE_WINDOW]:
        raise Rejected("not_pdf", f"no %PDF- header in the first {_ENVELOPE_WINDOW} bytes")
    tail = data[-4 * _ENVELOPE_WINDOW :].rstrip(b"\x00 \t\r\n")
    if b"%%EOF" not in tail[-_ENVELOPE_WINDOW:]:
        raise Rejected("truncated", f"no %%EOF marker in the last {_ENVELOPE_WINDOW} bytes")


@contextmanager
def _open(data: bytes) -> Iterator[pdfium.PdfDocument]:
    # The raw loader, because pypdfium2's own reports a zero-page document as a load failure
    # carrying the error code of an earlier, unrelated failure. `data` must outlive the document:
    # this frame holds it.
    raw = pdfium_c.FPDF_LoadMemDocument64(data, len(data), None)
    if not raw:
        code = pdfium_c.FPDF_GetLastError()
        kind, detail = _LOAD_ERRORS.get(code, ("corrupt", f"PDFium load error code {code}"))
        raise Rejected(kind, detail)
    pdf = pdfium.PdfDocument(raw)
    try:
        yield pdf
    finally:
        pdf.close()


def _read_page(pdf: pdfium.PdfDocument, index: int) -> tuple[tuple[float, float], str]:
    try:
        page = pdf[index]
        textpage = page.get_textpage()
    except pdfium.PdfiumError as error:
        raise Rejected("corrupt", f"page {index + 1}: {error}") from None
    width, height = page.get_size()
    text = normalise_text(textpage.get_text_range())
    textpage.close()
    page.close()
    return (round(width, 3), round(height, 3)), text


def normalise_text(text: str) -> str:
    """PDFium ends lines with \\r\\n; everything else stays as extracted."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def render_pages(path: Path, pages: Sequence[int], policy: RenderPolicy) -> Iterator[RenderedPage]:
    """Encoded images of the given 1-based pages of an ingested (already validated) PDF."""
    with pdfium.PdfDocument(path) as pdf:
        # Form fields are drawn as a viewer shows them, which needs the form environment.
        pdf.init_forms()
        for number in pages:
            page = pdf[number - 1]
            image = _render(page, policy)
            page.close()
            yield RenderedPage(number, encode(image, policy), image.width, image.height)


def _render(page: pdfium.PdfPage, policy: RenderPolicy) -> Image.Image:
    scale = policy.scale(*page.get_size())
    # rev_byteorder gives RGB straight away instead of PDFium's native BGR.
    bitmap = page.render(scale=scale, rev_byteorder=True)
    return bitmap.to_pil()


def encode(image: Image.Image, policy: RenderPolicy) -> bytes:
    buffer = io.BytesIO()
    if policy.format == "png":
        image.save(buffer, format="PNG", compress_level=policy.png_compress_level)
    else:
        # 4:4:4 keeps coloured text edges legible; PIL would subsample chroma by default.
        image.save(buffer, format="JPEG", quality=policy.jpeg_quality, subsampling=0)
    return buffer.getvalue()
