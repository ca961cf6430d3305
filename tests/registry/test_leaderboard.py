"""The leaderboard: checkpoints ranked per benchmark with and without <cot>, each with the recipe
read from its lineage; CSV/JSON exports; the static page sorted and filtered in Chromium, with
markup from the registry shown as text."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from docthink.registry.leaderboard import (
    Leaderboard,
    Row,
    Score,
    board_from_rows,
    build_leaderboard,
    rows_from_lineage,
    update_board,
)
from docthink.registry.page import render_static
from docthink.runs.registry import Artifact, Registry
from tests.registry.conftest import XSS, XSS_IMG, cli
from tests.registry.history import RunSpec, history
from tests.registry.history import record as record_runs


def _by_id(runs: list[RunSpec]) -> dict[str, RunSpec]:
    return {r.id: r for r in runs}


def test_rows_carry_scores_and_the_recipe_from_lineage(small_history: tuple[Path, list[RunSpec]]) -> None:
    path, runs = small_history
    with Registry(path) as registry:
        board = build_leaderboard(registry, benchmark="mmlbd-c")
    evals = [r for r in runs if r.kind == "eval"]
    assert board.ranked_by == ("mmlbd-c", "acc_cot")
    assert sorted(board.benchmarks) == ["mmlbd-c", "mmlongbench-doc"]
    assert len(board.rows) == 9  # 3 pipelines x 3 merge strengths
    ranked = [row.value("mmlbd-c", "acc_cot") for row in board.rows]
    assert ranked == sorted(ranked, reverse=True)
    runs_by_id = _by_id(runs)
    for row in board.rows:
        for bench in ("mmlbd-c", "mmlongbench-doc"):
            (ev,) = [e for e in evals if e.recipe["model"]["model"] == row.checkpoint  # type: ignore[index]
                     and e.recipe["benchmark"] == bench]
            assert row.scores[bench].run_id == ev.id
            assert row.value(bench, "acc") == ev.metrics["acc"]
            assert row.value(bench, "mean_output_tokens_cot") == ev.metrics["mean_output_tokens_cot"]
        kinds = [kind for _, kind in row.lineage]
        assert kinds == ["synth", "export", "train", "merge"]  # from the data to the checkpoint
        synth, _, train, merge = (runs_by_id[run_id] for run_id, _ in row.lineage)
        alpha = merge.recipe["alphas"][merge.recipe["outs"].index(row.checkpoint)]  # type: ignore[union-attr,index]
        assert row.recipe["alpha"] == f"{alpha:g}"
        assert row.recipe["base model"] == train.recipe["model"]  # train wins over merge.base
        assert row.recipe["K"] == str(synth.recipe["trace"]["top_k"])  # type: ignore[index]
        assert row.recipe["plain QA ratio"] == f"{synth.recipe['export']['plain_qa_ratio']:g}"  # type: ignore[index]
        assert row.recipe["lr"] == f"{train.recipe['learning_rate']:g}"
    by_tokens = build_leaderboard(Registry(path), benchmark="mmlbd-c",
                                  metric="mean_output_tokens_cot")
    tokens = [r.value("mmlbd-c", "mean_output_tokens_cot") for r in by_tokens.rows]
    assert tokens == sorted(tokens)  # fewer tokens rank first
    # ranked in SQL from the checkpoints' table, as ranking every eval's row in Python does
    with Registry(path) as registry:
        _, evals_rows = rows_from_lineage(registry)
        for bench, metric in ((None, None), ("mmlbd-c", "acc"), ("mmlongbench-doc", "acc_cot"),
                              ("mmlongbench-doc", "mean_output_tokens")):
            stored = build_leaderboard(registry, benchmark=bench, metric=metric)
            scratch = board_from_rows(registry, evals_rows, bench, metric)
            assert (stored.ranked_by, stored.records()) == (scratch.ranked_by, scratch.records())
            assert [r.checkpoint for r in stored.head(3)] == [r.checkpoint for r in scratch.rows[:3]]


def test_lineage_lists_runs_from_the_data_to_the_checkpoint(tmp_path: Path) -> None:
    """An eval also reads the corpus an ingest made, so the ingest is one step from the eval as
    well as four steps up its model's lineage: a nearest-first walk listed ingest, merge, train,
    export, synth. The lineage is in dependency order: each run after every run it used."""
    runs = history(1, seed=3)
    manifest = Artifact("output", "/data/corpus/manifest.jsonl", "c" * 64, 10, "blake3")
    ingest = RunSpec("000000-ingest", "ingest", "2026-02-28T00:00:00.000+00:00",
                     {"pdf_dir": "/pdfs", "out": "/data/corpus"}, {}, artifacts=[manifest])
    for run in runs:
        if run.kind in ("synth", "eval"):
            run.artifacts.append(replace(manifest, role="input"))
    with Registry(tmp_path / "r.sqlite") as registry:
        record_runs(registry, [ingest, *runs])
        board = build_leaderboard(registry)
    assert len(board.rows) == 3
    for row in board.rows:
        assert [kind for _, kind in row.lineage] == ["ingest", "synth", "export", "train", "merge"]
    assert board.records()[0]["lineage"][0] == "ingest:000000-ingest"


def test_an_empty_board_says_what_fills_it(tmp_path: Path) -> None:
    """After `docthink demo` there are data runs and no eval: the board says which command makes
    its rows instead of showing an empty table."""
    with Registry(tmp_path / "r.sqlite") as registry:
        record_runs(registry, history(1)[:3])  # synth, export, train
    out = " ".join(cli("leaderboard", "--registry", tmp_path / "r.sqlite",
                       "--html", tmp_path / "b.html").split())
    assert "No checkpoints yet: a row is a model scored by `docthink eval run`" in out
    assert "┃" not in out  # no empty table
    assert '<p id="empty">No checkpoints yet' in (tmp_path / "b.html").read_text()


def test_a_newer_eval_replaces_the_older_score(small_history: tuple[Path, list[RunSpec]]) -> None:
    path, runs = small_history
    old = next(r for r in runs if r.kind == "eval")
    with Registry(path) as registry:
        registry.start(run_id="re-eval", kind="eval", started_at="2027-01-01T00:00:00",
                       command=[], run_dir="/r", recipe=old.recipe, recipe_hash="h",
                       git_commit=None, git_dirty=None, packages={}, host="h", parents=())
        registry.finish("re-eval", status="ok", ended_at="2027", error=None, artifacts=[],
                        metrics={**old.metrics, "acc": 0.99})
        registry.start(run_id="failed-eval", kind="eval", started_at="2027-01-02T00:00:00",
                       command=[], run_dir="/r", recipe=old.recipe, recipe_hash="h",
                       git_commit=None, git_dirty=None, packages={}, host="h", parents=())
        registry.finish("failed-eval", status="failed", ended_at="2027", error="boom",
                        artifacts=[], metrics={})
        board = build_leaderboard(registry, benchmark=str(old.recipe["benchmark"]), metric="acc")
    top = board.rows[0]
    assert top.checkpoint == old.recipe["model"]["model"]  # type: ignore[index]
    assert top.scores[str(old.recipe["benchmark"])].run_id == "re-eval" and top.evals == 3


def test_v1_and_v2_scores_never_share_a_column(tmp_path: Path) -> None:
    """MMLongBench-Doc-V2 evals of two of the three checkpoints: the board gets a V2 column set
    beside V1's; V1's numbers do not move, the V2 column holds only V2 evals (blank for the
    checkpoint never evaluated on V2), and ranking by V2 ranks by V2's numbers alone."""
    runs = history(1, seed=5)
    path = tmp_path / "r.sqlite"
    with Registry(path) as registry:
        record_runs(registry, runs)
        before = build_leaderboard(registry, benchmark="mmlongbench-doc")
        v1_evals = [r for r in runs if r.kind == "eval" and r.recipe["benchmark"] == "mmlongbench-doc"]
        v2_evals = [replace(ev, id=f"{ev.id}-v2", started_at=ev.started_at.replace("2026", "2027"),
                            recipe={**ev.recipe, "benchmark": "mmlongbench-v2"},
                            metrics={**ev.metrics, "benchmark": "mmlongbench-v2",
                                     "acc": 0.9 - 0.1 * i, "acc_cot": 0.95 - 0.1 * i,
                                     "judge": "judge", "judge_prompt_sha256": "f" * 64})
                    for i, ev in enumerate(v1_evals[:2])]
        record_runs(registry, v2_evals)
        board = build_leaderboard(registry, benchmark="mmlongbench-v2", metric="acc")
    assert sorted(board.benchmarks) == ["mmlbd-c", "mmlongbench-doc", "mmlongbench-v2"]
    assert {"mmlongbench-v2 acc", "mmlongbench-doc acc"} <= set(board.columns())
    v1_before = {r.checkpoint: r.value("mmlongbench-doc", "acc") for r in before.rows}
    assert {r.checkpoint: r.value("mmlongbench-doc", "acc") for r in board.rows} == v1_before
    v2 = {ev.recipe["model"]["model"]: ev.metrics["acc"] for ev in v2_evals}  # type: ignore[index]
    assert [(r.checkpoint, r.value("mmlongbench-v2", "acc")) for r in board.rows] == [
        *sorted(v2.items(), key=lambda kv: -float(kv[1])),  # type: ignore[arg-type]
        *((c, None) for c in sorted(set(v1_before) - set(v2)))]
    for rec in board.records():
        assert rec["mmlongbench-v2 acc"] == v2.get(str(rec["checkpoint"]))
        assert rec["mmlongbench-doc acc"] == v1_before[str(rec["checkpoint"])]


def test_csv_and_json_exports_hold_every_row(small_history: tuple[Path, list[RunSpec]],
                                             tmp_path: Path) -> None:
    path, _ = small_history
    cli("leaderboard", "--registry", path, "--benchmark", "mmlongbench-doc",
        "--csv", tmp_path / "b.csv", "--json", tmp_path / "b.json", "--html", tmp_path / "b.html")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "b.csv").read_text())))
    data = json.loads((tmp_path / "b.json").read_text())
    assert len(rows) == len(data["rows"]) == 9
    assert data["ranked_by"] == ["mmlongbench-doc", "acc_cot"]
    for row, record in zip(rows, data["rows"], strict=True):
        assert row["checkpoint"] == record["checkpoint"]
        assert float(row["mmlbd-c acc <cot>"]) == record["mmlbd-c acc <cot>"]
        assert row["lineage"] == " -> ".join(record["lineage"])
        assert record["lineage"][0].startswith("synth:") and record["lineage"][-1].startswith("merge:")
    assert "<script>" in (tmp_path / "b.html").read_text()  # the page's own script only
    assert "error" in cli("leaderboard", "--registry", path, "--benchmark", "nope", code=2)


def test_static_page_escapes_markup(hostile_history: tuple[Path, list[RunSpec]]) -> None:
    path, _ = hostile_history
    board = build_leaderboard(Registry(path))
    html = render_static(board)
    assert XSS not in html and XSS_IMG not in html and "<img" not in html
    # the rows ride as JSON with every `<` escaped: the markup is data, whole, and ends no element
    data = html.split('<script type="application/json" id="board-data">')[1].split("</script>")[0]
    assert "<" not in data
    assert json.loads(data)["rows"][0]["checkpoint"] == board.rows[0].checkpoint
    assert sum(XSS in json.dumps(row) for row in json.loads(data)["rows"]) >= 1
    assert html.count("<script") == 2 and 'src="http' not in html and "<link" not in html


def _column(page: object, index: int) -> list[str]:
    return page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#board tbody tr:not([hidden])",
        f"rows => rows.map(r => r.cells[{index}].textContent.trim())")


def test_static_page_sorts_filters_and_shows_markup_as_text(
    hostile_history: tuple[Path, list[RunSpec]], tmp_path: Path, page: object
) -> None:
    path, _ = hostile_history
    with Registry(path) as registry:
        board = build_leaderboard(registry, benchmark="mmlongbench-doc")
    file = tmp_path / "board.html"
    file.write_text(render_static(board), encoding="utf-8")
    page.goto(file.as_uri())  # type: ignore[attr-defined]
    headers = page.eval_on_selector_all("#board thead th", "hs => hs.map(h => h.textContent)")  # type: ignore[attr-defined]
    checkpoint_col = headers.index("checkpoint")
    # markup from the registry is text on the page
    assert sum(XSS_IMG in c for c in _column(page, checkpoint_col)) == 3
    base_col = headers.index("base model")
    assert _column(page, base_col).count(XSS) == 3
    assert page.locator("#board img").count() == 0  # type: ignore[attr-defined]
    # sorting: a click sorts ascending, a second click descending, blanks stay last
    col = headers.index("mmlbd-c acc")
    expected = sorted(100 * r.value("mmlbd-c", "acc") for r in board.rows)  # type: ignore[operator]
    page.click(f"#board thead th:nth-child({col + 1})")  # type: ignore[attr-defined]
    assert [float(v) for v in _column(page, col)] == [float(f"{v:.1f}") for v in expected]
    page.click(f"#board thead th:nth-child({col + 1})")  # type: ignore[attr-defined]
    assert [float(v) for v in _column(page, col)] == [float(f"{v:.1f}") for v in expected[::-1]]
    page.click(f"#board thead th:nth-child({checkpoint_col + 1})")  # type: ignore[attr-defined]
    assert _column(page, checkpoint_col) == sorted(r.checkpoint for r in board.rows)
    # filtering: every word must appear in the row
    page.fill("input[data-filter=board]", "mistralai 0.5")  # type: ignore[attr-defined]
    shown = _column(page, checkpoint_col)
    assert shown == sorted(r.checkpoint for r in board.rows
                           if "mistralai" in r.recipe.get("base model", "")
                           and "0.5" in " ".join([r.checkpoint, *r.recipe.values()]))
    assert page.text_content("#board-shown") == str(len(shown))  # type: ignore[attr-defined]
    page.fill("input[data-filter=board]", "")  # type: ignore[attr-defined]
    assert len(_column(page, checkpoint_col)) == len(board.rows)
    # each row links to its lineage, shown below the table
    first = page.text_content("#board tbody tr:first-child td:nth-child(2)")  # type: ignore[attr-defined]
    page.click("#board tbody tr:first-child td:last-child a")  # type: ignore[attr-defined]
    assert page.evaluate("location.hash").startswith("#lineage-")  # type: ignore[attr-defined]
    (row,) = [r for r in board.rows if r.checkpoint == first]
    steps = page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#lineage ol li", "items => items.map(li => li.textContent)")
    assert steps == [f"{run_id} {kind}" for run_id, kind in row.lineage] and steps
    assert first in page.text_content("#lineage h3")  # type: ignore[attr-defined]


def test_static_page_lists_a_large_board_a_page_at_a_time(tmp_path: Path, page: object) -> None:
    """1,234 checkpoints: 500 rows listed, a button lists 500 more; sorting and filtering work on
    every row, listed or not (the page's script holds them all as JSON)."""
    rows = [Row(f"ckpt-{i:04d}", {"mmlongbench-doc": Score(f"e{i}", "2026", {
        "acc": (i * 7919 % 1234) / 1234, "acc_cot": None, "mean_output_tokens": 10.0 + i,
        "mean_output_tokens_cot": None})}, {"K": str(i % 5)}, [(f"t{i}", "train")], 1)
        for i in range(1234)]
    board = Leaderboard(["mmlongbench-doc"], rows, ("mmlongbench-doc", "acc"))
    file = tmp_path / "board.html"
    file.write_text(render_static(board), encoding="utf-8")
    page.goto(file.as_uri())  # type: ignore[attr-defined]
    assert page.locator("#board tbody tr").count() == 500  # type: ignore[attr-defined]
    assert page.text_content("#board-shown") == "1234"  # type: ignore[attr-defined]
    assert "listed 500 of 1234" in page.text_content("#board-more")  # type: ignore[attr-defined]
    page.click("#board-more")  # type: ignore[attr-defined]
    assert page.locator("#board tbody tr").count() == 1000  # type: ignore[attr-defined]
    headers = page.eval_on_selector_all("#board thead th", "hs => hs.map(h => h.textContent)")  # type: ignore[attr-defined]
    acc = headers.index("mmlongbench-doc acc")
    page.click(f"#board thead th:nth-child({acc + 1})")  # type: ignore[attr-defined]
    listed = [float(v) for v in _column(page, acc)]
    assert listed == sorted(listed) and listed[0] == 0.0  # the lowest of all 1,234 first
    page.fill("input[data-filter=board]", "ckpt-12")  # type: ignore[attr-defined]
    assert page.text_content("#board-shown") == str(  # type: ignore[attr-defined]
        sum(r.checkpoint.startswith("ckpt-12") for r in rows))
    assert page.is_hidden("#board-more")  # type: ignore[attr-defined]
    page.goto(file.as_uri() + "#lineage-1234")  # type: ignore[attr-defined]
    assert page.text_content("#lineage h3") == "1234. ckpt-1233"  # type: ignore[attr-defined]


def test_board_rows_are_computed_once_and_follow_late_parents(tmp_path: Path) -> None:
    """Each eval's row (checkpoint, lineage, recipe) is computed when the eval is recorded, not at
    every build; a run recorded late (a merge whose record reaches a shared registry after the
    evals of its checkpoints) recomputes the evals below it; rows kept so equal a rebuild."""
    runs = history(3, seed=5)
    first, second, late = runs[:10], runs[10:20], runs[20:30]
    merge, evals = late[3], late[4:]
    with Registry(tmp_path / "r.sqlite") as registry:
        record_runs(registry, first + second)
        assert len(build_leaderboard(registry).rows) == 6
        assert update_board(registry) == 0  # nothing new: nothing recomputed
        tampered = second[4].recipe["model"]["model"]  # type: ignore[index]
        with registry.write() as db:  # the board is read from the checkpoints' table
            db.execute("UPDATE leaderboard_checkpoints SET board_row = json_set(board_row,"
                       " '$.recipe', json('{\"K\": \"kept\"}')) WHERE checkpoint = ?",
                       (tampered,))
        assert {r.recipe["K"] for r in build_leaderboard(registry).rows
                if r.checkpoint == tampered} == {"kept"}
        record_runs(registry, late[:3] + evals)
        assert update_board(registry) == 6
        orphans = [r for r in build_leaderboard(registry).rows
                   if r.checkpoint in merge.recipe["outs"]]  # type: ignore[operator]
        assert len(orphans) == 3 and all(r.lineage == [] for r in orphans)
        record_runs(registry, [merge])
        assert update_board(registry) == 6  # the merge's descendants
        board = build_leaderboard(registry)
        for row in board.rows:
            if row.checkpoint in merge.recipe["outs"]:  # type: ignore[operator]
                assert [kind for _, kind in row.lineage] == ["synth", "export", "train", "merge"]
                assert row.recipe["alpha"] in ("0.25", "0.5", "1")
        with registry.write() as db:
            db.execute("DELETE FROM search_state WHERE key = 'board_version'")
        rebuilt = build_leaderboard(registry)
    kept = {r["checkpoint"]: r for r in board.records()}
    fresh = {r["checkpoint"]: r for r in rebuilt.records()}
    assert (kept.pop(tampered)["K"], fresh.pop(tampered)["K"]) == ("kept", str(
        second[0].recipe["trace"]["top_k"]))  # type: ignore[index]
    assert kept == fresh and len(fresh) == 8


def test_a_registry_from_before_the_checkpoints_table_gets_its_board(tmp_path: Path) -> None:
    """A registry written by docthink before migration 9 (eval rows kept, no checkpoint rows):
    opening it adds the tables, and the first board fills them from the lineage."""
    path = tmp_path / "r.sqlite"
    with Registry(path) as registry:
        record_runs(registry, history(2, seed=4))
        expected = build_leaderboard(registry).records()
        with registry.write() as db:
            db.execute("DROP TABLE leaderboard_checkpoints")
            db.execute("DROP TABLE leaderboard_scores")
            db.execute("UPDATE search_state SET value = '1:old' WHERE key = 'board_version'")
        registry.db.execute("PRAGMA user_version = 8")
    with Registry(path) as registry:
        assert registry.db.execute("SELECT count(*) FROM leaderboard_checkpoints").fetchone() == (0,)
        assert build_leaderboard(registry).records() == expected and len(expected) == 6
        assert registry.db.execute("SELECT count(*) FROM leaderboard_checkpoints").fetchone() == (6,)
