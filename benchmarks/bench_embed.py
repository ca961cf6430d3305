"""Page embeddings and hard-negative search: pages embedded per second (all-MiniLM-L6-v2 and hashed
TF-IDF on the text layer, on CPU), and the time to rank the hard negatives of 10,000 pages with
docthink's blocked exact search against a brute-force numpy baseline, in the same run, with the same
result checked. The baseline does the same selection work (the other documents' pages masked out,
`argpartition` for the top k, then those k sorted by score and row) on the whole n x n similarity
matrix at once, where docthink computes it --block rows at a time: the ratio measures the blocking
alone.

    python benchmarks/bench_embed.py [--docs DIR] [--embed-pages 300] [--pages 10000] [--k 288]
                                     [--block 1024] [--runs 3]

Pages: the text layers of every PDF in DIR (default: the 37 MMLongBench-Doc PDFs). MiniLM embeds
the first --embed-pages of them (all: --embed-pages 0); the 10,000 search vectors are those MiniLM
vectors repeated with Gaussian noise (sigma 0.05) and re-normalised, in documents of 20 pages (the
search cost depends on n, the dimension and k, not on the text). Each time is the median of --runs
(the two searches alternate runs, so a change in the machine's load falls on both; their CPU time
is the process's, all threads, steadier than wall time on a shared machine); peak memory is numpy's
peak allocation traced with tracemalloc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from docthink.corpus.corpus import Corpus
from docthink.corpus.ingest import ingest
from docthink.questions.embed import HashedTfidfEmbedder, MiniLMEmbedder, PageIndex
from docthink.questions.negatives import HardNegatives, rank_negatives, similarity_gap
from docthink.questions.recipe import EmbeddingSettings

DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "shared/data/mmlongbench/documents"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    parser.add_argument("--embed-pages", type=int, default=300, help="0: every page")
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=288)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args()


def brute_force_negatives(vectors: np.ndarray, docs: np.ndarray, k: int) -> HardNegatives:
    """The baseline: the n x n similarity matrix in one piece, then docthink's selection on it
    (argpartition, the top k sorted by score descending and row ascending)."""
    sims = vectors @ vectors.T
    sims[docs[:, None] == docs[None, :]] = -np.inf
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(sims, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    found = np.isfinite(top_scores)
    return HardNegatives(
        np.where(found, top, -1).astype(np.int32),
        np.where(found, top_scores, -np.inf).astype(np.float32),
    )


def _timed(fn: Callable[[], object], runs: int) -> tuple[float, float, object]:
    """(median seconds, peak MB of the first run, the last result)."""
    times, peak, result = [], 0.0, None
    for run in range(runs):
        seconds, _, mb, result = _once(fn, traced=run == 0)
        times.append(seconds)
        peak = max(peak, mb)
    return statistics.median(times), peak, result


def _once(fn: Callable[[], object], traced: bool) -> tuple[float, float, float, object]:
    """(seconds, CPU seconds of the process (all its threads), peak MB if traced else 0, the
    result)."""
    if traced:
        tracemalloc.start()
    started, cpu = time.perf_counter(), time.process_time()
    result = fn()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = 0.0
    if traced:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return seconds, cpu, peak, result


@dataclass
class Contender:
    """Runs of one contender: wall and CPU seconds of each, peak MB of the first, last result."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    result: object = None


def _timed_pair(
    ours: Callable[[], object], baseline: Callable[[], object], runs: int
) -> tuple[Contender, Contender]:
    """Two contenders' runs, alternating, so a change in the machine's load falls on both."""
    measured = (Contender(), Contender())
    for run in range(runs):
        for contender, fn in zip(measured, (ours, baseline), strict=True):
            seconds, cpu, mb, contender.result = _once(fn, traced=run == 0)
            contender.seconds.append(seconds)
            contender.cpu.append(cpu)
            contender.peak_mb = max(contender.peak_mb, mb)
    return measured


def main() -> None:
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    try:
        _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> None:
    summary = ingest(args.docs, work / "corpus", workers=2, progress=False)
    with Corpus.open(work / "corpus") as corpus:
        refs = [r for d in sorted(corpus.documents) for r in corpus.document(d).pages()]
        texts = [corpus.page_text(r) for r in refs]
        n_embed = len(texts) if args.embed_pages == 0 else min(args.embed_pages, len(texts))
        print(f"corpus: {summary.pages} pages of {summary.ok} PDFs in {args.docs}; "
              f"{os.cpu_count()} cores\n")

        started = time.perf_counter()
        minilm = MiniLMEmbedder(max_tokens=256, batch_size=64)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        vectors = minilm.encode(texts[:n_embed])
        minilm_s = time.perf_counter() - started
        tfidf = HashedTfidfEmbedder(1024)
        tfidf_s, _, _ = _timed(lambda: tfidf.encode(texts), args.runs)
        tfidf_settings = EmbeddingSettings(model="tfidf")
        PageIndex.build(corpus, sorted(corpus.documents), tfidf_settings)  # fills the cache
        cached_s, _, _ = _timed(
            lambda: PageIndex.build(corpus, sorted(corpus.documents), tfidf_settings), args.runs)
        print("embedding (text layer, CPU)")
        print(f"  all-MiniLM-L6-v2, 256 tokens: {n_embed / minilm_s:8.1f} pages/s "
              f"({n_embed} pages in {minilm_s:.1f} s; model load {load_s:.1f} s, once per process)")
        print(f"  hashed TF-IDF, 1024 buckets:  {len(texts) / tfidf_s:8.1f} pages/s")
        print(f"  index from the corpus cache:  {len(texts) / cached_s:8.1f} pages/s "
              "(np.load per document + idf)\n")

        if args.embed_pages == 0:
            index = PageIndex.build(corpus, sorted(corpus.documents), EmbeddingSettings())
            negatives = rank_negatives(index.vectors, index.docs, args.k, args.block)
            gap = similarity_gap(index, negatives, 0).as_dict()
            print(f"similarity gap, MiniLM, all pages: {gap}\n")

    rng = np.random.default_rng(0)
    base = vectors[rng.integers(0, len(vectors), args.pages)]
    noisy = base + rng.normal(0, 0.05, base.shape).astype(np.float32)
    search = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    docs = (np.arange(args.pages) // 20).astype(np.int32)
    print(f"hard-negative search: {args.pages} pages x {search.shape[1]} dims, top {args.k} of "
          f"other documents, median of {args.runs} (runs alternating)")
    blocked, full = _timed_pair(
        lambda: rank_negatives(search, docs, args.k, args.block),
        lambda: brute_force_negatives(search, docs, args.k),
        args.runs,
    )
    ours, brute = blocked.result, full.result
    assert isinstance(ours, HardNegatives) and isinstance(brute, HardNegatives)
    ours_s, brute_s = statistics.median(blocked.seconds), statistics.median(full.seconds)
    ours_cpu, brute_cpu = statistics.median(blocked.cpu), statistics.median(full.cpu)
    same_rows = float((ours.rows == brute.rows).mean())
    same_sets = float(np.mean([len(set(a) & set(b)) / args.k
                               for a, b in zip(ours.rows, brute.rows, strict=True)]))
    for label, c, wall, cpu in (
        (f"docthink, blocked ({args.block} rows) + argpartition:", blocked, ours_s, ours_cpu),
        ("brute force, n x n matrix + argpartition:", full, brute_s, brute_cpu),
    ):
        print(f"  {label:<50} {wall:6.2f} s, CPU {cpu:6.2f} s, peak {c.peak_mb:5.0f} MB; runs "
              f"{_seconds(c.seconds)} s, CPU {_seconds(c.cpu)} s")
    print(f"  ratio (brute force / docthink): time {brute_s / ours_s:.2f}x, CPU time "
          f"{brute_cpu / ours_cpu:.2f}x, peak memory {full.peak_mb / blocked.peak_mb:.1f}x; same "
          f"rank positions {same_rows:.4f}, same neighbour sets {same_sets:.4f}")


def _seconds(runs: list[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in runs)


if __name__ == "__main__":
    main()
