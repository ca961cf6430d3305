"""A cold `docthink search` with semantic search on: a new process per query, as a person types it.

    python benchmarks/bench_search_cold.py [--pipelines 1000] [--repeats 5] [--keep DIR]

Builds once (reused with --keep) a registry of `--pipelines` x 10 generated runs with their notes
(tests/registry/history.py), indexed with embeddings. Then, `--repeats` times in turn, each a
fresh `python -m docthink.cli search QUERY` process (the page cache warm, the process cold), for
  docthink          the encoder of docthink.core.embedding (numpy forward pass, tokenizers),
  sentence-transf.  the same command with the encoder it replaced: SentenceTransformer on the
                    same weights, torch at one thread (what every search loaded before),
the wall time and peak RSS (`wait4` rusage of the child), medians; and checks both print the same
hits. Goal: under 1.5 s and under 400 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERIES = (
    "training diverged early so we reduced the learning rate",
    "ran out of GPU memory on lengthy PDFs, shrank the images",
    "the grader replied in the wrong language",
    "LoRA rank 16 underfits",
    "storage was exhausted while writing weights and the training died",
)

# The command as it ran before docthink.core.embedding: sentence-transformers and torch loaded for
# every search (registry/embed.py of earlier commits), the rest of the command unchanged.
BASELINE = """
import sys
import numpy as np
import docthink.core.embedding

class SentenceTransformersEncoder:
    name, dim = docthink.core.embedding.MODEL_NAME, docthink.core.embedding.DIM

    def __init__(self):
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer
        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(1)
        self.model = SentenceTransformer(str(docthink.core.embedding.model_dir()), device="cpu",
                                         local_files_only=True)

    def encode(self, texts, *, max_tokens=256, batch_size=64):
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

docthink.core.embedding.minilm = SentenceTransformersEncoder
from docthink.cli import main
sys.argv = ["docthink", *sys.argv[1:]]
main()
"""


def build(folder: Path, pipelines: int) -> Path:
    from docthink.core.embedding import minilm
    from docthink.registry.index import update_index
    from docthink.runs.registry import Registry
    from tests.registry.history import history, record_bulk

    path = folder / "registry.sqlite"
    if path.exists():
        return path
    t0 = time.perf_counter()
    with Registry(path) as registry:
        record_bulk(registry, history(pipelines, seed=1))
        stats = update_index(registry, minilm())
        runs = registry.count()
    print(f"registry: {runs:,} runs, {stats.embedded:,} texts embedded; built in "
          f"{time.perf_counter() - t0:.0f} s (once)")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the registry here (reused if there)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-search-cold-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = build(folder, args.pipelines)
    commands = {
        "docthink": [sys.executable, "-m", "docthink.cli"],
        "sentence-transformers": [sys.executable, "-c", BASELINE],
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for i in range(args.repeats):
        query = QUERIES[i % len(QUERIES)]
        outputs = {}
        for name, prefix in commands.items():
            wall, rss, out = _measured([*prefix, "search", query, "--registry", str(path)])
            results[name].append((wall, rss))
            outputs[name] = out
        if outputs["docthink"] != outputs["sentence-transformers"]:
            raise SystemExit(f"the two encoders rank {query!r} differently:\n"
                             f"{outputs['docthink']}\n---\n{outputs['sentence-transformers']}")
    report(results, args.repeats)


def _measured(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, the child's own) and stdout."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err = proc.stderr.read().decode() if proc.stderr else ""
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{argv[:4]} failed: {err[-2000:]}")
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def report(results: dict[str, list[tuple[float, float]]], repeats: int) -> None:
    med = {name: (statistics.median(w for w, _ in runs), statistics.median(m for _, m in runs))
           for name, runs in results.items()}
    print(f"cold `docthink search` (semantic on), {os.cpu_count()} CPUs, median of {repeats}:")
    print(f"{'':24s} {'wall s':>7s} {'peak RSS MB':>12s}   runs (wall s)")
    for name, (wall, rss) in med.items():
        runs = " ".join(f"{w:.2f}" for w, _ in results[name])
        print(f"{name:24s} {wall:7.2f} {rss:12.0f}   {runs}")
    ours, base = med["docthink"], med["sentence-transformers"]
    print(f"docthink: {ours[0]:.2f} s (goal < 1.5: {'met' if ours[0] < 1.5 else 'MISSED'}), "
          f"{ours[1]:.0f} MB (goal < 400: {'met' if ours[1] < 400 else 'MISSED'}); "
          f"{base[0] / ours[0]:.1f}x faster and {base[1] / ours[1]:.1f}x less memory than "
          "sentence-transformers; same hits for every query")


if __name__ == "__main__":
    main()
