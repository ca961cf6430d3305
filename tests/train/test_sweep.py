"""`docthink sweep` on the CPU loop's toy setup: a base pipeline recipe (offline teacher traces,
a tiny factory VLM trained a few steps, merged, evaluated with and without `<cot>`) and a grid of
trace.top_k x merge.alpha -> 4 points, the runs they share made once, grouped as one ablation in
the registry; the ablation table with intervals and differences to the base; a second sweep
recomputes nothing."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from docthink.registry.ablation import ablation_table, mode_cell
from docthink.runs import Registry
from docthink.stages.sweep import PipelineRecipe, SweepError, parse_grid, points
from docthink.testing import build_tiny_vlm
from tests.evals.helpers import read_jsonl
from tests.helpers import docthink

pytest.importorskip("torch", reason="training needs the 'local' extra")

GRID = ("trace.top_k=2,16", "merge.alpha=0.25,0.5")


def _benchmark(questions: Path, out: Path) -> Path:
    rows = [{"doc_id": q["doc_id"], "doc_type": "Financial report", "question": q["question"],
             "answer": q["answer"], "evidence_pages": str(q["source_pages"]),
             "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Str"}
            for q in read_jsonl(questions)]
    out.write_text(json.dumps(rows), encoding="utf-8")
    return out


def test_grid_items_name_their_stage() -> None:
    assert parse_grid(["trace.top_k=8,16", "merge.alpha=0.25,0.5", "train.seed=1"]) == {
        "synth.trace.top_k": [8, 16], "merge.alpha": [0.25, 0.5], "train.seed": [1]}
    with pytest.raises(SweepError, match="no stage's recipe has a field 'nonsense'"):
        parse_grid(["nonsense.x=1"])
    with pytest.raises(SweepError, match="expected FIELD=VALUE"):
        parse_grid(["trace.top_k"])
    base = PipelineRecipe(synth={"trace": {"top_k": 16}}, train={}, eval={})
    assert points(base, {"synth.trace.top_k": [8, 16]}) == [
        ({"synth.trace.top_k": 8}, False), ({"synth.trace.top_k": 16}, True)]
    assert points(base, {"synth.trace.top_k": [8]}) == [
        ({"synth.trace.top_k": 16}, True), ({"synth.trace.top_k": 8}, False)]
    with pytest.raises(SweepError, match="grid field synth.trace.order: the base recipe does not"):
        points(base, {"synth.trace.order": ["page"]})


@pytest.mark.slow
def test_sweep_groups_an_ablation_and_reruns_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = tmp_path / "sample"
    registry = tmp_path / "registry.sqlite"
    common = ("--runs-dir", tmp_path / "runs", "--registry", registry)
    docthink("samples", sample, "--docs", "3", "--seed", "5")
    docthink("ingest", sample / "pdfs", "--out", tmp_path / "corpus", *common)
    base_model = build_tiny_vlm(tmp_path / "base")
    pipeline = {
        "synth": {"corpus": str(tmp_path / "corpus"), "questions": str(sample / "questions.jsonl"),
                  "image": {"max_side": 64}, "trace": {"top_k": 16}},
        "export": {"format": "trl"},
        "train": {"model": str(base_model), "learning_rate": 3e-3, "lr_scheduler": "constant",
                  "warmup": 0, "max_steps": 2, "batch_size": 2, "grad_accum": 1,
                  "gradient_checkpointing": False, "mixture": {"max_pages": 12}},
        "merge": {"alpha": 0.25},
        "eval": {"data": str(_benchmark(sample / "questions.jsonl", tmp_path / "samples.json")),
                 "corpus": str(tmp_path / "corpus"), "model": {"batch_size": 8},
                 "inference": {"modes": ["plain", "cot"], "max_tokens": 8, "max_pages": 12,
                               "image": {"max_side": 64}}},
    }
    base = tmp_path / "pipeline.yaml"
    base.write_text(yaml.safe_dump(pipeline))
    first = docthink("sweep", base, *GRID, "--name", "k-x-alpha", "--out", tmp_path / "sweep",
                     *common)
    with Registry(registry) as reg:
        counts = {k: len(reg.list(kind=k, limit=100)) for k in
                  ("synth", "export", "train", "merge", "eval")}
        # two traces (K), each exported and trained once; four merges and evals
        assert counts == {"synth": 2, "export": 2, "train": 2, "merge": 4, "eval": 4}
        grid, recorded = reg.ablation("k-x-alpha")
        assert grid == {"synth.trace.top_k": [2, 16], "merge.alpha": [0.25, 0.5]}
        assert [p for p, _, _ in recorded] == [
            {"synth.trace.top_k": k, "merge.alpha": a} for k in (2, 16) for a in (0.25, 0.5)]
        assert [b for _, b, _ in recorded] == [False, False, True, False]  # K=16, alpha=0.25
        evals = {run for _, _, run in recorded}
        assert evals == {r.id for r in reg.list(kind="eval", limit=100)}
        # each point's eval descends from the synth run with its K and the merge with its alpha
        for values, _, run in recorded:
            record = reg.get(run)
            merge = reg.get(record.parents[0] if reg.get(record.parents[0]).kind == "merge"
                            else record.parents[1])
            assert merge.recipe["alphas"] == [values["merge.alpha"]]
        table = ablation_table(reg, "k-x-alpha")
        before = reg.count()
    assert "4 points, 14 stage runs made, 6 found done" in first
    for point in table.points:
        for mode in ("plain", "cot"):
            cell = point.cells[mode]
            assert cell.acc_ci[0] <= cell.acc <= cell.acc_ci[1] and cell.tokens is not None
            if point.is_base:
                assert cell.diff is None
            else:
                assert cell.diff_ci is not None and cell.diff_ci[0] <= cell.diff <= cell.diff_ci[1]
    assert "vs base" in first and "(base)" in first
    with capsys.disabled():
        print("\n" + "\n".join(first.splitlines()[-6:]))

    again = docthink("sweep", base, *GRID, "--name", "k-x-alpha", "--out", tmp_path / "sweep",
                     *common)
    assert "0 stage runs made, 20 found done" in again
    with Registry(registry) as reg:
        assert reg.count() == before  # no run recorded
    printed = docthink("leaderboard", "--ablation", "k-x-alpha", "--registry", registry)
    assert printed.splitlines()[-4:] == first.splitlines()[-4:]

    # the web leaderboard links the ablation; its page has the table and a plot per field
    from tests.registry.conftest import free_port, serving

    with serving(registry, free_port()) as url:
        board = urllib.request.urlopen(url + "/", timeout=30).read().decode()
        assert 'href="/ablations/k-x-alpha"' in board
        page = urllib.request.urlopen(url + "/ablations/k-x-alpha", timeout=30).read().decode()
    body = page.split('<table id="ablation"', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr") == 5 and body.count('class="base"') == 1  # header + 4 points
    assert page.count("<svg") == 2 and "synth.trace.top_k=2 with &lt;cot&gt;" in page


def test_paired_difference_and_its_interval() -> None:
    """The point is right on every question the base is right on, and ten more: the difference is
    +10 points, its paired interval narrower than the point's own accuracy interval."""
    base = {i: (float(i < 40), 5) for i in range(100)}
    point = {i: (float(i < 50), 7) for i in range(100)}
    cell = mode_cell(point, base, seed=0)
    assert cell.acc == 50.0 and cell.tokens == 7.0 and cell.diff == 10.0
    assert cell.diff_ci is not None and 4.0 <= cell.diff_ci[0] < 10.0 < cell.diff_ci[1] <= 16.0
    assert cell.diff_ci[1] - cell.diff_ci[0] < cell.acc_ci[1] - cell.acc_ci[0]
    assert mode_cell(point, base, seed=0) == cell  # seeded
    # only the questions both answered are paired
    # (of 45..99 the point alone is right on 45..49)
    partial = mode_cell(point, {i: base[i] for i in range(45, 100)}, seed=0).diff
    assert partial == pytest.approx(100 * 5 / 55)
