"""One bad file must not break the registry for everyone (issue 19).

A registry built by real commands, then broken the ways files break over the years; planted:

- `bad.jsonl`: a questions file malformed from the start (its synth failed on it);
- `synth-a/traces.parquet`: truncated to half its bytes;
- `qa.jsonl`: a questions file replaced by binary bytes (a PNG header and noise);
- `qb.jsonl`: no read permission (as root, the commands that must fail to read it run with the
  DAC capabilities dropped, through `setpriv`; without it that case is left out, said by the
  test that checks it);
- `synth-b/traces.parquet`: deleted;
- `synth-b/answers.parquet`: replaced by JSON lines (another format);
- `eval-a/predictions.jsonl`: a row cut mid-way (malformed);
- `eval-b/predictions.jsonl`: a folder where the file was recorded;
- the run folders and outputs of `synth-c` and `eval-c`: deleted.

Search (CLI and web), the leaderboard, `runs list/show/lineage/verify`, the web pages and
`reproduce` keep working, say what they skipped in one line, and a file is read again once it
changes. The pipeline's own readers stay strict (the synth on `bad.jsonl` fails)."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docthink.cli import app
from docthink.registry.index import skipped_files, update_index
from docthink.registry.search import Searcher
from docthink.runs.registry import Registry, RunFilter
from tests.registry.conftest import cli, files_of, free_port, registry_rows, serving

CLI = [sys.executable, "-m", "docthink.cli"]
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search"]


def _deny_reads_prefix(folder: Path) -> list[str] | None:
    """What to run a command under so that a file without read permission cannot be read: nothing
    for a normal user; for root, `setpriv` dropping the capabilities that bypass file modes. None
    when neither works here."""
    probe = folder / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        for prefix in ([], NO_DAC):
            if prefix and shutil.which("setpriv") is None:
                continue
            done = subprocess.run([*prefix, "cat", str(probe)], capture_output=True, check=False)
            if done.returncode != 0:
                return prefix
        return None
    finally:
        probe.chmod(0o600)
        probe.unlink()


def _run(prefix: list[str], *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *CLI, *(str(a) for a in args)], cwd=cwd, capture_output=True,
                          text=True, check=False, timeout=300)


def test_the_issue_reproduction_answers_and_names_the_file_once(tmp_path: Path) -> None:
    """Issue 19, typed as a new user would, through the real CLI with its default registry
    (`runs/` in the current folder); then the file is fixed and found without a rescan."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOCTHINK_REGISTRY", "DOCTHINK_RUNS_DIR")}

    def docthink(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, check=False, timeout=300)

    (tmp_path / "pdfs").mkdir()
    assert docthink("ingest", "pdfs", "--out", "corpus").returncode == 0
    (tmp_path / "bad.jsonl").write_text('{"qid": "a", "doc_id": \n', encoding="utf-8")
    assert docthink("synth", "--corpus", "corpus", "--questions", "bad.jsonl",
                    "--out", "r1").returncode != 0  # fails, as it should
    found = docthink("search", "anything", "--no-semantic")
    assert found.returncode == 0, found.stderr
    said = found.stdout + found.stderr
    assert said.count("bad.jsonl") == 1
    assert (f"1 file skipped: {tmp_path / 'bad.jsonl'} (row 1: not JSON: Expecting value); "
            "see `docthink runs verify`") in said.splitlines()
    assert "no match" in said
    # repaired, it is read on the next search (no --rescan), and a failed run's questions count
    (tmp_path / "bad.jsonl").write_text(
        '{"qid": "a", "doc_id": "d", "question": "How many zeppelins?", "source_pages": [1]}\n',
        encoding="utf-8")
    again = docthink("search", "zeppelins", "--no-semantic")
    assert again.returncode == 0 and " skipped: " not in again.stderr
    with Registry(tmp_path / "runs" / "registry.sqlite") as registry:
        (failed,) = registry.find(RunFilter(status="failed"))
    assert again.stdout.startswith(f"1. {failed.id} question a ")


@dataclass(frozen=True)
class Broken:
    root: Path
    registry: Path
    runs: dict[str, str]  # name (synth-a, eval-c, failed, ...) -> run id
    planted: dict[str, str]  # path -> the reason search must give
    prefix: list[str] | None  # see _deny_reads_prefix; None: the permission case is left out
    first_search: subprocess.CompletedProcess[str]
    question: dict[str, object]  # a row of the intact questions file (qc.jsonl)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Broken:
    root = tmp_path_factory.mktemp("faults")
    common = ("--runs-dir", "runs", "--registry", "registry.sqlite")
    here = Path.cwd()
    os.chdir(root)
    try:
        cli("samples", "sample", "--docs", "2", "--seed", "5")
        cli("ingest", "sample/pdfs", "--out", "corpus", *common)
        questions = Path("sample/questions.jsonl").read_text(encoding="utf-8")
        for name in ("qa", "qb", "qc"):
            Path(f"{name}.jsonl").write_text(questions, encoding="utf-8")
        for name, q in (("synth-a", "qa"), ("synth-b", "qb"), ("synth-c", "qc")):
            cli("synth", "--corpus", "corpus", "--questions", f"{q}.jsonl", "--out", name, *common)
        cli("export", "synth-c", "--format", "trl", "--out", "export-c", *common)
        facts = [json.loads(line) for line in questions.splitlines()]
        samples = [{"doc_id": f["doc_id"], "doc_type": "Financial report", "question": f["question"],
                    "answer": f["answer"], "evidence_pages": str(f["source_pages"]),
                    "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Int"}
                   for f in facts]
        Path("samples.json").write_text(json.dumps(samples), encoding="utf-8")
        for name in ("eval-a", "eval-b", "eval-c"):
            cli("eval", "run", "--data", "samples.json", "--corpus", "corpus", "--out", name,
                "--benchmark", "mmlbd-c", *common)
        Path("bad.jsonl").write_text('{"qid": "a", "doc_id": \n', encoding="utf-8")
        failed = CliRunner().invoke(app, ["synth", "--corpus", "corpus", "--questions", "bad.jsonl",
                                          "--out", "failed", *common])
        assert failed.exit_code != 0  # the pipeline's reader stays strict
    finally:
        os.chdir(here)
    registry = root / "registry.sqlite"
    with Registry(registry) as reg:
        runs = {}
        for record in reg.find(RunFilter(), limit=None):
            out = str(record.recipe["out"])
            runs["failed" if record.status == "failed" else Path(out).name] = record.id
    prefix = _deny_reads_prefix(root)
    planted = _plant(root, runs, prefix is not None)
    first = _run(prefix or [], "search", facts[2]["question"], "--no-semantic", "--registry",
                 registry, cwd=root)
    return Broken(root, registry, runs, planted, prefix, first, facts[2])


def _plant(root: Path, runs: dict[str, str], permissions: bool) -> dict[str, str]:
    planted = {}
    planted[str(root / "bad.jsonl")] = "row 1: not JSON: Expecting value"
    traces = root / "synth-a" / "traces.parquet"
    traces.write_bytes(traces.read_bytes()[: traces.stat().st_size // 2])
    planted[str(traces)] = "not a Parquet table with columns qid, text"
    (root / "qa.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    planted[str(root / "qa.jsonl")] = "not UTF-8 text"
    if permissions:
        (root / "qb.jsonl").chmod(0)
        planted[str(root / "qb.jsonl")] = "permission denied"
    (root / "synth-b" / "traces.parquet").unlink()
    planted[str(root / "synth-b" / "traces.parquet")] = "missing"
    (root / "synth-b" / "answers.parquet").write_text('{"qid": "1", "text": "x"}\n')
    planted[str(root / "synth-b" / "answers.parquet")] = "not a Parquet table with columns qid"
    predictions = root / "eval-a" / "predictions.jsonl"
    lines = predictions.read_text(encoding="utf-8").splitlines(keepends=True)
    predictions.write_text(lines[0] + lines[1][: len(lines[1]) // 2] + "\n" + "".join(lines[2:]),
                           encoding="utf-8")
    planted[str(predictions)] = "row 2: not JSON"
    folder = root / "eval-b" / "predictions.jsonl"
    folder.unlink()
    folder.mkdir()
    (folder / "part-0.jsonl").write_text("{}\n")
    planted[str(folder)] = "a folder, not a file"
    for name in ("synth-c", "eval-c"):
        shutil.rmtree(root / name)
        shutil.rmtree(root / "runs" / runs[name])
    for path in (root / "synth-c" / "traces.parquet", root / "synth-c" / "answers.parquet",
                 root / "eval-c" / "predictions.jsonl"):
        planted[str(path)] = "missing"
    return planted


def _skip_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " skipped: " in line]


def test_search_answers_and_says_what_it_skipped_in_one_line(broken: Broken) -> None:
    out = broken.first_search
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    (line,) = _skip_lines(out.stdout + out.stderr)
    n = len(broken.planted)
    assert line.startswith(f"{n} files skipped: ") and line.endswith(
        f"and {n - 3} more; see `docthink runs verify`")
    assert all(line.count(path) <= 1 for path in broken.planted)  # each named once at most
    # the intact data is found: synth-c's questions (its folder is gone, its input is not) ...
    assert f"{broken.runs['synth-c']} question {broken.question['qid']}" in out.stdout
    # ... and every planted file is recorded in the index with its reason
    with Registry(broken.registry) as registry:
        recorded = {s.path: s.reason for s in skipped_files(registry)}
    assert set(recorded) == set(broken.planted)
    for path, reason in broken.planted.items():
        assert recorded[path].startswith(reason), (path, recorded[path])
    again = _run(broken.prefix or [], "search", "anything", "--no-semantic", "--registry",
                 broken.registry, cwd=broken.root)
    assert again.returncode == 0 and len(_skip_lines(again.stderr)) == 1
    assert "indexed" not in again.stderr  # nothing changed: nothing re-read


def test_unreadable_permissions_are_a_skip_too(broken: Broken) -> None:
    if broken.prefix is None:
        pytest.skip("running as root without a working `setpriv` to drop CAP_DAC_OVERRIDE: a file "
                    "without read permission is still readable here, so that case is not planted")
    with Registry(broken.registry) as registry:
        recorded = {s.path: s.reason for s in skipped_files(registry)}
    assert recorded[str(broken.root / "qb.jsonl")] == "permission denied"


def test_verify_names_every_planted_file_with_its_reason(broken: Broken) -> None:
    out = _run(broken.prefix or [], "runs", "verify", "--registry", broken.registry,
               cwd=broken.root)
    assert out.returncode == 1  # artifacts are missing
    lines = out.stderr.splitlines()
    for path, reason in broken.planted.items():
        said = [line for line in lines if f" {path}" in line]
        assert said, path
        if reason != "missing":
            assert any(f"{path}: {reason}" in line for line in said), (path, said)
    assert any(line.startswith("missing") and str(broken.root / "eval-c") in line for line in lines)
    if broken.prefix is not None:
        assert any(line.startswith("unreadable") and "qb.jsonl (Permission denied" in line
                   for line in lines)


def test_leaderboard_and_runs_commands_keep_working(broken: Broken) -> None:
    board = cli("leaderboard", "--registry", broken.registry)
    assert "docthink-teacher/bm25" in board and "1 checkpoint;" in board
    listed = cli("runs", "list", "--limit", "100", "--registry", broken.registry)
    assert all(run_id in listed for run_id in broken.runs.values())
    for name, run_id in broken.runs.items():
        shown = cli("runs", "show", run_id, "--registry", broken.registry)
        assert f"id: {run_id}" in shown
        cli("runs", "lineage", run_id, "--registry", broken.registry)
        if name == "synth-a":  # what search skipped of it, with the reasons
            assert "search_skipped:" in shown and "reason: not UTF-8 text" in shown


def test_reproduce_prints_every_run_and_refuses_in_one_line_where_an_input_is_gone(
    broken: Broken,
) -> None:
    before, rows = files_of(broken.root), registry_rows(broken.registry)
    for name, run_id in broken.runs.items():
        out = cli("reproduce", run_id, "--registry", broken.registry)
        if name == "export-c":
            assert f"# warning: input {broken.root / 'synth-c' / 'examples.jsonl'} is gone" in out
    # printing wrote nothing
    assert files_of(broken.root) == before and registry_rows(broken.registry) == rows
    refused = cli("reproduce", broken.runs["export-c"], "--run", "--out", broken.root / "again",
                  "--registry", broken.registry, code=2)
    assert refused.strip().splitlines() == [
        (f"error: run {broken.runs['export-c']} cannot be rerun: its input "
         f"{broken.root / 'synth-c' / 'examples.jsonl'} is gone (and 1 more); restore it first")]
    assert not (broken.root / "again").exists()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200
        return html.unescape(response.read().decode())


def test_web_pages_keep_working_and_say_what_search_skipped(broken: Broken) -> None:
    pytest.importorskip("fastapi", reason="the web UI needs the 'web' extra")
    with serving(broken.registry, free_port()) as url:
        for page in ("/", "/leaderboard", "/runs"):
            assert "docthink-teacher/bm25" in _get(url + page) or page == "/runs"
        pages = {name: _get(f"{url}/runs/{run_id}") for name, run_id in broken.runs.items()}
        query = urllib.request.quote(str(broken.question["question"]))
        found = _get(f"{url}/search?q={query}")
    n = len(broken.planted)
    assert f'<p class="muted" id="skipped">{n} files skipped: ' in found
    assert broken.runs["synth-c"] in found
    synth_a = pages["synth-a"]
    assert f"<code>{broken.root / 'synth-a' / 'traces.parquet'}</code>: not a Parquet table" in synth_a
    assert f"<code>{broken.root / 'qa.jsonl'}</code>: not UTF-8 text" in synth_a
    gone = f"<code>{broken.root / 'eval-c' / 'predictions.jsonl'}</code> <span class=\"gone\">(gone)"
    assert gone in pages["eval-c"]
    assert "(gone)" not in pages["eval-a"]


def test_a_skipped_file_is_read_again_once_it_changes(broken: Broken) -> None:
    """Runs last: it repairs two planted files (a rewrite, and a chmod alone)."""
    (broken.root / "qa.jsonl").write_bytes((broken.root / "qc.jsonl").read_bytes())
    if broken.prefix is not None:
        (broken.root / "qb.jsonl").chmod(0o644)
    repaired = 1 + (broken.prefix is not None)
    with Registry(broken.registry) as registry:
        stats = update_index(registry, None)  # no --rescan: the skipped files are looked at
        assert stats.files_read == repaired and stats.skipped == []
        assert len(skipped_files(registry)) == len(broken.planted) - repaired
        hits = Searcher(registry, None).search(str(broken.question["question"]), limit=50).hits
        found = {(h.run_id, h.source) for h in hits}
        assert (broken.runs["synth-a"], "question") in found
        if broken.prefix is not None:
            assert (broken.runs["synth-b"], "question") in found
