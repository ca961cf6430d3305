"""The one interface for "who answers a prompt": messages with text and page images in, text or a
validated structured object out, with token usage.

Conventions every backend relies on:
- Messages are made of `core.parts`: an image part names its page, so remote models get the
  pixels and text-layer models (the offline teacher) read that page's text layer instead.
- docthink's prompts put the question as the last text part of the last user message, after any
  images and evidence, so a prefix-caching server can reuse everything before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel

from docthink.core.parts import Part, TextPart

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: tuple[Part, ...]

    @classmethod
    def text(cls, role: Role, text: str) -> Message:
        return cls(role, (TextPart(text),))


@cache
def _schema(model: type[BaseModel]) -> dict[str, object]:
    return model.model_json_schema()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[Message, ...]
    response_model: type[BaseModel] | None = None  # structured output, validated with pydantic
    temperature: float = 0.0
    max_tokens: int = 1024
    seed: int | None = None
    # Free-form label for accounting and failure records ("evidence", "answer", ...); not sent.
    purpose: str = ""

    def canonical(self, model: str) -> bytes:
        """Endpoint-independent description of the request: what the cache key hashes.

        Images are represented by their content hash, so the key does not depend on where the
        image store lives or how the pixels are transported."""
        msgs = [
            {
                "role": m.role,
                "content": [
                    {"text": p.text} if isinstance(p, TextPart) else {"image": p.sha256}
                    for p in m.content
                ],
            }
            for m in self.messages
        ]
        schema = _schema(self.response_model) if self.response_model else None
        return orjson.dumps(
            {
                "model": model,
                "messages": msgs,
                "schema": schema,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "seed": self.seed,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    def cache_key(self, model: str) -> str:
        return hashlib.sha256(self.canonical(model)).hexdigest()

    def question(self) -> str:
        """The last text part of the last user message (see the module docstring)."""
        for message in reversed(self.messages):
            if message.role == "user":
                for part in reversed(message.content):
                    if isinstance(part, TextPart):
                        return part.text
        raise ValueError("request has no user text")


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    parsed: BaseModel | None  # set iff the request had a response_model
    usage: Usage
    model: str
    latency_s: float
    attempts: int = 1
    cached: bool = False


class RequestFailed(Exception):
    """A request that did not succeed after its retries. The run records it and goes on.

    `usage` is what the replies it did get cost (a reply that never validated was still
    generated, and the server counts it)."""

    def __init__(self, reason: str, attempts: int, usage: Usage = Usage()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.usage = usage


@dataclass(frozen=True, slots=True)
class RequestFailure:
    purpose: str
    reason: str
    attempts: int


@dataclass
class UsageMeter:
    """Per-run accounting, summed over every request a model served. `sent` counts the attempts
    that went to the model (retries and re-asks included, cache hits not): what a server's own
    request counter should show. Tokens count every reply received, a failed request's too."""

    requests: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    sent: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def record(self, result: ChatResult) -> None:
        self.requests += 1
        if result.cached:
            self.cache_hits += 1
            return
        self.retries += result.attempts - 1
        self.sent += result.attempts
        self.prompt_tokens += result.usage.prompt_tokens
        self.completion_tokens += result.usage.completion_tokens
        self.latency_s += result.latency_s

    def record_failure(self, error: RequestFailed) -> None:
        self.requests += 1
        self.failures += 1
        self.retries += max(error.attempts - 1, 0)
        self.sent += error.attempts
        self.prompt_tokens += error.usage.prompt_tokens
        self.completion_tokens += error.usage.completion_tokens
        kind = error.reason.split(":", 1)[0]
        self.failure_reasons[kind] = self.failure_reasons.get(kind, 0) + 1

    @classmethod
    def of(cls, counts: Mapping[str, Any]) -> UsageMeter:
        """A meter from what `as_dict` gave (such as its sum over a run's shards)."""
        return cls(**counts)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "failures": self.failures,
            "retries": self.retries,
            "sent": self.sent,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": round(self.latency_s, 3),
            "failure_reasons": dict(sorted(self.failure_reasons.items())),
        }


class ChatModel(Protocol):
    """Anything that answers a `ChatRequest`.

    `complete` returns a result or raises `RequestFailed`; any other exception is a bug."""

    name: str  # model identity: goes into cache keys and run records
    usage: UsageMeter

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def aclose(self) -> None: ...
