"""Where a stage's shards run: this process (`local`) or a Ray cluster (`ray`).

A stage cuts its work into shards and hands them, with a `ShardJob`, to the executor its recipe
names. The job says what a shard needs on CPU first (`prepare`: rendering its pages), what a
worker opens once (`session`: the models, the request cache), and how a shard is processed and
committed (`process`: the stage functions over the shard's rows, then `ShardStore.commit`). The
executors only decide where those run; the stage merges the committed parts afterwards, the same
whichever executor ran them. Shards already committed for the same work, with no failed request,
are not handed over."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from pydantic import Field

from docthink.recipe import Recipe

if TYPE_CHECKING:  # recipes import this module; pyarrow loads only where shards are written
    from docthink.engine.shards import Committed, Shard, ShardStore

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)  # a job takes shards of its rows
S = TypeVar("S")


class ExecutorSpec(Recipe):
    kind: Literal["local", "ray"] = Field(
        "local", description="local: this process (render workers beside it); ray: a Ray "
        "cluster (pip install 'docthink[ray]'): rendering in CPU tasks, model calls from actors")
    address: str | None = Field(
        None, description="ray: the cluster to join (host:port, ray://host:10001 or auto); "
        "none: a cluster started for the run on this machine")
    shard_size: int = Field(
        128, ge=1, description="questions per shard (documents per shard for `docthink "
        "questions`): what one worker holds in memory and what a resumed run redoes at most")
    actors: int = Field(2, ge=1, description="ray: model actors, each with `concurrency` "
                        "requests in flight")
    actor_cpus: float = Field(0.5, gt=0, description="ray: CPUs reserved per model actor (they "
                              "mostly wait on the network)")


class ShardJob(Protocol[T_contra, S]):
    """A stage's work on one shard, runnable in this process or shipped to a worker (pickled)."""

    store: ShardStore  # where shards are committed

    def prepare(self, shard: Shard[T_contra], workers: int, show_progress: bool) -> None:
        """CPU work before any model call (rendering the shard's pages into the corpus store)."""

    def session(self) -> AbstractAsyncContextManager[S]:
        """What a worker opens once and shares across shards: models, the request cache."""

    async def process(self, shard: Shard[T_contra], session: S, show_progress: bool) -> Committed:
        """The stage functions over the shard's rows; the parts committed."""


def run_shards(spec: ExecutorSpec, job: ShardJob[T, S], shards: Iterable[Shard[T]], *,
               workers: int, show_progress: bool) -> int:
    """Process every shard with the executor `spec` names; how many were processed."""
    if spec.kind == "ray":
        from docthink.engine.raydata import run_on_ray

        return run_on_ray(spec, job, shards, show_progress=show_progress)
    from docthink.engine.local import run_locally

    return run_locally(job, shards, workers=workers, show_progress=show_progress)


def executor_overrides(kind: str | None, address: str | None,
                       shard_size: int | None) -> dict[str, object] | None:
    """The `executor` section the command-line flags set (None: none given)."""
    given: dict[str, object] = {k: v for k, v in {"kind": kind, "address": address, "shard_size": shard_size}.items()
             if v is not None}
    return given or None
