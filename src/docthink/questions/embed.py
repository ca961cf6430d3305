"""Page embeddings from the text layer, cached in the corpus, and a local index over them.

Two embedders, chosen by the recipe (`embedding.model`), never swapped silently:
- `minilm`: all-MiniLM-L6-v2 (`docthink.core.embedding`, the `embed` extra) on CPU, the page's
  whitespace-collapsed text truncated at `max_tokens` word pieces, L2-normalised.
- `tfidf`: dependency-free hashed TF-IDF: the teacher's content terms (lowercased, stemmed, no
  stopwords) hashed with blake2b into `tfidf_dim` signed buckets, sqrt term frequency. The cached
  vector is the TF part; the index multiplies by idf over its own pages (idf = ln((1 + n) /
  (1 + df)) + 1 per bucket) and L2-normalises.

Cache: one float32 array (n_pages, dim) per PDF content and embedder under
`CORPUS/embeddings/<embedder key>/ab/<pdf sha256>.npy`, written atomically, so a page is embedded
once per model whatever run asks for it. A page with fewer than `min_words` words has no text
embedding: it is left out of the index (it gets no hard negatives and is never one).
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson

from docthink.core.embedding import EmbeddingUnavailable, minilm, unavailable, version
from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.corpus.files import atomic_write, sharded
from docthink.models.teacher import terms
from docthink.questions.recipe import EmbeddingSettings

EMBED_VERSION = 1  # part of every cache key: bump when a vector can change


class Embedder(Protocol):
    key: str  # identity of every vector it makes: cache folder name and run record
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dim)."""
        ...


def page_words(text: str) -> int:
    return len(text.split())


# -- MiniLM -------------------------------------------------------------------------------------


class MiniLMEmbedder:
    def __init__(self, max_tokens: int, batch_size: int) -> None:
        try:
            self._model = minilm()
        except EmbeddingUnavailable:
            raise unavailable("embedding.model 'minilm'", "set `embedding: {model: tfidf}` in the "
                              "recipe for the dependency-free mode") from None
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.dim = self._model.dim
        # the same key as when sentence-transformers ran these weights: the vectors agree to
        # float32 rounding (tests/test_embedding.py), so cached pages stay valid
        self.key = f"minilm-l6-v2-{version()}-t{max_tokens}-v{EMBED_VERSION}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.encode([" ".join(t.split()) for t in texts],
                                  max_tokens=self.max_tokens, batch_size=self.batch_size)


# -- hashed TF-IDF ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def _bucket(term: str, dim: int) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "big")
    return digest % dim, 1.0 if (digest >> 63) else -1.0


class HashedTfidfEmbedder:
    """The TF part; `PageIndex.build` applies idf over the index's pages (see module docstring)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.key = f"hashtf-{dim}-v{EMBED_VERSION}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            counts: dict[int, float] = {}
            signs: dict[int, float] = {}
            for term in terms(text):
                bucket, sign = _bucket(term, self.dim)
                counts[bucket] = counts.get(bucket, 0.0) + 1.0
                signs[bucket] = sign
            for bucket, count in counts.items():
                out[row, bucket] = signs[bucket] * np.sqrt(count)
        return out


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    if settings.model == "minilm":
        return MiniLMEmbedder(settings.max_tokens, settings.batch_size)
    return HashedTfidfEmbedder(settings.tfidf_dim)


# -- the per-document cache ---------------------------------------------------------------------


def _cache_path(corpus: Corpus, embedder: Embedder, pdf_sha256: str) -> Path:
    return sharded(corpus.layout.root / "embeddings" / embedder.key, pdf_sha256, ".npy")


def document_vectors(corpus: Corpus, doc_id: str, embedder: Embedder) -> tuple[np.ndarray, bool]:
    """(n_pages, dim) float32 vectors of every page of `doc_id`, and whether they were cached."""
    document = corpus.document(doc_id)
    path = _cache_path(corpus, embedder, document.sha256)
    if path.exists():
        vectors = np.load(path)
        if vectors.shape == (document.n_pages, embedder.dim) and vectors.dtype == np.float32:
            return vectors, True
        raise ValueError(
            f"{path}: shape {vectors.shape} {vectors.dtype}, expected "
            f"({document.n_pages}, {embedder.dim}) float32; delete it to embed again"
        )
    vectors = embedder.encode([corpus.page_text(ref) for ref in document.pages()])
    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    atomic_write(path, buffer.getvalue(), corpus.layout.tmp)
    return vectors, False


# -- the index ----------------------------------------------------------------------------------


@dataclass
class PageIndex:
    """Embedded pages in (doc_id, page) order; row i is `refs[i]`, its document `docs[i]`."""

    refs: list[PageRef]
    docs: np.ndarray  # int32 document number of each row (for the other-document rule)
    vectors: np.ndarray  # float32 (n, dim), L2-normalised: cosine = dot product
    embedder: str
    textless: list[PageRef]  # pages left out: fewer than min_words words
    embedded: int  # pages encoded in this build (the rest came from the cache)

    @functools.cached_property
    def row(self) -> dict[PageRef, int]:
        return {ref: i for i, ref in enumerate(self.refs)}

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        doc_ids: Sequence[str],
        settings: EmbeddingSettings,
        embedder: Embedder | None = None,
    ) -> PageIndex:
        embedder = embedder or build_embedder(settings)
        refs: list[PageRef] = []
        docs: list[int] = []
        blocks: list[np.ndarray] = []
        textless: list[PageRef] = []
        embedded = 0
        for number, doc_id in enumerate(sorted(doc_ids)):
            vectors, cached = document_vectors(corpus, doc_id, embedder)
            embedded += 0 if cached else len(vectors)
            keep = []
            for i, ref in enumerate(corpus.document(doc_id).pages()):
                if page_words(corpus.page_text(ref)) >= settings.min_words:
                    keep.append(i)
                    refs.append(ref)
                    docs.append(number)
                else:
                    textless.append(ref)
            blocks.append(vectors[keep])
        dim = embedder.dim
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
        if settings.model == "tfidf":
            matrix = _idf_weighted(matrix)
        return cls(refs, np.asarray(docs, np.int32), matrix, embedder.key, textless, embedded)

    def save(self, folder: Path) -> None:
        """`vectors.npy` and `pages.jsonl` (`[doc_id, page]` per row)."""
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors, allow_pickle=False)
        with (folder / "pages.jsonl").open("wb") as f:
            for ref in self.refs:
                f.write(orjson.dumps([ref.doc_id, ref.page]) + b"\n")


def _idf_weighted(tf: np.ndarray) -> np.ndarray:
    df = (tf != 0).sum(axis=0)
    idf = np.log((1.0 + len(tf)) / (1.0 + df)) + 1.0
    weighted = tf * idf.astype(np.float32)
    norms = np.linalg.norm(weighted, axis=1, keepdims=True)
    return (weighted / np.maximum(norms, 1e-12)).astype(np.float32)
