"""The ingest stage's recipe."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from docthink.corpus.policy import RenderPolicy
from docthink.recipe import Recipe


class IngestRecipe(Recipe):
    pdf_dir: Path = Field(description="folder searched recursively for *.pdf (and other files)")
    out: Path = Field(description="corpus folder: manifest.jsonl, text and image stores")
    workers: int = Field(2, ge=1, description="worker processes (PDFium is not thread-safe)")
    prerender: RenderPolicy | None = Field(
        None, description="render every page at this policy now (default: render on demand)"
    )
