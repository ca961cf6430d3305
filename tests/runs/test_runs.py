"""Run folders and registry records: what every command leaves behind."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from docthink.models.specs import EndpointSpec, OpenAIModelSpec
from docthink.runs import Registry, recipe_hash, start_run
from docthink.runs.registry import MIGRATIONS


class ToyRecipe(BaseModel):
    k: int = 16
    model: OpenAIModelSpec


def toy_recipe(key: str | None = None) -> ToyRecipe:
    endpoint = EndpointSpec(
        base_url="http://127.0.0.1:9/v1", api_key=SecretStr(key) if key else None
    )
    return ToyRecipe(model=OpenAIModelSpec(model="m", endpoints=(endpoint,)))


def test_run_folder_and_record(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    registry = tmp_path / "reg.sqlite"
    with start_run(
        "toy", toy_recipe(), command=["docthink", "toy"], runs_dir=tmp_path / "runs",
        registry_path=registry, parents=["parent-1"],
    ) as run:
        out.write_text("hello")
        run.add("output", out)
        run.metrics["n"] = 3
        run.log.info("working")
    assert yaml.safe_load((run.dir / "recipe.yaml").read_text())["k"] == 16
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert "working" in (run.dir / "run.log").read_text()
    record = Registry(registry).get(run.id)
    assert record.status == "ok" and record.kind == "toy"
    assert record.metrics == {"n": 3}
    assert record.parents == ("parent-1",)
    assert record.recipe_hash == recipe_hash(toy_recipe())
    (artifact,) = record.artifacts
    # sha256 of b"hello"
    assert artifact.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert artifact.size == 5 and artifact.role == "output"
    assert record.packages["docthink"]


def test_failed_run_is_recorded_with_its_error(tmp_path: Path) -> None:
    registry = tmp_path / "reg.sqlite"
    with pytest.raises(ValueError, match="bad row 7"):
        with start_run("toy", toy_recipe(), command=["x"], runs_dir=tmp_path,
                       registry_path=registry) as run:
            raise ValueError("bad row 7")
    record = Registry(registry).get(run.id)
    assert record.status == "failed"
    assert record.error == "ValueError: bad row 7"
    assert json.loads((run.dir / "summary.json").read_text())["status"] == "failed"


def test_inline_api_key_never_reaches_records(tmp_path: Path) -> None:
    key = "sk-very-secret-4f1c9"
    registry = tmp_path / "reg.sqlite"
    with start_run("toy", toy_recipe(key), command=["docthink"], runs_dir=tmp_path / "runs",
                   registry_path=registry) as run:
        run.log.info("recipe %s", toy_recipe(key))
    for file in [*run.dir.iterdir(), registry]:
        assert key.encode() not in file.read_bytes(), file
    assert recipe_hash(toy_recipe(key)) == recipe_hash(toy_recipe("another-key"))


def test_migrations_are_numbered_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "reg.sqlite"
    Registry(path).close()
    Registry(path).close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS)
    sqlite3.connect(path).execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this docthink knows"):
        Registry(path)


def _record_many(registry: str, runs_dir: str, worker: int, n: int) -> None:
    for i in range(n):
        with start_run("toy", toy_recipe(), command=[f"w{worker}", str(i)],
                       runs_dir=Path(runs_dir), registry_path=Path(registry)) as run:
            run.metrics["i"] = i


def test_concurrent_processes_lose_no_record(tmp_path: Path) -> None:
    registry = tmp_path / "reg.sqlite"
    workers, per_worker = 4, 25
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_record_many, args=(str(registry), str(tmp_path / "runs"), w, per_worker))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    db = Registry(registry)
    assert db.count() == workers * per_worker
    assert {r.status for r in db.list(limit=1000)} == {"ok"}
    assert sqlite3.connect(registry).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
