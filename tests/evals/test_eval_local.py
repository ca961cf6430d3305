"""`docthink eval run` on a tiny local checkpoint from the factory, end to end on CPU, with and
without `<cot>`: generated PDFs -> corpus -> page images -> transformers generation -> extraction
-> report. The random model's score means nothing; the path, the token counts and the report are
what is tested."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from docthink.runs import Registry
from docthink.testing import build_tiny_vlm
from tests.evals.conftest import Planted
from tests.evals.helpers import read_jsonl
from tests.helpers import docthink

MAX_TOKENS = 12


def test_local_checkpoint_end_to_end_with_and_without_cot(planted: Planted, tmp_path: Path) -> None:
    checkpoint = build_tiny_vlm(tmp_path / "tiny")
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": str(planted.data), "documents": str(planted.documents), "out": str(tmp_path / "out"),
        "model": {"kind": "local", "path": str(checkpoint), "device": "cpu", "dtype": "float32",
                  "batch_size": 4},
        "inference": {"max_pages": 3, "max_tokens": MAX_TOKENS},
    }))  # fmt: skip
    docthink("eval", "run", recipe, "--runs-dir", tmp_path / "runs")

    out = tmp_path / "out"
    n = len(planted.rows) - 1  # one row's PDF is missing
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [(p["index"], p["mode"]) for p in predictions] == [
        (i, mode) for mode in ("plain", "cot") for i in range(n)
    ]
    assert all(p["failure"] is None and isinstance(p["response"], str) for p in predictions)
    tokens = [p["output_tokens"] for p in predictions]
    assert all(isinstance(t, int) and 1 <= t <= MAX_TOKENS for t in tokens)
    # <cot> reached the model: the same question and pages get another answer with it
    by_row = {(p["index"], p["mode"]): p["response"] for p in predictions}
    assert any(by_row[i, "plain"] != by_row[i, "cot"] for i in range(n))

    report = json.loads((out / "report.json").read_text())
    assert str(report["model"]).startswith("tiny@") and str(report["model"]).endswith(":float32")
    assert report["questions"]["evaluated"] == n
    assert list(report["modes"]) == ["plain", "cot"]
    for mode, metrics in report["modes"].items():
        mode_tokens = [p["output_tokens"] for p in predictions if p["mode"] == mode]
        assert metrics["n"] == n
        assert metrics["mean_output_tokens"] == sum(mode_tokens) / n
    markdown = (out / "report.md").read_text()
    assert "| metric | plain | cot |" in markdown

    (record,) = Registry(tmp_path / "registry.sqlite").list(kind="eval")
    assert record.status == "ok"
    usage = json.loads((Path(record.run_dir) / "summary.json").read_text())["usage"]["model"]
    assert usage["requests"] == 2 * n and usage["failures"] == 0
    assert usage["completion_tokens"] == sum(tokens)
    assert usage["prompt_tokens"] > 2 * n * 3 * 4  # three pages of at least 4 image tokens each
