"""Pages and the parts of a message: what the corpus hands out and every model reads.

An image part carries the content hash of its file in the image store and, when it shows a PDF
page, which page. Remote models get the pixels; text-layer models (the offline teacher) read that
page's text layer instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PageRef:
    doc_id: str
    page: int  # 1-based page number in the PDF

    def __str__(self) -> str:
        return f"{self.doc_id}#p{self.page}"


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    path: Path  # file in the content-addressed image store
    sha256: str  # hash of the file's bytes (the store key)
    mime: str  # "image/png" or "image/jpeg"
    page: PageRef | None = None


Part = TextPart | ImagePart
