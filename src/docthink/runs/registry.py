"""The run registry: one SQLite file that indexes every run of every command.

Plain tables that people can query with `sqlite3` directly. The schema grows by numbered
migrations (`PRAGMA user_version` holds the number applied), never by editing an old one.
WAL mode and a busy timeout let several processes record runs at once."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple, Self

from docthink.core.errors import UserError
from docthink.core.hashing import FileDigest, Fingerprint
from docthink.sqlite import open_wal

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
    # 2: free-form notes and tags; lookups for lineage (by parent, artifact path, evaluated
    # model) and by date
    """
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        created_at TEXT NOT NULL,
        author TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX notes_run ON notes(run_id);
    CREATE TABLE tags (
        run_id TEXT NOT NULL REFERENCES runs(id),
        tag TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (run_id, tag)
    );
    CREATE INDEX tags_tag ON tags(tag);
    CREATE INDEX run_parents_parent ON run_parents(parent_id);
    CREATE INDEX runs_started ON runs(started_at);
    CREATE INDEX artifacts_path ON artifacts(path);
    CREATE INDEX runs_model ON runs(json_extract(recipe, '$.model.model'));
    """,
    # 3: the search index. `run_changes` is a log, filled by triggers, of the runs whose record,
    # notes or tags changed: the indexer reads it to index only what is new. `search_docs` holds
    # one text per run record, note or data row; `search_fts` indexes it (external content);
    # `search_vectors` holds float32 embeddings keyed by the text's sha256 (equal texts share one).
    """
    CREATE TABLE run_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL);
    CREATE TRIGGER runs_inserted AFTER INSERT ON runs
        BEGIN INSERT INTO run_changes (run_id) VALUES (new.id); END;
    CREATE TRIGGER runs_updated AFTER UPDATE ON runs
        BEGIN INSERT INTO run_changes (run_id) VALUES (new.id); END;
    CREATE TRIGGER notes_inserted AFTER INSERT ON notes
        BEGIN INSERT INTO run_changes (run_id) VALUES (new.run_id); END;
    CREATE TRIGGER notes_deleted AFTER DELETE ON notes
        BEGIN INSERT INTO run_changes (run_id) VALUES (old.run_id); END;
    CREATE TRIGGER tags_inserted AFTER INSERT ON tags
        BEGIN INSERT INTO run_changes (run_id) VALUES (new.run_id); END;
    CREATE TRIGGER tags_deleted AFTER DELETE ON tags
        BEGIN INSERT INTO run_changes (run_id) VALUES (old.run_id); END;
    INSERT INTO run_changes (run_id) SELECT id FROM runs ORDER BY started_at;
    CREATE TABLE search_docs (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        source TEXT NOT NULL,            -- run | note | question | trace | answer | prediction
        key TEXT NOT NULL,               -- which one: note id, qid, 'qid/branch', 'index/mode'
        file TEXT,                       -- the data file it was read from (NULL: the registry)
        text TEXT NOT NULL,
        text_sha TEXT NOT NULL,
        UNIQUE (run_id, source, key)
    );
    CREATE INDEX search_docs_file ON search_docs(run_id, file);
    CREATE INDEX search_docs_sha ON search_docs(text_sha);
    CREATE VIRTUAL TABLE search_fts USING fts5(
        text, content='search_docs', content_rowid='id', tokenize='porter unicode61'
    );
    CREATE TABLE search_files (
        run_id TEXT NOT NULL,
        path TEXT NOT NULL,
        fingerprint TEXT NOT NULL,       -- size and mtime when it was indexed
        rows INTEGER NOT NULL,
        PRIMARY KEY (run_id, path)
    );
    CREATE TABLE search_vectors (
        text_sha TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        vector BLOB NOT NULL             -- float32, normalized
    );
    CREATE TABLE search_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 4: data files the search index could not read (gone, a folder, no permission, not the format
    # expected) keep a row in `search_files` with the reason; their fingerprint is the one they had
    # when tried (or 'missing'), and a file is tried again when it changes. Fingerprints from here
    # on add the ctime, so a chmod counts as a change.
    """
    ALTER TABLE search_files ADD COLUMN reason TEXT;  -- NULL: read and indexed
    CREATE INDEX search_files_skipped ON search_files(reason) WHERE reason IS NOT NULL;
    """,
    # 5: an artifact's digest names its algorithm (docthink.core.hashing: blake3 from here on; every
    # row before was sha256). `file_digests` keeps the digest of each file hashed while it had
    # been quiet for a while, with its fingerprint then: a run reading the file again with the
    # same fingerprint takes the digest instead of reading the bytes (docthink.core.hashing.quiet).
    """
    ALTER TABLE artifacts RENAME COLUMN sha256 TO digest;
    ALTER TABLE artifacts ADD COLUMN algorithm TEXT NOT NULL DEFAULT 'sha256';
    DROP INDEX artifacts_sha;
    CREATE INDEX artifacts_digest ON artifacts(digest);
    CREATE TABLE file_digests (
        path TEXT NOT NULL,              -- absolute
        algorithm TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        device INTEGER NOT NULL,
        PRIMARY KEY (path, algorithm)
    );
    """,
    # 6: the leaderboard's rows, one per successful eval run, computed once from its lineage when
    # the run is recorded or changes (docthink.registry.leaderboard.update_board).
    """
    CREATE TABLE leaderboard_evals (
        run_id TEXT PRIMARY KEY,
        checkpoint TEXT NOT NULL,
        benchmark TEXT NOT NULL,
        started_at TEXT NOT NULL,
        scores TEXT NOT NULL,            -- JSON {metric key: value}
        lineage TEXT NOT NULL,           -- JSON [[run id, kind], ...], from the data to the eval
        recipe TEXT NOT NULL             -- JSON {column: value}
    );
    CREATE INDEX leaderboard_evals_checkpoint
        ON leaderboard_evals(checkpoint, benchmark, started_at);
    """,
    # 7: the directory a run was started in (relative recipe paths resolve against it); runs
    # recorded before keep NULL, and `reproduce` infers it from their artifact paths.
    """
    ALTER TABLE runs ADD COLUMN cwd TEXT;
    """,
    # 8: ablations made by `docthink sweep`: a base pipeline recipe and a grid of its fields; each
    # point (the varied fields' values) names the eval run that scored it.
    """
    CREATE TABLE ablations (
        name TEXT PRIMARY KEY,
        base TEXT NOT NULL,              -- JSON: the base pipeline recipe
        grid TEXT NOT NULL,              -- JSON {field: [values]}
        created_at TEXT NOT NULL
    );
    CREATE TABLE ablation_points (
        ablation TEXT NOT NULL REFERENCES ablations(name),
        point TEXT NOT NULL,             -- JSON {field: value}, fields in grid order
        is_base INTEGER NOT NULL,        -- 1: the base recipe's own values
        eval_run TEXT NOT NULL REFERENCES runs(id),
        PRIMARY KEY (ablation, point)
    );
    """,
    # 9: the leaderboard's rows, one per checkpoint, kept with `leaderboard_evals` (the same
    # update): its latest score per benchmark, its lineage and recipe, as the board shows them,
    # and those scores again as columns, so a board is ranked and read in one query.
    """
    CREATE TABLE leaderboard_checkpoints (
        checkpoint TEXT PRIMARY KEY,
        board_row TEXT NOT NULL          -- JSON {checkpoint, evals, scores, lineage, recipe}
    );
    CREATE TABLE leaderboard_scores (    -- each checkpoint's latest score per benchmark
        checkpoint TEXT NOT NULL,
        benchmark TEXT NOT NULL,
        acc REAL,
        acc_cot REAL,
        mean_output_tokens REAL,
        mean_output_tokens_cot REAL,
        PRIMARY KEY (benchmark, checkpoint)
    );
    CREATE INDEX leaderboard_scores_checkpoint ON leaderboard_scores(checkpoint);
    """,
)


def default_registry_path() -> Path:
    """`DOCTHINK_REGISTRY` if set (a team's shared file), else `./runs/registry.sqlite`."""
    return Path(os.environ.get("DOCTHINK_REGISTRY", "runs/registry.sqlite"))


def default_runs_dir() -> Path:
    """`DOCTHINK_RUNS_DIR` if set, else `./runs`: where run folders go."""
    return Path(os.environ.get("DOCTHINK_RUNS_DIR", "runs"))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Artifact:
    role: str
    path: str
    digest: str
    size: int
    algorithm: str  # of the digest (docthink.core.hashing)


@dataclass(frozen=True)
class Note:
    id: int
    created_at: str
    author: str
    text: str


@dataclass(frozen=True)
class RunRecord:
    id: str
    kind: str
    status: str
    started_at: str
    ended_at: str | None
    command: list[str]
    cwd: str | None  # where it was started; None for runs recorded before docthink kept it
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
    notes: tuple[Note, ...] = ()
    tags: tuple[str, ...] = ()

    def outputs(self) -> tuple[Artifact, ...]:
        return tuple(a for a in self.artifacts if a.role == "output")


class FilterError(UserError, ValueError):
    """A `runs list` filter that does not parse; the message shows the expected form."""


_PATH_PART = re.compile(r"^([A-Za-z_][\w-]*)((?:\[\d+\])*)$")
_METRIC = re.compile(r"^([A-Za-z_][\w.-]*)\s*(>=|<=|!=|=|>|<)\s*(\S+)$")
_RELATIVE = re.compile(r"^(\d+)([dh])$")
_METRIC_OPS = {">=": ">=", "<=": "<=", "!=": "!=", "=": "=", ">": ">", "<": "<"}


def json_path(dotted: str) -> str:
    """`trace.top_k` or `outs[0]` -> the SQLite JSON path `$."trace"."top_k"`."""
    parts = []
    for part in dotted.split("."):
        match = _PATH_PART.match(part)
        if match is None:
            raise FilterError(f"{dotted!r}: not a field path like trace.top_k or outs[0]")
        parts.append(f'."{match[1]}"{match[2]}')
    return "$" + "".join(parts)


def parse_where(text: str) -> tuple[str, object]:
    """`trace.top_k=16` -> (JSON path, 16): a value that reads as a JSON number, true, false or
    null is one (true matches as 1, as SQLite stores it); anything else is a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise FilterError(f"--where {text!r}: expected FIELD=VALUE, e.g. trace.top_k=16")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return json_path(name.strip()), value
    if isinstance(parsed, (dict, list)):
        raise FilterError(f"--where {text!r}: compare one field (a dotted path), not a whole "
                          "object or list")
    return json_path(name.strip()), parsed


def parse_metric(text: str) -> tuple[str, str, float]:
    """`acc>=0.4` -> (JSON path, '>=', 0.4)."""
    match = _METRIC.match(text.strip())
    if match is None:
        raise FilterError(f"--metric {text!r}: expected NAME OP NUMBER, e.g. acc_cot>=0.4")
    try:
        value = float(match[3])
    except ValueError:
        raise FilterError(f"--metric {text!r}: {match[3]!r} is not a number") from None
    return json_path(match[1]), _METRIC_OPS[match[2]], value


def parse_when(text: str, *, end: bool) -> str:
    """An ISO date or datetime, or `7d` / `12h` ago, as a bound on `started_at` (UTC ISO). A bare
    date as an end bound means the end of that day."""
    relative = _RELATIVE.match(text)
    if relative is not None:
        unit = {"d": "days", "h": "hours"}[relative[2]]
        moment = datetime.now(UTC) - timedelta(**{unit: int(relative[1])})
        return moment.isoformat(timespec="milliseconds")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return (day + timedelta(days=1)).isoformat() if end else day.isoformat()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{text!r}: expected a date (2026-11-01), a datetime or 7d / 12h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


# The readers of `run_changes`: the search index and the leaderboard table.
CHANGE_CURSORS = ("indexed_seq", "board_seq")

# Recipe fields that name a model: what `runs list --model` matches.
MODEL_FIELDS = ("model", "base", "tuned")


@dataclass(frozen=True)
class RunFilter:
    kind: str | None = None
    status: str | None = None
    # substring (case-insensitive) of a recipe field in MODEL_FIELDS or of a model spec's kind
    model: str | None = None
    where: tuple[tuple[str, object], ...] = ()  # (JSON path into the recipe, value)
    metrics: tuple[tuple[str, str, float], ...] = ()  # (JSON path into metrics, op, value)
    since: str | None = None  # started_at >= since
    until: str | None = None  # started_at < until
    tag: str | None = None

    def sql(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (("kind", self.kind), ("status", self.status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.model is not None:
            names = ", ".join("?" for _ in MODEL_FIELDS)
            clauses.append(
                "EXISTS (SELECT 1 FROM json_tree(runs.recipe) t WHERE t.type = 'text'"
                f" AND (t.key IN ({names}) OR (t.key = 'kind' AND t.path LIKE '$.model%'))"
                " AND instr(lower(t.value), lower(?)) > 0)"
            )
            args.extend([*MODEL_FIELDS, self.model])
        for path, value in self.where:
            clauses.append("json_extract(recipe, ?) IS ?")
            args.extend([path, value])
        for path, op, number in self.metrics:
            clauses.append(
                f"json_type(metrics, ?) IN ('integer', 'real') AND json_extract(metrics, ?) {op} ?"
            )
            args.extend([path, path, number])
        if self.since is not None:
            clauses.append("started_at >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("started_at < ?")
            args.append(self.until)
        if self.tag is not None:
            clauses.append("EXISTS (SELECT 1 FROM tags WHERE tags.run_id = runs.id AND tag = ?)")
            args.append(self.tag)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _RunRow(NamedTuple):
    """A row of `runs` as SQLite returns it (JSON columns still text)."""

    id: str
    kind: str
    status: str
    started_at: str
    ended_at: str | None
    command: str
    cwd: str | None
    run_dir: str
    recipe: str
    recipe_hash: str
    git_commit: str | None
    git_dirty: int | None
    packages: str
    host: str
    metrics: str
    error: str | None


_RUN_COLUMNS = ", ".join(_RunRow._fields)


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_wal(path)
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue on
        # busy_timeout instead of failing on lock upgrade.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        if self.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
            return  # the common case: no write lock to take
        with self.write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path}: registry schema version {version} is newer than this "
                    f"docthink knows ({len(MIGRATIONS)}); upgrade docthink"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
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
        cwd: str | None = None,  # None: not known (an import of runs recorded elsewhere)
    ) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO runs (id, kind, status, started_at, command, cwd, run_dir, recipe,"
                " recipe_hash, git_commit, git_dirty, packages, host)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    kind,
                    started_at,
                    json.dumps(command),
                    cwd,
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
        file_digests: Sequence[FileDigest] = (),
    ) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, metrics = ?, error = ? WHERE id = ?",
                (status, ended_at, json.dumps(metrics, sort_keys=True), error, run_id),
            )
            db.executemany(
                "INSERT OR REPLACE INTO artifacts (run_id, role, path, digest, size, algorithm)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, a.role, a.path, a.digest, a.size, a.algorithm) for a in artifacts],
            )
            db.executemany(
                "INSERT OR REPLACE INTO file_digests (path, algorithm, digest, size, mtime_ns,"
                " ctime_ns, inode, device) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(f.path, f.algorithm, f.digest, f.fingerprint.size, f.fingerprint.mtime_ns,
                  f.fingerprint.ctime_ns, f.fingerprint.inode, f.fingerprint.device)
                 for f in file_digests if f.fingerprint is not None],
            )

    def known_digest(self, path: str, algorithm: str, now: Fingerprint) -> str | None:
        """The recorded digest of a file (absolute path) if `now`, its fingerprint now, is the one
        recorded with the digest: the file was not written since it was hashed."""
        row = self.db.execute(
            "SELECT digest, size, mtime_ns, ctime_ns, inode, device FROM file_digests"
            " WHERE path = ? AND algorithm = ?", (path, algorithm)).fetchone()
        return row[0] if row is not None and Fingerprint(*row[1:]) == now else None

    # -- notes and tags ---------------------------------------------------------------------------

    def add_note(self, run_id: str, text: str, *, author: str) -> int:
        self._require(run_id)
        with self.write() as db:
            cursor = db.execute(
                "INSERT INTO notes (run_id, created_at, author, text) VALUES (?, ?, ?, ?)",
                (run_id, now_iso(), author, text),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def record_ablation(self, name: str, base: dict[str, object], grid: dict[str, list[object]],
                        points: Sequence[tuple[dict[str, object], bool, str]]) -> None:
        """An ablation and its points ((varied values, is the base, eval run id)); recording the
        same name again replaces its definition and points."""
        with self.write() as db:
            db.execute("DELETE FROM ablation_points WHERE ablation = ?", (name,))
            db.execute("INSERT OR REPLACE INTO ablations (name, base, grid, created_at)"
                       " VALUES (?, ?, ?, ?)", (name, json.dumps(base), json.dumps(grid),
                                                 datetime.now(UTC).isoformat()))
            db.executemany("INSERT INTO ablation_points (ablation, point, is_base, eval_run)"
                           " VALUES (?, ?, ?, ?)",
                           [(name, json.dumps(point), int(is_base), run_id)
                            for point, is_base, run_id in points])

    def ablations(self) -> list[str]:
        return [n for (n,) in self.db.execute("SELECT name FROM ablations ORDER BY created_at")]

    def ablation(self, name: str) -> tuple[dict[str, list[object]],
                                          list[tuple[dict[str, object], bool, str]]]:
        """The grid and the points of an ablation (KeyError when there is none of that name)."""
        row = self.db.execute("SELECT grid FROM ablations WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KeyError(f"no ablation named {name!r}")
        points = [(json.loads(p), bool(b), r) for p, b, r in self.db.execute(
            "SELECT point, is_base, eval_run FROM ablation_points WHERE ablation = ?"
            " ORDER BY rowid", (name,))]
        return json.loads(row[0]), points

    def add_tags(self, run_id: str, tags: Iterable[str]) -> None:
        self._require(run_id)
        with self.write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO tags (run_id, tag, created_at) VALUES (?, ?, ?)",
                [(run_id, tag, now_iso()) for tag in tags],
            )

    def remove_tags(self, run_id: str, tags: Iterable[str]) -> None:
        self._require(run_id)
        with self.write() as db:
            db.executemany(
                "DELETE FROM tags WHERE run_id = ? AND tag = ?", [(run_id, t) for t in tags]
            )

    def _require(self, run_id: str) -> None:
        if self.db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise KeyError(f"no run {run_id!r} in {self.path}")

    # -- reading ----------------------------------------------------------------------------------

    def resolve(self, prefix: str) -> str:
        """The run id that is `prefix` or starts with it (ids are long to type)."""
        rows = self.db.execute(
            "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
            (prefix, prefix + "\uffff"),
        ).fetchall()
        exact = [r for (r,) in rows if r == prefix]
        if exact:
            return exact[0]
        if not rows:
            raise KeyError(f"no run {prefix!r} in {self.path}")
        if len(rows) > 1:
            raise KeyError(f"{prefix!r} names several runs in {self.path}: {rows[0][0]}, {rows[1][0]}, ...")
        return rows[0][0]

    def get(self, run_id: str) -> RunRecord:
        records = self.records([run_id])
        if not records:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        return records[0]

    def records(self, ids: Sequence[str]) -> list[RunRecord]:
        """The records of these runs, in this order (ids not in the registry are left out);
        four queries per 500 runs rather than five per run."""
        rows: dict[str, _RunRow] = {}
        artifacts: dict[str, list[Artifact]] = {}
        parents: dict[str, list[str]] = {}
        notes: dict[str, list[Note]] = {}
        tags: dict[str, list[str]] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            marks = ", ".join("?" for _ in chunk)
            for row in self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id IN ({marks})", chunk):
                rows[row[0]] = _RunRow._make(row)
            for run_id, *a in self.db.execute(
                "SELECT run_id, role, path, digest, size, algorithm FROM artifacts"
                f" WHERE run_id IN ({marks}) ORDER BY role, path", chunk
            ):
                artifacts.setdefault(run_id, []).append(Artifact(*a))
            for run_id, parent in self.db.execute(
                f"SELECT run_id, parent_id FROM run_parents WHERE run_id IN ({marks})"
                " ORDER BY parent_id", chunk
            ):
                parents.setdefault(run_id, []).append(parent)
            for run_id, *n in self.db.execute(
                "SELECT run_id, id, created_at, author, text FROM notes"
                f" WHERE run_id IN ({marks}) ORDER BY id", chunk
            ):
                notes.setdefault(run_id, []).append(Note(*n))
            for run_id, tag in self.db.execute(
                f"SELECT run_id, tag FROM tags WHERE run_id IN ({marks}) ORDER BY tag", chunk
            ):
                tags.setdefault(run_id, []).append(tag)
        return [
            _record(rows[i], artifacts.get(i, []), parents.get(i, []), notes.get(i, []),
                    tags.get(i, []))
            for i in dict.fromkeys(ids) if i in rows
        ]

    def list(self, *, kind: str | None = None, limit: int = 50) -> list[RunRecord]:
        return self.find(RunFilter(kind=kind), limit=limit)

    def find(self, filter: RunFilter, *, limit: int | None = 50) -> list[RunRecord]:
        """Runs matching `filter`, most recent first."""
        return self.records(self.find_ids(filter, limit=limit))

    def find_ids(self, filter: RunFilter, *, limit: int | None = 50) -> list[str]:
        where, args = filter.sql()
        sql = f"SELECT id FROM runs{where} ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [r for (r,) in self.db.execute(sql, args)]

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM runs").fetchone()[0]

    # -- the change log -----------------------------------------------------------------------------
    # `run_changes` (filled by triggers) is read by several consumers, each with its own cursor in
    # `search_state`: the search index and the leaderboard's table. A change is dropped from the
    # log once every consumer has read it.

    def cursor(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM search_state WHERE key = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def changes(self, cursor: str) -> tuple[list[str], int]:
        """The runs changed since `cursor` last advanced (in the order of their first change),
        and the position to advance it to once they are handled."""
        after = self.cursor(cursor)
        top = self.db.execute("SELECT coalesce(max(seq), 0) FROM run_changes").fetchone()[0]
        ids = [r for (r,) in self.db.execute(
            "SELECT run_id FROM run_changes WHERE seq > ? AND seq <= ? GROUP BY run_id"
            " ORDER BY min(seq)", (after, top))]
        return ids, top

    def advance(self, cursor: str, top: int) -> None:
        """Move `cursor` to `top`; call inside `write()`."""
        assert cursor in CHANGE_CURSORS, cursor
        self.db.execute("INSERT OR REPLACE INTO search_state (key, value) VALUES (?, ?)",
                        (cursor, str(top)))
        marks = ", ".join("?" for _ in CHANGE_CURSORS)
        seen = self.db.execute(f"SELECT key, value FROM search_state WHERE key IN ({marks})",
                               CHANGE_CURSORS).fetchall()
        if len(seen) == len(CHANGE_CURSORS):  # a consumer that never read keeps every change
            self.db.execute("DELETE FROM run_changes WHERE seq <= ?",
                            (min(int(v) for _, v in seen),))


def _record(row: _RunRow, artifacts: list[Artifact], parents: list[str], notes: list[Note],
            tags: list[str]) -> RunRecord:
    return RunRecord(
        id=row.id,
        kind=row.kind,
        status=row.status,
        started_at=row.started_at,
        ended_at=row.ended_at,
        command=json.loads(row.command),
        cwd=row.cwd,
        run_dir=row.run_dir,
        recipe=json.loads(row.recipe),
        recipe_hash=row.recipe_hash,
        git_commit=row.git_commit,
        git_dirty=None if row.git_dirty is None else bool(row.git_dirty),
        packages=json.loads(row.packages),
        host=row.host,
        metrics=json.loads(row.metrics),
        error=row.error,
        artifacts=tuple(artifacts),
        parents=tuple(parents),
        notes=tuple(notes),
        tags=tuple(tags),
    )


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a migration, split where SQLite says a statement is complete (a
    trigger body has semicolons inside it)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {pending.strip()[:80]}")
