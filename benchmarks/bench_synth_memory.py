"""Peak memory of `docthink synth` as the questions grow: the same kind of work (whole-document
questions over sample PDFs, offline teacher, page images already rendered) at 1x and 8x the
questions, in shards of `--shard-size` questions, against the same runs as one shard holding every
question (what `synth` did before it streamed shards). Each run is a `docthink synth` process of
its own; its peak RSS (ru_maxrss of that process, render workers excluded) is what is reported.

Claim: in shards, the 8x run peaks within 1.2x of the 1x run.

    python benchmarks/bench_synth_memory.py [--questions 96] [--scale 8] [--shard-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from docthink.corpus.samples import PlantedFact, write_sample_pdfs

# Runs `docthink synth` in this process and writes its peak RSS (KB) to the file named first.
PEAK = """
import resource, sys
from docthink.cli import app
try:
    app(sys.argv[2:])
finally:
    open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def make_questions(work: Path, corpus: Path, facts: list[PlantedFact], n: int) -> tuple[Path, int]:
    """`n` whole-document questions (planted facts, asked in several wordings); the evidence
    requests they make."""
    from docthink.corpus.corpus import Corpus

    with Corpus.open(corpus) as c:
        pages = {d.doc_id: d.n_pages for d in c.documents.values()}
    path = work / f"questions-{n}.jsonl"
    requests = 0
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            fact = facts[i % len(facts)]
            k = i // len(facts)
            question = fact.question if k == 0 else f"{fact.question} (wording {k})"
            f.write(json.dumps({"qid": f"q{i:06d}", "doc_id": fact.doc_id, "question": question,
                                "source_pages": [fact.page]}) + "\n")
            requests += pages[fact.doc_id]
    return path, requests


def peak_rss(work: Path, corpus: Path, questions: Path, out: Path, shard_size: int) -> int:
    """Peak RSS in MB of one `docthink synth` process."""
    peak = work / "peak.txt"
    command = [sys.executable, "-c", PEAK, str(peak), "synth", "--corpus", str(corpus),
               "--questions", str(questions), "--out", str(out), "--shard-size", str(shard_size),
               "--runs-dir", str(work / "runs")]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "DOCTHINK_REGISTRY": str(work / "registry.sqlite")})
    assert done.returncode == 0, done.stderr[-2000:]
    return int(peak.read_text()) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=96, help="questions at 1x")
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--docs", type=int, default=12)
    args = parser.parse_args()

    from docthink.corpus.ingest import ingest
    from docthink.corpus.policy import RenderPolicy

    work = Path(tempfile.mkdtemp(prefix="bench_synth_memory_"))
    try:
        _, facts = write_sample_pdfs(work / "pdfs", args.docs, seed=0)
        ingest(work / "pdfs", work / "corpus", render=RenderPolicy(), workers=2,
               progress=False)
        sizes = {"1x": args.questions, f"{args.scale}x": args.questions * args.scale}
        files = {name: make_questions(work, work / "corpus", facts, n)
                 for name, n in sizes.items()}
        big = max(sizes.values())
        results: dict[tuple[str, str], int] = {}
        for layout, shard_size in (("shards", args.shard_size), ("one shard", big)):
            for name, (questions, _) in files.items():
                out = work / f"out-{layout.replace(' ', '-')}-{name}"
                results[layout, name] = peak_rss(work, work / "corpus", questions, out,
                                                 shard_size)
                shutil.rmtree(out)
        report(args, sizes, {n: r for n, (_, r) in files.items()}, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, sizes: dict[str, int], requests: dict[str, int],
           results: dict[tuple[str, str], int]) -> None:
    small, large = sizes
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs (shared with other work); "
          f"{args.docs} sample documents, whole-document questions, offline teacher, images "
          f"rendered beforehand; peak RSS of the `docthink synth` process")
    print(f"{'layout':<28} {small + ' (' + str(sizes[small]) + ' q, ' + str(requests[small]) + ' req)':>26} "
          f"{large + ' (' + str(sizes[large]) + ' q, ' + str(requests[large]) + ' req)':>28} {'ratio':>6}")
    for layout, label in (("shards", f"shards of {args.shard_size} questions"),
                          ("one shard", "one shard (before: all held)")):
        a, b = results[layout, small], results[layout, large]
        print(f"{label:<28} {a:>23} MB {b:>25} MB {b / a:>6.2f}")
    ratio = results["shards", large] / results["shards", small]
    print(f"claim: in shards the {large} run peaks within 1.2x of the {small} run: "
          f"{ratio:.2f}x ({'meets' if ratio <= 1.2 else 'MISSES'})")


if __name__ == "__main__":
    main()
