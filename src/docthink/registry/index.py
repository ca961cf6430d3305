"""The search index: one text per run record, note and generated or evaluated row, in the
registry's own tables (FTS5 over them, embeddings beside them).

Indexing is incremental. Triggers log every run whose record, notes or tags change
(`run_changes`); `update_index` re-reads only those runs, and of their data files only the ones
whose size or mtime changed since they were indexed (`search_files`). Texts that did not change
keep their rows and their embeddings; equal texts share one embedding.

What is indexed:
- every run: id, kind, status, command, the recipe as dotted fields, metrics, tags, error;
- every note;
- synth runs: the questions read (the input file), traces.parquet and answers.parquet beside
  examples.jsonl;
- eval runs: predictions.jsonl (question, reference answer, response, extracted answer).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from docthink.registry.diff import flatten, show
from docthink.registry.embed import Embedder
from docthink.runs.registry import Registry, RunRecord

# Sources with natural-language text get embeddings; run records (JSON fields, numbers) are
# served by full-text search alone.
EMBEDDED_SOURCES = ("note", "question", "trace", "answer", "prediction")
REGISTRY_SOURCES = ("run", "note")
BATCH_RUNS = 500


@dataclass(frozen=True)
class Doc:
    source: str
    key: str
    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class DataFile:
    path: Path
    read: Callable[[Path], list[Doc]]


@dataclass
class IndexStats:
    runs: int = 0
    docs_added: int = 0
    docs_removed: int = 0
    files_read: int = 0
    files_missing: list[str] = field(default_factory=list)
    embedded: int = 0
    semantic: bool = False

    def line(self) -> str:
        text = (f"indexed {self.runs} changed runs: +{self.docs_added} -{self.docs_removed} texts, "
                f"{self.files_read} data files read")
        if self.files_missing:
            text += f", {len(self.files_missing)} recorded data files missing"
        return text + (f", {self.embedded} embedded" if self.semantic else ", no embeddings")


# -- what a run contributes -----------------------------------------------------------------------


def run_text(record: RunRecord) -> str:
    recipe = "; ".join(f"{k}={show(v)}" for k, v in flatten(record.recipe).items())
    metrics = "; ".join(f"{k}={show(v)}" for k, v in flatten(record.metrics).items())
    lines = [
        f"{record.id} {record.kind} {record.status}",
        f"command: {' '.join(record.command)}",
        f"recipe: {recipe}",
        f"metrics: {metrics}",
    ]
    if record.tags:
        lines.append(f"tags: {', '.join(record.tags)}")
    if record.error:
        lines.append(f"error: {record.error}")
    return "\n".join(lines)


def registry_docs(record: RunRecord) -> list[Doc]:
    return [Doc("run", record.id, run_text(record)),
            *(Doc("note", str(n.id), n.text) for n in record.notes)]


def _read_traces(path: Path) -> list[Doc]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["qid", "text"]).to_pylist()
    return [Doc("trace", row["qid"], row["text"]) for row in table]


def _read_answers(path: Path) -> list[Doc]:
    import pyarrow.parquet as pq

    rows = pq.read_table(path, columns=["qid", "branch", "text", "failure"]).to_pylist()
    return [Doc("answer", f"{r['qid']}/{r['branch']}", r["text"]) for r in rows
            if r["failure"] is None]


def _read_questions(path: Path) -> list[Doc]:
    from docthink.synth.questions import read_question_rows

    docs = []
    for row in read_question_rows(path):
        reference = "" if row.answer is None else f"\nreference answer: {row.answer}"
        docs.append(Doc("question", row.qid, f"{row.question}{reference}"))
    return docs


def _read_predictions(path: Path) -> list[Doc]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            text = (f"{p['question']}\nreference answer: {p['answer']}\n"
                    f"response: {p['response']}\nextracted: {p['pred']}")
            docs.append(Doc("prediction", f"{p['index']}/{p['mode']}", text))
    return docs


def data_files(record: RunRecord) -> list[DataFile]:
    """The generated or evaluated rows of a run, found from its recorded artifacts."""
    files: list[DataFile] = []
    if record.kind == "synth":
        for artifact in record.outputs():
            if artifact.path.endswith("/examples.jsonl"):
                folder = Path(artifact.path).parent
                files += [DataFile(folder / "traces.parquet", _read_traces),
                          DataFile(folder / "answers.parquet", _read_answers)]
        files += [DataFile(Path(a.path), _read_questions) for a in record.artifacts
                  if a.role == "input"]
    elif record.kind == "eval":
        files += [DataFile(Path(a.path), _read_predictions) for a in record.outputs()
                  if a.path.endswith("/predictions.jsonl")]
    return files


def _fingerprint(path: Path) -> str | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


# -- writing the index ----------------------------------------------------------------------------


@dataclass
class _RunUpdate:
    run_id: str
    registry_docs: list[Doc]
    files: dict[str, tuple[str, list[Doc]]]  # path -> (fingerprint, docs): only changed files


def _state(registry: Registry, key: str) -> str | None:
    row = registry.db.execute("SELECT value FROM search_state WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _set_state(registry: Registry, key: str, value: str) -> None:
    registry.db.execute("INSERT OR REPLACE INTO search_state (key, value) VALUES (?, ?)",
                        (key, value))


def _changed_files(registry: Registry, record: RunRecord,
                   stats: IndexStats) -> dict[str, tuple[str, list[Doc]]]:
    known = dict(registry.db.execute(
        "SELECT path, fingerprint FROM search_files WHERE run_id = ?", (record.id,)).fetchall())
    changed = {}
    for data in data_files(record):
        key = str(data.path)
        fingerprint = _fingerprint(data.path)
        if fingerprint is None:
            stats.files_missing.append(key)
            continue
        if known.get(key) == fingerprint:
            continue
        changed[key] = (fingerprint, data.read(data.path))
        stats.files_read += 1
    return changed


def _replace(registry: Registry, run_id: str, file: str | None, docs: list[Doc],
             stats: IndexStats) -> None:
    """Make the run's docs from `file` (None: from the registry) exactly `docs`, touching only the
    rows whose text changed."""
    if file is None:
        rows = registry.db.execute(
            "SELECT id, source, key, text_sha, text FROM search_docs"
            " WHERE run_id = ? AND file IS NULL", (run_id,)).fetchall()
    else:
        rows = registry.db.execute(
            "SELECT id, source, key, text_sha, text FROM search_docs"
            " WHERE run_id = ? AND file = ?", (run_id, file)).fetchall()
    old = {(source, key): (doc_id, sha, text) for doc_id, source, key, sha, text in rows}
    new = {(d.source, d.key): d for d in docs}
    for ident, (doc_id, sha, text) in old.items():
        if ident in new and new[ident].sha == sha:
            continue
        registry.db.execute("INSERT INTO search_fts (search_fts, rowid, text) VALUES ('delete', ?, ?)",
                            (doc_id, text))
        registry.db.execute("DELETE FROM search_docs WHERE id = ?", (doc_id,))
        stats.docs_removed += 1
    for ident, doc in new.items():
        if ident in old and old[ident][1] == doc.sha:
            continue
        cursor = registry.db.execute(
            "INSERT INTO search_docs (run_id, source, key, file, text, text_sha)"
            " VALUES (?, ?, ?, ?, ?, ?)", (run_id, doc.source, doc.key, file, doc.text, doc.sha))
        registry.db.execute("INSERT INTO search_fts (rowid, text) VALUES (?, ?)",
                            (cursor.lastrowid, doc.text))
        stats.docs_added += 1


def _missing_vectors(registry: Registry, docs: Sequence[Doc]) -> dict[str, str]:
    """sha -> text of the embedded-source texts that have no vector yet."""
    wanted = {d.sha: d.text for d in docs if d.source in EMBEDDED_SOURCES}
    shas = list(wanted)
    have: set[str] = set()
    for start in range(0, len(shas), 500):
        chunk = shas[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        have |= {s for (s,) in registry.db.execute(
            f"SELECT text_sha FROM search_vectors WHERE text_sha IN ({marks})", chunk)}
    return {s: t for s, t in wanted.items() if s not in have}


def _store_vectors(registry: Registry, model: str, texts: dict[str, str],
                   vectors: np.ndarray) -> None:
    registry.db.executemany(
        "INSERT OR IGNORE INTO search_vectors (text_sha, model, vector) VALUES (?, ?, ?)",
        [(sha, model, v.astype(np.float32).tobytes()) for sha, v in zip(texts, vectors, strict=True)],
    )


def _changed_runs(registry: Registry, after: int) -> tuple[list[str], int]:
    top = registry.db.execute("SELECT coalesce(max(seq), 0) FROM run_changes").fetchone()[0]
    ids = [r for (r,) in registry.db.execute(
        "SELECT run_id FROM run_changes WHERE seq > ? AND seq <= ? GROUP BY run_id ORDER BY min(seq)",
        (after, top))]
    return ids, top


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def update_index(registry: Registry, embedder: Embedder | None, *,
                 rescan: bool = False) -> IndexStats:
    """Index what changed since the last update; with `rescan`, also look at every run's data
    files again (a folder rewritten without a new run). Files are read and texts embedded outside
    the write transaction, so runs being recorded meanwhile only wait for the short writes."""
    stats = IndexStats(semantic=embedder is not None)
    after = int(_state(registry, "indexed_seq") or 0)
    ids, top = _changed_runs(registry, after)
    if rescan:
        ids = list(dict.fromkeys([*ids, *(r for (r,) in registry.db.execute(
            "SELECT id FROM runs ORDER BY started_at"))]))
    for chunk in _batches(ids, BATCH_RUNS):
        updates = [
            _RunUpdate(r.id, registry_docs(r), _changed_files(registry, r, stats))
            for r in registry.records(chunk)
        ]
        docs = [d for u in updates for d in [*u.registry_docs, *(x for _, fd in u.files.values() for x in fd)]]
        texts = _missing_vectors(registry, docs) if embedder is not None else {}
        encoded = embedder.encode(list(texts.values())) if embedder is not None and texts else None
        with registry.write():
            for u in updates:
                _replace(registry, u.run_id, None, u.registry_docs, stats)
                for path, (fingerprint, file_docs) in u.files.items():
                    _replace(registry, u.run_id, path, file_docs, stats)
                    registry.db.execute(
                        "INSERT OR REPLACE INTO search_files (run_id, path, fingerprint, rows)"
                        " VALUES (?, ?, ?, ?)", (u.run_id, path, fingerprint, len(file_docs)))
            if embedder is not None and encoded is not None:
                _store_vectors(registry, embedder.name, texts, encoded)
                stats.embedded += len(texts)
            elif embedder is None and any(d.source in EMBEDDED_SOURCES for d in docs):
                _set_state(registry, "vectors_missing", "1")
        stats.runs += len(updates)
    if embedder is not None and _state(registry, "vectors_missing") == "1":
        stats.embedded += _backfill(registry, embedder)
    with registry.write():
        _set_state(registry, "indexed_seq", str(top))
        registry.db.execute("DELETE FROM run_changes WHERE seq <= ?", (top,))
        if stats.docs_added or stats.docs_removed or stats.embedded:
            generation = int(_state(registry, "generation") or 0) + 1
            _set_state(registry, "generation", str(generation))
    return stats


def _backfill(registry: Registry, embedder: Embedder) -> int:
    """Embed the texts indexed while no embedding model was installed."""
    marks = ", ".join("?" for _ in EMBEDDED_SOURCES)
    rows = registry.db.execute(
        "SELECT DISTINCT d.text_sha, d.text FROM search_docs d"
        " LEFT JOIN search_vectors v ON v.text_sha = d.text_sha"
        f" WHERE v.text_sha IS NULL AND d.source IN ({marks})", EMBEDDED_SOURCES).fetchall()
    texts = dict(rows)
    vectors = embedder.encode(list(texts.values())) if texts else None
    with registry.write():
        if vectors is not None:
            _store_vectors(registry, embedder.name, texts, vectors)
        registry.db.execute("DELETE FROM search_state WHERE key = 'vectors_missing'")
    return len(texts)
