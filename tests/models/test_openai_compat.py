"""OpenAICompatModel against a real OpenAI-protocol server on 127.0.0.1, with real faults."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_server import Drop, Error, Hang, OpenAIServer, Raw, Reply, free_port
from PIL import Image
from pydantic import BaseModel, SecretStr

from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.models import openai_compat
from docthink.models.base import ChatRequest, ChatResult, Message, RequestFailed
from docthink.models.cache import CachedModel, RequestCache
from docthink.models.openai_compat import OpenAICompatModel
from docthink.models.specs import EndpointSpec, OpenAIModelSpec

Outcome = ChatResult | RequestFailed


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[OpenAIServer, OpenAIServer]]:
    with OpenAIServer() as first, OpenAIServer() as second:
        yield first, second


@pytest.fixture
def server(servers: tuple[OpenAIServer, OpenAIServer]) -> OpenAIServer:
    for s in servers:
        s.reset()
    return servers[0]


def make_spec(*urls: str, max_concurrency: int = 64, **options: object) -> OpenAIModelSpec:
    fast = {"timeout_s": 0.5, "max_retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}
    endpoints = tuple(
        EndpointSpec(base_url=u, api_key_env=None, max_concurrency=max_concurrency) for u in urls
    )
    return OpenAIModelSpec(model="test-model", endpoints=endpoints, **(fast | options))


def ask(text: str, response_model: type[BaseModel] | None = None) -> ChatRequest:
    return ChatRequest((Message.text("user", text),), response_model=response_model)


def run(model: OpenAICompatModel | CachedModel, *requests: ChatRequest) -> list[Outcome]:
    """Each request's result or RequestFailed; any other exception propagates (and fails)."""

    async def go() -> list[Outcome]:
        outcomes = await asyncio.gather(
            *(model.complete(r) for r in requests), return_exceptions=True
        )
        await model.aclose()
        return outcomes

    outcomes = asyncio.run(go())
    for outcome in outcomes:
        if not isinstance(outcome, ChatResult | RequestFailed):
            raise outcome
    return outcomes


def one(model: OpenAICompatModel | CachedModel, request: ChatRequest) -> Outcome:
    return run(model, request)[0]


class Answer(BaseModel):
    value: int
    label: str


def test_success_sends_the_request_and_records_usage(server: OpenAIServer) -> None:
    server.script(Reply("hello", prompt_tokens=11, completion_tokens=5))
    model = OpenAICompatModel(make_spec(server.url))
    request = ChatRequest(
        (Message.text("system", "be brief"), Message.text("user", "hi")), max_tokens=64, seed=7
    )
    result = one(model, request)
    assert isinstance(result, ChatResult)
    assert (result.text, result.parsed, result.attempts, result.cached) == ("hello", None, 1, False)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 5)
    [received] = server.received
    assert received.body == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "temperature": 0.0,
        "max_tokens": 64,
        "seed": 7,
    }
    assert received.headers["Content-Type"] == "application/json"
    assert "authorization" not in {h.lower() for h in received.headers}  # no key configured
    assert model.usage.as_dict() | {"latency_s": 0} == {
        "requests": 1, "cache_hits": 0, "failures": 0, "retries": 0, "sent": 1, "prompt_tokens": 11,
        "completion_tokens": 5, "latency_s": 0, "failure_reasons": {},
    }  # fmt: skip


def test_500_then_success(server: OpenAIServer) -> None:
    server.script(Error(500, "overloaded"), Reply("fine"))
    model = OpenAICompatModel(make_spec(server.url))
    result = one(model, ask("q"))
    assert isinstance(result, ChatResult)
    assert (result.text, result.attempts) == ("fine", 2)
    assert len(server.received) == 2
    assert model.usage.retries == 1


def test_429_retry_after_is_honoured(server: OpenAIServer) -> None:
    server.script(Error(429, "slow down", retry_after="1"), Reply("after the wait"))
    model = OpenAICompatModel(make_spec(server.url, max_backoff_s=5.0))
    result = one(model, ask("q"))
    assert isinstance(result, ChatResult) and result.text == "after the wait"
    first, second = server.received
    assert 1.0 <= second.at - first.at < 1.5  # the backoff alone would be ~0.01 s


def test_retry_after_is_capped_by_max_backoff(server: OpenAIServer) -> None:
    server.script(Error(503, "maintenance", retry_after="60"), Reply())
    model = OpenAICompatModel(make_spec(server.url, max_backoff_s=0.2))
    assert isinstance(one(model, ask("q")), ChatResult)
    first, second = server.received
    assert 0.2 <= second.at - first.at < 1.0


@pytest.mark.parametrize("hang", [Hang(), Hang(after_headers=True)], ids=["silent", "mid-body"])
def test_hung_response_times_out_then_succeeds(server: OpenAIServer, hang: Hang) -> None:
    server.script(hang, Reply("second try"))
    model = OpenAICompatModel(make_spec(server.url, timeout_s=0.5))
    result = one(model, ask("q"))
    assert isinstance(result, ChatResult)
    assert (result.text, result.attempts) == ("second try", 2)


def test_always_hanging_fails_with_timeout(server: OpenAIServer) -> None:
    server.responder = lambda body: Hang()
    model = OpenAICompatModel(make_spec(server.url, timeout_s=0.2, max_retries=1))
    failure = one(model, ask("q"))
    assert isinstance(failure, RequestFailed)
    assert (failure.reason, failure.attempts) == ("timeout", 2)
    assert len(server.received) == 2
    assert model.usage.failure_reasons == {"timeout": 1}


@pytest.mark.parametrize("drop", [Drop(mid_body=True), Drop(mid_body=False)], ids=["mid", "before"])
def test_dropped_connection_then_success(server: OpenAIServer, drop: Drop) -> None:
    server.script(drop, Reply("reconnected"))
    model = OpenAICompatModel(make_spec(server.url))
    result = one(model, ask("q"))
    assert isinstance(result, ChatResult)
    assert (result.text, result.attempts) == ("reconnected", 2)


def test_always_dropping_fails_with_connection_reason(server: OpenAIServer) -> None:
    server.responder = lambda body: Drop()
    failure = one(OpenAICompatModel(make_spec(server.url, max_retries=1)), ask("q"))
    assert isinstance(failure, RequestFailed)
    assert failure.reason.startswith("connection: ClientPayloadError")
    assert failure.attempts == 2


def test_structured_output_is_requested_and_validated(server: OpenAIServer) -> None:
    server.script(Reply('{"value": 3, "label": "three"}'))
    result = one(OpenAICompatModel(make_spec(server.url)), ask("q", Answer))
    assert isinstance(result, ChatResult)
    assert result.parsed == Answer(value=3, label="three")
    assert server.received[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": Answer.model_json_schema(), "strict": True},
    }


def test_invalid_output_is_re_asked_with_the_error(server: OpenAIServer) -> None:
    server.script(
        Reply('{"value": 3, "lab'),  # malformed JSON
        Reply('{"value": "three", "label": "x"}'),  # violates the schema
        Reply('{"value": 3, "label": "x"}'),
    )
    model = OpenAICompatModel(make_spec(server.url, max_validation_retries=2))
    result = one(model, ask("q", Answer))
    assert isinstance(result, ChatResult)
    assert (result.parsed, result.attempts) == (Answer(value=3, label="x"), 3)
    assert result.usage.prompt_tokens == 3 * 7  # tokens of every ask count
    first, second, third = (r.body["messages"] for r in server.received)
    assert first == [{"role": "user", "content": "q"}]
    assert second[:2] == first + [{"role": "assistant", "content": '{"value": 3, "lab'}]
    assert second[2]["role"] == "user" and "Invalid JSON" in second[2]["content"]
    assert third[3] == {"role": "assistant", "content": '{"value": "three", "label": "x"}'}
    assert "value: Input should be a valid integer" in third[4]["content"]


def test_invalid_output_fails_after_the_bound(server: OpenAIServer) -> None:
    server.responder = lambda body: Reply('{"value": "never an int", "label": "x"}')
    model = OpenAICompatModel(make_spec(server.url, max_validation_retries=1))
    failure = one(model, ask("q", Answer))
    assert isinstance(failure, RequestFailed)
    assert failure.reason == (
        "invalid output: value: Input should be a valid integer, "
        "unable to parse string as an integer"
    )
    assert failure.attempts == 2 and len(server.received) == 2
    # both replies were generated and count, as the server counts them
    assert (failure.usage.prompt_tokens, failure.usage.completion_tokens) == (2 * 7, 2 * 3)
    usage = model.usage.as_dict()
    assert (usage["sent"], usage["prompt_tokens"], usage["completion_tokens"]) == (2, 14, 6)


def test_a_re_ask_that_fails_keeps_the_cost_of_the_replies_before_it(server: OpenAIServer) -> None:
    server.script(Reply('{"value": 3, "lab'), Error(400, "too long now"))
    model = OpenAICompatModel(make_spec(server.url, max_validation_retries=2))
    failure = one(model, ask("q", Answer))
    assert isinstance(failure, RequestFailed)
    assert (failure.reason, failure.attempts) == ("http 400: too long now", 2)
    assert (failure.usage.prompt_tokens, failure.usage.completion_tokens) == (7, 3)
    assert model.usage.sent == len(server.received) == 2


def test_400_fails_at_once_with_the_server_message(server: OpenAIServer) -> None:
    server.script(Error(400, "max_tokens is too large"))
    model = OpenAICompatModel(make_spec(server.url))
    failure = one(model, ask("q"))
    assert isinstance(failure, RequestFailed)
    assert (failure.reason, failure.attempts) == ("http 400: max_tokens is too large", 1)
    assert len(server.received) == 1
    assert model.usage.failure_reasons == {"http 400": 1}


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"<html>gateway</html>", "bad response: not JSON"),
        (b'{"object": "list", "data": []}', "bad response: no 'choices'"),
    ],
)
def test_a_reply_that_is_not_a_completion_fails_clearly(
    server: OpenAIServer, body: bytes, reason: str
) -> None:
    server.script(Raw(body))
    failure = one(OpenAICompatModel(make_spec(server.url)), ask("q"))
    assert isinstance(failure, RequestFailed) and failure.reason.startswith(reason)


def test_a_message_without_content_fails_with_the_finish_reason(server: OpenAIServer) -> None:
    server.script(Reply(None, finish_reason="length"))
    failure = one(OpenAICompatModel(make_spec(server.url)), ask("q"))
    assert isinstance(failure, RequestFailed)
    assert failure.reason == "bad response: no message content (finish_reason=length)"


def test_a_dead_endpoint_is_routed_around(server: OpenAIServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAICompatModel(make_spec(dead, server.url, max_backoff_s=5.0))

    async def two_batches() -> tuple[list[ChatResult], int]:
        first = await asyncio.gather(*(model.complete(ask(f"a{i}")) for i in range(10)))
        retries = model.usage.retries
        second = await asyncio.gather(*(model.complete(ask(f"b{i}")) for i in range(10)))
        await model.aclose()
        return first + second, model.usage.retries - retries

    results, retries_in_second_batch = asyncio.run(two_batches())
    assert [r.text for r in results] == ["ok"] * 20
    assert len(server.received) == 20
    # Once refused, the dead endpoint is skipped (for max_backoff_s): no more retries.
    assert model.usage.retries >= 1 and retries_in_second_batch == 0


def test_idle_connections_are_dropped_before_the_server_drops_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request written to a connection the server is closing never reaches it: after each pause
    as long as the server's keep-alive, a fresh connection, and every attempt is a request seen.
    (aiohttp's own 15 s against a 0.2 s server lost about one request in eight here.)"""
    monkeypatch.setattr(openai_compat, "KEEPALIVE_S", 0.15)
    with OpenAIServer(keepalive_s=0.2) as server:
        model = OpenAICompatModel(make_spec(server.url))

        async def paced() -> None:
            for _ in range(30):
                await asyncio.sleep(0.2)
                await model.complete(ask("q"))
            await model.aclose()

        asyncio.run(paced())
    assert (model.usage.sent, model.usage.retries, len(server.received)) == (30, 0, 30)


def test_concurrency_per_endpoint_is_bounded(server: OpenAIServer) -> None:
    server.responder = lambda body: Reply(delay_s=0.05)
    model = OpenAICompatModel(make_spec(server.url, max_concurrency=3))
    outcomes = run(model, *(ask(f"q{i}") for i in range(20)))
    assert all(isinstance(o, ChatResult) for o in outcomes)
    assert server.max_in_flight == 3


def test_load_is_balanced_over_endpoints(servers: tuple[OpenAIServer, OpenAIServer]) -> None:
    for s in servers:
        s.reset()
        s.responder = lambda body: Reply(delay_s=0.05)
    model = OpenAICompatModel(make_spec(*(s.url for s in servers), max_concurrency=4))
    outcomes = run(model, *(ask(f"q{i}") for i in range(16)))
    assert all(isinstance(o, ChatResult) for o in outcomes)
    assert [len(s.received) for s in servers] == [8, 8]
    assert [s.max_in_flight for s in servers] == [4, 4]


def test_each_request_of_a_batch_gets_its_own_outcome(server: OpenAIServer) -> None:
    def respond(body: dict) -> Reply | Error | Drop:
        text = body["messages"][-1]["content"]
        if text.startswith("bad"):
            return Error(400, f"rejected {text}")
        if text.startswith("down"):
            return Error(500, "down")
        if text.startswith("drop"):
            return Drop()
        return Reply(f"echo {text}", delay_s=0.01)

    server.responder = respond
    texts = [f"{kind}{i}" for i in range(15) for kind in ("ok", "bad", "down", "drop")]
    outcomes = run(OpenAICompatModel(make_spec(server.url, max_retries=1)), *map(ask, texts))
    for text, outcome in zip(texts, outcomes, strict=True):
        if text.startswith("ok"):
            assert isinstance(outcome, ChatResult) and outcome.text == f"echo {text}"
        elif text.startswith("bad"):
            assert isinstance(outcome, RequestFailed)
            assert (outcome.reason, outcome.attempts) == (f"http 400: rejected {text}", 1)
        elif text.startswith("down"):
            assert isinstance(outcome, RequestFailed)
            assert (outcome.reason, outcome.attempts) == ("http 500: down", 2)
        else:
            assert isinstance(outcome, RequestFailed) and outcome.reason.startswith("connection:")


def page_image(path: Path, page: int) -> ImagePart:
    """A PNG of fresh random noise (different bytes on every call) as an image part."""
    Image.effect_noise((48, 48), 64).convert("RGB").save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ImagePart(path, digest, "image/png", PageRef("doc", page))


def test_image_travels_as_a_data_url_of_the_file_bytes(
    server: OpenAIServer, tmp_path: Path
) -> None:
    image = page_image(tmp_path / "page.png", 1)
    request = ChatRequest((Message("user", (image, TextPart("what is shown?"))),))
    model = OpenAICompatModel(make_spec(server.url))
    outcomes = run(model, request, request, request)
    assert all(isinstance(o, ChatResult) for o in outcomes)
    expected = "data:image/png;base64," + base64.b64encode(image.path.read_bytes()).decode()
    for received in server.received:
        assert received.body["messages"][0]["content"] == [
            {"type": "image_url", "image_url": {"url": expected}},
            {"type": "text", "text": "what is shown?"},
        ]
    assert model.images.encoded == 1  # encoded once, reused by the other requests


def test_an_image_that_does_not_match_its_hash_fails_without_a_request(
    server: OpenAIServer, tmp_path: Path
) -> None:
    image = page_image(tmp_path / "page.png", 1)
    page_image(tmp_path / "page.png", 2)  # the file changed after it was hashed
    request = ChatRequest((Message("user", (image, TextPart("q"))),))
    failure = one(OpenAICompatModel(make_spec(server.url)), request)
    assert isinstance(failure, RequestFailed)
    assert failure.reason.startswith("image: ") and "content hash" in failure.reason
    assert (failure.attempts, len(server.received)) == (0, 0)


KEY = "sk-docthink-CANARY-4f9e1c"


def test_the_api_key_is_sent_but_never_leaks(
    server: OpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DOCTHINK_TEST_KEY", KEY)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    inline = EndpointSpec(base_url=dead, api_key_env=None, api_key=SecretStr(KEY))
    from_env = EndpointSpec(base_url=server.url, api_key_env="DOCTHINK_TEST_KEY")
    spec = OpenAIModelSpec(
        model="m", endpoints=(inline, from_env), timeout_s=0.5, max_retries=2,
        backoff_s=0.01, max_backoff_s=5.0,
    )  # fmt: skip

    def respond(body: dict) -> Reply | Error | Hang:
        text = body["messages"][-1]["content"]
        if text == "echo":  # a server that repeats the key in its error message
            return Error(401, f"invalid key {KEY}")
        return {"hang": Hang(), "fail": Error(500, f"bad {KEY}")}.get(text, Reply("fine"))

    server.responder = respond
    with RequestCache(tmp_path / "cache.sqlite") as cache:
        model = CachedModel(OpenAICompatModel(spec), cache)
        outcomes = run(model, *map(ask, ["ok", "echo", "hang", "fail", "ok2"]))
        db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("cache.sqlite*"))

    assert {h["Authorization"] for h in (r.headers for r in server.received)} == {f"Bearer {KEY}"}
    failures = [o for o in outcomes if isinstance(o, RequestFailed)]
    assert [f.reason for f in failures] == [
        "http 401: invalid key [api key]", "timeout", "http 500: bad [api key]"
    ]
    assert [o.text for o in outcomes if isinstance(o, ChatResult)] == ["fine", "fine"]
    texts = [str(f) for f in failures] + [repr(f) for f in failures] + [f.reason for f in failures]
    texts += [caplog.text, repr(model), repr(spec), str(spec), spec.model_dump_json()]
    assert "refused" in caplog.text or "Cannot connect" in caplog.text  # the dead one was tried
    for text in texts:
        assert KEY not in text
    assert KEY.encode() not in db_bytes


def test_an_endpoint_that_dies_is_taken_out_and_comes_back_when_healthy(
    server: OpenAIServer,
) -> None:
    """Of two endpoints, one is killed with requests in flight: they finish on the other, no new
    request goes to the dead one, and once a server answers its health check on that port again,
    it is back in the rotation."""
    # replies slower than any kill takes, however loaded the machine: no stranded request ends there
    dying = OpenAIServer(lambda body: Reply(delay_s=3.0)).start()
    model = OpenAICompatModel(make_spec(server.url, dying.url, timeout_s=5.0, max_retries=3,
                                        health_interval_s=0.05))

    async def scenario() -> tuple[list[ChatResult], set[str], int, OpenAIServer]:
        first = [asyncio.create_task(model.complete(ask(f"a{i}"))) for i in range(40)]
        while dying.in_flight < 5:
            await asyncio.sleep(0.005)
        stranded = {r.last_text() for r in dying.received}
        await asyncio.to_thread(dying.kill)
        results = list(await asyncio.gather(*first))
        retries = model.usage.retries
        results += await asyncio.gather(*(model.complete(ask(f"b{i}")) for i in range(20)))
        retries_while_down = model.usage.retries - retries
        revived = await asyncio.to_thread(OpenAIServer(port=dying.port).start)
        while revived.health_checks < 2:
            await asyncio.sleep(0.01)
        results += await asyncio.gather(*(model.complete(ask(f"c{i}")) for i in range(20)))
        await model.aclose()
        return results, stranded, retries_while_down, revived

    results, stranded, retries_while_down, revived = asyncio.run(scenario())
    try:
        assert [r.text for r in results] == ["ok"] * 80
        assert stranded and stranded <= {r.last_text() for r in server.received}
        assert retries_while_down == 0  # taken out: nothing was sent to it, so nothing retried
        back = {r.last_text() for r in revived.received}
        assert back and all(text.startswith("c") for text in back)
    finally:
        revived.stop()
