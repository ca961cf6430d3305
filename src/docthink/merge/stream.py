"""Tensors moved piece by piece: read, combined for every alpha, written and hashed.

Peak memory is the arena (`chunk_bytes`) whatever the model size. The arena has two halves:
while piece k+1 is read and combined in one half, piece k's bytes in the other are hashed
(inputs and outputs) and written (outputs). Each byte stream (the base folder, the tuned folder,
each output) has its own single-thread lanes, one that hashes and, for an output, one that writes,
so its hash and its file see its bytes in order. With the default arena (32 MiB, in core.py)
merges of a 0.63B model took 0.2 s less than with 256 MiB (median of 5, interleaved; 0.4 s less
system time), at 157 MB peak RSS instead of 386 MB.

Nothing is read twice for its digest: inputs are hashed as the merge reads them (in file order:
the merge walks the base in file order, and a tuned checkpoint saved by the same code has the same
order; an input not read in file order is hashed from disk at the end), outputs from the buffers
written. An input whose digest the caller already knows (`known_digest`: the registry's, for a
file not written since) is not hashed at all. Every input's fingerprint is taken before the merge
and compared after it: an input written meanwhile fails the merge.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Self

import numpy as np

from docthink.core.hashing import (
    ALGORITHM,
    FileDigest,
    Fingerprint,
    file_digest,
    fingerprint,
    hasher,
    quiet,
)
from docthink.merge.kernel import CODECS, Combiner
from docthink.merge.plan import TensorPlan, load_raw
from docthink.merge.safetensors_io import (
    FLOAT_DTYPES,
    ITEMSIZE,
    Appender,
    CheckpointError,
    TensorRef,
    header_bytes,
    read_into,
    shard_names,
)

_ALIGN = 64


KnownDigest = Callable[[Path, Fingerprint], str | None]


def stream(
    shards: list[list[TensorPlan]], tmps: list[Path], alphas: list[float], chunk_bytes: int,
    inputs: list[Path], known_digest: KnownDigest, progress: bool,
) -> tuple[dict[Path, FileDigest], list[dict[str, str]]]:  # fmt: skip
    """Writes every output's shards; returns {input file: digest} and per output {shard: digest}."""
    total = sum(t.out.nbytes for shard in shards for t in shard)
    digests: list[dict[str, Future]] = [{} for _ in tmps]
    watched = _Watched(inputs, known_digest)
    with _Streamer(alphas, chunk_bytes, watched, total, progress) as streamer:
        for name, shard in zip(shard_names(len(shards)), shards):
            header = memoryview(
                header_bytes([(t.name, t.out.dtype, t.out.shape, t.out.nbytes) for t in shard])
            )
            writers = [_ShardWriter(tmp / name, streamer) for tmp in tmps]
            for w in writers:
                w.write(header)
            for t in shard:
                streamer.tensor(t, writers)
            for jobs, w in zip(digests, writers):
                jobs[name] = w.close(len(header) + sum(t.out.nbytes for t in shard))
        in_hashes = streamer.input_hashes()
        return in_hashes, [{name: job.result() for name, job in jobs.items()} for jobs in digests]


class _InputHash:
    """The digest of a safetensors file, fed with the byte ranges the merge reads."""

    def __init__(self, path: Path) -> None:
        self.path, self.size = path, path.stat().st_size
        self.hash, self.pos, self.in_order = hasher(), 0, True
        with open(path, "rb") as f:
            prefix = f.read(8)
            self.feed(0, memoryview(prefix + f.read(int.from_bytes(prefix, "little"))))

    def feed(self, offset: int, data: memoryview) -> None:
        """Bytes at `offset`; ranges already hashed are skipped, a range past a gap ends feeding."""
        if offset > self.pos:
            self.in_order = False
        if self.in_order and offset + len(data) > self.pos:
            self.hash.update(data[self.pos - offset :])
            self.pos = offset + len(data)

    def hexdigest(self) -> str:
        if self.in_order and self.pos == self.size:
            return self.hash.hexdigest()
        return file_digest(self.path)


class _Watched:
    """The inputs: their fingerprints before the merge, the digests already known, and the
    hashes of the others (safetensors files fed as they are read, the rest read at the end)."""

    def __init__(self, inputs: list[Path], known_digest: KnownDigest) -> None:
        self.before = {p: (time.time_ns(), fingerprint(p)) for p in inputs}
        self.known = {p: d for p, (_, fp) in self.before.items()
                      if (d := known_digest(p, fp)) is not None}  # fmt: skip
        self.fed = {p: _InputHash(p) for p in inputs
                    if p.suffix == ".safetensors" and p not in self.known}  # fmt: skip

    def digest(self, path: Path) -> FileDigest:
        """The input's digest, once the merge is done with it."""
        looked, before = self.before[path]
        after = fingerprint(path)
        if after != before:
            raise CheckpointError(f"{path}: written during the merge; merge again")
        if path in self.known:
            return FileDigest(str(path.resolve()), ALGORITHM, self.known[path], None)
        digest = self.fed[path].hexdigest() if path in self.fed else file_digest(path)
        reusable = after if quiet(before, after, looked) else None
        return FileDigest(str(path.resolve()), ALGORITHM, digest, reusable)


class _Lanes:
    """One single-thread executor per (byte stream, job): a stream's hash updates run in
    submission order, and so do its writes, each lane beside the other."""

    def __init__(self) -> None:
        self.lanes: dict[tuple[Path, str], ThreadPoolExecutor] = {}

    def submit(self, key: tuple[Path, str], fn, *args) -> Future:
        if key not in self.lanes:
            self.lanes[key] = ThreadPoolExecutor(1, thread_name_prefix=f"merge-{key[1]}")
        return self.lanes[key].submit(fn, *args)

    def close(self, cancel: bool) -> None:
        for lane in self.lanes.values():
            lane.shutdown(cancel_futures=cancel)


class _ShardWriter:
    """One output shard, hashed on one lane and written on another (each in order) while the main
    thread reads and combines the next piece: hashing (BLAKE3, 2 GB/s here) and splicing into the
    page cache (2 GB/s) take about as long each, so neither waits for the other."""

    def __init__(self, path: Path, streamer: _Streamer) -> None:
        self.path, self.streamer = path, streamer
        self.file = Appender(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        self.hash, self.written = hasher(), 0

    def write(self, data: memoryview) -> None:
        self.streamer.on_lane((self.path.parent, "hash"), self.hash.update, data)
        self.streamer.on_lane((self.path.parent, "write"), self._append, data)

    def _append(self, data: memoryview) -> None:
        self.file.append(data)
        self.written += len(data)

    def close(self, size: int) -> Future:
        """The shard's digest, once its file is complete and closed."""
        closed = self.streamer.lanes.submit((self.path.parent, "write"), self._close, size)
        return self.streamer.lanes.submit((self.path.parent, "hash"), self._digest, closed)

    def _digest(self, closed: Future) -> str:
        closed.result()  # the file's own checks first
        return self.hash.hexdigest()

    def _close(self, size: int) -> None:
        self.file.close()
        if self.written != size:
            raise AssertionError(f"{self.path}: wrote {self.written} of {size} bytes")


class _Streamer:
    def __init__(
        self, alphas: list[float], chunk_bytes: int, inputs: _Watched, total: int, progress: bool
    ) -> None:
        self.alphas, self.budget = alphas, chunk_bytes // 2
        # pages are only touched (and counted as resident) as pieces use them
        self.halves = [np.empty(self.budget + 8 * _ALIGN, np.uint8) for _ in range(2)]
        self.half, self.pending = 0, [[], []]
        self.inputs = inputs
        self.fds: dict[Path, int] = {}
        self.combiner, self.lanes = Combiner(), _Lanes()
        self.bar = _progress(total) if progress else None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.combiner.close()
        self.lanes.close(cancel=exc_type is not None)
        for fd in self.fds.values():
            os.close(fd)
        if self.bar is not None:
            self.bar.stop()

    def on_lane(self, lane: tuple[Path, str], fn, data: memoryview) -> None:
        """`fn(data)` on the lane; the arena half holding `data` is reused once it is done."""
        self.pending[self.half].append(self.lanes.submit(lane, fn, data))

    def input_hashes(self) -> dict[Path, FileDigest]:
        jobs = {p: self.lanes.submit((p.parent, "hash"), self.inputs.digest, p)
                for p in self.inputs.before}  # fmt: skip
        return {p: job.result() for p, job in jobs.items()}

    def tensor(self, t: TensorPlan, writers: list[_ShardWriter]) -> None:
        out, itemsize = t.out, ITEMSIZE[t.out.dtype]
        row_bytes = out.row_elems * itemsize
        if out.nbytes == 0:
            return
        factors = self._factors(t) if t.lora else None
        sources = [_source(t, a) for a in self.alphas]
        computed = [a for a, s in zip(self.alphas, sources) if s == "compute"]
        per_row = row_bytes * (1 + (t.tuned is not None) + len(computed))
        per_row += out.row_elems * 8 if t.lora else 0  # float32/64 delta
        rows = max(1, self.budget // per_row)
        for r0 in range(0, t.base.rows, rows):
            self._merge_rows(
                t, r0, min(t.base.rows, r0 + rows), factors, sources, computed, writers
            )
        tail_rows = max(1, self.budget // row_bytes)
        for r0 in range(t.base.rows, out.rows, tail_rows):  # new tokens: the tuned rows as they are
            (buf,) = self._carve((min(out.rows, r0 + tail_rows) - r0) * row_bytes)
            self._read(t.tuned, r0 * row_bytes, buf)
            for w in writers:
                w.write(memoryview(buf))
            self._advance(buf.nbytes)

    def _merge_rows(self, t, r0, r1, factors, sources, computed, writers) -> None:
        row_bytes = t.base.row_elems * ITEMSIZE[t.base.dtype]
        nbytes = (r1 - r0) * row_bytes
        n_delta = (r1 - r0) * t.base.row_elems * 8 if t.lora else 0
        base_buf, tuned_buf, delta_buf, *out_bufs = self._carve(
            nbytes, nbytes if t.tuned else 0, n_delta, *[nbytes] * len(computed)
        )
        self._read(t.base, r0 * row_bytes, base_buf)
        if t.tuned is not None:
            self._read(t.tuned, r0 * row_bytes, tuned_buf)
        if computed:
            codec, delta = CODECS[t.base.dtype], None
            if factors is not None:
                left, right = factors
                delta = delta_buf.view(codec.compute)[: (r1 - r0) * t.base.row_elems]
                np.matmul(left[r0:r1], right, out=delta.reshape(r1 - r0, -1))
            raw = codec.raw
            self.combiner.combine(
                codec, base_buf.view(raw), tuned_buf.view(raw) if t.tuned else None, delta,
                computed, [b.view(raw) for b in out_bufs],
            )  # fmt: skip
        by_alpha = iter(out_bufs)
        for w, source in zip(writers, sources):
            buf = (
                next(by_alpha)
                if source == "compute"
                else base_buf
                if source == "base"
                else tuned_buf
            )
            w.write(memoryview(buf))
        self._advance(nbytes)

    def _factors(self, t: TensorPlan) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) with delta rows = left[rows] @ right, the LoRA scale folded into left."""
        f, compute = t.lora, CODECS[t.base.dtype].compute
        a, b = _load_float(f.a, compute), _load_float(f.b, compute)
        if f.embedding:  # PEFT: delta = (B @ A).T for an Embedding
            return np.ascontiguousarray(a.T) * compute.type(f.scale), np.ascontiguousarray(b.T)
        return b * compute.type(f.scale), a

    def _carve(self, *sizes: int) -> list[np.ndarray]:
        """Views into the next arena half, once its previous bytes are hashed and written."""
        self.half ^= 1
        for job in self.pending[self.half]:
            job.result()
        self.pending[self.half].clear()
        offsets = np.cumsum([0] + [-(-s // _ALIGN) * _ALIGN for s in sizes])
        if offsets[-1] > self.halves[self.half].size:  # a single row wider than the budget
            self.halves[self.half] = np.empty(offsets[-1], np.uint8)
        return [self.halves[self.half][o : o + s] for o, s in zip(offsets, sizes)]

    def _read(self, ref: TensorRef, byte_start: int, buf: np.ndarray) -> None:
        if ref.file not in self.fds:
            self.fds[ref.file] = os.open(ref.file, os.O_RDONLY)
        read_into(self.fds[ref.file], ref.offset + byte_start, memoryview(buf), ref.file)
        if ref.file in self.inputs.fed:
            self.on_lane(
                (ref.file.parent, "hash"),
                partial(self.inputs.fed[ref.file].feed, ref.offset + byte_start),
                memoryview(buf),
            )

    def _advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.bar.task_ids[0], n)


def _source(t: TensorPlan, alpha: float) -> str:
    """Where an output's values come from: exact endpoints need no arithmetic."""
    if alpha == 0.0 or (t.tuned is None and t.lora is None) or t.base.dtype not in FLOAT_DTYPES:
        return "base"  # non-float tensors were checked to be identical
    if alpha == 1.0 and t.lora is None:
        return "tuned"
    return "compute"


def _load_float(ref: TensorRef, compute: np.dtype) -> np.ndarray:
    codec = CODECS[ref.dtype]
    raw = load_raw(ref).view(codec.raw)
    return (
        codec.decode(raw, np.empty(raw.size, codec.compute))
        .astype(compute, copy=False)
        .reshape(ref.shape)
    )


def _progress(total: int):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        "merging", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()
    )
    bar.add_task("merge", total=total)
    bar.start()
    return bar
