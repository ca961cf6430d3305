"""The data explorer's example list on a synth run of 100,000 questions (8 context pages each:
800,000 evidence rows; 5% dropped). Prints the time to build the run's index (once per server
process, on the first visit), then the latency (p50/p95 over a set of filters, each with its count
and first page as the list page asks) against the goal of 300 ms.

Baselines measured in the same run, answering the same filters with the same counts and pages:
- in memory: the same rows as Python objects already loaded, filtered by a list comprehension;
- from the files: what a page without an index does, reading the run's files at each request.

    python benchmarks/bench_explorer.py [--examples 100000] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docthink.registry.explorer import (
    PER_PAGE,
    ExampleFilter,
    ExampleIndex,
    ExampleRow,
    SynthFiles,
    build_rows,
)

T = TypeVar("T")
PAGES = 8
FILTERS = [
    ExampleFilter(),
    ExampleFilter(branch="vision"),
    ExampleFilter(branch="text", placement="prefix"),
    ExampleFilter(status="dropped"),
    ExampleFilter(why="trace: no relevant page"),
    ExampleFilter(score_min=6.0, score_max=8.0),
    ExampleFilter(pages_min=3, pages_max=4, branch="vision"),
    ExampleFilter(doc="doc0042.pdf"),
    ExampleFilter(placement="none", score_min=9.0),
]


def write_run(folder: Path, n: int) -> SynthFiles:
    """A synth run's files as `docthink synth` writes them, with seeded-looking variety."""
    folder.mkdir(parents=True, exist_ok=True)
    qids = [f"q{i:06d}" for i in range(n)]
    dropped = {q for i, q in enumerate(qids) if i % 20 == 7}
    ev: dict[str, list[object]] = {k: [] for k in (
        "qid", "position", "is_source", "evidence", "relevance_score", "relevant", "model",
        "prompt_hash", "failure", "doc_id", "page")}
    traces: dict[str, list[object]] = {"qid": [], "positions": [], "text": []}
    answers: dict[str, list[object]] = {k: [] for k in (
        "qid", "branch", "text", "model", "prompt_tokens", "completion_tokens", "failure")}
    placements = ("system", "prefix", "suffix", "none")
    with (folder / "questions.jsonl").open("w") as qf, \
            (folder / "examples.jsonl").open("wb") as xf:
        for i, qid in enumerate(qids):
            doc = f"doc{i % 500:04d}.pdf"
            qf.write(json.dumps({"qid": qid, "doc_id": doc, "question": f"What is figure {i}?",
                                 "source_pages": [1 + i % PAGES]}) + "\n")
            rng = random.Random(i)
            scores = [0.0 if qid in dropped else round(rng.choice((0.0, 0.0, 0.5, 2.0, 4.0))
                                                       if p != i % PAGES else rng.uniform(6, 10), 1)
                      for p in range(PAGES)]
            for p, score in enumerate(scores, start=1):
                for k, v in (("qid", qid), ("position", p), ("is_source", p == 1 + i % PAGES),
                             ("evidence", f"page {p} says {i}"), ("relevance_score", score),
                             ("relevant", score > 0), ("model", "m"), ("prompt_hash", "h"),
                             ("failure", None), ("doc_id", doc), ("page", p)):
                    ev[k].append(v)
            if qid in dropped:
                continue
            kept = sorted((p for p in range(1, PAGES + 1) if scores[p - 1] > 1.0),
                          key=lambda p: -scores[p - 1])
            traces["qid"].append(qid)
            traces["positions"].append(kept)
            traces["text"].append("\n\n".join(f"Page {p}:\npage {p} says {i}" for p in kept))
            branch = ("vision", "text")[i % 2]
            for k, v in (("qid", qid), ("branch", branch), ("text", f"Answer {i}"), ("model", "m"),
                         ("prompt_tokens", 10), ("completion_tokens", 3), ("failure", None)):
                answers[k].append(v)
            xf.write(orjson.dumps({
                "id": qid, "kind": "trace", "placement": placements[(i // 3) % 4],
                "branch": branch, "system": None,
                "user": [{"image": f"{i:064x}", "suffix": ".png"} for _ in range(PAGES)]
                + [f"What is figure {i}?"],
                "assistant": f"<think>...</think>\nAnswer {i}"}) + b"\n")
    pq.write_table(pa.table(ev), folder / "evidence.parquet")
    pq.write_table(pa.table(traces), folder / "traces.parquet")
    pq.write_table(pa.table(answers), folder / "answers.parquet")
    with (folder / "dropped.jsonl").open("w") as f:
        for q in sorted(dropped):
            f.write(json.dumps({"qid": q, "stage": "trace", "reason": "no relevant page"}) + "\n")
    return SynthFiles(folder, folder / "questions.jsonl", folder / "corpus", {})


def naive_match(f: ExampleFilter, r: ExampleRow) -> bool:
    return ((not f.branch or r.branch == f.branch)
            and (not f.placement or r.placement == f.placement)
            and (not f.status or r.status == f.status) and (not f.why or r.why == f.why)
            and (not f.doc or r.doc_id == f.doc)
            and (f.score_min is None or (r.top_score is not None and r.top_score >= f.score_min))
            and (f.score_max is None or (r.top_score is not None and r.top_score <= f.score_max))
            and (f.pages_min is None or r.n_trace >= f.pages_min)
            and (f.pages_max is None or r.n_trace <= f.pages_max))


def naive(rows: list[ExampleRow], f: ExampleFilter) -> tuple[int, list[ExampleRow]]:
    matched = [r for r in rows if naive_match(f, r)]
    return len(matched), matched[:PER_PAGE]


def timed(fn: Callable[[], T], repeat: int) -> tuple[list[float], T]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="write the run here (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "synth"
        start = time.perf_counter()
        files = write_run(folder, args.examples)
        print(f"wrote a synth run of {args.examples:,} questions x {PAGES} pages in "
              f"{time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        index = ExampleIndex.of(files)
        built = time.perf_counter() - start
        print(f"index built in {built:.2f} s (once per server process, at the first visit)")
        rows = [ExampleRow(*r) for r in build_rows(files)]  # the in-memory baseline's rows

        indexed, in_memory = [], []
        for f in FILTERS:
            t_index, (n, first) = timed(partial(index.query, f), 5)
            t_naive, (m, naive_first) = timed(partial(naive, rows, f), 3)
            assert n == m and [r.qid for r in first] == [r.qid for r in naive_first], f
            indexed.append(statistics.median(t_index))
            in_memory.append(statistics.median(t_naive))
            shown = ", ".join(f"{k}={v}" for k, v in vars(f).items() if v is not None) or "none"
            print(f"  {n:>7,} match  index {ms(indexed[-1]):>9}  in-memory scan "
                  f"{ms(in_memory[-1]):>9}  filter: {shown}")
        t_files, (n, _) = timed(lambda: naive([ExampleRow(*r) for r in build_rows(files)],
                                              FILTERS[1]), 1)
        assert n == index.query(FILTERS[1])[0]

        def p95(xs: list[float]) -> float:
            return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]

        p50 = statistics.median(indexed)
        print(f"filter + count + first page over {args.examples:,} examples, {len(FILTERS)} "
              f"filters: p50 {ms(p50)}, p95 {ms(p95(indexed))} (goal < 300 ms: "
              f"{'met' if p95(indexed) < 0.3 else 'NOT met'})")
        print(f"baseline in-memory list scan: p50 {ms(statistics.median(in_memory))}, p95 "
              f"{ms(p95(in_memory))} ({statistics.median(in_memory) / p50:.1f}x the index's p50)")
        print(f"baseline reading the run's files per request: {ms(t_files[0])} "
              f"({t_files[0] / p50:.0f}x the index's p50)")


if __name__ == "__main__":
    main()
