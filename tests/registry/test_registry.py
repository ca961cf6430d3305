"""The registry's records beyond the basics: migrations from an old file, notes and tags, `runs
list` filters, `runs diff`, `runs lineage`, `runs verify`, and many processes writing at once."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import sqlite3
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from docthink.registry.diff import diff_recipes, flatten
from docthink.registry.index import update_index
from docthink.registry.lineage import ancestors, descendants
from docthink.registry.lineage import flatten as tree_nodes
from docthink.runs import artifact_digest, start_run
from docthink.runs.registry import (
    MIGRATIONS,
    Artifact,
    FilterError,
    Registry,
    RunFilter,
    parse_metric,
    parse_when,
    parse_where,
)
from tests.registry.conftest import cli
from tests.registry.history import RunSpec


def test_an_old_registry_file_is_migrated_and_its_runs_indexed(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.execute("INSERT INTO runs (id, kind, status, started_at, command, run_dir, recipe,"
               " recipe_hash, packages, host) VALUES ('old-1', 'synth', 'ok', '2026-01-01',"
               " '[]', '/r', '{\"trace\": {\"top_k\": 24}}', 'h', '{}', 'host')")
    db.commit()
    db.close()
    with Registry(path) as registry:
        assert registry.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert registry.get("old-1").recipe == {"trace": {"top_k": 24}}
        assert registry.get("old-1").cwd is None  # recorded before runs kept their folder
        stats = update_index(registry, None)
        assert stats.runs == 1
        (text,) = registry.db.execute("SELECT text FROM search_docs WHERE run_id = 'old-1'").fetchone()
        assert "trace.top_k=24" in text


def test_an_indexed_registry_keeps_its_index_through_migration_4(tmp_path: Path) -> None:
    """Migration 4 adds the reason a data file was skipped; files indexed before it keep their
    rows (reason NULL) and are re-read only when they change."""
    path = tmp_path / "v3.sqlite"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 3")
    db.execute("INSERT INTO search_files (run_id, path, fingerprint, rows)"
               " VALUES ('r', '/data/traces.parquet', '10:20', 5)")
    db.commit()
    db.close()
    with Registry(path) as registry:
        assert registry.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert registry.db.execute("SELECT path, rows, reason FROM search_files").fetchall() == [
            ("/data/traces.parquet", 5, None)]


def test_a_registry_written_with_sha256_verifies_with_sha256(tmp_path: Path) -> None:
    """Artifacts recorded before migration 5 carry sha256 digests in a column of that name:
    they are read as sha256 and `runs verify` re-hashes them so, while new runs use blake3."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"qid": "q1"}\n')
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "train.jsonl").write_text("row\n")
    (folder / "docthink_run.json").write_text('{"run_id": "old-1"}\n')  # not part of the digest
    file_sha = hashlib.sha256(data.read_bytes()).hexdigest()
    line = f"train.jsonl\0{hashlib.sha256(b'row' + bytes([10])).hexdigest()}\n"
    folder_sha = hashlib.sha256(line.encode()).hexdigest()
    path = tmp_path / "v4.sqlite"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 4")
    db.execute("INSERT INTO runs (id, kind, status, started_at, command, run_dir, recipe,"
               " recipe_hash, packages, host) VALUES ('old-1', 'export', 'ok', '2026-01-01',"
               " '[]', '/r', '{}', 'h', '{}', 'host')")
    db.executemany("INSERT INTO artifacts (run_id, role, path, sha256, size) VALUES (?, ?, ?, ?, ?)",
                   [("old-1", "input", str(data), file_sha, data.stat().st_size),
                    ("old-1", "output", str(folder), folder_sha, 4)])
    db.commit()
    db.close()
    with Registry(path) as registry:
        assert {(a.role, a.algorithm, a.digest) for a in registry.get("old-1").artifacts} == {
            ("input", "sha256", file_sha), ("output", "sha256", folder_sha)}
    assert "2 artifacts: 2 ok, 0 changed" in cli("runs", "verify", "--registry", path)
    (folder / "train.jsonl").write_text("row, edited\n")
    out = cli("runs", "verify", "--registry", path, code=1)
    assert f"changed    old-1 output {folder}: recorded sha256 {folder_sha[:12]}" in out
    with start_run("toy", _Recipe(name="x"), command=["t"], runs_dir=tmp_path / "runs",
                   registry_path=path, inputs=[data]) as run:
        pass
    with Registry(path) as registry:
        (new,) = registry.get(run.id).artifacts
    assert (new.algorithm, new.digest) == ("blake3", artifact_digest(data)[0])
    assert new.digest != file_sha


def test_notes_and_tags_are_recorded_shown_and_filtered(small_history: tuple[Path, list[RunSpec]]) -> None:
    path, runs = small_history
    run_id = runs[2].id
    cli("runs", "note", run_id[:8], "loss spiked at step 400", "--author", "ana", "--registry", path)
    cli("runs", "tag", run_id, "paper", "keep", "--registry", path)
    cli("runs", "tag", run_id, "keep", "--remove", "--registry", path)
    with Registry(path) as registry:
        record = registry.get(run_id)
    assert set(record.tags) == ({"paper", *runs[2].tags} - {"keep"})
    assert record.notes[-1].text == "loss spiked at step 400" and record.notes[-1].author == "ana"
    shown = cli("runs", "show", run_id, "--registry", path)
    assert "loss spiked at step 400" in shown and "paper" in shown
    listed = cli("runs", "list", "--tag", "paper", "--limit", "100", "--registry", path)
    assert run_id in listed
    expected = {r.id for r in runs if "paper" in r.tags} | {run_id}
    assert {line.split()[1] for line in listed.splitlines() if line.startswith("│ 0")} == expected
    assert "no run 'nope'" in cli("runs", "note", "nope", "x", "--registry", path, code=2)


def _ids(registry: Registry, **kwargs: object) -> set[str]:
    return set(registry.find_ids(RunFilter(**kwargs), limit=None))  # type: ignore[arg-type]


def test_list_filters_select_exactly_the_matching_runs(small_history: tuple[Path, list[RunSpec]]) -> None:
    path, runs = small_history
    with Registry(path) as registry:
        assert _ids(registry, kind="train") == {r.id for r in runs if r.kind == "train"}
        base = str(runs[2].recipe["model"])
        # --model matches train.model, merge.base (a path containing it) and nothing else
        assert _ids(registry, model=base.split("/")[1].lower()) == {
            r.id for r in runs if (r.kind == "train" and r.recipe["model"] == base)
            or (r.kind == "merge" and str(r.recipe["base"]).endswith(base))}
        k = runs[0].recipe["trace"]["top_k"]  # type: ignore[index]
        assert _ids(registry, where=(parse_where(f"trace.top_k={k}"),)) == {
            r.id for r in runs if r.kind == "synth" and r.recipe["trace"]["top_k"] == k}  # type: ignore[index]
        assert _ids(registry, where=(parse_where("format=trl"), parse_where("outs[1]=nope"))) == set()
        assert _ids(registry, where=(parse_where("mixture.think_share=null"), ), kind="train") == {
            r.id for r in runs if r.kind == "train" and r.recipe["mixture"]["think_share"] is None}  # type: ignore[index]
        assert _ids(registry, metrics=(parse_metric("acc_cot>=0.35"), parse_metric("acc<0.4"))) == {
            r.id for r in runs if r.kind == "eval" and r.metrics["acc_cot"] >= 0.35  # type: ignore[operator]
            and r.metrics["acc"] < 0.4}  # type: ignore[operator]
        day = runs[10].started_at[:10]
        assert _ids(registry, since=parse_when(day, end=False), until=parse_when(day, end=True)) == {
            r.id for r in runs if r.started_at[:10] == day}
        assert _ids(registry, model="teacher") == {
            r.id for r in runs if r.kind == "synth" and r.recipe["models"]["evidence"]["kind"] == "teacher"}  # type: ignore[index]
    listed = cli("runs", "list", "--kind", "eval", "--metric", "acc_cot>=0.35", "--where",
                 "benchmark=mmlbd-c", "--limit", "100", "--registry", path)
    assert {line.split()[1] for line in listed.splitlines() if line.startswith("│ 0")} == {
        r.id for r in runs if r.kind == "eval" and r.metrics["acc_cot"] >= 0.35  # type: ignore[operator]
        and r.recipe["benchmark"] == "mmlbd-c"}
    for bad, message in (("--where", "top_k"), ("--metric", "acc>>1"), ("--since", "last week")):
        assert "error" in cli("runs", "list", bad, message, "--registry", path, code=2)
    with pytest.raises(FilterError):
        parse_where("trace={}")


def test_diff_shows_recipes_field_by_field(small_history: tuple[Path, list[RunSpec]]) -> None:
    path, runs = small_history
    a, b = runs[0], runs[10]  # two synth runs
    fields = {f.key: f for f in diff_recipes(a.recipe, b.recipe)}
    assert set(fields) == set(flatten(a.recipe)) | set(flatten(b.recipe))
    assert fields["out"].a == "/data/synth/s000000" and fields["out"].b == "/data/synth/s000001"
    assert fields["trace.threshold"].same
    out = cli("runs", "diff", a.id, b.id, "--registry", path)
    assert "out" in out and "trace.threshold" not in out
    different = [k for k, f in fields.items() if not f.same]
    assert f"{len(different)} of {len(fields)} fields differ" in out
    assert "trace.threshold" in cli("runs", "diff", a.id, b.id, "--all", "--registry", path)
    # a field only one side has
    assert {f.key: (f.a, f.b) for f in diff_recipes({"x": 1}, {"x": 1, "y": [2]})} == {
        "x": ("1", "1"), "y[0]": ("(absent)", "2")}


def test_lineage_walks_eval_merge_train_export_synth(small_history: tuple[Path, list[RunSpec]]) -> None:
    path, runs = small_history
    synth, export, train, merge, eval_ = runs[10], runs[11], runs[12], runs[13], runs[15]
    with Registry(path) as registry:
        up = {n.run_id: n.via for n in tree_nodes(ancestors(registry, eval_.id))}
        assert up == {eval_.id: None, merge.id: "model path", train.id: "recorded",
                      export.id: "recorded", synth.id: "recorded"}
        down = {n.run_id for n in tree_nodes(descendants(registry, synth.id))}
        assert down == {synth.id, export.id, train.id, merge.id} | {
            r.id for r in runs[14:20]}  # the 6 evals of that pipeline's 3 checkpoints
    out = cli("runs", "lineage", eval_.id, "--registry", path)
    for run in (merge, train, export, synth):
        assert run.id in out
    assert "<- model path" in out


def test_lineage_by_content_without_a_recorded_parent(tmp_path: Path) -> None:
    """An input whose digest is an earlier run's output links the two, even with no marker."""
    registry = Registry(tmp_path / "r.sqlite")
    for run_id, started, role in (("maker", "2026-01-01", "output"), ("user", "2026-01-02", "input"),
                                  ("earlier-user", "2025-12-31", "input")):
        registry.start(run_id=run_id, kind="toy", started_at=started, command=[], run_dir="/",
                       recipe={}, recipe_hash="h", git_commit=None, git_dirty=None, packages={},
                       host="h", parents=())
        registry.finish(run_id, status="ok", ended_at=started, metrics={}, error=None,
                        artifacts=[Artifact(role, f"/{run_id}/data.jsonl", "cd" * 32, 10, "blake3"),
                                   Artifact(role, f"/{run_id}/empty", "e3" * 32, 0, "blake3")])
    up = {n.run_id: n.via for n in tree_nodes(ancestors(registry, "user"))}
    assert up == {"user": None, "maker": "digest"}
    # a run that started before the output existed cannot have read it
    assert [n.run_id for n in tree_nodes(ancestors(registry, "earlier-user"))] == ["earlier-user"]


class _Recipe(BaseModel):
    name: str


def test_verify_reports_changed_and_missing_artifacts(tmp_path: Path) -> None:
    registry = tmp_path / "r.sqlite"
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    single = tmp_path / "single.txt"
    single.write_text("s")
    gone = tmp_path / "gone.txt"
    gone.write_text("g")
    with start_run("toy", _Recipe(name="x"), command=["t"], runs_dir=tmp_path / "runs",
                   registry_path=registry, inputs=[single]) as run:
        run.add("output", folder)
        run.add("output", gone)
    assert "3 artifacts: 3 ok, 0 changed, 0 missing" in cli("runs", "verify", "--registry", registry)
    (folder / "b.txt").write_text("new file in an output folder")
    gone.unlink()
    out = cli("runs", "verify", "--registry", registry, code=1)
    assert f"changed    {run.id} output {folder.resolve()}" in out
    assert f"missing    {run.id} output {gone.resolve()}" in out
    assert "3 artifacts: 1 ok, 1 changed, 1 missing" in out


# -- concurrency ----------------------------------------------------------------------------------

WRITERS, RUNS_EACH = 8, 500


def _writer(path: str, worker: int, n: int) -> None:
    registry = Registry(Path(path))
    for i in range(n):
        run_id = f"w{worker}-{i:04d}"
        registry.start(run_id=run_id, kind="toy", started_at=f"2026-01-01T{worker:02d}:{i:06d}",
                       command=["toy", str(i)], run_dir=f"/runs/{run_id}",
                       recipe={"worker": worker, "i": i}, recipe_hash=f"{worker}-{i}",
                       git_commit=None, git_dirty=None, packages={}, host="h",
                       parents=(f"w{worker}-{i - 1:04d}",) if i else ())
        registry.finish(run_id, status="ok", ended_at="2026-01-02", metrics={"i": i},
                        artifacts=[Artifact("output", f"/o/{run_id}", f"{worker:02d}{i:062d}", i, "blake3")],
                        error=None)
        registry.add_note(run_id, f"worker {worker} wrote run {i}", author="t")
        registry.add_tags(run_id, [f"w{worker}"])
    registry.close()


def _indexer(path: str, stop_after: float) -> None:
    """Indexes while the writers write, as a `docthink search` would."""
    registry = Registry(Path(path))
    deadline = time.monotonic() + stop_after
    while time.monotonic() < deadline:
        update_index(registry, None)
    registry.close()


def test_eight_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    Registry(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, RUNS_EACH)) for w in range(WRITERS)]
    procs.append(ctx.Process(target=_indexer, args=(str(path), 3.0)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    total = WRITERS * RUNS_EACH
    with Registry(path) as registry:
        db = registry.db
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert registry.count() == total
        assert db.execute("SELECT count(*) FROM runs WHERE status = 'ok'").fetchone()[0] == total
        assert db.execute("SELECT count(*) FROM artifacts").fetchone()[0] == total
        assert db.execute("SELECT count(*) FROM run_parents").fetchone()[0] == total - WRITERS
        assert db.execute("SELECT count(DISTINCT run_id) FROM notes").fetchone()[0] == total
        assert db.execute("SELECT count(*) FROM tags").fetchone()[0] == total
        update_index(registry, None)  # whatever the concurrent indexer missed
        assert db.execute("SELECT count(*) FROM search_docs WHERE source = 'run'").fetchone()[0] == total
        assert db.execute("SELECT count(*) FROM search_docs WHERE source = 'note'").fetchone()[0] == total
        assert db.execute("INSERT INTO search_fts (search_fts) VALUES ('integrity-check')")
        # every run's text reflects its final state (finished, tagged), not a mid-write one
        (stale,) = db.execute("SELECT count(*) FROM search_docs WHERE source = 'run'"
                              " AND (text NOT LIKE '% ok%' OR text NOT LIKE '%tags: w%')").fetchone()
        assert stale == 0
        assert json.loads(db.execute("SELECT recipe FROM runs WHERE id = 'w7-0499'").fetchone()[0]) == {
            "i": RUNS_EACH - 1, "worker": 7}
