"""Render throughput at 144 dpi: docthink's pipeline (render + encode + store + index) against
poppler's pdftoppm on the same real pages, in the same run, each docthink row paired with the
pdftoppm output it compares to (same pixels; same compression where pdftoppm has it), and every
row's output size reported beside its speed.

    python benchmarks/bench_render.py [--docs DIR] [--pages-per-doc 4] [--runs 3]

Needs poppler's /usr/bin/pdftoppm (Debian: `apt-get install poppler-utils`).

What pdftoppm offers (poppler 22.12, `pdftoppm -h`): raw PPM (no compression, its fastest
output); `-png` without a level option (its PNGs are zlib level 9: their IDAT stream is
byte-identical to zlib level 9 with the Z_FILTERED strategy); `-jpeg` with `-jpegopt quality=N`
(chroma subsampled 4:2:0, libjpeg's default, not settable); `-tiff`; and `-r` (dpi) or
`-scale-to` (which also enlarges small pages, so the 1280 px cap is given to pdftoppm as the `-r`
that docthink's policy picks for each page). The pairings:

- same pixels (144 dpi, no cap) as PNG at the same zlib level 9: `pdftoppm -png` against docthink
  with `png_compress_level=9` (the zlib strategy and row filters are each encoder's own: libpng
  there, Pillow here; the sizes show what that changes);
- same pixels, no compression: pdftoppm's PPM against docthink's PNG at level 0 (stored blocks);
- docthink's default policy (PNG zlib 1, longest side 1280 px) against pdftoppm at the same pixels:
  its fastest output (PPM, larger files than docthink's) and its PNG (level 9, smaller files);
- JPEG quality 90 at the cap: `pdftoppm -jpeg -jpegopt quality=90` against docthink's JPEG policy
  (which keeps chroma at 4:4:4, so its files are larger).

Pages: the first N pages of every PDF in DIR (default: the 37 MMLongBench-Doc PDFs). Each figure is
the median of --runs rounds; each round runs every contender once, in turn, so slow drifts of a
shared machine's load fall on all of them; every docthink run starts from an empty image store.
Size: the files as written, kB (1,000 bytes) per page. "per core" divides pages/s by the processes
rendering (1, or the pool's workers); CPU time is counted where this process can see it (itself,
and the pdftoppm children it waits for), not in the pool's workers.
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
from dataclasses import dataclass
from itertools import groupby
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
CAPPED = RenderPolicy()  # the default policy: 144 dpi, longest side at most 1280 px

# key: (label, pdftoppm format options, whether pages are capped as CAPPED caps them)
PDFTOPPM = {
    "ppm": ("pdftoppm PPM (no compression), no cap", [], False),
    "png": ("pdftoppm -png (zlib 9), no cap", ["-png"], False),
    "ppm cap": ("pdftoppm PPM (no compression), cap 1280", [], True),
    "png cap": ("pdftoppm -png (zlib 9), cap 1280", ["-png"], True),
    "jpeg cap": ("pdftoppm -jpeg q90 (4:2:0), cap 1280", ["-jpeg", "-jpegopt", "quality=90"], True),
}
# (label, policy, processes, the pdftoppm rows it is compared with)
DOCTHINK = [
    ("docthink png z0, no cap", RenderPolicy(max_side=UNCAPPED, png_compress_level=0), 1,
     ["ppm"]),
    ("docthink png z9, no cap", RenderPolicy(max_side=UNCAPPED, png_compress_level=9), 1,
     ["png"]),
    ("docthink png z1, cap 1280 (default)", CAPPED, 1, ["ppm cap", "png cap"]),
    ("docthink png z1, cap 1280 (default), pool", CAPPED, 2, ["ppm cap", "png cap"]),
    ("docthink jpeg q90 (4:4:4), cap 1280", RenderPolicy(format="jpeg"), 1, ["jpeg cap"]),
]  # fmt: skip


@dataclass(frozen=True)
class Output:
    """One run of one contender."""

    wall_s: float
    cpu_s: float
    mpx: float  # megapixels per page
    kb: float  # kB written per page


@dataclass(frozen=True)
class Row:
    label: str
    processes: int
    wall_s: float
    cpu_s: float | None  # None: the work ran in pool workers this process does not time
    mpx: float
    kb: float


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
            jobs = {capped: _pdftoppm_jobs(corpus, refs, capped) for capped in (False, True)}
        print(
            f"sample: {len(refs)} pages (first {args.pages_per_doc} of {summary.ok} PDFs in "
            f"{args.docs}), {DPI} dpi, median of {args.runs} rounds, {os.cpu_count()} cores; "
            f"{_pdftoppm_version()}"
        )
        print(
            f"(ingest before timing: {summary.pages} pages, text layer of every page, "
            f"{ingest_s:.1f} s on 2 workers = {summary.pages / ingest_s:.0f} pages/s)\n"
        )
        rows = _measure(args.runs, corpus_dir, refs, jobs, work)
        _print(rows, len(refs))
    finally:
        shutil.rmtree(work)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    parser.add_argument("--pages-per-doc", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args()


Job = tuple[Path, int, int, float]  # PDF, first page, last page, dpi


def _pdftoppm_jobs(corpus: Corpus, refs: list[PageRef], capped: bool) -> list[Job]:
    """pdftoppm invocations over the sample: one per document, or, capped, one per run of
    consecutive pages that the default policy renders at the same dpi."""
    jobs = []
    for doc_id, doc_refs in groupby(refs, key=lambda r: r.doc_id):
        document = corpus.document(doc_id)
        pages = [(r.page, _dpi(document.page_sizes[r.page - 1], capped)) for r in doc_refs]
        for dpi, run in groupby(pages, key=lambda p: p[1]):
            numbers = [page for page, _ in run]
            jobs.append((document.path, numbers[0], numbers[-1], dpi))
    return jobs


def _dpi(size_pt: tuple[float, float], capped: bool) -> float:
    return CAPPED.scale(*size_pt) * 72 if capped else DPI


def _pdftoppm_version() -> str:
    done = subprocess.run(["/usr/bin/pdftoppm", "-v"], capture_output=True, text=True, check=True)
    return done.stderr.splitlines()[0]


def _measure(
    runs: int, corpus_dir: Path, refs: list[PageRef], jobs: dict[bool, list[Job]], work: Path
) -> dict[str, Row]:
    contenders: dict[str, tuple[int, Callable[[], Output]]] = {}
    for key, (_, fmt, capped) in PDFTOPPM.items():
        contenders[key] = (1, lambda f=fmt, c=capped: _pdftoppm(jobs[c], f, work))
    for label, policy, processes, _ in DOCTHINK:
        contenders[label] = (
            processes, lambda p=policy, w=processes: _docthink(corpus_dir, refs, p, w)
        )
    outputs: dict[str, list[Output]] = {key: [] for key in contenders}
    for _ in range(runs):
        for key, (_, run) in contenders.items():
            outputs[key].append(run())
    rows = {}
    for key, (processes, _) in contenders.items():
        label = PDFTOPPM[key][0] if key in PDFTOPPM else key
        done = outputs[key]
        cpu = statistics.median(o.cpu_s for o in done) if processes == 1 else None
        rows[key] = Row(label, processes, statistics.median(o.wall_s for o in done), cpu,
                        done[0].mpx, done[0].kb)  # fmt: skip
    return rows


def _pdftoppm(jobs: list[Job], fmt: list[str], work: Path) -> Output:
    out = work / "pdftoppm"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    started, cpu_started = time.perf_counter(), _children_cpu()
    for index, (pdf, first, last, dpi) in enumerate(jobs):
        command = ["/usr/bin/pdftoppm", "-q", *fmt, "-r", f"{dpi:.6f}", "-f", str(first)]
        command += ["-l", str(last), str(pdf), str(out / f"j{index}")]
        subprocess.run(command, check=True)
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu_started
    return _output(seconds, cpu, sorted(out.iterdir()))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _docthink(corpus_dir: Path, refs: list[PageRef], policy: RenderPolicy, workers: int) -> Output:
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
    return _output(seconds, cpu, [part.path for part in parts])


def _output(seconds: float, cpu: float, files: list[Path]) -> Output:
    sizes = [_image_size(path) for path in files]
    mpx = sum(w * h for w, h in sizes) / len(sizes) / 1e6
    kb = sum(path.stat().st_size for path in files) / len(files) / 1e3
    return Output(seconds, cpu, mpx, kb)


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


def _print(rows: dict[str, Row], n_pages: int) -> None:
    """Per core = pages/s divided by the processes rendering. On a shared machine the wall-clock
    figures move with other people's load; pages per CPU-second do not."""
    print(f"{'contender':<48} {'Mpx/page':>8} {'kB/page':>8} {'pages/s':>8} {'per core':>9} "
          f"{'pages/CPU-s':>12}")  # fmt: skip
    for row in rows.values():
        line = f"{row.label:<48} {row.mpx:>8.2f} {row.kb:>8.0f} {n_pages / row.wall_s:>8.2f}"
        line += f" {n_pages / row.wall_s / row.processes:>9.2f}"
        if row.cpu_s is not None:
            line += f" {n_pages / row.cpu_s:>12.2f}"
        print(line)
    print("\npairs (docthink / pdftoppm at the same pixels): speed per core, per CPU-second; size")
    for label, _, _, baselines in DOCTHINK:
        ours = rows[label]
        for key in baselines:
            base = rows[key]
            # Same pixels within rounding (each renderer rounds a page's size its own way).
            assert abs(ours.mpx / base.mpx - 1) < 0.01, (label, key, ours.mpx, base.mpx)
            speed = base.wall_s * base.processes / (ours.wall_s * ours.processes)
            line = f"  {label:<44} vs {base.label:<40} {speed:5.1f}x per core"
            if ours.cpu_s is not None and base.cpu_s is not None:
                line += f", {base.cpu_s / ours.cpu_s:5.1f}x per CPU-second"
            print(f"{line}; size {ours.kb:.0f} / {base.kb:.0f} kB = {ours.kb / base.kb:.2f}x")


if __name__ == "__main__":
    main()
