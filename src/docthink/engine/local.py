"""The local executor: sends a stage's requests through a `ChatModel` with bounded concurrency,
in the given order, and returns one outcome per request (a result or the failure's reason).

Requests are started in list order by a fixed pool of workers, so callers control what is
issued together (evidence requests sharing an image, for the server's prefix cache). A failure
is a per-row record, never a crash of the run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from docthink.models.base import ChatModel, ChatRequest, ChatResult, RequestFailed, RequestFailure


async def run_requests(
    model: ChatModel,
    requests: Sequence[ChatRequest],
    *,
    concurrency: int,
    on_done: Callable[[int], None] | None = None,
) -> list[ChatResult | RequestFailure]:
    outcomes: dict[int, ChatResult | RequestFailure] = {}  # request index -> its outcome
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(requests):
            index = next_index
            next_index += 1
            request = requests[index]
            try:
                outcomes[index] = await model.complete(request)
            except RequestFailed as exc:
                outcomes[index] = RequestFailure(request.purpose, exc.reason, exc.attempts)
            if on_done is not None:
                on_done(1)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
    return [outcomes[i] for i in range(len(requests))]
