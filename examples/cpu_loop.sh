#!/usr/bin/env bash
# The whole loop on CPU in about three minutes, with a tiny randomly initialised Qwen2.5-VL built
# on the spot (its scores mean nothing; the path, the <cot> switch and the run lineage are what it
# shows): sample PDFs -> corpus -> traces (offline teacher) -> TRL export -> SFT on plain QA (the
# base) -> SFT on the think mixture -> merge at 0.25 -> the <cot> switch, measured -> evaluation
# with and without <cot> -> leaderboard.
#
#   bash examples/cpu_loop.sh [OUT]
#
# OUT: a new folder for everything the loop writes (default: a fresh folder under $TMPDIR).
# DOCTHINK_LOOP_SEED: the seed of the random model and of both trainings (default 0).
# Needs: pip install -e '.[train]'. The settings are the files in examples/cpu_loop/, which
# tests/train/test_loop.py runs too; they make a 0.3M-parameter model learn the switch (lr 3e-3,
# 200 steps), they are not the paper's (5e-6).
set -euo pipefail
recipes=$(cd "$(dirname "$0")/cpu_loop" && pwd)
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/docthink-loop.XXXXXX")}
seed=${DOCTHINK_LOOP_SEED:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# One thread: the tiny model's operations are too small to share, threads only wait on each other
# (4x slower on a busy 2-core machine), and the test measured its figures with one thread too.
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 DOCTHINK_REGISTRY="$out/registry.sqlite"
runs=(--runs-dir "$out/runs")
echo "loop outputs: $out"

docthink samples "$out/sample" --docs 10 --seed 5
docthink ingest "$out/sample/pdfs" --out "$out/corpus" "${runs[@]}"
# the shared synthesis settings, plus this run's plain QA file (the sample questions again)
python -c 'import sys, yaml; r = yaml.safe_load(open(sys.argv[1])); r["export"]["plain_qa"] = sys.argv[2]; print(yaml.safe_dump(r))' \
    "$recipes/synth.yaml" "$out/sample/questions.jsonl" > "$out/synth.yaml"
docthink synth --recipe "$out/synth.yaml" --corpus "$out/corpus" \
    --questions "$out/sample/questions.jsonl" --out "$out/synth" "${runs[@]}"
docthink export "$out/synth" --format trl --out "$out/export" "${runs[@]}"

python -c 'import sys; from pathlib import Path; from docthink.testing import build_tiny_vlm; build_tiny_vlm(Path(sys.argv[1]), seed=int(sys.argv[2]))' \
    "$out/factory" "$seed"
train=(--data "$out/export" --seed "$seed" "${runs[@]}")
docthink train "$recipes/base.yaml" --model "$out/factory" --out "$out/base" "${train[@]}"
docthink train "$recipes/think.yaml" --model "$out/base/model" --out "$out/think" --merge 0.25 \
    "${train[@]}"

python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [json.loads(line) for line in (out / "sample" / "questions.jsonl").open()]
bench = [{"doc_id": r["doc_id"], "doc_type": "Financial report", "question": r["question"],
          "answer": r["answer"], "evidence_pages": str(r["source_pages"]),
          "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Str"} for r in rows]
(out / "samples.json").write_text(json.dumps(bench))
PY
for model in "$out/think/model" "$out/think/merged-0.25"; do
    name=$(basename "$model")  # model, merged-0.25
    { cat "$recipes/eval.yaml"; echo "model: {kind: local, path: $model}"; } > "$out/eval-$name.yaml"
    docthink eval run "$out/eval-$name.yaml" --data "$out/samples.json" --corpus "$out/corpus" \
        --out "$out/eval-$name" "${runs[@]}"
done

# The switch in numbers: the training prompts with their token taken out, asked with <cot> as the
# system message and without it (greedy); then the same count on the evaluation's responses.
python - "$out" "$recipes/think.yaml" <<'PY'
import json, sys
from pathlib import Path
import yaml
from docthink.train.data import mix, read_export
from docthink.train.recipe import MixtureSettings
from docthink.train.switch import measure_switch

out = Path(sys.argv[1])
mixture = MixtureSettings(**yaml.safe_load(Path(sys.argv[2]).read_text())["mixture"])
rows, _ = mix(read_export(out / "export"), mixture, 0)
print(f"\nthe <cot> switch on the {len(rows)} training prompts: answers opening <think>, "
      "P(<think> as the first token)")
print(f"  {'':22} {'with <cot>':>22} {'without':>22}")
models = {"base (plain QA SFT)": out / "base" / "model", "trained (think SFT)": out / "think" /
          "model", "merged at 0.25": out / "think" / "merged-0.25"}
for name, model in models.items():
    r = measure_switch(model, rows, max_new_tokens=16)
    arms = [f"{a.opens_think:>3}/{a.n}  P {a.p_think:.2e}" for a in (r.with_cot, r.without_cot)]
    print(f"  {name:22} {arms[0]:>22} {arms[1]:>22}")
print("\nthe evaluation (20 questions, 256 tokens): responses opening <think> (closing it)")
for name in ("model", "merged-0.25"):
    preds = [json.loads(line) for line in (out / f"eval-{name}" / "predictions.jsonl").open()]
    counts = []
    for mode in ("cot", "plain"):
        said = [str(p["response"]) for p in preds if p["mode"] == mode and p["response"] is not None]
        opened = [s for s in said if s.startswith("<think>")]
        closed = sum("</think>" in s for s in opened)
        counts.append(f"{mode} {len(opened)}/{len(said)} ({closed})")
    print(f"  {name:22} {counts[0]:>22} {counts[1]:>22}")
print()
PY
docthink leaderboard --html "$out/leaderboard.html"
docthink runs list --limit 20
echo "loop outputs: $out"
