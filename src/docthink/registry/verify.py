"""`runs verify`: re-hash every recorded artifact and say which changed or went missing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from docthink.runs.registry import Artifact, RunRecord
from docthink.runs.run import tree_digest


@dataclass(frozen=True)
class Check:
    run_id: str
    artifact: Artifact
    status: str  # ok | changed | missing
    sha256: str | None  # what the path hashes to now (None when missing)
    size: int | None


def verify(records: Iterable[RunRecord]) -> list[Check]:
    """One check per recorded artifact; a path recorded by several runs is hashed once."""
    now: dict[str, tuple[str, int] | None] = {}
    checks = []
    for record in records:
        for artifact in record.artifacts:
            if artifact.path not in now:
                path = Path(artifact.path)
                now[artifact.path] = tree_digest(path) if path.exists() else None
            current = now[artifact.path]
            if current is None:
                checks.append(Check(record.id, artifact, "missing", None, None))
            else:
                status = "ok" if current[0] == artifact.sha256 else "changed"
                checks.append(Check(record.id, artifact, status, current[0], current[1]))
    return checks
