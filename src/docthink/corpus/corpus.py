"""Reading a corpus: documents, page text, page images (rendered on first request, then stored)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from docthink.core.parts import ImagePart, PageRef
from docthink.corpus.files import CorpusError, Layout
from docthink.corpus.images import ImageStore, RenderIndex, RenderRecord
from docthink.corpus.manifest import ManifestRecord, read_records
from docthink.corpus.pdf import RENDERER, RenderedPage, render_pages
from docthink.corpus.policy import RenderPolicy
from docthink.corpus.texts import TextStore
from docthink.corpus.workers import TaskFailed, WorkerDied, run_isolated
from docthink.progress import progress

# Pages per worker task: enough to amortise opening the PDF, few enough to spread one long document
# over the workers.
_PAGES_PER_TASK = 16


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str  # path relative to the ingested folder, posix form ("3M_2018_10K.pdf")
    path: Path  # the source PDF
    sha256: str
    n_pages: int
    page_sizes: tuple[tuple[float, float], ...]  # points (width, height), page rotation applied

    def pages(self) -> list[PageRef]:
        return [PageRef(self.doc_id, page) for page in range(1, self.n_pages + 1)]


class RenderError(RuntimeError):
    """A page of an ingested document could not be rendered (the worker crashed or raised)."""


@dataclass(frozen=True, slots=True)
class RenderTask:
    corpus: str
    path: str
    pdf_sha256: str
    pages: tuple[int, ...]
    policy: RenderPolicy


def render_task(task: RenderTask) -> list[RenderRecord]:
    """Worker side of `ensure_images`: render, store the files, return the index rows."""
    store = ImageStore(Layout(Path(task.corpus)))
    return [
        _stored(store, task.pdf_sha256, task.policy, rendered)
        for rendered in render_pages(Path(task.path), task.pages, task.policy)
    ]


def _stored(
    store: ImageStore, pdf_sha256: str, policy: RenderPolicy, rendered: RenderedPage
) -> RenderRecord:
    image_sha256 = store.put(rendered.data, policy)
    return RenderRecord(
        pdf_sha256,
        rendered.page,
        policy.key,
        image_sha256,
        rendered.width,
        rendered.height,
        RENDERER,
    )


class Corpus:
    """A corpus folder made by `ingest`. It reads the manifest of the last finished ingest; an
    ingest running meanwhile is not seen until it finishes."""

    def __init__(self, layout: Layout, records: Sequence[ManifestRecord]) -> None:
        self.layout = layout
        self.documents = {r.doc_id: _document(r) for r in records if r.status == "ok"}
        self.rejected = {r.doc_id: r.reason for r in records if r.status == "rejected"}
        self._source_stat = {r.doc_id: (r.size, r.mtime_ns) for r in records}
        self._texts = TextStore(layout)
        self._images = ImageStore(layout)
        self._text_cache = functools.lru_cache(maxsize=8)(self._load_texts)
        self.rendered = 0  # pages this object rendered, in-process or in workers

    @classmethod
    def open(cls, root: Path) -> Corpus:
        layout = Layout(root)
        if not layout.manifest.exists():
            raise CorpusError(
                f"{root} has no manifest.jsonl: not a corpus, or its first ingest did not finish "
                "(run the ingest again to complete it)"
            )
        return cls(layout, read_records(layout.manifest))

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if "_index" in self.__dict__:
            self._index.close()

    @functools.cached_property
    def ingested(self) -> Path:
        """The folder this corpus mirrors; a document's id is its path under it."""
        return Path(orjson.loads(self.layout.info.read_bytes())["pdf_dir"])

    @functools.cached_property
    def _index(self) -> RenderIndex:
        # Opened on first use, so text-only readers never create or lock the SQLite file.
        return RenderIndex(self.layout.render_index)

    def document(self, doc_id: str) -> Document:
        if doc_id in self.documents:
            return self.documents[doc_id]
        if doc_id in self.rejected:
            raise KeyError(f"doc_id {doc_id!r} was rejected at ingest ({self.rejected[doc_id]})")
        raise KeyError(f"unknown doc_id {doc_id!r} in corpus {self.layout.root}")

    def n_pages(self, doc_id: str) -> int:
        return self.document(doc_id).n_pages

    def page_text(self, ref: PageRef) -> str:
        document = self._document_of(ref)
        return self._text_cache(document.sha256, document.n_pages)[ref.page - 1]

    def page_image(self, ref: PageRef, policy: RenderPolicy) -> ImagePart:
        """The page's image under `policy`, rendered in this process if it is not stored yet."""
        document = self._document_of(ref)
        self._index.register(policy)
        stored = self._stored_pages(document, policy)
        if ref.page not in stored:
            self._check_unchanged(document)
            rendered = next(render_pages(document.path, [ref.page], policy))
            record = _stored(self._images, document.sha256, policy, rendered)
            self._index.record([record])
            self.rendered += 1
            stored[ref.page] = record
        return self._image_part(ref, stored[ref.page], policy)

    def stored_image(self, ref: PageRef, policy: RenderPolicy) -> Path | None:
        """The page's stored image under `policy`, or None when it was never rendered (nothing
        is rendered or recorded here: what a reader such as the web UI asks)."""
        record = self._stored_pages(self._document_of(ref), policy).get(ref.page)
        return None if record is None else self._images.path(record.image_sha256, policy)

    def ensure_images(
        self,
        refs: Sequence[PageRef],
        policy: RenderPolicy,
        workers: int = 2,
        show_progress: bool = False,
    ) -> list[ImagePart]:
        """Images for `refs` (in order), rendering the missing ones in crash-isolated worker
        processes. Raises RenderError if a worker dies; pages finished before stay stored."""
        documents = {ref.doc_id: self._document_of(ref) for ref in refs}
        self._index.register(policy)
        stored = {doc_id: self._stored_pages(d, policy) for doc_id, d in documents.items()}
        tasks = self._render_tasks(refs, documents, stored, policy)
        missing = sum(len(task.pages) for task in tasks)
        with progress(f"render {policy.key}", missing, show_progress) as bar:
            for index, outcome in run_isolated(render_task, tasks, workers):
                if isinstance(outcome, WorkerDied | TaskFailed):
                    raise RenderError(_render_failure(tasks[index], outcome))
                self._index.record(outcome)
                self.rendered += len(outcome)
                bar.advance(len(outcome))
        for doc_id, document in documents.items():
            stored[doc_id] = self._stored_pages(document, policy)
        return [self._image_part(ref, stored[ref.doc_id][ref.page], policy) for ref in refs]

    def _render_tasks(
        self,
        refs: Sequence[PageRef],
        documents: dict[str, Document],
        stored: dict[str, dict[int, RenderRecord]],
        policy: RenderPolicy,
    ) -> list[RenderTask]:
        missing: dict[str, set[int]] = {}
        for ref in refs:
            if ref.page not in stored[ref.doc_id]:
                missing.setdefault(ref.doc_id, set()).add(ref.page)
        tasks = []
        for doc_id, pages in missing.items():
            document = documents[doc_id]
            self._check_unchanged(document)
            ordered = sorted(pages)
            for start in range(0, len(ordered), _PAGES_PER_TASK):
                chunk = tuple(ordered[start : start + _PAGES_PER_TASK])
                tasks.append(
                    RenderTask(
                        str(self.layout.root), str(document.path), document.sha256, chunk, policy
                    )
                )
        return tasks

    def _stored_pages(self, document: Document, policy: RenderPolicy) -> dict[int, RenderRecord]:
        """Indexed renders whose file is present (a deleted file is rendered again)."""
        records = self._index.lookup(document.sha256, policy.key)
        return {
            page: record
            for page, record in records.items()
            if self._images.path(record.image_sha256, policy).exists()
        }

    def _image_part(self, ref: PageRef, record: RenderRecord, policy: RenderPolicy) -> ImagePart:
        path = self._images.path(record.image_sha256, policy)
        return ImagePart(path=path, sha256=record.image_sha256, mime=policy.mime, page=ref)

    def _document_of(self, ref: PageRef) -> Document:
        document = self.document(ref.doc_id)
        if not 1 <= ref.page <= document.n_pages:
            raise ValueError(f"{ref}: page {ref.page} is out of range 1..{document.n_pages}")
        return document

    def _check_unchanged(self, document: Document) -> None:
        """Renders must show the PDF that was ingested, not a later edit of it."""
        stat = os.stat(document.path)
        if (stat.st_size, stat.st_mtime_ns) != self._source_stat[document.doc_id]:
            raise ValueError(
                f"{document.path} changed since it was ingested (size or mtime differ): "
                "run the ingest again before rendering it"
            )

    def _load_texts(self, pdf_sha256: str, n_pages: int) -> tuple[str, ...]:
        pages = self._texts.pages(pdf_sha256)
        if len(pages) != n_pages:
            path = self._texts.path(pdf_sha256)
            raise ValueError(f"{path}: {len(pages)} pages of text, the manifest says {n_pages}")
        return pages


def _document(record: ManifestRecord) -> Document:
    return Document(
        doc_id=record.doc_id,
        path=Path(record.path),
        sha256=record.sha256,
        n_pages=record.n_pages,
        page_sizes=record.page_sizes,
    )


def _render_failure(task: RenderTask, outcome: WorkerDied | TaskFailed) -> str:
    where = f"rendering {task.path} pages {list(task.pages)} at {task.policy.key}"
    if isinstance(outcome, WorkerDied):
        return f"{where}: {outcome.reason}"
    return f"{where}: {outcome.error}\n{outcome.traceback}"
