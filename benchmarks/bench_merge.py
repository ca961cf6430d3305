"""Streaming merge vs mergekit 0.1.5 vs copying the input bytes, on a 0.63B-parameter bf16 model.

    python benchmarks/bench_merge.py [--workdir DIR] [--repeats 3] [--clean]

Builds a Qwen2-style text model (Qwen2.5-0.5B shapes, untied head; random weights) as base and
base + noise as tuned, saved sharded at 1 GB, into DIR once (reused when present). Then, each
as its own process, `--repeats` times in turn, median reported: wall time, CPU time and peak RSS
(`wait4` rusage of the child) of
  copy       `shutil.copyfile` of both inputs' weight files (the I/O floor),
  first      `merge_checkpoints` at alpha 0.5 of inputs never seen: every input and output byte
             hashed (BLAKE3) as it is read or written,
  known      the same with a registry that knows the inputs' digests (recorded by an earlier
             `docthink merge` of the same files, which this script runs once to set it up): the
             common case of merging a checkpoint again at another strength, or a base model
             used before; outputs still hashed,
  sweep      `merge_checkpoints` at alphas 0.25, 0.5, 1.0 in one pass, inputs known,
  mergekit   `mergekit-yaml` task_arithmetic (normalize: false, --lazy-unpickle) when found (env
             MERGEKIT_YAML, else PATH), twice: float32 arithmetic and bf16 output (`dtype:
             float32`, as docthink computes), and mergekit's default (no dtype: arithmetic in
             the inputs' bf16).
Goals: docthink <= 0.5x mergekit's time and peak memory, <= 2x the copy floor; sweep << 3x single.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ALPHA = 0.5
SWEEP = (0.25, 0.5, 1.0)


def build_models(workdir: Path) -> tuple[Path, Path]:
    """The two checkpoints, built in a spawned process when missing: a child's peak RSS counts
    its parent's at the fork (Linux keeps it across exec), so this process never loads torch."""
    base, tuned = workdir / "base", workdir / "tuned"
    if not ((base / "config.json").exists() and (tuned / "config.json").exists()):
        builder = multiprocessing.get_context("spawn").Process(target=_build, args=(workdir,))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            raise SystemExit(f"building the models into {workdir} failed")
    return base, tuned


def _build(workdir: Path) -> None:
    base, tuned = workdir / "base", workdir / "tuned"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=False, max_position_embeddings=4096)  # fmt: skip
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen2ForCausalLM(config).eval()
    print(
        f"building {sum(p.numel() for p in model.parameters()) / 1e9:.3f}B parameters into {workdir}"
    )
    model.save_pretrained(base, max_shard_size="1GB")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.01)
    model.save_pretrained(tuned, max_shard_size="1GB")


def run_child(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one child process."""
    os.sync()  # start every run without dirty pages from the previous one
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def commands(base: Path, tuned: Path, out: Path, registry: Path,
             mergekit: str | None) -> dict[str, list[str]]:
    weights = [p for d in (base, tuned) for p in sorted(d.glob("model*.safetensors"))]
    copy = "import shutil,sys\nfor i,p in enumerate(sys.argv[2:]): shutil.copyfile(p, f'{sys.argv[1]}/{i}')"
    merge = ("import sys; from docthink.merge.core import merge_checkpoints as m; a=[float(x) for x in sys.argv[3].split(',')];"
             "m(sys.argv[1], sys.argv[2], a, [f'{sys.argv[4]}/{x}' for x in a])")  # fmt: skip
    known = ("import sys; from docthink.merge.core import merge_checkpoints as m; from docthink.core.hashing import ALGORITHM;"
             "from docthink.runs import Registry; r=Registry(__import__('pathlib').Path(sys.argv[5]));"
             "a=[float(x) for x in sys.argv[3].split(',')];"
             "m(sys.argv[1], sys.argv[2], a, [f'{sys.argv[4]}/{x}' for x in a],"
             " known_digest=lambda p, f: r.known_digest(str(p.resolve()), ALGORITHM, f))")  # fmt: skip
    cmds = {
        "copy": [sys.executable, "-c", copy, str(out), *map(str, weights)],
        "first": [sys.executable, "-c", merge, str(base), str(tuned), str(ALPHA), str(out)],
        "known": [sys.executable, "-c", known, str(base), str(tuned), str(ALPHA), str(out),
                  str(registry)],
        "sweep": [sys.executable, "-c", known, str(base), str(tuned), ",".join(map(str, SWEEP)),
                  str(out), str(registry)],
    }
    if mergekit:
        for name, dtypes in (("mergekit", {"dtype": "float32", "out_dtype": "bfloat16"}),
                             ("mergekit-bf16", {})):
            config = {"merge_method": "task_arithmetic", "base_model": str(base),
                      "parameters": {"normalize": False},
                      "models": [{"model": str(tuned), "parameters": {"weight": ALPHA}}], **dtypes}
            (out.parent / f"{name}.yaml").write_text(json.dumps(config))
            cmds[name] = [mergekit, str(out.parent / f"{name}.yaml"), str(out / "mk"),
                          "--lazy-unpickle", "--no-copy-tokenizer", "--quiet"]  # fmt: skip
    return cmds


def remember_inputs(base: Path, tuned: Path, workdir: Path) -> Path:
    """A registry that knows the inputs' digests: one `docthink merge` of them, recorded."""
    registry = workdir / "registry.sqlite"
    if not registry.exists():
        out = workdir / "remember"
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "docthink.cli", "merge", "--base", str(base),
                        "--tuned", str(tuned), "--alpha", str(ALPHA), "--out", str(out),
                        "--runs-dir", str(workdir / "runs"), "--registry", str(registry)],
                       check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(out)
    from docthink.runs import Registry

    with Registry(registry) as reg:
        known = reg.db.execute("SELECT count(*) FROM file_digests").fetchone()[0]
    if known < len(list(base.glob("model*"))) + len(list(tuned.glob("model*"))):
        raise SystemExit(f"{registry} knows {known} input files only (written too recently? "
                         "run again in a few seconds)")
    return registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/docthink-bench-merge"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clean", action="store_true", help="delete the built models at the end")
    args = parser.parse_args()
    base, tuned = build_models(args.workdir)
    registry = remember_inputs(base, tuned, args.workdir)
    mergekit = os.environ.get("MERGEKIT_YAML") or shutil.which("mergekit-yaml")
    out = args.workdir / "out"
    cmds = commands(base, tuned, out, registry, mergekit)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cmds}
    try:
        for _ in range(args.repeats):
            for name, argv in cmds.items():
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                results[name].append(run_child(argv))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if args.clean:
            shutil.rmtree(args.workdir, ignore_errors=True)
    report(base, tuned, results, mergekit, args.repeats)


def report(base: Path, tuned: Path, results, mergekit: str | None, repeats: int) -> None:
    size = sum(p.stat().st_size for d in (base, tuned) for p in d.glob("model*.safetensors")) / 1e9
    print(f"inputs: 2 checkpoints, {size:.2f} GB of bf16 safetensors; {os.cpu_count()} CPUs; "
          f"median of {repeats}")
    med = {name: tuple(statistics.median(r[i] for r in runs) for i in range(3))
           for name, runs in results.items()}
    labels = {"copy": "copy inputs (I/O floor)", "first": f"docthink alpha={ALPHA}, first",
              "known": f"docthink alpha={ALPHA}, inputs known", "sweep": f"docthink sweep {SWEEP}",
              "mergekit": f"mergekit-yaml float32 a={ALPHA}",
              "mergekit-bf16": f"mergekit-yaml bf16 a={ALPHA}"}  # fmt: skip
    print(f"{'':34s} {'wall s':>7s} {'CPU s':>7s} {'peak RSS MB':>12s}   runs (wall s)")
    for name, (wall, cpu, rss) in med.items():
        runs = " ".join(f"{w:.2f}" for w, _, _ in results[name])
        print(f"{labels[name]:34s} {wall:7.2f} {cpu:7.2f} {rss:12.0f}   {runs}")
    copy, first, known, sweep = med["copy"], med["first"], med["known"], med["sweep"]
    print(f"docthink / copy floor time, inputs known: {known[0] / copy[0]:.2f}x (goal <= 2)")
    print(f"docthink / copy floor time, first merge:  {first[0] / copy[0]:.2f}x")
    print(f"sweep of 3 / single merge:    {sweep[0] / known[0]:.2f}x (3 single merges = 3x; goal well under)")
    if mergekit:
        for name in ("mergekit", "mergekit-bf16"):
            mk = med[name]
            print(f"docthink (first) / {name}: time {first[0] / mk[0]:.2f}x, "
                  f"peak RSS {first[2] / mk[2]:.2f}x (goal <= 0.5)")
    else:
        print("mergekit-yaml not found (set MERGEKIT_YAML or put it on PATH): no mergekit ratios")


if __name__ == "__main__":
    main()
