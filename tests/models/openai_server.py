"""A real OpenAI chat-completions server on 127.0.0.1 for tests, with scripted replies and faults.

Each request takes the next action from the script (`server.script(...)`); when the script is empty
the `responder` decides from the request body (default: `Reply()`). `GET /v1/models` lists
`server.models` (model cards, as vLLM writes them), or is a 404 while that is None. Every request is recorded
(`server.received`) with its headers and parsed body, and the server tracks the most requests it
had in flight at once, so a test can assert exact requests, counts and concurrency.

    with OpenAIServer() as server:
        server.script(Error(500), Reply("hello"))
        ...  # point a client at server.url
        assert len(server.received) == 2
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """200 with this assistant message (content None: a message without content)."""

    content: str | None = "ok"
    prompt_tokens: int = 7
    completion_tokens: int = 3
    delay_s: float = 0.0
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Error:
    """An HTTP error in OpenAI's error format, optionally with a Retry-After header."""

    status: int
    message: str = "scripted error"
    retry_after: str | None = None


@dataclass(frozen=True)
class Hang:
    """Never answers (until the server stops); after_headers: sends 200 headers, then stalls."""

    after_headers: bool = False


@dataclass(frozen=True)
class Drop:
    """Closes the connection: before sending anything, or in the middle of the response body."""

    mid_body: bool = True


@dataclass(frozen=True)
class Raw:
    """200 with exactly this body."""

    body: bytes


Action = Reply | Error | Hang | Drop | Raw


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request arrived
    headers: dict[str, str]
    body: dict[str, Any]

    def last_text(self) -> str:
        """Text of the last message (a string or the last text part)."""
        content = self.body["messages"][-1]["content"]
        if isinstance(content, str):
            return content
        return [p["text"] for p in content if p["type"] == "text"][-1]


def completion(model: str, reply: Reply) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }
    )


def free_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenAIServer:
    """`port`: listen there (a server started again where a killed one was); `keepalive_s`: how
    long an idle connection is kept (aiohttp's default 75 s)."""

    def __init__(self, responder: Callable[[dict[str, Any]], Action] | None = None,
                 port: int = 0, *, keepalive_s: float = 75.0) -> None:
        self.responder = responder or (lambda body: Reply())
        self.keepalive_s = keepalive_s  # how long an idle connection is kept (aiohttp's default)
        self.models: list[dict[str, Any]] | None = None
        self.received: list[Received] = []
        self.health_checks = 0  # GET /v1/models
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[Action] = deque()
        self._transports: set[asyncio.BaseTransport] = set()
        self._loop = asyncio.new_event_loop()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def script(self, *actions: Action) -> None:
        self._script.extend(actions)

    def reset(self) -> None:
        """Release hung requests; forget the script, the recorded requests and the maximum."""
        asyncio.run_coroutine_threadsafe(self._release_hung(), self._loop).result(timeout=10)
        self._script.clear()
        self.received.clear()
        self.max_in_flight = 0
        self.responder = lambda body: Reply()

    def start(self) -> OpenAIServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def kill(self) -> None:
        """Die as a killed server does: every open connection reset, the port closed."""
        asyncio.run_coroutine_threadsafe(self._abort(), self._loop).result(timeout=10)
        self.stop()

    async def _abort(self) -> None:
        for transport in list(self._transports):
            transport.abort()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        self._release = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.on_shutdown.append(lambda app: self._release_hung())
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,
                                    keepalive_timeout=self.keepalive_s)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _release_hung(self) -> None:
        self._release.set()
        self._release = asyncio.Event()
        while self.in_flight:
            await asyncio.sleep(0.001)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """The model list: health checks (counted) and limit reads; `models` replaces the default
        entry (vLLM's carry max_model_len)."""
        self.health_checks += 1
        data = self.models if self.models is not None else [{"id": "test-model", "object": "model"}]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self._transports.add(request.transport)
        body = orjson.loads(await request.read())
        self.received.append(Received(time.monotonic(), dict(request.headers), body))
        action = self._script.popleft() if self._script else self.responder(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._act(action, request, body["model"])
        finally:
            self.in_flight -= 1
            self._transports.discard(request.transport)

    async def _act(self, action: Action, request: web.Request, model: str) -> web.StreamResponse:
        match action:
            case Reply():
                await asyncio.sleep(action.delay_s)
                return web.Response(body=completion(model, action), content_type="application/json")
            case Error():
                headers = {"Retry-After": action.retry_after} if action.retry_after else {}
                error = {"error": {"message": action.message, "type": "error", "code": None}}
                return web.json_response(error, status=action.status, headers=headers)
            case Raw():
                return web.Response(body=action.body, content_type="application/json")
            case Hang():
                response = web.StreamResponse()
                if action.after_headers:
                    response.content_length = 1000
                    await response.prepare(request)
                await self._release.wait()
                return response
            case Drop():
                return await self._drop(action, request, model)

    async def _drop(self, action: Drop, request: web.Request, model: str) -> web.StreamResponse:
        response = web.StreamResponse()
        if action.mid_body:
            body = completion(model, Reply())
            response.content_length = len(body)
            response.content_type = "application/json"
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            await asyncio.sleep(0.01)  # let the first half reach the client
        assert request.transport is not None
        request.transport.abort()
        return response
