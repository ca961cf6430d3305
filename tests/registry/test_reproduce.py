"""`docthink reproduce`: the printed command reruns the run from its recorded recipe; with --run
the rerun's outputs hash the same as the recorded ones (a real export), differ when its input
changed, and an other commit runs from a temporary clone that registers nothing in the checkout;
printing writes nothing, and what it prints reruns the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docthink.registry import reproduce
from docthink.runs import artifact_digest
from docthink.runs.registry import Registry
from tests.registry.conftest import Pipeline, cli, files_of, registry_rows


def test_print_names_commit_recipe_and_command(pipeline: Pipeline, tmp_path: Path) -> None:
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    export = pipeline.run_of("export")
    out = cli("reproduce", export, "--out", tmp_path / "again", "--registry", path)
    with Registry(path) as registry:
        record = registry.get(export)
    assert record.git_commit is not None and record.git_commit in out
    # the recipe says `run_dir: synth`: the rerun starts where the run was started, as recorded
    assert record.cwd == str(pipeline.root) and f"\ncd {pipeline.root}\n" in out
    assert "(inferred from its artifact paths)" not in out
    recipe_file = tmp_path / "again" / f"recipe-{export}.yaml"
    assert f"\ndocthink export --recipe {recipe_file} --runs-dir" in out
    assert f"\nformat: trl\nout: {tmp_path / 'again' / 'export'}\nrun_dir: synth\n" in out
    assert not (tmp_path / "again").exists()  # printing runs nothing


def test_printing_writes_nothing_and_prints_a_script_that_reruns(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`docthink reproduce RUN` with the default target (`runs/reproduce-<id>/`) writes no file
    and no row (issue 11, stumble 6); the recipe travels in the printed lines, which run as is."""
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    synth = pipeline.run_of("synth")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv("DOCTHINK_RUNS_DIR", raising=False)
    before = files_of(pipeline.root), files_of(tmp_path), registry_rows(path)
    script = cli("reproduce", synth, "--registry", path)
    assert (files_of(pipeline.root), files_of(tmp_path), registry_rows(path)) == before
    assert not (here / "runs").exists()
    target = here / "runs" / f"reproduce-{synth}"
    assert f"cat > {target / f'recipe-{synth}.yaml'} <<'DOCTHINK_RECIPE'" in script
    assert f"\nout: {target / 'synth'}\n" in script  # the recipe, outputs redirected
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-e"], input=script, env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with Registry(target / "registry.sqlite") as own:
        (rerun,) = own.list()
    assert (rerun.kind, rerun.status) == ("synth", "ok")
    assert (target / "synth" / "examples.jsonl").exists()


def test_export_round_trip_gives_the_recorded_hashes(pipeline: Pipeline, tmp_path: Path) -> None:
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    export = pipeline.run_of("export")
    out = cli("reproduce", export, "--run", "--out", tmp_path / "again", "--registry", path)
    with Registry(path) as registry:
        record = registry.get(export)
        note = registry.get(export).notes[-1].text
    (recorded,) = record.outputs()
    assert f"same      {recorded.path} {recorded.digest[:12]} -> {recorded.digest[:12]}" in out
    assert "identical outputs: 1 same, 0 different, 0 missing" in out
    assert note.startswith("reproduced by run") and "identical outputs" in note
    assert (tmp_path / "again" / "export" / "train.parquet").read_bytes() == Path(
        recorded.path).read_bytes()
    with Registry(tmp_path / "again" / "registry.sqlite") as own:
        (rerun,) = own.list()
    assert rerun.recipe["out"] == str(tmp_path / "again" / "export")
    assert rerun.git_commit == record.git_commit


def test_a_record_hashed_with_sha256_is_compared_with_sha256(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Records written before blake3 (registry migration 5) name sha256: a rerun's output is
    hashed that way to be compared with them."""
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    export = pipeline.run_of("export")
    with Registry(path) as registry:
        (recorded,) = registry.get(export).outputs()
        old = artifact_digest(Path(recorded.path), "sha256")[0]
        with registry.write() as db:
            db.execute("UPDATE artifacts SET algorithm = 'sha256', digest = ? WHERE run_id = ?"
                       " AND role = 'output'", (old, export))
    out = cli("reproduce", export, "--run", "--out", tmp_path / "again", "--registry", path)
    assert f"same      {recorded.path} {old[:12]} -> {old[:12]}" in out
    assert "identical outputs: 1 same, 0 different, 0 missing" in out


def test_a_changed_input_gives_different_hashes(pipeline: Pipeline, tmp_path: Path) -> None:
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    export = pipeline.run_of("export")
    examples = pipeline.root / "synth" / "examples.jsonl"
    original = examples.read_bytes()
    try:
        examples.write_bytes(b"".join(original.splitlines(keepends=True)[1:]))  # one row fewer
        out = cli("reproduce", export, "--run", "--out", tmp_path / "again", "--registry", path,
                  code=1)
    finally:
        examples.write_bytes(original)
    assert "outputs differ: 0 same, 1 different, 0 missing" in out


def _worktrees(repo: Path) -> list[str]:
    """The worktrees registered in the checkout (their paths: the commits they are at move on
    their own)."""
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    return [line for line in listed.splitlines() if line.startswith("worktree ")]


def test_another_commit_runs_from_a_temporary_clone_and_leaves_the_checkout_alone(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    export = pipeline.run_of("export")
    with Registry(path) as registry:
        commit = registry.get(export).git_commit
    repo = Path(reproduce.__file__).resolve().parents[3]
    worktrees = _worktrees(repo)
    # pretend the checkout moved on since the run: the recorded commit must be checked out
    monkeypatch.setattr(reproduce, "code_version", lambda: ("f" * 40, False))
    printed = cli("reproduce", export, "--out", tmp_path / "printed", "--registry", path)
    assert f"git checkout {commit}" in printed
    out = cli("reproduce", export, "--run", "--out", tmp_path / "again", "--registry", path)
    assert "identical outputs" in out
    with Registry(tmp_path / "again" / "registry.sqlite") as own:
        (rerun,) = own.list()
    assert rerun.git_commit == commit and rerun.git_dirty is False  # ran from a clean checkout
    assert _worktrees(repo) == worktrees  # nothing registered in the user's checkout


def test_a_kind_without_a_command_is_refused(pipeline: Pipeline, tmp_path: Path) -> None:
    path = pipeline.copy_registry(tmp_path / "r.sqlite")
    with Registry(path) as registry:
        registry.start(run_id="odd", kind="toy", started_at="2026", command=[], run_dir="/",
                       recipe={}, recipe_hash="h", git_commit="a" * 40, git_dirty=False,
                       packages={}, host="h", parents=())
    assert "no stage reruns a 'toy' run" in cli("reproduce", "odd", "--registry", path,
                                                         code=2)
