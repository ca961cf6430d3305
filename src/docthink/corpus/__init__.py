"""PDFs -> pages: validation, page count, text layer, rendering, image store.

`ingest` builds or updates a corpus folder from a folder of PDFs; `Corpus` reads it. Sample PDFs
with planted facts come from `docthink.corpus.samples` (needs reportlab)."""
