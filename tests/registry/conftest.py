from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docthink.cli import app
from docthink.runs.registry import Registry
from tests.registry.history import RunSpec, history, record


def cli(*args: str | Path, code: int = 0) -> str:
    """Run the CLI in-process; fail the test with its output if the exit code differs."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def files_of(root: Path) -> dict[str, str]:
    """Every readable file under `root` and its sha256, registry files aside (compare those with
    `registry_rows`: a read may checkpoint the write-ahead log into the file)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".sqlite" not in path.name and os.access(path, os.R_OK):
            files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def registry_rows(path: Path) -> list[str]:
    """The registry's schema and rows, as SQL."""
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(registry: Path, port: int) -> Iterator[str]:
    """`docthink serve` on `registry`, the real command with its default host; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "docthink.cli", "serve", "--port", str(port),
                             "--registry", str(registry)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/runs", timeout=5).read()
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                output = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"docthink serve did not start: {output}") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def small_history(tmp_path: Path) -> tuple[Path, list[RunSpec]]:
    """Three pipelines (30 runs) in a fresh registry file."""
    path = tmp_path / "history.sqlite"
    runs = history(3, seed=7)
    with Registry(path) as registry:
        record(registry, runs)
    return path, runs


@dataclass(frozen=True)
class Pipeline:
    """Real commands on generated PDFs: ingest -> synth (offline teacher) -> export, and an eval
    of the teacher on the same questions; all recorded in `registry`."""

    root: Path
    registry: Path
    facts: list[dict[str, str]]

    def copy_registry(self, to: Path) -> Path:
        """A private copy for a test that writes notes or reindexes."""
        shutil.copy(self.registry, to)
        return to

    def run_of(self, kind: str) -> str:
        with Registry(self.registry) as registry:
            (record,) = registry.list(kind=kind)
        return record.id


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """Run from inside the folder with relative paths, as people type them."""
    root = tmp_path_factory.mktemp("pipeline")
    common = ("--runs-dir", "runs", "--registry", "registry.sqlite")
    here = Path.cwd()
    os.chdir(root)
    try:
        cli("samples", "sample", "--docs", "3", "--seed", "3")
        cli("ingest", "sample/pdfs", "--out", "corpus", *common)
        cli("synth", "--corpus", "corpus", "--questions", "sample/questions.jsonl", "--out", "synth",
            *common)
        cli("export", "synth", "--format", "trl", "--out", "export", *common)
        facts = [json.loads(line) for line in Path("sample/questions.jsonl").read_text().splitlines()]
        samples = [{"doc_id": f["doc_id"], "doc_type": "Financial report", "question": f["question"],
                    "answer": f["answer"], "evidence_pages": str(f["source_pages"]),
                    "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Int"}
                   for f in facts]
        Path("samples.json").write_text(json.dumps(samples), encoding="utf-8")
        cli("eval", "run", "--data", "samples.json", "--corpus", "corpus", "--out", "eval",
            "--benchmark", "mmlbd-c", *common)
    finally:
        os.chdir(here)
    return Pipeline(root, root / "registry.sqlite", facts)

from tests.registry.browser import browser, page  # noqa: F401  (fixtures)

XSS = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'


@pytest.fixture
def hostile_history(tmp_path: Path) -> tuple[Path, list[RunSpec]]:
    """Three pipelines, the second with markup in its base model, checkpoint names and a note."""
    path = tmp_path / "hostile.sqlite"
    runs = history(3, seed=7)
    for run in runs[10:20]:
        if run.kind == "train":
            run.recipe["model"] = XSS
        # checkpoint folders named with markup, consistently in merge outputs and eval models
        run.recipe = json.loads(json.dumps(run.recipe).replace("/ckpt/m000001", "/ckpt/m000001"
                                                               + XSS_IMG.replace('"', '\\"')))
        run.artifacts = [replace(a, path=a.path.replace("/ckpt/m000001", "/ckpt/m000001" + XSS_IMG))
                         for a in run.artifacts]
    runs[10].notes.append(f"evidence prompt {XSS} broke {XSS_IMG}")
    with Registry(path) as registry:
        record(registry, runs)
    return path, runs
