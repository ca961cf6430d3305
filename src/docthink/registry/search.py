"""`docthink search`: full-text (FTS5, BM25) and semantic (MiniLM cosine) rankings of the index,
fused into one by weighted reciprocal rank fusion: a text's score is the sum over both rankings
of weight / (RRF_K + rank), so a text near the top of either ranking comes up, and one near the
top of both comes first. Each vote is weighted by how strong the match is: the full-text one by
the share of the query's words the text contains (texts with under half of them are left out of
that ranking), the semantic one by the cosine similarity. So an exact match of every word beats a
loose semantic neighbour, and a close paraphrase beats a text sharing one common word."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from docthink.core.embedding import MiniLM
from docthink.registry.index import EMBEDDED_SOURCES
from docthink.runs.registry import Registry

RRF_K = 60
CANDIDATES = 50  # taken from each ranking before fusion
# A full-text candidate must contain at least this share of the query's words (Lucene's
# minimum_should_match): a long descriptive query shares a word or two with many unrelated texts.
MIN_SHOULD_MATCH = 0.5
COMMON_SHARE = 0.05  # see Searcher._fts
MARK_START, MARK_END = "\x02", "\x03"  # around matched words in snippets; see `marked`

# Words that match nearly every text: left out of the full-text query (BM25 would give them
# almost no weight anyway, but matching them costs time on a large index).
STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "had", "has", "have", "how", "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "their", "there", "these", "this", "those", "to", "was", "we", "were", "what", "when", "where", "which", "who", "why", "with", "you", "our", "my", "me"]
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    doc_id: int
    run_id: str
    source: str
    key: str
    snippet: str  # matched words between MARK_START and MARK_END
    score: float
    fts_rank: int | None  # 1-based, None: not in the full-text candidates
    semantic_rank: int | None


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: list[Hit]
    semantic: bool  # False: full-text only


def query_words(text: str) -> list[str]:
    """The words of a query, lowercased, without stopwords (unless it has nothing else)."""
    words = [w.lower() for w in _WORD.findall(text)]
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(kept))


def fts_query(text: str) -> str | None:
    """The user's words as an FTS5 query: each word quoted (no operator syntax leaks through),
    any of them may match. None when the text has no words."""
    words = query_words(text)
    return " OR ".join(f'"{w}"' for w in words) if words else None


def marked(snippet: str, start: str, end: str) -> str:
    return snippet.replace(MARK_START, start).replace(MARK_END, end)


def _generation(registry: Registry) -> str | None:
    """Bumped by every index update that changes a text or vector: a cheap staleness check."""
    row = registry.db.execute("SELECT value FROM search_state WHERE key = 'generation'").fetchone()
    return None if row is None else row[0]


class VectorCache:
    """The embedding matrix, loaded once and reloaded when the index grows or shrinks."""

    def __init__(self) -> None:
        self.loaded = False
        self.version: str | None = None
        self.doc_ids = np.zeros(0, dtype=np.int64)
        self.rows = np.zeros(0, dtype=np.int64)  # doc -> row of `matrix`
        self.sources: np.ndarray = np.zeros(0, dtype=object)
        self.matrix = np.zeros((0, 384), dtype=np.float32)

    def load(self, registry: Registry) -> None:
        version = _generation(registry)
        if self.loaded and version == self.version:
            return
        shas, blobs = [], []
        for sha, blob in registry.db.execute("SELECT text_sha, vector FROM search_vectors"):
            shas.append(sha)
            blobs.append(blob)
        row_of = {sha: i for i, sha in enumerate(shas)}
        marks = ", ".join("?" for _ in EMBEDDED_SOURCES)
        self.matrix = (np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
                       if blobs else np.zeros((0, 384), dtype=np.float32))
        docs = [(d, row_of[s], src) for d, s, src in registry.db.execute(
            f"SELECT id, text_sha, source FROM search_docs WHERE source IN ({marks})",
            EMBEDDED_SOURCES) if s in row_of]
        self.doc_ids = np.array([d for d, _, _ in docs], dtype=np.int64)
        self.rows = np.array([r for _, r, _ in docs], dtype=np.int64)
        self.sources = np.array([s for _, _, s in docs], dtype=object)
        self.version = version
        self.loaded = True


class Searcher:
    """Holds the embedding model and matrix between queries (the web server keeps one matrix
    across requests)."""

    def __init__(self, registry: Registry, embedder: MiniLM | None,
                 vectors: VectorCache | None = None) -> None:
        self.registry = registry
        self.embedder = embedder
        self._vectors = vectors or VectorCache()

    def search(self, query: str, *, limit: int = 10,
               sources: Sequence[str] | None = None) -> SearchResult:
        candidates = self._fts(query, sources)
        coverage = self._coverage(query, candidates)
        fts = [d for d in candidates if coverage[d] >= MIN_SHOULD_MATCH]
        semantic = self._semantic(query, sources) if self.embedder is not None else []
        scores: dict[int, float] = {}
        for rank, doc_id in enumerate(fts, start=1):
            scores[doc_id] = coverage[doc_id] / (RRF_K + rank)
        for rank, (doc_id, similarity) in enumerate(semantic, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + max(similarity, 0.0) / (RRF_K + rank)
        best = sorted(scores, key=lambda d: (-scores[d], d))[:limit]
        fts_rank = {d: i for i, d in enumerate(fts, start=1)}
        sem_rank = {d: i for i, (d, _) in enumerate(semantic, start=1)}
        hits = self._hits(best, query, scores, fts_rank, sem_rank)
        return SearchResult(query, hits, self.embedder is not None)

    def _fts(self, query: str, sources: Sequence[str] | None) -> list[int]:
        """BM25 candidates. As in Lucene's common-terms query, a word found in more than
        COMMON_SHARE of all texts (a recipe key, `eval`, `0`) is left out of the lookup when the
        query has rarer words: scoring it would cost a step for most records and add next to
        nothing to BM25 (it still counts in the coverage below). A query made only of common
        words needs them all."""
        words = query_words(query)
        if not words:
            return []
        counts = {w: self.registry.db.execute(
            "SELECT count(*) FROM search_fts WHERE search_fts MATCH ?", (f'"{w}"',)).fetchone()[0]
            for w in words}
        total = self.registry.db.execute("SELECT coalesce(max(id), 0) FROM search_docs").fetchone()[0]
        rare = [w for w in words if 0 < counts[w] <= COMMON_SHARE * total]
        if rare:
            match = " OR ".join(f'"{w}"' for w in rare)
        elif all(counts.values()):
            match = " AND ".join(f'"{w}"' for w in words)
        else:
            return []
        sql = "SELECT rowid FROM search_fts WHERE search_fts MATCH ?"
        args: list[object] = [match]
        if sources:
            marks = ", ".join("?" for _ in sources)
            sql = ("SELECT f.rowid FROM search_fts f JOIN search_docs d ON d.id = f.rowid"
                   f" WHERE search_fts MATCH ? AND d.source IN ({marks})")
            args += list(sources)
        sql += " ORDER BY rank LIMIT ?"
        return [r for (r,) in self.registry.db.execute(sql, [*args, CANDIDATES])]

    def _coverage(self, query: str, doc_ids: list[int]) -> dict[int, float]:
        """The share of the query's words each full-text candidate contains. Its vote in the
        fusion is weighted by it: a text sharing one common word with a long query is weak
        evidence, and without the weight it would outrank the best semantic match."""
        words = query_words(query)
        if not doc_ids or not words:
            return {}
        marks = ", ".join("?" for _ in doc_ids)
        sql = f"SELECT rowid FROM search_fts WHERE search_fts MATCH ? AND rowid IN ({marks})"
        found = dict.fromkeys(doc_ids, 0)
        for word in words:
            for (doc_id,) in self.registry.db.execute(sql, [f'"{word}"', *doc_ids]):
                found[doc_id] += 1
        return {d: n / len(words) for d, n in found.items()}

    def _semantic(self, query: str, sources: Sequence[str] | None) -> list[tuple[int, float]]:
        """The nearest texts by cosine similarity, with it."""
        assert self.embedder is not None
        self._vectors.load(self.registry)
        v = self._vectors
        if not len(v.doc_ids):
            return []
        q = self.embedder.encode([query])[0]
        similarity = v.matrix @ q
        scores = similarity[v.rows]
        if sources:
            scores = np.where(np.isin(v.sources, list(sources)), scores, -np.inf)
        n = min(CANDIDATES, len(scores))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(v.doc_ids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def _hits(self, doc_ids: list[int], query: str, scores: dict[int, float],
              fts_rank: dict[int, int], sem_rank: dict[int, int]) -> list[Hit]:
        if not doc_ids:
            return []
        marks = ", ".join("?" for _ in doc_ids)
        rows = {r[0]: r for r in self.registry.db.execute(
            f"SELECT id, run_id, source, key, text FROM search_docs WHERE id IN ({marks})", doc_ids)}
        snippets = self._snippets([d for d in doc_ids if d in fts_rank], query)
        return [
            Hit(d, rows[d][1], rows[d][2], rows[d][3],
                snippets[d] if d in snippets else _lead(rows[d][4]),
                scores[d], fts_rank.get(d), sem_rank.get(d))
            for d in doc_ids
        ]

    def _snippets(self, doc_ids: list[int], query: str) -> dict[int, str]:
        match = fts_query(query)
        if not doc_ids or match is None:
            return {}
        marks = ", ".join("?" for _ in doc_ids)
        sql = (f"SELECT rowid, snippet(search_fts, 0, '{MARK_START}', '{MARK_END}', ' … ', 24)"
               f" FROM search_fts WHERE search_fts MATCH ? AND rowid IN ({marks})")
        return {d: " ".join(s.split()) for d, s in self.registry.db.execute(sql, [match, *doc_ids])}


def _lead(text: str, chars: int = 200) -> str:
    """The start of a text, as the snippet of a semantic-only hit."""
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[:chars].rsplit(" ", 1)[0] + " …"


def distinct_runs(hits: Sequence[Hit]) -> list[str]:
    """Run ids in the order of their best hit."""
    return list(dict.fromkeys(h.run_id for h in hits))
