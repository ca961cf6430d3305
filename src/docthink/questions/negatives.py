"""Hard negatives: for each indexed page, the most similar pages of *other* documents, ranked.

Exact search: cosine = dot product of normalised vectors, computed a block of query pages at a
time (`block` x n floats in memory, never n x n), pages of the query's own document masked out,
the top k picked with `argpartition` and sorted by (score descending, row ascending), so ties
break the same way on every run. Decontamination happens before: excluded documents are never
indexed, so they are never a query nor a negative.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docthink.core.errors import UserError
from docthink.core.seeded import np_rng
from docthink.corpus.corpus import Corpus
from docthink.questions.embed import PageIndex
from docthink.questions.recipe import Decontamination, EmbeddingSettings


@dataclass
class HardNegatives:
    """`rows[i]`: index rows of page i's negatives, best first, -1 where fewer exist;
    `scores[i]`: their cosines (-inf where -1)."""

    rows: np.ndarray  # int32 (n, k)
    scores: np.ndarray  # float32 (n, k)

    def ranked(self, row: int) -> np.ndarray:
        found = self.rows[row]
        return found[found >= 0]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "negatives.npy", self.rows, allow_pickle=False)
        np.save(folder / "negative_scores.npy", self.scores, allow_pickle=False)


def rank_negatives(vectors: np.ndarray, docs: np.ndarray, k: int, block: int) -> HardNegatives:
    n = len(vectors)
    k_eff = min(k, n)
    rows = np.full((n, k), -1, dtype=np.int32)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    if k_eff == 0:
        return HardNegatives(rows, scores)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = vectors[start:stop] @ vectors.T
        sims[docs[start:stop, None] == docs[None, :]] = -np.inf
        top = np.argpartition(-sims, k_eff - 1, axis=1)[:, :k_eff]
        top_scores = np.take_along_axis(sims, top, axis=1)
        # Sort each row by (-score, row index): deterministic order among equal scores.
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        found = np.isfinite(top_scores)
        rows[start:stop, :k_eff] = np.where(found, top, -1)
        scores[start:stop, :k_eff] = np.where(found, top_scores, -np.inf)
    return HardNegatives(rows, scores)


@dataclass(frozen=True)
class SimilarityGap:
    pages: int
    top_k: int
    hard_mean: float  # mean cosine of each page's top-k negatives
    random_mean: float  # mean cosine to k random pages of other documents
    gap: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "pages": self.pages,
            "top_k": self.top_k,
            "hard_mean": round(self.hard_mean, 4),
            "random_mean": round(self.random_mean, 4),
            "gap": round(self.gap, 4),
        }


def similarity_gap(
    index: PageIndex, negatives: HardNegatives, seed: int, top_k: int = 8
) -> SimilarityGap:
    """How much more similar the top-k hard negatives are than k random other-document pages
    (chosen from the seed), averaged over pages that have k of each."""
    hard, rand = [], []
    n = len(index.refs)
    for row in range(n):
        ranked = negatives.ranked(row)[:top_k]
        if len(ranked) < top_k:
            continue
        others = np.flatnonzero(index.docs != index.docs[row])
        if len(others) < top_k:
            continue
        picks = np_rng(seed, str(index.refs[row]), "random-negatives").choice(
            others, size=top_k, replace=False
        )
        hard.append(float(negatives.scores[row, :top_k].mean()))
        rand.append(float((index.vectors[picks] @ index.vectors[row]).mean()))
    if not hard:
        return SimilarityGap(0, top_k, 0.0, 0.0, 0.0)
    hard_mean, random_mean = float(np.mean(hard)), float(np.mean(rand))
    return SimilarityGap(len(hard), top_k, hard_mean, random_mean, hard_mean - random_mean)


# -- decontamination ----------------------------------------------------------------------------


def excluded_doc_ids(
    doc_ids: Iterable[str], exclude: Iterable[str], files: Iterable[Path]
) -> set[str]:
    """Corpus doc_ids to leave out: those named (by doc_id or by file name) in `exclude` or in the
    files (one doc_id per line, or a JSON list of rows with a `doc_id`, as MMLongBench-Doc's
    samples.json)."""
    names = set(exclude)
    for path in files:
        if not path.is_file():
            raise UserError(f"{path}: no such file (decontamination.exclude_files)")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            rows = json.loads(text)
            valid = isinstance(rows, list) and all(
                isinstance(r, dict) and "doc_id" in r for r in rows
            )
            if not valid:
                raise UserError(f"{path}: expected a JSON list of rows with a doc_id")
            names.update(str(r["doc_id"]) for r in rows)
        else:
            names.update(line.strip() for line in text.splitlines() if line.strip())
    return {d for d in doc_ids if d in names or Path(d).name in names}


def build_index(
    corpus: Corpus,
    settings: EmbeddingSettings,
    decontamination: Decontamination,
    log: logging.Logger,
) -> tuple[PageIndex, HardNegatives, list[str]]:
    """Index every document not excluded; rank its pages' hard negatives. (Tasks share this.)"""
    excluded = sorted(
        excluded_doc_ids(
            corpus.documents, decontamination.exclude_doc_ids, decontamination.exclude_files
        )
    )
    doc_ids = sorted(set(corpus.documents) - set(excluded))
    index = PageIndex.build(corpus, doc_ids, settings)
    log.info(
        "index %s: %d pages of %d documents (%d embedded now, %d without text, %d documents "
        "excluded)", index.embedder, len(index.refs), len(doc_ids), index.embedded,
        len(index.textless), len(excluded),
    )
    negatives = rank_negatives(index.vectors, index.docs, settings.negatives, settings.block)
    return index, negatives, excluded
