"""Streaming merge vs mergekit 0.1.5 vs copying the input bytes, on a 0.63B-parameter bf16 model.

    python benchmarks/bench_merge.py [--workdir DIR] [--repeats 3] [--clean]

Builds a Qwen2-style text model (Qwen2.5-0.5B shapes, untied head; random weights) as base and
base + noise as tuned, saved sharded at 1 GB, into DIR once (reused when present). Then, each
as its own process, `--repeats` times in turn, median reported: wall time and peak RSS
(`wait4` rusage of the child) of
  copy     `shutil.copyfile` of both inputs' weight files (the I/O floor),
  docthink `merge_checkpoints` at alpha 0.5,
  sweep    `merge_checkpoints` at alphas 0.25, 0.5, 1.0 in one pass,
  mergekit `mergekit-yaml` task_arithmetic (normalize: false, float32 arithmetic, bf16 output,
           --lazy-unpickle) when found (env MERGEKIT_YAML, else PATH).
Goals: docthink <= 0.5x mergekit's time and peak memory, <= 2x the copy floor; sweep << 3x single.
"""

from __future__ import annotations

import argparse
import json
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
    base, tuned = workdir / "base", workdir / "tuned"
    if (base / "config.json").exists() and (tuned / "config.json").exists():
        return base, tuned
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
    return base, tuned


def run_child(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    os.sync()  # start every run without dirty pages from the previous one
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def commands(base: Path, tuned: Path, out: Path, mergekit: str | None) -> dict[str, list[str]]:
    weights = [p for d in (base, tuned) for p in sorted(d.glob("model*.safetensors"))]
    copy = "import shutil,sys\nfor i,p in enumerate(sys.argv[2:]): shutil.copyfile(p, f'{sys.argv[1]}/{i}')"
    merge = ("import sys; from docthink.merge.core import merge_checkpoints as m; a=[float(x) for x in sys.argv[3].split(',')];"
             "m(sys.argv[1], sys.argv[2], a, [f'{sys.argv[4]}/{x}' for x in a])")  # fmt: skip
    cmds = {
        "copy": [sys.executable, "-c", copy, str(out), *map(str, weights)],
        "docthink": [sys.executable, "-c", merge, str(base), str(tuned), str(ALPHA), str(out)],
        "sweep": [
            sys.executable,
            "-c",
            merge,
            str(base),
            str(tuned),
            ",".join(map(str, SWEEP)),
            str(out),
        ],
    }
    if mergekit:
        config = {"merge_method": "task_arithmetic", "base_model": str(base), "parameters": {"normalize": False},
                  "models": [{"model": str(tuned), "parameters": {"weight": ALPHA}}],
                  "dtype": "float32", "out_dtype": "bfloat16"}  # fmt: skip
        (out.parent / "mergekit.yaml").write_text(json.dumps(config))
        cmds["mergekit"] = [mergekit, str(out.parent / "mergekit.yaml"), str(out / "mk"),
                            "--lazy-unpickle", "--no-copy-tokenizer", "--quiet"]  # fmt: skip
    return cmds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/docthink-bench-merge"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clean", action="store_true", help="delete the built models at the end")
    args = parser.parse_args()
    base, tuned = build_models(args.workdir)
    mergekit = os.environ.get("MERGEKIT_YAML") or shutil.which("mergekit-yaml")
    out = args.workdir / "out"
    cmds = commands(base, tuned, out, mergekit)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
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
    print(
        f"inputs: 2 checkpoints, {size:.2f} GB of bf16 safetensors; {os.cpu_count()} CPUs; median of {repeats}"
    )
    med = {
        name: (statistics.median(w for w, _ in runs), statistics.median(m for _, m in runs))
        for name, runs in results.items()
    }
    labels = {"copy": "copy inputs (I/O floor)", "docthink": f"docthink alpha={ALPHA}",
              "sweep": f"docthink sweep {SWEEP}", "mergekit": f"mergekit-yaml alpha={ALPHA}"}  # fmt: skip
    print(f"{'':28s} {'wall s':>8s} {'peak RSS MB':>12s}   runs (s)")
    for name, (wall, rss) in med.items():
        runs = " ".join(f"{w:.2f}" for w, _ in results[name])
        print(f"{labels[name]:28s} {wall:8.2f} {rss:12.0f}   {runs}")
    ours, copy, sweep = med["docthink"], med["copy"], med["sweep"]
    print(f"docthink / copy floor time:   {ours[0] / copy[0]:.2f}x (goal <= 2)")
    print(
        f"sweep of 3 / single merge:    {sweep[0] / ours[0]:.2f}x (3 single merges = 3x; goal well under)"
    )
    if mergekit:
        mk = med["mergekit"]
        print(f"docthink / mergekit time:     {ours[0] / mk[0]:.2f}x (goal <= 0.5)")
        print(f"docthink / mergekit peak RSS: {ours[1] / mk[1]:.2f}x (goal <= 0.5)")
    else:
        print("mergekit-yaml not found (set MERGEKIT_YAML or put it on PATH): no mergekit ratios")


if __name__ == "__main__":
    main()
