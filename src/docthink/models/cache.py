"""Request cache: every successful answer in one SQLite file, so an interrupted run resumes without
repeating a finished call, and a re-run with the same requests costs nothing.

Keyed by `ChatRequest.cache_key(model)` (model, prompt text, image content hashes, schema and
sampling parameters; not the endpoint). Each result is committed on its own (WAL,
synchronous=NORMAL: a commit costs tens of microseconds and survives a killed process; only an OS
crash may lose the last ones), so a SIGKILL loses only the requests in flight. Several processes
may share the file: writers wait for each other (busy timeout) instead of failing. Failures are not
cached: the next run asks again.

The calls are synchronous on the event loop on purpose: a primary-key lookup or a one-row commit
is cheaper than a hop to a thread.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError

from docthink.models.base import (
    ChatModel,
    ChatRequest,
    ChatResult,
    RequestFailed,
    Usage,
    UsageMeter,
)
from docthink.sqlite import open_wal

log = logging.getLogger(__name__)

# Numbered schema migrations; PRAGMA user_version records how many have run.
MIGRATIONS = (
    """CREATE TABLE results (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        text TEXT NOT NULL,
        parsed TEXT,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        attempts INTEGER NOT NULL,
        created_at REAL NOT NULL
    )""",
)


class RequestCache:
    def __init__(self, path: Path, busy_timeout_s: float = 60.0) -> None:
        self.path = path
        # Autocommit: every INSERT is its own committed transaction.
        self._db = open_wal(path, busy_timeout_s)
        self._migrate()

    def _migrate(self) -> None:
        # BEGIN IMMEDIATE: two processes opening a new file must not both create the tables.
        self._db.execute("BEGIN IMMEDIATE")
        done = self._db.execute("PRAGMA user_version").fetchone()[0]
        for statement in MIGRATIONS[done:]:
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
        self._db.execute("COMMIT")

    def get(self, key: str, response_model: type[BaseModel] | None) -> ChatResult | None:
        """The stored result (`cached=True`), or None when this request never succeeded."""
        row = self._db.execute(
            "SELECT model, text, parsed, prompt_tokens, completion_tokens, latency_s, attempts"
            " FROM results WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        model, text, parsed_json, prompt_tokens, completion_tokens, latency_s, attempts = row
        schema = response_model
        try:
            parsed = None if schema is None else schema.model_validate_json(parsed_json)
        except ValidationError as error:
            # Same schema (it is in the key) but changed validators: the stored answer is stale.
            log.warning("cache row %s no longer validates, asking again: %s", key, error)
            return None
        usage = Usage(prompt_tokens, completion_tokens)
        return ChatResult(text, parsed, usage, model, latency_s, attempts, cached=True)

    def put(self, key: str, result: ChatResult) -> None:
        parsed = None if result.parsed is None else result.parsed.model_dump_json()
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                result.model,
                result.text,
                parsed,
                result.usage.prompt_tokens,
                result.usage.completion_tokens,
                result.latency_s,
                result.attempts,
                time.time(),
            ),
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CachedModel:
    """A `ChatModel` that answers from the cache when it can and stores what `inner` answers.

    Its `usage` counts every request it was asked (hits included); the inner model's meter counts
    only what reached it. The cache belongs to the caller, who closes it."""

    def __init__(self, inner: ChatModel, cache: RequestCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.usage = UsageMeter()

    def __repr__(self) -> str:
        return f"CachedModel({self.inner!r}, cache={str(self.cache.path)!r})"

    async def complete(self, request: ChatRequest) -> ChatResult:
        key = request.cache_key(self.name)
        result = self.cache.get(key, request.response_model)
        if result is None:
            try:
                result = await self.inner.complete(request)
            except RequestFailed as failure:
                self.usage.record_failure(failure)
                raise
            self.cache.put(key, result)
        self.usage.record(result)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()
