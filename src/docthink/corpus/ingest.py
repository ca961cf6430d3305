"""`docthink ingest PDF_DIR --out CORPUS`: validate every file of a folder, record its pages and
text layer, optionally render its pages; resumable and incremental.

Each file is read in a crash-isolated worker; its manifest line is journaled the moment it
finishes, so a killed run loses nothing finished, and the next run picks up where it stopped.
A file is processed again only when it is new or changed (size or mtime differ and its sha256
too), or when its last attempt failed for a reason outside the file (RETRIED_KINDS); bad files are
recorded with a reason, never stop the run.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
import stat
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from docthink.core.hashing import file_digest
from docthink.corpus.corpus import Corpus
from docthink.corpus.files import (
    CorpusError,
    Journal,
    Layout,
    atomic_write,
    exclusive_lock,
    sweep_tmp,
)
from docthink.corpus.manifest import ManifestRecord, load_state, reason_kind, write_manifest
from docthink.corpus.pdf import Rejected, read_pdf
from docthink.corpus.policy import RenderPolicy
from docthink.corpus.texts import TextStore
from docthink.corpus.workers import TaskFailed, WorkerDied, run_isolated
from docthink.progress import progress

log = logging.getLogger(__name__)

CORPUS_FORMAT = 1

# Test hook: make the worker die or stall the way a crashing PDFium would, to prove the run
# survives it. "kill:a.pdf,segv:b.pdf,exit:c.pdf,delay:0.05" (delay applies to every file).
FAULT_ENV = "DOCTHINK_TEST_FAULT"
_FAULT_ACTIONS = ("kill", "segv", "exit", "delay")

# Rejections that say more about the run than about the file (a worker killed for memory, a bug
# since fixed, a permission since granted): such files are tried again by the next run.
RETRIED_KINDS = frozenset({"worker_crash", "error", "unreadable"})


@dataclass(frozen=True, slots=True)
class IngestSummary:
    files: int  # input files now in the manifest
    ok: int
    pages: int  # pages of the ok documents
    rejected: dict[str, int]  # by reason kind: {"encrypted": 1, "not_pdf": 2, ...}
    processed: int  # files read in this run
    skipped_unchanged: int
    removed: int  # files gone since the last run, dropped from the manifest
    rendered: int  # pages rendered in this run
    seconds: float
    rejections: dict[str, str]  # doc_id -> reason, every rejected file in the manifest

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SourceFile:
    doc_id: str
    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class FileTask:
    corpus: str
    source: SourceFile
    fault: str  # FAULT_ENV's value; empty outside tests


def ingest(
    pdf_dir: Path,
    out: Path,
    *,
    render: RenderPolicy | None = None,
    workers: int = 2,
    progress: bool = True,
) -> IngestSummary:
    """Bring the corpus at `out` up to date with the files under `pdf_dir`; with `render`, also
    store every page's image under that policy (pages already stored are not rendered again)."""
    started = time.monotonic()
    pdf_dir, out = pdf_dir.resolve(), out.resolve()
    if not pdf_dir.is_dir():
        raise CorpusError(f"PDF folder {pdf_dir} does not exist or is not a folder")
    fault = _checked_fault(os.environ.get(FAULT_ENV, ""))
    layout = Layout(out)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(layout.lock):
        _claim(layout, pdf_dir)
        sweep_tmp(layout.tmp)
        known = _consolidate(layout)
        sources = scan(pdf_dir, exclude=out)
        unchanged, touched, todo = _plan(sources, known)
        processed = _process(layout, touched, todo, workers, progress, fault)
        records = unchanged + touched + processed
        write_manifest(layout, records)
        layout.journal.unlink()
        rendered = _prerender(layout, render, workers, progress) if render else 0
    return _summary(
        records,
        processed=len(processed),
        skipped=len(unchanged) + len(touched),
        removed=len(known.keys() - sources.keys()),
        rendered=rendered,
        seconds=time.monotonic() - started,
    )


def scan(pdf_dir: Path, exclude: Path) -> dict[str, SourceFile]:
    """Every regular file under `pdf_dir` by doc_id, skipping hidden entries (tool state such as
    .git or .DS_Store) and the corpus folder itself when it lives inside `pdf_dir`."""
    sources = {}
    for dirpath, dirnames, filenames in os.walk(pdf_dir):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and here / d != exclude)
        for name in sorted(n for n in filenames if not n.startswith(".")):
            path = here / name
            doc_id = path.relative_to(pdf_dir).as_posix()
            try:
                info = path.stat()
            except OSError:  # a dangling link: listed, and rejected as unreadable by the worker
                sources[doc_id] = SourceFile(doc_id, path, -1, -1)
                continue
            if stat.S_ISREG(info.st_mode):
                sources[doc_id] = SourceFile(doc_id, path, info.st_size, info.st_mtime_ns)
    return sources


def _claim(layout: Layout, pdf_dir: Path) -> None:
    """A corpus mirrors one folder; ingesting another into it would silently drop every document."""
    info = {"format": CORPUS_FORMAT, "pdf_dir": str(pdf_dir)}
    if not layout.info.exists():
        atomic_write(layout.info, orjson.dumps(info, option=orjson.OPT_INDENT_2), layout.tmp)
        return
    recorded = orjson.loads(layout.info.read_bytes())
    if recorded["pdf_dir"] != info["pdf_dir"]:
        raise CorpusError(f"{layout.root} is the corpus of {recorded['pdf_dir']}: ingest "
                          f"{pdf_dir} into another --out folder")
    if recorded != info:
        raise CorpusError(f"{layout.root}: corpus format {recorded['format']}, this docthink "
                          f"reads format {CORPUS_FORMAT}: ingest into a new folder")


def _consolidate(layout: Layout) -> dict[str, ManifestRecord]:
    """Fold an interrupted run's journal into the manifest, so this run journals from empty."""
    known = load_state(layout)
    if layout.journal.exists():
        write_manifest(layout, known.values())
        layout.journal.unlink()
    return known


def _plan(
    sources: dict[str, SourceFile], known: dict[str, ManifestRecord]
) -> tuple[list[ManifestRecord], list[ManifestRecord], list[SourceFile]]:
    """(unchanged records, records of touched files with identical bytes, files to process)."""
    unchanged, touched, todo = [], [], []
    for doc_id, source in sources.items():
        old = known.get(doc_id)
        if old is None or (old.reason is not None and reason_kind(old.reason) in RETRIED_KINDS):
            todo.append(source)
        elif (old.size, old.mtime_ns) == (source.size, source.mtime_ns):
            unchanged.append(old)
        elif old.sha256 is not None and old.sha256 == _sha256_or_none(source.path):
            touched.append(
                old.model_copy(update={"size": source.size, "mtime_ns": source.mtime_ns})
            )
        else:
            todo.append(source)
    return unchanged, touched, todo


def _sha256_or_none(path: Path) -> str | None:
    try:
        return file_digest(path, "sha256")  # the text store's key: content-addressed
    except OSError:  # vanished or unreadable: the worker will record why
        return None


def _process(
    layout: Layout,
    touched: list[ManifestRecord],
    todo: list[SourceFile],
    workers: int,
    show_progress: bool,
    fault: str,
) -> list[ManifestRecord]:
    # Largest first, so a big file does not start last and leave the other workers idle.
    ordered = sorted(todo, key=lambda s: (-s.size, s.doc_id))
    tasks = [FileTask(str(layout.root), source, fault) for source in ordered]
    journal = Journal(layout.journal)
    records = []
    try:
        for record in touched:
            journal.append(record.line())
        with progress("ingest", len(tasks), show_progress) as bar:
            for index, outcome in run_isolated(process_file, tasks, workers):
                record = _record_of(tasks[index].source, outcome)
                journal.append(record.line())
                records.append(record)
                bar.advance(note=_note(record))
    finally:
        journal.close()
    return records


def process_file(task: FileTask) -> ManifestRecord:
    """Worker side: validate one file, store its text layer, return its manifest line."""
    _inject_fault(task.fault, task.source.doc_id)
    source = task.source
    try:
        data = source.path.read_bytes()
    except OSError as error:
        return _rejected(source, None, f"unreadable: {error.strerror}")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        content = read_pdf(data)
    except Rejected as rejection:
        return _rejected(source, sha256, rejection.reason)
    TextStore(Layout(Path(task.corpus))).put(sha256, content.texts)
    return ManifestRecord(
        doc_id=source.doc_id,
        path=str(source.path),
        size=source.size,
        mtime_ns=source.mtime_ns,
        sha256=sha256,
        status="ok",
        n_pages=len(content.page_sizes),
        page_sizes=content.page_sizes,
    )


def _record_of(
    source: SourceFile, outcome: ManifestRecord | WorkerDied | TaskFailed
) -> ManifestRecord:
    if isinstance(outcome, ManifestRecord):
        return outcome
    if isinstance(outcome, WorkerDied):
        return _rejected(source, _sha256_or_none(source.path), outcome.reason)
    log.error("ingest of %s raised:\n%s", source.path, outcome.traceback)
    return _rejected(source, _sha256_or_none(source.path), f"error: {outcome.error}")


def _rejected(source: SourceFile, sha256: str | None, reason: str) -> ManifestRecord:
    return ManifestRecord(
        doc_id=source.doc_id,
        path=str(source.path),
        size=source.size,
        mtime_ns=source.mtime_ns,
        sha256=sha256,
        status="rejected",
        reason=reason,
    )


def _note(record: ManifestRecord) -> str:
    if record.status == "ok":
        return f"{record.doc_id}: ok, {record.n_pages} pages"
    return f"{record.doc_id}: rejected ({record.reason})"


def _prerender(layout: Layout, policy: RenderPolicy, workers: int, show_progress: bool) -> int:
    with Corpus.open(layout.root) as corpus:
        refs = [ref for document in corpus.documents.values() for ref in document.pages()]
        corpus.ensure_images(refs, policy, workers=workers, show_progress=show_progress)
        return corpus.rendered


def _summary(
    records: list[ManifestRecord],
    *,
    processed: int,
    skipped: int,
    removed: int,
    rendered: int,
    seconds: float,
) -> IngestSummary:
    ok = [r for r in records if r.status == "ok"]
    rejections = {r.doc_id: r.reason for r in sorted(records, key=lambda r: r.doc_id) if r.reason}
    return IngestSummary(
        files=len(records),
        ok=len(ok),
        pages=sum(r.n_pages for r in ok),
        rejected=dict(sorted(Counter(reason_kind(r) for r in rejections.values()).items())),
        processed=processed,
        skipped_unchanged=skipped,
        removed=removed,
        rendered=rendered,
        seconds=round(seconds, 3),
        rejections=rejections,
    )


def _checked_fault(spec: str) -> str:
    for item in filter(None, spec.split(",")):
        action = item.partition(":")[0]
        if action not in _FAULT_ACTIONS:
            raise ValueError(f"{FAULT_ENV}: unknown action {action!r} in {spec!r}")
    return spec


def _inject_fault(spec: str, doc_id: str) -> None:
    for item in filter(None, spec.split(",")):
        action, _, argument = item.partition(":")
        if action == "delay":
            time.sleep(float(argument))
        elif argument == doc_id and action == "exit":
            os._exit(3)
        elif argument == doc_id and action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif argument == doc_id and action == "segv":
            ctypes.string_at(0)  # a real segmentation fault, like a PDFium crash
