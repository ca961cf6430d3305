"""The run registry: one SQLite file that indexes every run of every command.

Plain tables that people can query with `sqlite3` directly. The schema grows by numbered
migrations (`PRAGMA user_version` holds the number applied), never by editing an old one.
WAL mode and a busy timeout let several processes record runs at once."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS: tuple[str, ...] = (
    # 1: runs, their artifacts and their parents
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,            -- running | ok | failed | interrupted
        started_at TEXT NOT NULL,        -- ISO 8601, UTC
        ended_at TEXT,
        command TEXT NOT NULL,           -- JSON list: argv as typed
        run_dir TEXT NOT NULL,
        recipe TEXT NOT NULL,            -- JSON, the resolved recipe (secrets masked)
        recipe_hash TEXT NOT NULL,
        git_commit TEXT,
        git_dirty INTEGER,
        packages TEXT NOT NULL,          -- JSON {name: version}
        host TEXT NOT NULL,
        metrics TEXT NOT NULL DEFAULT '{}',
        error TEXT
    );
    CREATE INDEX runs_kind ON runs(kind, started_at);
    CREATE TABLE artifacts (
        run_id TEXT NOT NULL REFERENCES runs(id),
        role TEXT NOT NULL CHECK (role IN ('input', 'output')),
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (run_id, role, path)
    );
    CREATE INDEX artifacts_sha ON artifacts(sha256);
    CREATE TABLE run_parents (
        run_id TEXT NOT NULL REFERENCES runs(id),
        parent_id TEXT NOT NULL,
        PRIMARY KEY (run_id, parent_id)
    );
    """,
)


def default_registry_path() -> Path:
    """`DOCTHINK_REGISTRY` if set (a team's shared file), else `./runs/registry.sqlite`."""
    return Path(os.environ.get("DOCTHINK_REGISTRY", "runs/registry.sqlite"))


@dataclass(frozen=True)
class Artifact:
    role: str
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class RunRecord:
    id: str
    kind: str
    status: str
    started_at: str
    ended_at: str | None
    command: list[str]
    run_dir: str
    recipe: dict[str, object]
    recipe_hash: str
    git_commit: str | None
    git_dirty: bool | None
    packages: dict[str, str]
    host: str
    metrics: dict[str, object]
    error: str | None
    artifacts: tuple[Artifact, ...]
    parents: tuple[str, ...]


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue on
        # busy_timeout instead of failing on lock upgrade.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path}: registry schema version {version} is newer than this "
                    f"docthink knows ({len(MIGRATIONS)}); upgrade docthink"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    def start(
        self,
        *,
        run_id: str,
        kind: str,
        started_at: str,
        command: list[str],
        run_dir: str,
        recipe: dict[str, object],
        recipe_hash: str,
        git_commit: str | None,
        git_dirty: bool | None,
        packages: dict[str, str],
        host: str,
        parents: tuple[str, ...],
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (id, kind, status, started_at, command, run_dir, recipe,"
                " recipe_hash, git_commit, git_dirty, packages, host)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    kind,
                    started_at,
                    json.dumps(command),
                    run_dir,
                    json.dumps(recipe, sort_keys=True),
                    recipe_hash,
                    git_commit,
                    None if git_dirty is None else int(git_dirty),
                    json.dumps(packages, sort_keys=True),
                    host,
                ),
            )
            db.executemany(
                "INSERT INTO run_parents (run_id, parent_id) VALUES (?, ?)",
                [(run_id, parent) for parent in parents],
            )

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        ended_at: str,
        metrics: dict[str, object],
        artifacts: list[Artifact],
        error: str | None,
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, metrics = ?, error = ? WHERE id = ?",
                (status, ended_at, json.dumps(metrics, sort_keys=True), error, run_id),
            )
            db.executemany(
                "INSERT OR REPLACE INTO artifacts (run_id, role, path, sha256, size)"
                " VALUES (?, ?, ?, ?, ?)",
                [(run_id, a.role, a.path, a.sha256, a.size) for a in artifacts],
            )

    def get(self, run_id: str) -> RunRecord:
        row = self._db.execute(
            "SELECT id, kind, status, started_at, ended_at, command, run_dir, recipe, recipe_hash,"
            " git_commit, git_dirty, packages, host, metrics, error FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        artifacts = tuple(
            Artifact(*a)
            for a in self._db.execute(
                "SELECT role, path, sha256, size FROM artifacts WHERE run_id = ?"
                " ORDER BY role, path",
                (run_id,),
            )
        )
        parents = tuple(
            p
            for (p,) in self._db.execute(
                "SELECT parent_id FROM run_parents WHERE run_id = ? ORDER BY parent_id", (run_id,)
            )
        )
        return RunRecord(
            id=row[0],
            kind=row[1],
            status=row[2],
            started_at=row[3],
            ended_at=row[4],
            command=json.loads(row[5]),
            run_dir=row[6],
            recipe=json.loads(row[7]),
            recipe_hash=row[8],
            git_commit=row[9],
            git_dirty=None if row[10] is None else bool(row[10]),
            packages=json.loads(row[11]),
            host=row[12],
            metrics=json.loads(row[13]),
            error=row[14],
            artifacts=artifacts,
            parents=parents,
        )

    def list(self, *, kind: str | None = None, limit: int = 50) -> list[RunRecord]:
        sql = "SELECT id FROM runs"
        args: tuple[object, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (kind,)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        ids = [r for (r,) in self._db.execute(sql, (*args, limit))]
        return [self.get(i) for i in ids]

    def count(self) -> int:
        return self._db.execute("SELECT count(*) FROM runs").fetchone()[0]
