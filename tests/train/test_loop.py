"""The whole loop on CPU, through the command line: generated PDFs -> corpus -> traces with the
offline teacher -> TRL export -> SFT of a tiny factory model -> merge at 0.25 -> evaluation with
and without `<cot>` through the eval harness (LocalModel) -> every step a linked run.

And the switch: the trained model, given `<cot>` as the system message, opens a `<think>` block;
without it, it answers directly. A tiny model (0.3M parameters) learns this only with a higher
learning rate and more steps than the paper's recipe, on short documents: the settings are below
(lr 3e-3 constant, 200 steps of 4 rows, at most 12 pages per example, pages 64 px high)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from docthink.runs import Registry, RunRecord, artifact_digest
from docthink.testing import build_tiny_vlm
from docthink.train.data import mix, read_export
from docthink.train.recipe import MixtureSettings
from docthink.train.switch import SwitchReport, measure_switch
from tests.evals.helpers import read_jsonl
from tests.helpers import docthink

FULL = os.environ.get("DOCTHINK_SLOW") == "full"
# `docthink samples --seed 5 --docs 10`: six of the ten documents have 5 to 11 pages
SAMPLE_SEED, SAMPLE_DOCS, MAX_PAGES = 5, 10, 12
STEPS = 400 if FULL else 200
TRAIN = {"learning_rate": 3e-3, "lr_scheduler": "constant", "warmup": 0, "max_steps": STEPS,
         "batch_size": 4, "grad_accum": 1, "gradient_checkpointing": False, "seed": 0,
         "mixture": {"max_pages": MAX_PAGES}}  # fmt: skip


@dataclass(frozen=True)
class Loop:
    root: Path
    registry: Path
    base: Path
    trained: Path
    merged: Path
    runs: dict[str, RunRecord]  # kind -> run (the last of that kind; eval: eval-trained/merged)

    def predictions(self, name: str) -> list[dict[str, object]]:
        return read_jsonl(self.root / name / "predictions.jsonl")


def _write_yaml(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data, default=str))), encoding="utf-8")
    return path


def _benchmark(questions: Path, out: Path) -> Path:
    """The sample questions as an MMLongBench-Doc samples.json."""
    rows = [{"doc_id": q["doc_id"], "doc_type": "Financial report", "question": q["question"],
             "answer": q["answer"], "evidence_pages": str(q["source_pages"]),
             "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Str"}
            for q in read_jsonl(questions)]  # fmt: skip
    out.write_text(json.dumps(rows), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    root = tmp_path_factory.mktemp("loop")
    reg = root / "registry.sqlite"
    common = ("--runs-dir", root / "runs", "--registry", reg)
    sample = root / "sample"
    docthink("samples", sample, "--docs", SAMPLE_DOCS, "--seed", SAMPLE_SEED)
    docthink("ingest", sample / "pdfs", "--out", root / "corpus", *common)
    synth = _write_yaml(root / "synth.yaml", {
        "corpus": root / "corpus", "questions": sample / "questions.jsonl", "out": root / "synth",
        "image": {"max_side": 64},
        # every question also as a plain QA row: the same pages without token and trace
        "export": {"plain_qa": sample / "questions.jsonl", "plain_qa_ratio": 1.0},
    })
    docthink("synth", "--recipe", synth, *common)
    docthink("export", root / "synth", "--format", "trl", "--out", root / "export", *common)
    base = build_tiny_vlm(root / "base")
    recipe = _write_yaml(root / "train.yaml", {"model": base, "data": root / "export", **TRAIN})
    docthink("train", recipe, *common)
    registry = Registry(reg)
    trained = Path(registry.list(kind="train")[0].outputs()[0].path)
    merged = root / "merged-0.25"
    docthink("merge", "--base", base, "--tuned", trained, "--alpha", "0.25", "--out", merged,
             *common)
    data = _benchmark(sample / "questions.jsonl", root / "samples.json")
    for name, model in (("eval-trained", trained), ("eval-merged", merged)):
        eval_recipe = _write_yaml(root / f"{name}.yaml", {
            "data": data, "corpus": root / "corpus", "out": root / name,
            "model": {"kind": "local", "path": model, "batch_size": 8},
            "inference": {"modes": ["plain", "cot"], "max_tokens": 32, "page_index": "Page {i}:",
                          "image": {"max_side": 64}, "max_pages": MAX_PAGES},
        })
        docthink("eval", "run", eval_recipe, *common)
    runs = {r.kind: r for r in reversed(registry.list(limit=100))}
    for r in registry.list(kind="eval", limit=10):
        runs[Path(str(r.recipe["out"])).name] = r
    registry.close()
    return Loop(root, reg, base, trained, merged, runs)


def test_every_step_is_a_run_linked_to_its_inputs(loop: Loop) -> None:
    runs = loop.runs
    assert {k: r.status for k, r in runs.items()} == {
        k: "ok" for k in ("ingest", "synth", "export", "train", "merge", "eval",
                          "eval-trained", "eval-merged")}  # fmt: skip
    assert runs["train"].parents == (runs["export"].id,)
    assert runs["export"].parents == (runs["synth"].id,)
    assert runs["synth"].parents == (runs["ingest"].id,)
    assert runs["merge"].parents == (runs["train"].id,)
    # the evaluations name the corpus and the checkpoint they read
    assert set(runs["eval-trained"].parents) == {runs["ingest"].id, runs["train"].id}
    assert set(runs["eval-merged"].parents) == {runs["ingest"].id, runs["merge"].id}
    # the train run names the exact export it read, by hash, and the model it wrote
    (data,) = [a for a in runs["train"].artifacts if a.role == "input"]
    assert (data.path, data.digest) == (str((loop.root / "export").resolve()),
                                        artifact_digest(loop.root / "export")[0])
    (model,) = runs["train"].outputs()
    assert (model.path, model.digest) == (str(loop.trained.resolve()),
                                          artifact_digest(loop.trained)[0])
    assert runs["train"].recipe["precision"] == "fp32"  # resolved from auto on a CPU machine
    # checkpoints, logs and the final model are in the train run's folder
    run_dir = Path(runs["train"].run_dir)
    assert loop.trained == run_dir / "model"
    assert (run_dir / "logs" / "train_log.jsonl").is_file()


def test_the_loss_goes_down(loop: Loop) -> None:
    metrics = loop.runs["train"].metrics
    assert metrics["steps"] == STEPS
    assert metrics["loss_last"] < 0.5 * metrics["loss_first"], metrics
    log = [json.loads(line) for line in
           (Path(loop.runs["train"].run_dir) / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == list(range(1, STEPS + 1))
    # only short documents were trained on (mixture.max_pages)
    assert metrics["rows_dropped_max_pages"] > 0 and metrics["rows_think"] > 0


def _opens_think(predictions: list[dict[str, object]], mode: str) -> tuple[int, int]:
    """(responses opening <think>, responses) of one mode; a reasoning with no answer after it
    is a failure for the scorer but still a response here."""
    rows = [p for p in predictions if p["mode"] == mode and p["response"] is not None]
    return sum(str(p["response"]).startswith("<think>") for p in rows), len(rows)


def _switch_report(loop: Loop, model: Path) -> SwitchReport:
    rows, _ = mix(read_export(loop.root / "export"), MixtureSettings(max_pages=MAX_PAGES), 0)
    return measure_switch(model, rows, max_new_tokens=160 if FULL else 16)


def test_the_switch_is_learned(loop: Loop, capsys: pytest.CaptureFixture[str]) -> None:
    """On the training rows with their token taken out: `<cot>` as the system message opens a
    `<think>` block, no token answers directly; and the same through the eval harness."""
    report = _switch_report(loop, loop.trained)
    harness = {mode: _opens_think(loop.predictions("eval-trained"), mode) for mode in ("cot", "plain")}
    with capsys.disabled():
        print(f"\nswitch after {STEPS} steps: {json.dumps(report.as_dict())}"
              f"\n  eval harness, responses opening <think>: {harness}")
    assert report.with_cot.rate >= 0.6 and report.without_cot.rate <= 0.15, report.as_dict()
    assert report.with_cot.p_think > 5 * report.without_cot.p_think
    (cot, n_cot), (plain, n_plain) = harness["cot"], harness["plain"]
    assert n_cot == n_plain > 0
    assert cot / n_cot >= 0.5 and plain / n_plain <= 0.15, harness


def test_the_merged_model_is_evaluated_both_ways(loop: Loop, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads((loop.root / "eval-merged" / "report.json").read_text())
    assert set(report["modes"]) == {"plain", "cot"}
    harness = {m: _opens_think(loop.predictions("eval-merged"), m) for m in ("cot", "plain")}
    switch = _switch_report(loop, loop.merged)
    with capsys.disabled():
        print(f"\nmerged at 0.25: {json.dumps(switch.as_dict())}"
              f"\n  eval harness, responses opening <think>: {harness}")
    assert all(n > 0 for _, n in harness.values())
    recipe = json.loads((loop.merged / "merge_recipe.json").read_text())
    assert recipe["alpha"] == 0.25 and recipe["tuned"]["path"] == str(loop.trained)


def test_the_leaderboard_shows_both_checkpoints_with_their_recipe(loop: Loop) -> None:
    from docthink.registry.leaderboard import build_leaderboard

    registry = Registry(loop.registry)
    board = build_leaderboard(registry, benchmark="mmlongbench-doc")
    registry.close()
    rows = {Path(r.checkpoint).resolve(): r for r in board.rows}
    assert set(rows) == {loop.trained.resolve(), loop.merged.resolve()}
    merged, trained = rows[loop.merged.resolve()], rows[loop.trained.resolve()]
    assert merged.recipe["alpha"] == "0.25" and not trained.recipe.get("alpha")
    assert merged.recipe["K"] == trained.recipe["K"] == "16"
    assert merged.scores["mmlongbench-doc"].run_id == loop.runs["eval-merged"].id
    assert trained.scores["mmlongbench-doc"].run_id == loop.runs["eval-trained"].id
