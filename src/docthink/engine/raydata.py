"""The Ray executor: a stage's shards as a Ray Data dataset, one row per shard, through two
operators: `prepare` in CPU tasks (rendering the shard's pages into the corpus's image store), then
`process` in a pool of actors, each of which opens the job's session once (docthink's own
OpenAI-compatible client to the recipe's endpoints, many requests in flight per actor; not Ray's
HTTP stage, which awaits the requests of a batch one at a time: benchmarks/bench_scaleout.py)
and commits each shard's parts itself.

The corpus and the output folder must be on a path every node sees. Ray restarts an actor that
dies and retries its shard; a shard is committed by renaming its marker, so a retried shard is
committed once, and one committed by an actor that died after its commit is not redone."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from docthink.core.errors import UserError
from docthink.progress import progress

if TYPE_CHECKING:
    from docthink.engine.executor import ExecutorSpec, ShardJob
    from docthink.engine.shards import Shard

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


class RayMissing(UserError):
    """`--executor ray` without Ray installed."""


def run_on_ray(spec: ExecutorSpec, job: ShardJob[T, S], shards: Iterable[Shard[T]], *,
               show_progress: bool) -> int:
    """Process the shards on the cluster at `spec.address` (or one started here); how many."""
    try:
        import ray
    except ImportError:
        raise RayMissing("--executor ray needs Ray: pip install 'docthink[ray]'") from None
    pending = list(shards)
    if not pending:
        return 0
    if not ray.is_initialized():
        ray.init(address=spec.address, logging_level=logging.WARNING, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its start/finish lines; ours say more
    dataset = (
        ray.data.from_items([{"shard": shard} for shard in pending])
        .map_batches(partial(_prepare, job), batch_size=1, num_cpus=1)
        .map_batches(_ShardWorker, fn_constructor_args=(job,), batch_size=1,
                     compute=ray.data.ActorPoolStrategy(size=spec.actors),
                     num_cpus=spec.actor_cpus)
    )
    done = 0
    with progress("shards", len(pending), show_progress) as bar:
        for _ in dataset.iter_batches(batch_size=1):
            done += 1
            bar.advance(1)
    return done


def _prepare(job: ShardJob[T, S], batch: dict[str, Any]) -> dict[str, Any]:
    for shard in batch["shard"]:
        job.prepare(shard, 1, False)
    return batch


class _ShardWorker:
    """A model actor: an event loop on a thread of its own (Ray may call the actor from another
    thread than the one that built it; the session's connections and SQLite files belong to the
    loop's thread), with the job's session open for as long as the actor lives."""

    def __init__(self, job: ShardJob[T, S]) -> None:
        self.job = job
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.opened: AbstractAsyncContextManager[S] = job.session()
        self.session = self._run(self.opened.__aenter__())

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        for shard in batch["shard"]:
            # a shard retried after its actor died may have been committed before the death
            if not self.job.store.done(shard):
                self._run(self.job.process(shard, self.session, False))
        return {"index": np.array([shard.index for shard in batch["shard"]])}

    def __del__(self) -> None:
        self._run(self.opened.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
