"""The search index: one text per run record, note and generated or evaluated row, in the
registry's own tables (FTS5 over them, embeddings beside them).

Indexing is incremental. Triggers log every run whose record, notes or tags change
(`run_changes`); `update_index` re-reads only those runs, and of their data files only the ones
whose fingerprint (size, mtime, ctime) changed since they were indexed (`search_files`). Texts
that did not change keep their rows and their embeddings; equal texts share one embedding.

What is indexed:
- every run: id, kind, status, command, the recipe as dotted fields, metrics, tags, error;
- every note;
- synth runs: the questions read (the input file), traces.parquet and answers.parquet beside
  examples.jsonl;
- eval runs: predictions.jsonl (question, reference answer, response, extracted answer).

A failed run contributes its record (recipe, error), notes and tags, the questions it was given,
and of its data only the outputs it finished and recorded (outputs are recorded once written).

A registry outlives its files: they get edited, truncated, deleted, replaced by other formats, or
were malformed from the start. No file stops the index. One that cannot be read (gone, a folder,
no permission, not the format expected) is skipped with its reason, kept in `search_files` with
the fingerprint it had, and tried again when that changes; texts indexed from it before it broke
stay. Reading stays strict (a row that does not validate makes the file unreadable, rather than
half-indexed), and so do the pipeline's own readers: only the index skips.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from docthink.core.embedding import MiniLM
from docthink.registry.diff import flatten, show
from docthink.runs.registry import Registry, RunRecord

M = TypeVar("M", bound=BaseModel)

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


@dataclass(frozen=True)
class Skipped:
    """A data file the index could not read, and why."""

    run_id: str
    path: str
    reason: str


@dataclass
class IndexStats:
    runs: int = 0
    docs_added: int = 0
    docs_removed: int = 0
    files_read: int = 0
    skipped: list[Skipped] = field(default_factory=list)  # tried in this update and unreadable
    embedded: int = 0
    semantic: bool = False

    def line(self) -> str:
        text = (f"indexed {self.runs} changed runs: +{self.docs_added} -{self.docs_removed} texts, "
                f"{self.files_read} data files read")
        return text + (f", {self.embedded} embedded" if self.semantic else ", no embeddings")


def skipped_line(skipped: Sequence[Skipped], named: int = 3) -> str:
    """One line for all the files search skips: a path several runs recorded counts once."""
    reasons = {s.path: s.reason for s in skipped}
    items = [f"{path} ({reason})" for path, reason in list(reasons.items())[:named]]
    more = f" and {len(reasons) - named} more" if len(reasons) > named else ""
    files = "file" if len(reasons) == 1 else "files"
    return (f"{len(reasons)} {files} skipped: {', '.join(items)}{more}; "
            "see `docthink runs verify`")


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


class _TraceRow(BaseModel):
    qid: str
    text: str


class _AnswerRow(BaseModel):
    qid: str
    branch: str
    text: str
    failure: str | None


class _PredictionRow(BaseModel):
    index: int
    mode: str
    question: str
    answer: str
    response: str | None  # None: the request failed
    pred: str


def _validated(model: type[M], rows: Iterator[tuple[int, object]]) -> list[M]:
    out = []
    for number, row in rows:
        try:
            out.append(model.model_validate(row))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "row"
            raise ValueError(f"row {number}: {field}: {err['msg']}") from None
    return out


def _parquet_rows(path: Path, columns: list[str]) -> Iterator[tuple[int, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=columns)
    except pa.ArrowException as exc:  # not Parquet, truncated, a column missing
        detail = str(exc).splitlines()[0].removeprefix(
            f"Could not open Parquet input source '{path}': ")
        raise ValueError(f"not a Parquet table with columns {', '.join(columns)}: {detail}") from None
    yield from enumerate(table.to_pylist(), start=1)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"row {number}: not JSON: {exc.msg}") from None


def _read_traces(path: Path) -> list[Doc]:
    rows = _validated(_TraceRow, _parquet_rows(path, ["qid", "text"]))
    return [Doc("trace", r.qid, r.text) for r in rows]


def _read_answers(path: Path) -> list[Doc]:
    rows = _validated(_AnswerRow, _parquet_rows(path, ["qid", "branch", "text", "failure"]))
    return [Doc("answer", f"{r.qid}/{r.branch}", r.text) for r in rows if r.failure is None]


def _read_questions(path: Path) -> list[Doc]:
    from docthink.questions.rows import read_question_rows

    docs = []
    for row in read_question_rows(path):
        reference = "" if row.answer is None else f"\nreference answer: {row.answer}"
        docs.append(Doc("question", row.qid, f"{row.question}{reference}"))
    return docs


def _read_predictions(path: Path) -> list[Doc]:
    return [Doc("prediction", f"{p.index}/{p.mode}",
                f"{p.question}\nreference answer: {p.answer}\nresponse: {p.response}\n"
                f"extracted: {p.pred}")
            for p in _validated(_PredictionRow, _jsonl_rows(path))]


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


# What reading a file that was edited, truncated, replaced or malformed raises: OSError (gone, no
# permission, a folder) and ValueError (not UTF-8, not JSON, not Parquet, a row that does not
# validate: QuestionsError, pyarrow's ArrowInvalid and UnicodeDecodeError are ValueErrors).
UNREADABLE = (OSError, ValueError)


def look(path: Path) -> tuple[str, str | None]:
    """The file's fingerprint (size, mtime and ctime: rewritten, replaced or chmod-ed, it
    changes), and the reason it cannot be read when that shows without reading it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "missing", "missing"
    except OSError as exc:  # a folder on the way that cannot be entered, or is a file
        return f"error {exc.errno}", str(exc.strerror).lower()
    fingerprint = f"{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"
    if stat.S_ISDIR(info.st_mode):
        return fingerprint, "a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return fingerprint, "not a regular file"
    return fingerprint, None


def _reason(path: Path, exc: OSError | ValueError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, OSError) and exc.strerror is not None:
        return exc.strerror.lower()
    text = str(exc).strip()
    return text.splitlines()[0].removeprefix(f"{path}: ") if text else type(exc).__name__


def try_read(data: DataFile) -> tuple[str, list[Doc], str | None]:
    """The file's fingerprint and texts; or its fingerprint, no texts and why it cannot be
    read."""
    fingerprint, reason = look(data.path)
    if reason is None:
        try:
            return fingerprint, data.read(data.path), None
        except UNREADABLE as exc:
            reason = _reason(data.path, exc)
    return fingerprint, [], reason


# -- writing the index ----------------------------------------------------------------------------


@dataclass
class _RunUpdate:
    run_id: str
    registry_docs: list[Doc]
    # only the files whose fingerprint changed: path -> (fingerprint, docs, None), or
    # (fingerprint, [], reason) for a file that could not be read
    files: dict[str, tuple[str, list[Doc], str | None]]


def _state(registry: Registry, key: str) -> str | None:
    row = registry.db.execute("SELECT value FROM search_state WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _set_state(registry: Registry, key: str, value: str) -> None:
    registry.db.execute("INSERT OR REPLACE INTO search_state (key, value) VALUES (?, ?)",
                        (key, value))


def _changed_files(registry: Registry, record: RunRecord,
                   stats: IndexStats) -> dict[str, tuple[str, list[Doc], str | None]]:
    known = dict(registry.db.execute(
        "SELECT path, fingerprint FROM search_files WHERE run_id = ?", (record.id,)).fetchall())
    changed: dict[str, tuple[str, list[Doc], str | None]] = {}
    for data in data_files(record):
        key = str(data.path)
        if key in known and known[key] == look(data.path)[0]:
            continue
        fingerprint, docs, reason = try_read(data)
        changed[key] = (fingerprint, docs, reason)
        if reason is None:
            stats.files_read += 1
        else:
            stats.skipped.append(Skipped(record.id, key, reason))
    return changed


def _retry(registry: Registry) -> list[str]:
    """The runs with a skipped file that changed since it was tried: tried again now."""
    rows = registry.db.execute(
        "SELECT run_id, path, fingerprint FROM search_files WHERE reason IS NOT NULL").fetchall()
    return list(dict.fromkeys(run_id for run_id, path, fingerprint in rows
                              if look(Path(path))[0] != fingerprint))


def skipped_files(registry: Registry, run_ids: Sequence[str] | None = None) -> list[Skipped]:
    """The data files the index could not read when it last tried (of these runs, or all)."""
    sql = "SELECT run_id, path, reason FROM search_files WHERE reason IS NOT NULL"
    if run_ids is None:
        rows = registry.db.execute(sql + " ORDER BY path, run_id").fetchall()
    else:
        rows = []
        for chunk in _batches(list(run_ids), 500):
            marks = ", ".join("?" for _ in chunk)
            rows += registry.db.execute(f"{sql} AND run_id IN ({marks})", list(chunk)).fetchall()
        rows.sort(key=lambda r: (r[1], r[0]))
    return [Skipped(*row) for row in rows]


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


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def update_index(registry: Registry, embedder: MiniLM | None, *,
                 rescan: bool = False) -> IndexStats:
    """Index what changed since the last update; with `rescan`, also look at every run's data
    files again (a folder rewritten without a new run). Files are read and texts embedded outside
    the write transaction, so runs being recorded meanwhile only wait for the short writes."""
    stats = IndexStats(semantic=embedder is not None)
    ids, top = registry.changes("indexed_seq")
    ids = list(dict.fromkeys([*ids, *_retry(registry)]))
    if rescan:
        ids = list(dict.fromkeys([*ids, *(r for (r,) in registry.db.execute(
            "SELECT id FROM runs ORDER BY started_at"))]))
    for chunk in _batches(ids, BATCH_RUNS):
        updates = [
            _RunUpdate(r.id, registry_docs(r), _changed_files(registry, r, stats))
            for r in registry.records(chunk)
        ]
        docs = [d for u in updates
                for d in [*u.registry_docs, *(x for _, fd, _ in u.files.values() for x in fd)]]
        texts = _missing_vectors(registry, docs) if embedder is not None else {}
        encoded = embedder.encode(list(texts.values())) if embedder is not None and texts else None
        with registry.write():
            for u in updates:
                _replace(registry, u.run_id, None, u.registry_docs, stats)
                for path, (fingerprint, file_docs, reason) in u.files.items():
                    if reason is None:
                        _replace(registry, u.run_id, path, file_docs, stats)
                    # an unreadable file keeps the texts read from it before it broke
                    registry.db.execute(
                        "INSERT OR REPLACE INTO search_files (run_id, path, fingerprint, rows, reason)"
                        " VALUES (?, ?, ?, (SELECT count(*) FROM search_docs WHERE run_id = ?"
                        " AND file = ?), ?)", (u.run_id, path, fingerprint, u.run_id, path, reason))
            if embedder is not None and encoded is not None:
                _store_vectors(registry, embedder.name, texts, encoded)
                stats.embedded += len(texts)
            elif embedder is None and any(d.source in EMBEDDED_SOURCES for d in docs):
                _set_state(registry, "vectors_missing", "1")
        stats.runs += len(updates)
    if embedder is not None and _state(registry, "vectors_missing") == "1":
        stats.embedded += _backfill(registry, embedder)
    with registry.write():
        registry.advance("indexed_seq", top)
        if stats.docs_added or stats.docs_removed or stats.embedded:
            generation = int(_state(registry, "generation") or 0) + 1
            _set_state(registry, "generation", str(generation))
    return stats


def _backfill(registry: Registry, embedder: MiniLM) -> int:
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
