"""The whole loop on CPU, through the command line: generated PDFs -> corpus -> traces with the
offline teacher -> TRL export -> SFT of a tiny factory model on plain QA rows (the base, which
answers directly) -> SFT of the base on the think mixture -> merge at 0.25 into the base ->
evaluation with and without `<cot>` through the eval harness (LocalModel) -> every step a linked
run. It is examples/cpu_loop.sh, with the same settings: the recipes in examples/cpu_loop/.

And the switch: the trained model, given `<cot>` as the system message, opens a `<think>` block;
without it, it answers directly. A tiny model (0.3M parameters) learns this only with a higher
learning rate and more steps than the paper's recipe, on short documents (lr 3e-3 constant, 200
steps of 4 rows, at most 12 pages per example, pages 64 px high).

DOCTHINK_LOOP_SEED=N (default 0) picks the seed of the factory model and of both trainings, to
measure the spread of the figures the tests assert; DOCTHINK_SLOW=full trains 400 steps."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from docthink.runs import Registry, RunRecord, artifact_digest
from docthink.testing import build_tiny_vlm
from docthink.train.data import mix, read_export
from docthink.train.recipe import MixtureSettings
from docthink.train.switch import SwitchReport, measure_switch
from tests.evals.helpers import read_jsonl
from tests.helpers import docthink

# the module's fixture trains twice (about 3 CPU-minutes) before its first test: more than the
# suite's 300 s per test on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)
FULL = os.environ.get("DOCTHINK_SLOW") == "full"
# the settings examples/cpu_loop.sh runs with: one copy, read by both
RECIPES = Path(__file__).resolve().parents[2] / "examples" / "cpu_loop"
SYNTH_RECIPE = yaml.safe_load((RECIPES / "synth.yaml").read_text(encoding="utf-8"))
THINK_RECIPE = yaml.safe_load((RECIPES / "think.yaml").read_text(encoding="utf-8"))
EVAL_RECIPE = yaml.safe_load((RECIPES / "eval.yaml").read_text(encoding="utf-8"))
# `docthink samples --seed 5 --docs 10`: six of the ten documents have 5 to 11 pages
SAMPLE_SEED, SAMPLE_DOCS = 5, 10
STEPS = 400 if FULL else THINK_RECIPE["max_steps"]
SEED = int(os.environ.get("DOCTHINK_LOOP_SEED", "0"))


@dataclass(frozen=True)
class Loop:
    root: Path
    registry: Path
    factory: Path  # the random model build_tiny_vlm wrote
    base: Path  # stage 1: the factory model after SFT on plain QA rows
    trained: Path  # stage 2: the base after SFT on the think mixture
    merged: Path  # base + 0.25 (trained - base)
    runs: dict[str, RunRecord]  # kind -> its last run; also train-base, eval-trained, eval-merged

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


def build_loop(root: Path, seed: int) -> Loop:
    """The loop of examples/cpu_loop.sh in `root`, through the CLI in this process; `seed` is the
    factory model's and both trainings'."""
    reg = root / "registry.sqlite"
    common = ("--runs-dir", root / "runs", "--registry", reg)
    sample = root / "sample"
    docthink("samples", sample, "--docs", SAMPLE_DOCS, "--seed", SAMPLE_SEED)
    docthink("ingest", sample / "pdfs", "--out", root / "corpus", *common)
    synth = _write_yaml(root / "synth.yaml", {**SYNTH_RECIPE, "export": {
        **SYNTH_RECIPE["export"], "plain_qa": sample / "questions.jsonl"}})
    docthink("synth", "--recipe", synth, "--corpus", root / "corpus", "--questions",
             sample / "questions.jsonl", "--out", root / "synth", *common)
    docthink("export", root / "synth", "--format", "trl", "--out", root / "export", *common)
    factory = build_tiny_vlm(root / "factory", seed=seed)
    data = ("--data", root / "export", "--seed", seed)
    docthink("train", RECIPES / "base.yaml", "--model", factory, *data, *common)
    registry = Registry(reg)
    base = Path(registry.list(kind="train")[0].outputs()[0].path)
    steps = ("--max-steps", STEPS) if FULL else ()
    docthink("train", RECIPES / "think.yaml", "--model", base, *data, *steps, "--merge", "0.25",
             *common)
    trained = Path(registry.list(kind="train")[0].outputs()[0].path)
    merged = trained.parent / "merged-0.25"
    samples = _benchmark(sample / "questions.jsonl", root / "samples.json")
    for name, model in (("eval-trained", trained), ("eval-merged", merged)):
        recipe = _write_yaml(root / f"{name}.yaml",
                             {**EVAL_RECIPE, "model": {"kind": "local", "path": model}})
        docthink("eval", "run", recipe, "--data", samples, "--corpus", root / "corpus",
                 "--out", root / name, *common)
    runs = {r.kind: r for r in reversed(registry.list(limit=100))}
    runs["train-base"] = registry.list(kind="train")[1]
    for r in registry.list(kind="eval", limit=10):
        runs[Path(str(r.recipe["out"])).name] = r
    registry.close()
    return Loop(root, reg, factory, base, trained, merged, runs)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    # One thread: a 0.3M-parameter model's operations are too small to share, threads only wait
    # on each other (4x slower on a busy 2-core machine), and the numbers do not then depend on
    # the machine's core count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield build_loop(tmp_path_factory.mktemp("loop"), SEED)
    finally:
        torch.set_num_threads(threads)


def test_every_step_is_a_run_linked_to_its_inputs(loop: Loop) -> None:
    runs = loop.runs
    assert {k: r.status for k, r in runs.items()} == {
        k: "ok" for k in ("ingest", "synth", "export", "train-base", "train", "merge", "eval",
                          "eval-trained", "eval-merged")}  # fmt: skip
    assert runs["export"].parents == (runs["synth"].id,)
    assert runs["synth"].parents == (runs["ingest"].id,)
    # the base was trained from the factory model (no run), the think SFT from the base
    assert runs["train-base"].parents == (runs["export"].id,)
    assert runs["train"].parents == (runs["export"].id, runs["train-base"].id)
    assert runs["merge"].parents == (runs["train-base"].id, runs["train"].id)
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
    # the base saw no trace: think_share 0 dropped every think row
    base = loop.runs["train-base"].metrics
    assert base["rows_think"] == 0 and base["rows_dropped_share"] == metrics["rows_think"]
    assert base["loss_last"] < 0.5 * base["loss_first"], base


def _opens_think(predictions: list[dict[str, object]], mode: str) -> tuple[int, int, int]:
    """(responses opening <think>, ... and closing it, responses) of one mode; a reasoning with no
    answer after it is a failure for the scorer but still a response here."""
    said = [str(p["response"]) for p in predictions
            if p["mode"] == mode and p["response"] is not None]  # fmt: skip
    opened = [s for s in said if s.startswith("<think>")]
    return len(opened), sum("</think>" in s for s in opened), len(said)


def _switch_report(loop: Loop, model: Path) -> SwitchReport:
    rows, _ = mix(read_export(loop.root / "export"), MixtureSettings(**THINK_RECIPE["mixture"]), 0)
    return measure_switch(model, rows, max_new_tokens=160 if FULL else 16, keep_samples=len(rows))


def test_the_switch_is_learned(loop: Loop, capsys: pytest.CaptureFixture[str]) -> None:
    """On the 24 training prompts with their token taken out (12 questions, each as a trace row and
    a plain QA row): `<cot>` as the system message opens a `<think>` block, no token answers
    directly; and the same through the eval harness (20 questions, 8 of them on documents longer
    than any trained on). Measured on this data (answers verified against the references) with
    DOCTHINK_LOOP_SEED=0..3 under torch 2.14.1 and 0..1 under 2.13.0 (the same figures per
    seed under both): 24 of 24 and 0 of 24 on the training prompts, mean P(<think> first) 0.90 to
    0.99 and at most 0.005; 14 to 19 of 20 and 0 to 1 of 20 through the harness. (On the data
    before answer verification, seeds 0..9 and 0..5: 18 to 24 of 24, 0 of 24; 10 to 18 of 20 and 0
    to 2 of 20.) The thresholds sit below the worst seed."""
    report = _switch_report(loop, loop.trained)
    harness = {m: _opens_think(loop.predictions("eval-trained"), m) for m in ("cot", "plain")}
    with capsys.disabled():
        print(f"\nseed {SEED}, switch after {STEPS} steps: {json.dumps(report.as_dict())}"
              f"\n  eval harness, responses opening <think> (closing it), of n: {harness}")
    with_cot, without = report.with_cot, report.without_cot
    assert with_cot.opens_think >= 12 and without.opens_think <= 2, report.as_dict()
    assert with_cot.p_think > 0.3 and without.p_think < 0.05, report.as_dict()
    (cot, _, n_cot), (plain, _, n_plain) = harness["cot"], harness["plain"]
    assert n_cot == n_plain == 20
    assert cot >= 6 and plain <= 4 and cot - plain >= 6, harness


def test_the_eval_budget_fits_every_trace(loop: Loop) -> None:
    """The harness's max_tokens holds the longest trained answer (trace, answer, end of turn), so
    a <think> block the model opens is cut only when it rambles past anything it was taught."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(loop.trained)
    rows, _ = mix(read_export(loop.root / "export"), MixtureSettings(**THINK_RECIPE["mixture"]), 0)
    longest = max(len(tokenizer(r.answer)["input_ids"]) + 1 for r in rows)
    assert longest <= EVAL_RECIPE["inference"]["max_tokens"], longest


def test_the_merged_model_answers_directly_and_leans_toward_the_switch(
    loop: Loop, capsys: pytest.CaptureFixture[str]
) -> None:
    """A quarter of the task vector merged back into the base (paper 1's internalization): without
    `<cot>` the merged model answers directly, with the base's very answers; with `<cot>` it still
    answers directly, but the task vector has moved P(<think> first) above the base's, and above
    its own without the token, on most prompts. (Merged into the random factory model instead, as
    this loop did before its base stage, the result was noise: it opened <think> more often without
    `<cot>`, 14/24, than with it, 8/24.) Measured with the seeds and versions of
    test_the_switch_is_learned: no <think> opened by base or merged model in any arm; merged
    answers without `<cot>` equal to the base's on 14 to 24 of 24 prompts (14 for seed 0, 24 for
    seeds 1-3); P(<think> first | <cot>) above the base's on 20 to 24 prompts and above the
    merged model's own without `<cot>` on 22 to 24. The thresholds sit below the worst seed."""
    base, trained, merged = (_switch_report(loop, m)
                             for m in (loop.base, loop.trained, loop.merged))  # fmt: skip
    harness = {m: _opens_think(loop.predictions("eval-merged"), m) for m in ("cot", "plain")}
    same = sum(m["without_cot"] == b["without_cot"] for m, b in zip(merged.samples, base.samples))
    above_base = sum(m > b for m, b in zip(merged.with_cot.p_thinks, base.with_cot.p_thinks))
    above_plain = sum(c > p for c, p in zip(merged.with_cot.p_thinks, merged.without_cot.p_thinks))
    with capsys.disabled():
        print(f"\nseed {SEED}, base: {json.dumps(base.as_dict())}"
              f"\n  merged at 0.25: {json.dumps(merged.as_dict())}"
              f"\n  merged without <cot> answers as the base: {same}/{base.without_cot.n}; "
              f"P(<think> first | <cot>) above the base's: {above_base}, above no token's: "
              f"{above_plain}"
              f"\n  eval harness, responses opening <think> (closing it), of n: {harness}")
    report = json.loads((loop.root / "eval-merged" / "report.json").read_text())
    assert set(report["modes"]) == {"plain", "cot"}
    # the base answers directly, with or without the token; the merged model without it, mostly
    # with the base's words
    assert base.with_cot.opens_think == base.without_cot.opens_think == 0, base.as_dict()
    assert merged.without_cot.opens_think == 0 and harness["plain"][0] == 0, harness
    assert same >= 12
    # with the token: above the base and above no token, far below the trained model
    assert above_base >= 12 and merged.with_cot.p_think > base.with_cot.p_think
    assert above_plain >= 13
    assert merged.with_cot.p_think < trained.with_cot.p_think / 100
    recipe = json.loads((loop.merged / "merge_recipe.json").read_text())
    assert recipe["alpha"] == 0.25
    assert (recipe["base"]["path"], recipe["tuned"]["path"]) == (str(loop.base), str(loop.trained))


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
