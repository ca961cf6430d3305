"""manifest.jsonl: one JSON object per input file, sorted by doc_id, readable with any JSON tool.

A run appends each finished file's line to journal.jsonl as it goes; the next run (or the end of
this one) folds the journal into the manifest. So a killed run loses nothing it finished."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from docthink.corpus.files import Layout, atomic_write


class ManifestRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_id: str  # path relative to the PDF folder, posix form
    path: str  # absolute path of the source file
    size: int
    mtime_ns: int
    sha256: str | None  # None only when the file could not be read at all
    status: Literal["ok", "rejected"]
    reason: str | None = None  # "kind: detail" when rejected
    n_pages: int | None = None
    page_sizes: tuple[tuple[float, float], ...] | None = None  # points (width, height) per page

    @model_validator(mode="after")
    def _fields_match_status(self) -> ManifestRecord:
        if self.status == "ok":
            if self.sha256 is None or self.n_pages is None or self.reason is not None:
                raise ValueError("an ok record needs sha256 and n_pages, and no reason")
            if self.page_sizes is None or len(self.page_sizes) != self.n_pages:
                raise ValueError(f"an ok record needs {self.n_pages} page_sizes")
        elif self.reason is None:
            raise ValueError("a rejected record needs a reason")
        return self

    def line(self) -> bytes:
        return self.model_dump_json().encode()


def reason_kind(reason: str) -> str:
    """The part before the colon ("encrypted" of "encrypted: ..."): what summaries count."""
    return reason.split(":", 1)[0]


def read_records(path: Path, *, allow_torn_tail: bool = False) -> list[ManifestRecord]:
    """Parse a manifest or journal. A journal's last line may be torn by a kill mid-append; any
    other bad line is an error naming the file and line."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    # After the final newline split() leaves b""; a torn tail is a non-empty fragment there.
    if lines[-1] and not allow_torn_tail:
        raise ValueError(f"{path}: last line has no newline (file cut short?)")
    records = []
    for number, line in enumerate(lines[:-1], start=1):
        try:
            records.append(ManifestRecord.model_validate_json(line))
        except ValidationError as error:
            raise ValueError(f"{path} line {number}: {error}") from None
    return records


def load_state(layout: Layout) -> dict[str, ManifestRecord]:
    """The manifest with any journal of an interrupted run applied on top (later lines win)."""
    records: dict[str, ManifestRecord] = {}
    if layout.manifest.exists():
        records.update((r.doc_id, r) for r in read_records(layout.manifest))
    if layout.journal.exists():
        records.update((r.doc_id, r) for r in read_records(layout.journal, allow_torn_tail=True))
    return records


def write_manifest(layout: Layout, records: Iterable[ManifestRecord]) -> None:
    ordered = sorted(records, key=lambda r: r.doc_id)
    data = b"".join(r.line() + b"\n" for r in ordered)
    atomic_write(layout.manifest, data, layout.tmp, durable=True)
