"""OpenAI-compatible chat endpoints (vLLM, SGLang, OpenAI) over aiohttp.

Not through `AsyncOpenAI`: on two cores it tops out near 400-800 requests/s with page images,
which would make the client the limit of a vLLM fleet; this transport sends several thousand
(benchmarks/bench_client.py measures both). Per request it splices pre-encoded bytes into the body
(images are encoded once per content hash, see `images.py`) and picks three fields out of the
response.

Behaviour: client-side load balancing over the spec's endpoints (least in flight relative to
`max_concurrency`, round-robin among ties), at most `max_concurrency` requests in flight per
endpoint, a timeout per attempt,
retries with exponential backoff and jitter on transport errors, 429 and 5xx (Retry-After honoured
on 429/503, capped by `max_backoff_s`; a retry prefers another endpoint), no retry on other 4xx.
Structured output is requested as a strict json_schema and validated with pydantic; output that
does not validate is sent back with the error and asked again, at most `max_validation_retries`
times. `complete` returns a `ChatResult` or raises `RequestFailed`; nothing else.

A fleet (several endpoints) is watched: every `health_interval_s` each endpoint is asked for its
model list (`GET base_url/models`, as vLLM, SGLang and OpenAI serve it). An endpoint that fails a
check, refuses a connection or drops one is taken out: it gets no new request (its in-flight ones
fail over to the others through the retries above) until it passes a check again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import aiohttp
import orjson
from pydantic import BaseModel, ValidationError

from docthink.core.parts import TextPart
from docthink.models.base import ChatRequest, ChatResult, Message, RequestFailed, Usage, UsageMeter
from docthink.models.images import ImageParts, ImageUnreadable
from docthink.models.specs import EndpointSpec, OpenAIModelSpec

log = logging.getLogger(__name__)

# Jitter only spreads retries in time; it never changes a result, so it needs no seed.
_jitter = random.Random()
# Idle connections are dropped before servers drop them: uvicorn (vLLM, SGLang) closes one after
# 5 s, aiohttp keeps one 15 s, and a request written to a connection the server is closing that
# moment fails without reaching it (seen against vLLM when a stage's requests pause ~5 s: one
# retry in docthink's count that the server's /metrics never saw).
KEEPALIVE_S = 4.0


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Fatal(Exception):
    """The request failed in a way that retrying cannot fix (4xx, a reply that is not OpenAI's)."""


@dataclass(eq=False)
class _Endpoint:
    spec: EndpointSpec
    url: str
    headers: dict[str, str] = field(repr=False)  # holds the API key
    timeout: aiohttp.ClientTimeout
    slots: asyncio.Semaphore
    in_flight: int = 0  # waiting for a slot or sending
    healthy: bool = True  # False: out of the rotation until a health check passes
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def session(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.spec.max_concurrency,
                                           keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self.headers, timeout=self.timeout
            )
        return self._session

    @property
    def health_url(self) -> str:
        return self.spec.base_url.rstrip("/") + "/models"

    def load(self) -> float:
        return self.in_flight / self.spec.max_concurrency

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class OpenAICompatModel:
    """A `ChatModel` served by one or more OpenAI-compatible endpoints. Use it on one event loop."""

    def __init__(self, spec: OpenAIModelSpec, images: ImageParts | None = None) -> None:
        self.spec = spec
        self.name = spec.model
        self.usage = UsageMeter()
        self.images = images or ImageParts()
        timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
        self._endpoints = [_endpoint(e, timeout) for e in spec.endpoints]
        self._keys = [k for k in map(api_key, spec.endpoints) if k]
        self._next = 0  # round-robin position among equally loaded endpoints
        self._watch: asyncio.Task[None] | None = None  # health checks of a fleet
        self._probes: aiohttp.ClientSession | None = None  # apart: a busy endpoint's pool is full

    def __repr__(self) -> str:
        urls = ", ".join(e.url for e in self._endpoints)
        return f"OpenAICompatModel(model={self.name!r}, endpoints=[{urls}])"

    async def complete(self, request: ChatRequest) -> ChatResult:
        if len(self._endpoints) > 1 and (self._watch is None or self._watch.done()):
            self._watch = asyncio.get_running_loop().create_task(self._watch_health())
        try:
            result = await self._complete(request, time.perf_counter())
        except RequestFailed as failure:
            self.usage.record_failure(failure)
            raise
        self.usage.record(result)
        return result

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._probes is not None:
            await self._probes.close()
            self._probes = None
        for endpoint in self._endpoints:
            await endpoint.close()

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.spec.health_interval_s)
            checks = await asyncio.gather(*(self._probe(e) for e in self._endpoints))
            for endpoint, (healthy, why) in zip(self._endpoints, checks, strict=True):
                if healthy and not endpoint.healthy:
                    log.warning("%s: %s passed its health check: back in the rotation",
                                self.name, endpoint.spec.base_url)
                    endpoint.healthy = True
                elif not healthy:
                    self._take_out(endpoint, f"health check: {why}")

    async def _probe(self, endpoint: _Endpoint) -> tuple[bool, str]:
        if self._probes is None:
            self._probes = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.spec.health_timeout_s))
        try:
            async with self._probes.get(endpoint.health_url, headers=endpoint.headers) as response:
                await response.read()
                return response.status == 200, f"http {response.status}"
        except TimeoutError:
            return False, "timeout"
        except (aiohttp.ClientError, OSError) as error:
            return False, self._redact(f"{type(error).__name__}: {error}")

    def _take_out(self, endpoint: _Endpoint, why: str) -> None:
        if endpoint.healthy and len(self._endpoints) > 1:
            log.warning("%s: %s taken out of the rotation (%s)", self.name,
                        endpoint.spec.base_url, why)
            endpoint.healthy = False

    async def _complete(self, request: ChatRequest, started: float) -> ChatResult:
        messages = self._messages(request)
        params = self._params(request)
        schema = request.response_model
        attempts, prompt_tokens, completion_tokens, problem = 0, 0, 0, ""
        for _ in range(self.spec.max_validation_retries + 1):
            try:
                text, usage, attempts = await self._send(_body(messages, params), attempts)
            except RequestFailed as failed:  # after a re-ask: the replies before it still cost
                raise RequestFailed(failed.reason, failed.attempts,
                                    Usage(prompt_tokens, completion_tokens)) from None
            prompt_tokens += usage.prompt_tokens
            completion_tokens += usage.completion_tokens
            try:
                parsed = None if schema is None else schema.model_validate_json(text)
            except ValidationError as error:
                problem = _summary(error)
                messages = [*messages, *_feedback(text, problem)]
                continue
            latency = time.perf_counter() - started
            total = Usage(prompt_tokens, completion_tokens)
            return ChatResult(text, parsed, total, self.name, latency, attempts)
        raise RequestFailed(f"invalid output: {problem}", attempts,
                            Usage(prompt_tokens, completion_tokens))

    def _messages(self, request: ChatRequest) -> list[bytes]:
        try:
            return [self._message(m) for m in request.messages]
        except ImageUnreadable as error:
            raise RequestFailed(f"image: {error}", 0) from None

    def _message(self, message: Message) -> bytes:
        content = message.content
        if len(content) == 1 and isinstance(content[0], TextPart):
            return orjson.dumps({"role": message.role, "content": content[0].text})
        parts = b",".join(
            orjson.dumps({"type": "text", "text": p.text})
            if isinstance(p, TextPart)
            else self.images.fragment(p)
            for p in content
        )
        return b'{"role":"%s","content":[%s]}' % (message.role.encode(), parts)

    def _params(self, request: ChatRequest) -> bytes:
        params: dict[str, object] = {
            "model": self.spec.model,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            params["seed"] = request.seed
        if request.response_model is not None:
            params["response_format"] = _response_format(request.response_model)
        return orjson.dumps(params)

    async def _send(self, body: bytes, attempts: int) -> tuple[str, Usage, int]:
        """Posts until a reply arrives; returns it with the attempts made so far in the request."""
        failed: _Endpoint | None = None
        retries = 0
        while True:
            attempts += 1
            endpoint = self._choose(avoid=failed)
            try:
                text, usage = await self._attempt(endpoint, body)
                return text, usage, attempts
            except _Fatal as error:
                raise RequestFailed(self._redact(str(error)), attempts) from None
            except _Retryable as error:
                if retries == self.spec.max_retries:
                    raise RequestFailed(self._redact(error.reason), attempts) from None
                delay = self._delay(retries, error.retry_after)
                log.info(
                    "%s: attempt %d on %s failed (%s); retrying in %.2fs",
                    self.name, attempts, endpoint.spec.base_url, self._redact(error.reason), delay,
                )  # fmt: skip
                failed = endpoint
                retries += 1
                await asyncio.sleep(delay)

    def _choose(self, avoid: _Endpoint | None) -> _Endpoint:
        if len(self._endpoints) == 1:
            return self._endpoints[0]
        up = [e for e in self._endpoints if e.healthy] or self._endpoints
        candidates = [e for e in up if e is not avoid] or up
        self._next += 1
        start = self._next % len(candidates)
        return min(candidates[start:] + candidates[:start], key=_Endpoint.load)

    async def _attempt(self, endpoint: _Endpoint, body: bytes) -> tuple[str, Usage]:
        endpoint.in_flight += 1
        try:
            async with endpoint.slots, endpoint.session().post(endpoint.url,
                                                               data=body) as response:
                raw = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError:
            raise _Retryable("timeout") from None
        except aiohttp.ClientConnectorError as error:
            self._take_out(endpoint, self._redact(f"connection: {error}"))
            raise _Retryable(f"connection: {error}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
            self._take_out(endpoint, f"connection: {type(error).__name__}")
            raise _Retryable(f"connection: {type(error).__name__}: {error}") from None
        except (aiohttp.ClientError, OSError) as error:
            raise _Retryable(f"connection: {type(error).__name__}: {error}") from None
        finally:
            endpoint.in_flight -= 1
        if status == 200:
            return _reply(raw)
        reason = f"http {status}: {_server_message(raw)}"
        if status == 429 or status >= 500:
            honoured = _retry_after(retry_after) if status in (429, 503) else None
            raise _Retryable(reason, honoured)
        raise _Fatal(reason)

    def _delay(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.spec.max_backoff_s)
        backoff = min(self.spec.backoff_s * 2**retry, self.spec.max_backoff_s)
        return backoff * (0.5 + 0.5 * _jitter.random())

    def _redact(self, reason: str) -> str:
        # Server messages are foreign text; one that echoes the key must not carry it further.
        for key in self._keys:
            reason = reason.replace(key, "[api key]")
        return reason


def api_key(spec: EndpointSpec) -> str | None:
    if spec.api_key is not None:
        return spec.api_key.get_secret_value()
    if spec.api_key_env is not None:
        return os.environ.get(spec.api_key_env)  # unset: the endpoint needs no key (vLLM default)
    return None


def _endpoint(spec: EndpointSpec, timeout: aiohttp.ClientTimeout) -> _Endpoint:
    headers = {"Content-Type": "application/json"}
    key = api_key(spec)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    url = spec.base_url.rstrip("/") + "/chat/completions"
    return _Endpoint(spec, url, headers, timeout, asyncio.Semaphore(spec.max_concurrency))


def _body(messages: list[bytes], params: bytes) -> bytes:
    # params is a JSON object; the messages go in front of its first key.
    return b'{"messages":[' + b",".join(messages) + b"]," + params[1:]


@functools.lru_cache(maxsize=256)
def _response_format(schema: type[BaseModel]) -> dict[str, object]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": schema.model_json_schema()["title"],
            "schema": schema.model_json_schema(),
            "strict": True,
        },
    }


def _feedback(text: str, problem: str) -> list[bytes]:
    """The invalid reply and a request to fix it, appended to the conversation for the re-ask."""
    ask = (
        f"Your reply is not valid: {problem}. "
        "Reply again with only the JSON object, following the schema exactly."
    )
    return [
        orjson.dumps({"role": "assistant", "content": text}),
        orjson.dumps({"role": "user", "content": ask}),
    ]


def _reply(raw: bytes) -> tuple[str, Usage]:
    """Text and usage from a chat.completion body; `_Fatal` if the body is not one."""
    try:
        data = orjson.loads(raw)
        choice = data["choices"][0]
        text = choice["message"]["content"]
        usage = Usage(data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"])
    except orjson.JSONDecodeError as error:
        raise _Fatal(f"bad response: not JSON ({error}): {_clip(raw)}") from None
    except (KeyError, IndexError, TypeError) as error:
        raise _Fatal(f"bad response: no {error} in {_clip(raw)}") from None
    if not isinstance(text, str):
        raise _Fatal(f"bad response: no message content (finish_reason={choice['finish_reason']})")
    return text, usage


def _server_message(raw: bytes) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), else the body."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _clip(raw)
    error = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"][:500]
    return _clip(raw)


def _clip(raw: bytes) -> str:
    return raw[:500].decode("utf-8", errors="replace")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent."""
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        log.info("ignoring unreadable Retry-After header %r", value)
        return None


def _summary(error: ValidationError) -> str:
    """The first validation errors, one line, without echoing the (possibly long) input."""
    problems = [
        f"{'.'.join(map(str, e['loc'])) or 'output'}: {e['msg']}" for e in error.errors()[:3]
    ]
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more else "")
