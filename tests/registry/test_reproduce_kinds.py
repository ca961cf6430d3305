"""`docthink reproduce RUN --run` for every kind of run in the stage table: each kind reruns from
its recorded recipe alone (`docthink COMMAND --recipe FILE`), in the directory it was started in,
and its outputs hash the same as the recorded ones."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from docthink.runs.registry import Registry
from docthink.stages import STAGES
from tests.registry.conftest import cli

TRAIN = {"learning_rate": 1e-3, "max_steps": 2, "batch_size": 2, "grad_accum": 1,
         "gradient_checkpointing": False, "seed": 0, "mixture": {"max_pages": 24}}


@dataclass(frozen=True)
class Chain:
    root: Path
    registry: Path
    runs: dict[str, str]  # kind -> run id


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """One run of every stage, from inside the folder with relative paths, as people type them."""
    from docthink.testing import build_tiny_vlm

    root = tmp_path_factory.mktemp("chain")
    common = ("--runs-dir", "runs", "--registry", "registry.sqlite")
    here = Path.cwd()
    os.chdir(root)
    try:
        cli("samples", "sample", "--docs", "2", "--seed", "4")
        cli("ingest", "sample/pdfs", "--out", "corpus", *common)
        Path("questions.yaml").write_text("embedding: {model: tfidf}\n", encoding="utf-8")
        cli("questions", "--corpus", "corpus", "--out", "questions", "--recipe", "questions.yaml",
            *common)
        Path("tasks.yaml").write_text("embedding: {model: tfidf}\n", encoding="utf-8")
        cli("tasks", "--corpus", "corpus", "--out", "tasks", "--recipe", "tasks.yaml", *common)
        Path("synth.yaml").write_text("image: {max_side: 64}\n", encoding="utf-8")
        cli("synth", "--corpus", "corpus", "--questions", "sample/questions.jsonl", "--out",
            "synth", "--recipe", "synth.yaml", *common)
        cli("export", "synth", "--format", "trl", "--out", "export", *common)
        facts = [json.loads(line) for line in Path("sample/questions.jsonl").read_text().splitlines()]
        samples = [{"doc_id": f["doc_id"], "doc_type": "Financial report", "question": f["question"],
                    "answer": f["answer"], "evidence_pages": str(f["source_pages"]),
                    "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Str"}
                   for f in facts]
        Path("samples.json").write_text(json.dumps(samples), encoding="utf-8")
        cli("eval", "run", "--data", "samples.json", "--corpus", "corpus", "--out", "eval", *common)
        cli("eval", "rescore", "eval/predictions.jsonl", "--data", "samples.json", "--out",
            "rescore/report.json", *common)
        build_tiny_vlm(root / "base")
        Path("train.yaml").write_text(yaml.safe_dump(
            {"model": "base", "data": "export", "out": "trained", **TRAIN}), encoding="utf-8")
        cli("train", "train.yaml", *common)
        cli("merge", "--base", "base", "--tuned", "trained/model", "--alpha", "0.5", "--out",
            "merged", *common)
    finally:
        os.chdir(here)
    with Registry(root / "registry.sqlite") as registry:
        runs = {r.kind: r.id for r in registry.list(limit=100)}
    return Chain(root, root / "registry.sqlite", runs)


def test_the_chain_has_a_run_of_every_stage(chain: Chain) -> None:
    assert set(chain.runs) == set(STAGES)


@pytest.mark.parametrize("kind", list(STAGES))
def test_every_kind_reruns_with_identical_outputs(chain: Chain, kind: str, tmp_path: Path) -> None:
    registry = tmp_path / "registry.sqlite"
    registry.write_bytes(chain.registry.read_bytes())
    run_id = chain.runs[kind]
    out = cli("reproduce", run_id, "--run", "--out", tmp_path / "again", "--registry", registry)
    with Registry(registry) as reg:
        record = reg.get(run_id)
    assert record.cwd == str(chain.root)
    assert f"docthink {' '.join(STAGES[kind].command)}" in out
    n = len(record.outputs())
    assert n > 0 and f"identical outputs: {n} same, 0 different, 0 missing" in out
