#!/usr/bin/env bash
# The whole loop on CPU in a few minutes, with a tiny randomly initialised Qwen2.5-VL built on the
# spot (its scores mean nothing; the path, the token switch and the run lineage are what it shows):
# sample PDFs -> corpus -> traces (offline teacher) -> TRL export -> SFT -> merge at 0.25 ->
# evaluation with and without <cot> -> leaderboard.
# Needs: pip install -e '.[train]'. The settings are the ones tests/train/test_loop.py uses to make
# a 0.3M-parameter model learn the <cot> switch (lr 3e-3, 200 steps), not the paper's (5e-6).
set -euo pipefail
out=${1:-loop}
export HF_HUB_OFFLINE=1 DOCTHINK_REGISTRY="$out/registry.sqlite"
runs=(--runs-dir "$out/runs")
mkdir -p "$out"

docthink samples "$out/sample" --docs 10 --seed 5
docthink ingest "$out/sample/pdfs" --out "$out/corpus" "${runs[@]}"
cat > "$out/synth.yaml" <<YAML
corpus: $out/corpus
questions: $out/sample/questions.jsonl
out: $out/synth
image: {max_side: 64}
export: {plain_qa: $out/sample/questions.jsonl, plain_qa_ratio: 1.0}
YAML
docthink synth --recipe "$out/synth.yaml" "${runs[@]}"
docthink export "$out/synth" --format trl --out "$out/export" "${runs[@]}"

python -c "import sys; from pathlib import Path; from docthink.testing import build_tiny_vlm; build_tiny_vlm(Path(sys.argv[1]))" "$out/base"
cat > "$out/train.yaml" <<YAML
model: $out/base
data: $out/export
out: $out/trained
learning_rate: 0.003
lr_scheduler: constant
warmup: 0
max_steps: 200
batch_size: 4
gradient_checkpointing: false
mixture: {max_pages: 12}
YAML
docthink train "$out/train.yaml" --merge 0.25 "${runs[@]}"

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
for model in "$out/trained/model" "$out/trained/merged-0.25"; do
    name=$(basename "$model")  # model, merged-0.25
    cat > "$out/eval-$name.yaml" <<YAML
data: $out/samples.json
corpus: $out/corpus
out: $out/eval-$name
model: {kind: local, path: $model}
inference: {modes: [plain, cot], max_tokens: 32, page_index: "Page {i}:", image: {max_side: 64}, max_pages: 12}
YAML
    docthink eval run "$out/eval-$name.yaml" "${runs[@]}"
done
docthink leaderboard --html "$out/leaderboard.html"
docthink runs list --limit 20
