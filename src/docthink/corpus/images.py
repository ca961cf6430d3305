"""Page images: files named by the sha256 of their bytes (images/ab/<sha256>.png), and a SQLite
index mapping (pdf sha256, page, policy key) -> image, so a page is rendered once per policy.

The index is a plain SQLite file: `sqlite3 renders.sqlite 'select * from renders limit 5'`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from docthink.corpus.files import Layout, sharded, write_once
from docthink.corpus.policy import RenderPolicy
from docthink.sqlite import open_wal

# Numbered migrations; PRAGMA user_version says how many have run.
_MIGRATIONS = (
    """
    CREATE TABLE policies (
        key TEXT PRIMARY KEY,
        policy TEXT NOT NULL  -- the RenderPolicy as JSON, as first recorded
    );
    CREATE TABLE renders (
        pdf_sha256 TEXT NOT NULL,
        page INTEGER NOT NULL,  -- 1-based
        policy_key TEXT NOT NULL REFERENCES policies(key),
        image_sha256 TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        renderer TEXT NOT NULL,  -- PDFium and Pillow versions
        PRIMARY KEY (pdf_sha256, page, policy_key)
    ) WITHOUT ROWID;
    """,
)


@dataclass(frozen=True, slots=True)
class RenderRecord:
    pdf_sha256: str
    page: int
    policy_key: str
    image_sha256: str
    width: int
    height: int
    renderer: str


class ImageStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, image_sha256: str, policy: RenderPolicy) -> Path:
        return sharded(self.layout.images, image_sha256, policy.suffix)

    def put(self, data: bytes, policy: RenderPolicy) -> str:
        image_sha256 = hashlib.sha256(data).hexdigest()
        write_once(self.path(image_sha256, policy), data, self.layout.tmp)
        return image_sha256


class RenderIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        # autocommit mode; transactions are explicit below.
        self._db = open_wal(path)
        self._migrate()

    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {number}")
        self._db.execute("COMMIT")

    def register(self, policy: RenderPolicy) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO policies VALUES (?, ?)", (policy.key, policy.model_dump_json())
        )

    def lookup(self, pdf_sha256: str, policy_key: str) -> dict[int, RenderRecord]:
        """Rendered pages of one PDF under one policy, by page number."""
        rows = self._db.execute(
            "SELECT * FROM renders WHERE pdf_sha256 = ? AND policy_key = ?",
            (pdf_sha256, policy_key),
        )
        return {row[1]: RenderRecord(*row) for row in rows}

    def record(self, records: Iterable[RenderRecord]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(
            "INSERT OR REPLACE INTO renders VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (r.pdf_sha256, r.page, r.policy_key, r.image_sha256, r.width, r.height, r.renderer)
                for r in records
            ],
        )
        self._db.execute("COMMIT")

    def all_records(self) -> list[RenderRecord]:
        rows = self._db.execute("SELECT * FROM renders ORDER BY pdf_sha256, page, policy_key")
        return [RenderRecord(*row) for row in rows]

    def close(self) -> None:
        self._db.close()
