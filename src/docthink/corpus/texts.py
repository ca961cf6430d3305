"""Text layers, one JSON file per distinct PDF content: texts/ab/<pdf sha256>.json holds
{"pdf_sha256": ..., "pages": [page 1 text, page 2 text, ...]}."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from docthink.corpus.files import Layout, sharded, write_once


class _TextFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pdf_sha256: str
    pages: tuple[str, ...]


class TextStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, pdf_sha256: str) -> Path:
        return sharded(self.layout.texts, pdf_sha256, ".json")

    def put(self, pdf_sha256: str, pages: Sequence[str]) -> None:
        data = orjson.dumps({"pdf_sha256": pdf_sha256, "pages": list(pages)})
        write_once(self.path(pdf_sha256), data, self.layout.tmp)

    def pages(self, pdf_sha256: str) -> tuple[str, ...]:
        path = self.path(pdf_sha256)
        try:
            text_file = _TextFile.model_validate_json(path.read_bytes())
        except ValidationError as error:
            raise ValueError(f"{path}: not a text-layer file: {error}") from None
        if text_file.pdf_sha256 != pdf_sha256:
            raise ValueError(f"{path}: holds the text of PDF {text_file.pdf_sha256}")
        return text_file.pages
