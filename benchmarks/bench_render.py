"""Render throughput at 144 dpi: docthink's pipeline (render + encode + store + index) against
poppler's pdftoppm on the same real pages, in the same run.

    python benchmarks/bench_render.py [--docs DIR] [--pages-per-doc 4] [--runs 3]

Pages: the first N pages of every PDF in DIR (default: the 37 MMLongBench-Doc PDFs). Each figure is
the median of --runs runs; every run starts from an empty image store. "per core" divides by the
processes doing the work (1, or the pool's workers). The claim checked: docthink PNG at least 3x
pdftoppm PNG per core, at the same pixels (no cap) and at the default policy (cap 1280 px).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus, RenderTask, render_task
from docthink.corpus.files import Layout
from docthink.corpus.images import RenderIndex
from docthink.corpus.ingest import ingest
from docthink.corpus.policy import RenderPolicy

DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "shared/data/mmlongbench/documents"
DPI = 144
UNCAPPED = 100_000


def main() -> None:
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="bench_render_"))
    try:
        corpus_dir = work / "corpus"
        started = time.perf_counter()
        summary = ingest(args.docs, corpus_dir, workers=2, progress=False)
        ingest_s = time.perf_counter() - started
        with Corpus.open(corpus_dir) as corpus:
            refs = [
                PageRef(doc_id, page)
                for doc_id, document in sorted(corpus.documents.items())
                for page in range(1, min(args.pages_per_doc, document.n_pages) + 1)
            ]
        print(
            f"sample: {len(refs)} pages (first {args.pages_per_doc} of {summary.ok} PDFs in "
            f"{args.docs}), {DPI} dpi, median of {args.runs} runs, {os.cpu_count()} cores"
        )
        print(
            f"(ingest before timing: {summary.pages} pages, text layer of every page, "
            f"{ingest_s:.1f} s on 2 workers = {summary.pages / ingest_s:.0f} pages/s)\n"
        )
        rows = _measure(args, corpus_dir, refs, work)
        _print(rows, len(refs))
    finally:
        shutil.rmtree(work)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    parser.add_argument("--pages-per-doc", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args()


Row = tuple[str, int, float, float | None, float]  # label, cores, wall s, CPU s, Mpx per page


def _measure(
    args: argparse.Namespace, corpus_dir: Path, refs: list[PageRef], work: Path
) -> list[Row]:
    """Median wall and CPU seconds per contender. CPU time is counted where this process can see
    it (itself, and the pdftoppm children it waits for), not in the pool's workers."""
    docs = sorted({ref.doc_id for ref in refs})
    rows = []
    for label, fmt in [("pdftoppm -png (zlib default)", ["-png"]), ("pdftoppm raw PPM", [])]:
        run = lambda fmt=fmt: _pdftoppm(args, docs, fmt, work)  # noqa: E731
        rows.append((label, 1, *_median(args.runs, run)))
    policies = [
        ("png z1, no cap", RenderPolicy(max_side=UNCAPPED)),
        ("png z1, cap 1280 (default)", RenderPolicy()),
        ("jpeg q90, cap 1280", RenderPolicy(format="jpeg")),
    ]
    for name, policy in policies:
        for workers in (1, 2):
            label = f"docthink {name}, " + ("1 process" if workers == 1 else "pool 2 workers")
            run = lambda p=policy, w=workers: _docthink(corpus_dir, refs, p, w)  # noqa: E731
            wall, cpu, mpx = _median(args.runs, run)
            rows.append((label, workers, wall, cpu if workers == 1 else None, mpx))
    return rows


def _median(runs: int, run: Callable[[], tuple[float, float, float]]) -> tuple[float, float, float]:
    results = [run() for _ in range(runs)]
    wall = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    return wall, cpu, results[0][2]


def _pdftoppm(
    args: argparse.Namespace, docs: list[str], fmt: list[str], work: Path
) -> tuple[float, float]:
    out = work / "pdftoppm"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    started, cpu_started = time.perf_counter(), _children_cpu()
    for index, doc_id in enumerate(docs):
        command = ["/usr/bin/pdftoppm", "-q", *fmt, "-r", str(DPI), "-f", "1", "-l"]
        command += [str(args.pages_per_doc), str(args.docs / doc_id), str(out / f"d{index}")]
        subprocess.run(command, check=True)
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu_started
    sizes = [_image_size(path) for path in out.iterdir()]
    return seconds, cpu, sum(w * h for w, h in sizes) / len(sizes) / 1e6


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _docthink(
    corpus_dir: Path, refs: list[PageRef], policy: RenderPolicy, workers: int
) -> tuple[float, float, float]:
    layout = Layout(corpus_dir)
    shutil.rmtree(layout.images, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{layout.render_index}{suffix}").unlink(missing_ok=True)
    with Corpus.open(corpus_dir) as corpus:
        started, cpu_started = time.perf_counter(), time.process_time()
        if workers == 1:
            _in_process(corpus, refs, policy)
        else:
            corpus.ensure_images(refs, policy, workers=workers)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        parts = corpus.ensure_images(refs, policy)
        assert corpus.rendered == (len(refs) if workers > 1 else 0)  # all rendered, once
    sizes = [_image_size(part.path) for part in parts]
    return seconds, cpu, sum(w * h for w, h in sizes) / len(sizes) / 1e6


def _in_process(corpus: Corpus, refs: list[PageRef], policy: RenderPolicy) -> None:
    """The worker's own code (one task per document), run in this process, plus the index rows."""
    index = RenderIndex(corpus.layout.render_index)
    index.register(policy)
    by_doc: dict[str, list[int]] = {}
    for ref in refs:
        by_doc.setdefault(ref.doc_id, []).append(ref.page)
    for doc_id, pages in by_doc.items():
        document = corpus.document(doc_id)
        task = RenderTask(
            str(corpus.layout.root), str(document.path), document.sha256, tuple(pages), policy
        )
        index.record(render_task(task))
    index.close()


def _image_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as file:
        head = file.read(64)
    if head.startswith(b"\x89PNG"):
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"P6"):
        width, height = head.split()[1:3]
        return int(width), int(height)
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _print(rows: list[Row], n_pages: int) -> None:
    """Per core = pages/s divided by the processes rendering. On a shared machine the wall-clock
    figures move with other people's load; pages per CPU-second do not."""
    base_wall, base_cpu = n_pages / rows[0][2], n_pages / rows[0][3]  # pdftoppm PNG
    print(
        f"{'contender':<50} {'Mpx/page':>8} {'pages/s':>8} {'per core':>9} {'ratio':>6}"
        f" {'pages/CPU-s':>12} {'ratio':>6}"
    )
    for label, cores, wall, cpu, mpx in rows:
        per_core = n_pages / wall / cores
        line = f"{label:<50} {mpx:>8.2f} {n_pages / wall:>8.2f} {per_core:>9.2f}"
        line += f" {per_core / base_wall:>5.1f}x"
        if cpu is not None:
            line += f" {n_pages / cpu:>12.2f} {n_pages / cpu / base_cpu:>5.1f}x"
        print(line)
    print("ratio: against pdftoppm -png, one process (per core, then per CPU-second)")


if __name__ == "__main__":
    main()
