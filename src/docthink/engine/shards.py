"""Shards: a run's work cut into fixed-size groups of questions, each processed on its own and
committed as a folder of parts, so that a run's memory is bounded by one shard, a killed run
resumes shard by shard, and shards can be spread over a cluster.

Commit protocol (`ShardStore.commit`): the parts are written into a new folder no marker names
yet, then the shard's marker (`NNNNNN.json`: the shard's digest, its folder and its counts) is
written to a temporary name and renamed over the old one. The rename is the commit: a shard is
done exactly when its marker exists and carries the digest of the work asked of it (the recipe
settings that decide outputs and the shard's own items), so a changed recipe or input redoes the
shard, and a shard committed twice (a retried task) leaves one marker naming one complete folder.
Folders no marker names are debris of a killed or superseded attempt, removed by `sweep`.

The final tables are merged from the parts in the driver, in an order fixed by keys (shard index,
row keys), never by arrival: `write_sorted` and `write_concatenated` write the same bytes as
`pq.write_table(pa.Table.from_pylist(rows))` over all rows at once, one row group in memory at a
time."""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel

T_co = TypeVar("T_co", covariant=True)  # a shard of questions is a shard of objects

# pyarrow's default maximum row group: the final tables keep the row groups pq.write_table makes.
ROW_GROUP = 1024 * 1024


@dataclass(frozen=True)
class Shard(Generic[T_co]):
    index: int  # position in the run's order; parts merge by it
    items: tuple[T_co, ...]
    digest: str  # of the plan and the items (see the module docstring)


@dataclass(frozen=True)
class Committed:
    folder: Path
    counts: dict[str, object]

    @property
    def failed_requests(self) -> int:
        """Requests of the shard that failed, from the usage its counts carry per model."""
        usage = self.counts.get("usage")
        if not isinstance(usage, dict):
            return 0
        return sum(int(u.get("failures", 0)) for u in usage.values() if isinstance(u, dict))


class ShardStore:
    """The shards folder of a run's output folder (a path every worker sees)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _marker(self, index: int) -> Path:
        return self.root / f"{index:06d}.json"

    def committed(self, shard: Shard[object]) -> Committed | None:
        """The shard's parts and counts if it was committed for this same work, else None."""
        path = self._marker(shard.index)
        if not path.exists():
            return None
        marker = json.loads(path.read_text(encoding="utf-8"))
        if marker["digest"] != shard.digest:
            return None
        return Committed(self.root / marker["folder"], marker["counts"])

    def done(self, shard: Shard[object]) -> bool:
        """Committed for this same work with no failed request. Failures are not cached, so a
        rerun redoes a shard that had any: its finished requests come from the request cache,
        only the failed ones are sent again (as a run without shards would)."""
        committed = self.committed(shard)
        return committed is not None and committed.failed_requests == 0

    def get(self, index: int, digest: str) -> Committed:
        """A shard the run needs committed (after its executor finished)."""
        committed = self.committed(Shard(index, (), digest))
        if committed is None:
            raise RuntimeError(f"{self._marker(index)}: shard {index} was not committed")
        return committed

    def commit(self, shard: Shard[object], write: Callable[[Path], dict[str, object]]) -> Committed:
        """Run `write(folder)` into a new folder (it writes the parts and returns the counts), then
        commit the shard by renaming its marker into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{shard.index:06d}-{uuid.uuid4().hex[:12]}"
        folder = self.root / name
        folder.mkdir()
        counts = write(folder)
        for part in folder.iterdir():
            _fsync(part)
        previous = self._marker(shard.index)
        old = json.loads(previous.read_text(encoding="utf-8"))["folder"] if previous.exists() \
            else None
        tmp = self.root / f".{name}.json.tmp"
        tmp.write_text(json.dumps({"digest": shard.digest, "folder": name, "counts": counts}),
                       encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, previous)
        if old is not None and old != name:
            shutil.rmtree(self.root / old, ignore_errors=True)
        return Committed(folder, counts)

    def sweep(self, keep: int | None = None) -> int:
        """Remove the folders and temporary markers no marker names, and with `keep` the markers
        of shards from index `keep` on (a run that now has fewer); how many were removed."""
        if not self.root.exists():
            return 0
        markers = sorted(self.root.glob("[0-9]*.json"))
        if keep is not None:
            for marker in markers[keep:]:
                marker.unlink()
            markers = markers[:keep]
        named = {json.loads(p.read_text(encoding="utf-8"))["folder"] for p in markers}
        debris = [p for p in self.root.iterdir()
                  if (p.is_dir() and p.name not in named) or p.name.endswith(".tmp")]
        for path in debris:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return len(debris)


def plan_digest(recipe: BaseModel) -> str:
    """What decides a shard's rows besides its items: the recipe without where it runs, how fast,
    and where it writes."""
    settings = recipe.model_dump(mode="json",
                                 exclude={"out", "executor", "concurrency", "workers"})
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def items_digest(plan: str, items: Iterable[object]) -> str:
    """A shard's digest: the plan's and each item's canonical JSON (orjson: dataclasses and
    pydantic models as their fields)."""
    digest = hashlib.sha256(plan.encode())
    for item in items:
        digest.update(orjson.dumps(item, default=_fields))
    return digest.hexdigest()


def _fields(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot digest {type(value).__name__}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sum_counts(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts added up key by key; a nested mapping (a breakdown) is added up the same way."""
    total: dict[str, Any] = {}
    for counts in parts:
        for key, value in counts.items():
            if isinstance(value, Mapping):
                total[key] = sum_counts([total.get(key, {}), value])
            else:
                total[key] = total.get(key, 0) + value
    return total


# -- parts --------------------------------------------------------------------------------------


def write_part(rows: Sequence[Mapping[str, object]], path: Path,
               schema: pa.Schema | None = None) -> None:
    """A part as Parquet, typed by `schema` or by inference from its rows; a part without rows
    is not written (the merged table takes its schema from the other parts, or `schema`)."""
    if rows:
        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), path)


def write_lines(lines: Iterable[str], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def _schema(paths: Sequence[Path]) -> pa.Schema:
    """The schema pa.Table.from_pylist infers over the rows of every part: a column that is null
    in one part and typed in another takes the type."""
    schemas = [pq.read_schema(p).remove_metadata() for p in paths]
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    return pa.schema([pa.field(f.name, _inferred(f.type)) for f in unified])


def _inferred(kind: pa.DataType) -> pa.DataType:
    """Parquet reads a list's values back as `element`; inference from Python rows names them
    `item`, and the name is in the file's bytes."""
    if pa.types.is_list(kind):
        return pa.list_(_inferred(kind.value_type))
    return kind


def _read(path: Path, schema: pa.Schema) -> pa.Table:
    return pq.read_table(path).replace_schema_metadata(None).cast(schema)


def _replacing(dest: Path) -> Path:
    return dest.with_name(dest.name + ".tmp")


def _empty(dest: Path, schema: pa.Schema | None = None) -> int:
    pq.write_table(pa.Table.from_pylist([], schema=schema), _replacing(dest))
    os.replace(_replacing(dest), dest)
    return 0


def write_concatenated(paths: Sequence[Path], dest: Path, schema: pa.Schema | None = None) -> int:
    """The parts (those that exist) one after the other, as one table typed by `schema` or by
    what the parts hold; its row count."""
    present = [p for p in paths if p.exists()]
    if not present:
        return _empty(dest, schema)
    schema = schema or _schema(present)
    rows = 0
    with pq.ParquetWriter(_replacing(dest), schema) as writer:
        pending: list[pa.Table] = []
        for path in present:
            table = _read(path, schema)
            while table.num_rows:
                take = min(ROW_GROUP - sum(t.num_rows for t in pending), table.num_rows)
                pending.append(table.slice(0, take))
                table = table.slice(take)
                if sum(t.num_rows for t in pending) == ROW_GROUP:
                    writer.write_table(pa.concat_tables(pending).combine_chunks())
                    rows += ROW_GROUP
                    pending = []
        if pending:
            group = pa.concat_tables(pending).combine_chunks()
            writer.write_table(group)
            rows += group.num_rows
    os.replace(_replacing(dest), dest)
    return rows


def _keys(path: Path, columns: Sequence[str], part: int) -> Iterator[tuple[object, int]]:
    """(row key, part) for each row of a part, read a batch at a time."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=list(columns)):
        for key in zip(*(batch.column(c).to_pylist() for c in columns)):
            yield key, part


def write_sorted(paths: Sequence[Path], keys: Sequence[str], dest: Path) -> int:
    """The rows of parts each sorted by `keys`, merged into one table sorted by `keys` (unique
    across parts); its row count. Each output row group takes a contiguous run of every part, so
    the merge reads keys as it goes and one row group's rows at a time."""
    present = [p for p in paths if p.exists()]
    if not present:
        return _empty(dest)
    schema = _schema(present)
    streams = [_keys(path, keys, i) for i, path in enumerate(present)]
    taken = [0] * len(present)
    rows = 0

    def flush(writer: pq.ParquetWriter, upto: list[int]) -> None:
        pieces = [_read(path, schema).slice(taken[i], upto[i] - taken[i])
                  for i, path in enumerate(present) if upto[i] > taken[i]]
        group = pa.concat_tables(pieces).combine_chunks()
        order = pc.sort_indices(group, sort_keys=[(k, "ascending") for k in keys])
        writer.write_table(group.take(order))
        taken[:] = upto

    with pq.ParquetWriter(_replacing(dest), schema) as writer:
        upto = list(taken)
        for _, part in heapq.merge(*streams):
            upto[part] += 1
            rows += 1
            if rows % ROW_GROUP == 0:
                flush(writer, upto)
                upto = list(taken)
        if upto != taken:
            flush(writer, upto)
    os.replace(_replacing(dest), dest)
    return rows


def concatenated_lines(paths: Iterable[Path], keep: Callable[[str], bool] | None = None
                       ) -> Iterator[str]:
    """The lines of the files that exist, in order (those `keep` accepts), without newlines."""
    for path in paths:
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if keep is None or keep(line):
                    yield line


def write_atomically(lines: Iterable[str], dest: Path) -> int:
    """Lines into `dest` through a temporary file; how many."""
    tmp = _replacing(dest)
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
            n += 1
    os.replace(tmp, dest)
    return n
