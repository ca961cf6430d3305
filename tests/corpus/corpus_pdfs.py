"""Real PDFs for the corpus tests, good and bad, made at test time (reportlab, pikepdf, cuts)."""

from __future__ import annotations

import io
from pathlib import Path

import pikepdf
from reportlab.pdfgen.canvas import Canvas


def pdf_bytes(texts: list[str], size: tuple[float, float] = (595.276, 841.89)) -> bytes:
    """One page per text, each text drawn line by line in Helvetica."""
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=size, invariant=1)
    for text in texts:
        y = size[1] - 72
        for line in text.split("\n"):
            canvas.setFont("Helvetica", 12)
            canvas.drawString(72, y, line)
            y -= 16
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def write_pdf(path: Path, texts: list[str], size: tuple[float, float] = (595.276, 841.89)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pdf_bytes(texts, size))
    return path


def write_sized_pdf(path: Path, sizes: list[tuple[float, float]]) -> Path:
    """One page per (width, height) in points, each with a little text."""
    buffer = io.BytesIO()
    canvas = Canvas(buffer, invariant=1)
    for number, size in enumerate(sizes, start=1):
        canvas.setPageSize(size)
        canvas.setFont("Helvetica", 6)
        canvas.drawString(2, 2, f"page {number}")
        canvas.showPage()
    canvas.save()
    path.write_bytes(buffer.getvalue())
    return path


def write_rotated(path: Path, source: Path, rotate: int) -> Path:
    with pikepdf.open(source) as pdf:
        for page in pdf.pages:
            page.Rotate = rotate
        pdf.save(path)
    return path


def write_encrypted(path: Path, texts: list[str]) -> Path:
    with pikepdf.open(io.BytesIO(pdf_bytes(texts))) as pdf:
        pdf.save(path, encryption=pikepdf.Encryption(user="secret", owner="owner"))
    return path


def write_zero_pages(path: Path) -> Path:
    """A well-formed PDF whose page tree is empty (pikepdf writes one from Pdf.new())."""
    pikepdf.Pdf.new().save(path)
    return path


def write_truncated(path: Path, texts: list[str], keep: float = 0.6) -> Path:
    data = pdf_bytes(texts)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_garbled(path: Path) -> Path:
    """Header and end marker of a PDF around bytes that are no PDF at all."""
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 16 + b"\n%%EOF\n")
    return path


def write_broken_page(path: Path, texts: list[str]) -> Path:
    """A complete file whose first page object is overwritten in place (same length, so the xref
    offsets stay right): PDFium opens the file but cannot load that page."""
    data = bytearray(pdf_bytes(texts))
    start = data.rindex(b" obj", 0, data.index(b"/MediaBox")) + len(b" obj")
    end = data.index(b"endobj", start)
    data[start:end] = b"x" * (end - start)
    path.write_bytes(bytes(data))
    return path
