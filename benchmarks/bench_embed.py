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
(the two searches alternate runs, so a change in the machine's load falls on both); peak memory
is numpy's peak allocation traced with tracemalloc.
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
from pathlib import Path

import numpy as np

from docthink.corpus import Corpus, ingest
from docthink.synth.embed import EmbeddingSettings, HashedTfidfEmbedder, MiniLMEmbedder, PageIndex
from docthink.synth.negatives import HardNegatives, rank_negatives, similarity_gap

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
        seconds, mb, result = _once(fn, traced=run == 0)
        times.append(seconds)
        peak = max(peak, mb)
    return statistics.median(times), peak, result


def _once(fn: Callable[[], object], traced: bool) -> tuple[float, float, object]:
    """(seconds, peak MB if traced else 0, the result)."""
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    peak = 0.0
    if traced:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return seconds, peak, result


def _timed_pair(
    ours: Callable[[], object], baseline: Callable[[], object], runs: int
) -> tuple[tuple[list[float], float, object], tuple[list[float], float, object]]:
    """(seconds of each run, peak MB of the first run, the last result) for two contenders, their
    runs alternating, so a change in the machine's load falls on both."""
    times: tuple[list[float], list[float]] = ([], [])
    peaks, results = [0.0, 0.0], [None, None]
    for run in range(runs):
        for i, fn in enumerate((ours, baseline)):
            seconds, mb, results[i] = _once(fn, traced=run == 0)
            times[i].append(seconds)
            peaks[i] = max(peaks[i], mb)
    return (times[0], peaks[0], results[0]), (times[1], peaks[1], results[1])


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
    (ours_runs, ours_mb, ours), (brute_runs, brute_mb, brute) = _timed_pair(
        lambda: rank_negatives(search, docs, args.k, args.block),
        lambda: brute_force_negatives(search, docs, args.k),
        args.runs,
    )
    ours_s, brute_s = statistics.median(ours_runs), statistics.median(brute_runs)
    assert isinstance(ours, HardNegatives) and isinstance(brute, HardNegatives)
    same_rows = float((ours.rows == brute.rows).mean())
    same_sets = float(np.mean([len(set(a) & set(b)) / args.k
                               for a, b in zip(ours.rows, brute.rows, strict=True)]))
    print(f"  docthink, blocked ({args.block} rows) + argpartition: {ours_s:6.2f} s, "
          f"peak {ours_mb:7.0f} MB; runs {_seconds(ours_runs)}")
    print(f"  brute force, n x n matrix + argpartition:        {brute_s:6.2f} s, "
          f"peak {brute_mb:7.0f} MB; runs {_seconds(brute_runs)}")
    print(f"  ratio (brute force / docthink): time {brute_s / ours_s:.2f}x, peak memory "
          f"{brute_mb / ours_mb:.1f}x; same rank positions {same_rows:.4f}, same neighbour sets "
          f"{same_sets:.4f}")


def _seconds(runs: list[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in runs)


if __name__ == "__main__":
    main()
