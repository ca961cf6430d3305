"""`base + alpha * delta` over raw tensor bytes, in float32, rounded once to the stored dtype.

Split across threads (the loops release the GIL). bf16, what checkpoints are stored in, runs one
fused loop compiled by LLVM (bf16.py: 0.6 ns/value per thread here); the other dtypes run numpy
over cache-sized blocks (3.2-3.7 ns/value for bf16 when it ran here too). torch's fused bf16
`lerp` was 4x faster than numpy, but importing torch alone costs 1.8 s and 650 MB of resident
memory, more than the whole merge of a 0.6B model needs without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

BLOCK = 1 << 15  # values per block: a few float32 blocks stay in L2


@dataclass(frozen=True)
class Codec:
    """How values of one safetensors float dtype become compute floats and back."""

    raw: np.dtype  # how the stored bytes are viewed
    compute: np.dtype

    def decode(self, raw: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.raw == np.uint16 and self.compute == np.float32:  # bf16: the high half of a float32
            np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
        else:
            out[...] = raw
        return out

    def encode(self, x: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
        """Round `x` (clobbered) to the stored dtype, to nearest even, into `out`."""
        if self.raw != np.uint16 or self.compute != np.float32:
            out[...] = x
            return
        bits = x.view(np.uint32)
        np.right_shift(bits, 16, out=scratch)
        np.bitwise_and(scratch, 1, out=scratch)
        np.add(bits, scratch, out=bits)
        np.add(bits, 0x7FFF, out=bits)
        out[...] = bits.view(np.uint16)[1::2]  # little-endian: the high half


CODECS = {
    "BF16": Codec(np.dtype(np.uint16), np.dtype(np.float32)),
    "F16": Codec(np.dtype(np.float16), np.dtype(np.float32)),
    "F32": Codec(np.dtype(np.float32), np.dtype(np.float32)),
    "F64": Codec(np.dtype(np.float64), np.dtype(np.float64)),
}


class Combiner:
    """Computes `base + alpha * ((tuned - base) + delta)` for several alphas at once."""

    def __init__(self, threads: int | None = None) -> None:
        # half the cores: the other half hash and write the same bytes (stream.py); more kernel
        # threads than that only add GIL hand-offs (sys time) on a 2-core machine
        self.threads = threads or max(1, len(os.sched_getaffinity(0)) // 2)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="merge-kernel")

    def close(self) -> None:
        self.pool.shutdown()

    def combine(
        self,
        codec: Codec,
        base: np.ndarray,
        tuned: np.ndarray | None,
        delta: np.ndarray | None,
        alphas: Sequence[float],
        outs: Sequence[np.ndarray],
    ) -> None:
        """Fill each `outs[i]` (raw, like `base`) with the result for `alphas[i]`.

        `tuned` (raw) and `delta` (compute dtype, already scaled) may each be absent."""
        n = base.size
        step = -(-n // self.threads // BLOCK) * BLOCK
        jobs = [
            self.pool.submit(
                _combine_range, codec, base, tuned, delta, alphas, outs, s, min(n, s + step)
            )
            for s in range(0, n, step)
        ]
        for job in jobs:
            job.result()


def _combine_range(codec, base, tuned, delta, alphas, outs, start: int, stop: int) -> None:
    if codec is CODECS["BF16"]:  # the common case: one fused, compiled loop (bf16.py)
        from docthink.merge import bf16

        for alpha, out in zip(alphas, outs):
            bf16.lerp(
                base[start:stop],
                None if tuned is None else tuned[start:stop],
                None if delta is None else delta[start:stop],
                alpha,
                out[start:stop],
            )
        return
    numpy_range(codec, base, tuned, delta, alphas, outs, start, stop)


def numpy_range(codec, base, tuned, delta, alphas, outs, start: int, stop: int) -> None:
    """The numpy kernel over values `start:stop`: blocks of BLOCK values, each op a pass."""
    b_buf, d_buf, r_buf = (np.empty(BLOCK, codec.compute) for _ in range(3))
    scratch = np.empty(BLOCK, np.uint32)
    for s in range(start, stop, BLOCK):
        e = min(stop, s + BLOCK)
        k = e - s
        b = codec.decode(base[s:e], b_buf[:k])
        if tuned is None:
            d = delta[s:e]
        else:
            d = codec.decode(tuned[s:e], d_buf[:k])
            np.subtract(d, b, out=d)
            if delta is not None:
                np.add(d, delta[s:e], out=d)
        r = r_buf[:k]
        for alpha, out in zip(alphas, outs):
            np.multiply(d, codec.compute.type(alpha), out=r)
            np.add(r, b, out=r)
            codec.encode(r, out[s:e], scratch[:k])
