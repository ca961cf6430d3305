"""`runs verify`: re-hash every recorded artifact and say which changed, went missing or cannot be
read; and try the data files search reads (questions, traces, answers, predictions), saying which
it cannot read and why (what `docthink search` reports as skipped)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from docthink.registry.index import Skipped, data_files, try_read
from docthink.runs.registry import Artifact, RunRecord
from docthink.runs.run import artifact_digest


@dataclass(frozen=True)
class Check:
    run_id: str
    artifact: Artifact
    status: str  # ok | changed | missing | unreadable
    digest: str | None  # what the path hashes to now, with the recorded algorithm (None when
    # missing or unreadable)
    size: int | None
    reason: str | None = None  # why it is unreadable


def _now(path: Path, algorithm: str) -> tuple[str, str | None, int | None, str | None]:
    """(state, digest, size, reason): hashed, missing, or unreadable and why."""
    if not path.exists():
        return "missing", None, None, None
    try:
        sha, size = artifact_digest(path, algorithm)
    except OSError as exc:  # no permission, on the file or a file inside the folder
        return "unreadable", None, None, f"{exc.strerror}: {exc.filename}"
    return "hashed", sha, size, None


def verify(records: Iterable[RunRecord]) -> list[Check]:
    """One check per recorded artifact, hashed with the algorithm it was recorded with (sha256
    for records older than blake3); a path recorded by several runs is hashed once per
    algorithm."""
    now: dict[tuple[str, str], tuple[str, str | None, int | None, str | None]] = {}
    checks = []
    for record in records:
        for artifact in record.artifacts:
            key = (artifact.path, artifact.algorithm)
            if key not in now:
                now[key] = _now(Path(artifact.path), artifact.algorithm)
            state, sha, size, reason = now[key]
            if state == "hashed":
                state = "ok" if sha == artifact.digest else "changed"
            checks.append(Check(record.id, artifact, state, sha, size, reason))
    return checks


def unreadable(records: Sequence[RunRecord], reported: set[str]) -> list[Skipped]:
    """The data files of these runs that search cannot read now, and why; a path shared by
    several runs is read once, and paths in `reported` (gone artifacts, already said) are left
    out."""
    seen: dict[str, str | None] = {}
    out = []
    for record in records:
        for data in data_files(record):
            key = str(data.path)
            if key in reported:
                continue
            if key not in seen:
                seen[key] = try_read(data)[2]
            reason = seen[key]
            if reason is not None:
                out.append(Skipped(record.id, key, reason))
    return out
