"""RequestCache and CachedModel: real SQLite files, a real server, real processes, a SIGKILL."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from itertools import count
from pathlib import Path

import pytest
from openai_server import Error, OpenAIServer, Reply
from pydantic import field_validator
from test_openai_compat import Answer, ask, make_spec, page_image, run

from docthink.core.parts import ImagePart, TextPart
from docthink.models.base import ChatRequest, ChatResult, Message, RequestFailed, Usage
from docthink.models.cache import CachedModel, RequestCache
from docthink.models.openai_compat import OpenAICompatModel


@pytest.fixture(scope="module")
def echo_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def server(echo_server: OpenAIServer) -> OpenAIServer:
    echo_server.reset()
    echo_server.responder = echo
    return echo_server


def echo(body: dict) -> Reply:
    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else content[-1]["text"]
    return Reply(f"echo {text}")


def cached_model(server: OpenAIServer, cache: RequestCache) -> CachedModel:
    return CachedModel(OpenAICompatModel(make_spec(server.url)), cache)


def test_a_repeated_request_is_served_from_the_cache(server: OpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda body: Reply('{"value": 1, "label": "one"}', 9, 4)
    request = ask("q", Answer)
    with RequestCache(tmp_path / "cache.sqlite") as cache:
        model = cached_model(server, cache)
        first, second = (run(model, request)[0] for _ in range(2))
    assert isinstance(first, ChatResult) and isinstance(second, ChatResult)
    assert len(server.received) == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.parsed == first.parsed == Answer(value=1, label="one")
    assert (second.text, second.usage, second.model) == (first.text, Usage(9, 4), "test-model")
    assert (model.usage.requests, model.usage.cache_hits, model.usage.prompt_tokens) == (2, 1, 9)


def test_a_new_run_resumes_from_the_file(server: OpenAIServer, tmp_path: Path) -> None:
    requests = [ask(f"q{i}") for i in range(5)]
    with RequestCache(tmp_path / "cache.sqlite") as cache:
        run(cached_model(server, cache), *requests[:3])  # the "interrupted" run
    with RequestCache(tmp_path / "cache.sqlite") as cache:
        outcomes = run(cached_model(server, cache), *requests)
    assert [o.cached for o in outcomes if isinstance(o, ChatResult)] == [True] * 3 + [False] * 2
    assert [r.last_text() for r in server.received] == ["q0", "q1", "q2", "q3", "q4"]


def test_failures_are_not_cached(server: OpenAIServer, tmp_path: Path) -> None:
    server.script(Error(400, "no"))
    with RequestCache(tmp_path / "cache.sqlite") as cache:
        model = cached_model(server, cache)
        failure, result = (run(model, ask("q"))[0] for _ in range(2))
        assert len(cache) == 1
    assert isinstance(failure, RequestFailed) and isinstance(result, ChatResult)
    assert not result.cached and len(server.received) == 2
    assert (model.usage.failures, model.usage.requests) == (1, 2)


def image_request(image: ImagePart) -> ChatRequest:
    return ChatRequest((Message("user", (image, TextPart("q"))),))


def test_the_key_follows_image_content_not_its_path(server: OpenAIServer, tmp_path: Path) -> None:
    image = page_image(tmp_path / "a.png", 1)
    one = image_request(image)
    other = image_request(page_image(tmp_path / "b.png", 1))  # same page, other pixels
    shutil.copy(image.path, tmp_path / "moved.png")
    moved = image_request(replace(image, path=tmp_path / "moved.png"))
    assert one.cache_key("m") != other.cache_key("m")
    assert one.cache_key("m") == moved.cache_key("m")
    with RequestCache(tmp_path / "cache.sqlite") as cache:
        model = cached_model(server, cache)
        cached = [run(model, r)[0].cached for r in (one, other, moved)]  # type: ignore[union-attr]
    assert cached == [False, False, True]
    assert len(server.received) == 2


class StricterAnswer(Answer):
    @field_validator("value")
    @classmethod
    def positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value


def test_a_stored_answer_that_no_longer_validates_is_asked_again(tmp_path: Path) -> None:
    result = ChatResult('{"value": 0, "label": "x"}', Answer(value=0, label="x"), Usage(), "m", 0.1)
    with RequestCache(tmp_path / "cache.sqlite") as cache:
        cache.put("k", result)
        assert cache.get("k", Answer) is not None
        assert cache.get("k", StricterAnswer) is None


def write_through_server(path: str, url: str, texts: list[str]) -> None:
    async def go() -> None:
        with RequestCache(Path(path)) as cache:
            model = CachedModel(OpenAICompatModel(make_spec(url)), cache)
            await asyncio.gather(*(model.complete(ask(t)) for t in texts))
            await model.aclose()

    asyncio.run(go())


def test_two_processes_writing_at_once_lose_nothing(server: OpenAIServer, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"  # both processes create it at the same moment
    texts = [f"q{i}" for i in range(300)]
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=write_through_server, args=(str(path), server.url, part))
        for part in (texts[:200], texts[100:])  # 100 keys in common
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    asked = len(server.received)
    assert 300 <= asked <= 400  # a key both processes missed at once is asked twice
    with RequestCache(path) as cache:
        assert len(cache) == 300
        outcomes = run(cached_model(server, cache), *map(ask, texts))
    assert len(server.received) == asked  # everything came from the file
    assert [o.text for o in outcomes if isinstance(o, ChatResult) and o.cached] == [
        f"echo {t}" for t in texts
    ]


def write_until_killed(path: str, committed: multiprocessing.Queue) -> None:
    with RequestCache(Path(path)) as cache:
        for i in count():
            cache.put(f"k{i}", ChatResult(f"answer {i}", None, Usage(1, 1), "m", 0.01))
            committed.put(f"k{i}")  # only after put returned


def test_a_killed_writer_loses_nothing_it_reported(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    spawn = multiprocessing.get_context("spawn")
    committed: multiprocessing.Queue = spawn.Queue()
    writer = spawn.Process(target=write_until_killed, args=(str(path), committed))
    writer.start()
    reported = [committed.get(timeout=30) for _ in range(500)]
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(timeout=10)
    assert writer.exitcode == -signal.SIGKILL
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with RequestCache(path) as cache:
        assert len(cache) >= 500
        for key in reported:
            stored = cache.get(key, None)
            assert stored is not None and stored.text == f"answer {key[1:]}"
