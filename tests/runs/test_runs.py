"""Run folders and registry records: what every command leaves behind."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import time
from pathlib import Path

import blake3
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
    # BLAKE3 of b"hello"
    assert (artifact.algorithm, artifact.digest) == (
        "blake3", "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f")
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


def _record_input(registry: Path, runs_dir: Path, data: Path) -> str:
    with start_run("toy", toy_recipe(), command=["t"], runs_dir=runs_dir, registry_path=registry,
                   inputs=[data]) as run:
        pass
    (artifact,) = Registry(registry).get(run.id).artifacts
    return artifact.digest


def test_a_file_not_written_since_it_was_hashed_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry keeps the digest of a file that was quiet when hashed, with its fingerprint
    (size, mtime, ctime, inode, device); a later run takes it while the fingerprint holds, and
    hashes the bytes again once the file is written, even if its size and mtime are put back."""
    import docthink.core.hashing
    import docthink.runs.run

    registry, runs_dir = tmp_path / "reg.sqlite", tmp_path / "runs"
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 1000)
    first = _record_input(registry, runs_dir, data)  # just written: not quiet, not kept
    assert sqlite3.connect(registry).execute("SELECT count(*) FROM file_digests").fetchone() == (0,)
    monkeypatch.setattr(docthink.core.hashing, "QUIET_NS", 0)
    time.sleep(0.05)
    assert _record_input(registry, runs_dir, data) == first  # quiet now: hashed and kept
    read: list[Path] = []
    real = docthink.runs.run.file_digest

    def counting(path: Path, *args: object) -> str:
        read.append(path)
        return real(path, *args)

    monkeypatch.setattr(docthink.runs.run, "file_digest", counting)
    assert _record_input(registry, runs_dir, data) == first and read == []
    stat = data.stat()
    data.write_bytes(b"b" * 1000)  # same size, and the old mtime put back
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert data.stat().st_mtime_ns == stat.st_mtime_ns
    assert _record_input(registry, runs_dir, data) == blake3.blake3(b"b" * 1000).hexdigest()
    assert read == [data]
