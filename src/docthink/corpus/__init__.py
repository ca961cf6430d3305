"""PDFs -> pages: validation, page count, text layer, rendering, image store.

`ingest` builds or updates a corpus folder from a folder of PDFs; `Corpus` reads it. Sample PDFs
with planted facts come from `docthink.corpus.samples` (needs reportlab)."""

from docthink.corpus.corpus import Corpus, Document, RenderError
from docthink.corpus.files import CorpusError
from docthink.corpus.ingest import IngestSummary, ingest
from docthink.corpus.manifest import ManifestRecord
from docthink.corpus.policy import RenderPolicy

__all__ = [
    "Corpus",
    "CorpusError",
    "Document",
    "IngestSummary",
    "ManifestRecord",
    "RenderError",
    "RenderPolicy",
    "ingest",
]
