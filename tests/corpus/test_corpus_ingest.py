"""Ingest: bad files are rejected with their reason and never stop the run; finished work survives
a SIGKILL; re-runs process only what changed; a crashing worker costs only its own file."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.corpus.files import CorpusError
from docthink.corpus.ingest import FAULT_ENV, ingest
from docthink.corpus.policy import RenderPolicy
from docthink.corpus.samples import write_sample_pdfs
from docthink.runs import Registry
from tests.corpus.corpus_pdfs import (
    write_broken_page,
    write_encrypted,
    write_garbled,
    write_pdf,
    write_truncated,
    write_zero_pages,
)

SMALL = RenderPolicy(dpi=36, max_side=200)  # pixels are not the point of these tests


def read_manifest(corpus: Path) -> dict[str, dict]:
    """The manifest as any tool would read it: plain JSON lines, no docthink."""
    lines = (corpus / "manifest.jsonl").read_text().splitlines()
    return {row["doc_id"]: row for row in map(json.loads, lines)}


def ingest_quietly(pdf_dir: Path, out: Path, **kwargs: object):
    return ingest(pdf_dir, out, workers=2, progress=False, **kwargs)


def test_every_bad_kind_is_rejected_with_its_reason_and_good_files_are_ingested(tmp_path: Path):
    pdfs = tmp_path / "pdfs"
    write_pdf(pdfs / "good.pdf", ["alpha one\nalpha two", "beta"])
    write_pdf(pdfs / "sub" / "nested.pdf", ["nested page"])
    write_encrypted(pdfs / "locked.pdf", ["secret page"])
    write_truncated(pdfs / "cut.pdf", ["a", "b", "c"])
    write_garbled(pdfs / "garbled.pdf")
    write_broken_page(pdfs / "broken_page.pdf", ["x", "y"])
    write_zero_pages(pdfs / "zero.pdf")
    (pdfs / "notes.txt").write_text("meeting notes, not a PDF\n" * 20)
    (pdfs / "fake.pdf").write_bytes(b"<html><body>a web page saved as .pdf</body></html>")
    (pdfs / "empty.pdf").write_bytes(b"")
    (pdfs / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: tool state, not an input

    summary = ingest_quietly(pdfs, tmp_path / "corpus")

    manifest = read_manifest(tmp_path / "corpus")
    assert {doc_id: row["status"] for doc_id, row in manifest.items()} == {
        "good.pdf": "ok",
        "sub/nested.pdf": "ok",
        "locked.pdf": "rejected",
        "cut.pdf": "rejected",
        "garbled.pdf": "rejected",
        "broken_page.pdf": "rejected",
        "zero.pdf": "rejected",
        "notes.txt": "rejected",
        "fake.pdf": "rejected",
        "empty.pdf": "rejected",
    }
    reasons = {doc_id: row["reason"] for doc_id, row in manifest.items()}
    assert reasons["good.pdf"] is None
    assert reasons["locked.pdf"] == "encrypted: a password is required to open it"
    assert reasons["cut.pdf"] == "truncated: no %%EOF marker in the last 1024 bytes"
    assert reasons["garbled.pdf"] == "corrupt: PDFium could not parse the file (format error)"
    assert reasons["broken_page.pdf"] == "corrupt: page 1: Failed to load page."
    assert reasons["zero.pdf"] == "empty: the document has no pages"
    assert reasons["notes.txt"] == "not_pdf: no %PDF- header in the first 1024 bytes"
    assert reasons["fake.pdf"] == "not_pdf: no %PDF- header in the first 1024 bytes"
    assert reasons["empty.pdf"] == "not_pdf: the file is empty"

    assert (summary.files, summary.ok, summary.pages) == (10, 2, 3)
    assert summary.rejected == {
        "corrupt": 2,
        "empty": 1,
        "encrypted": 1,
        "not_pdf": 3,
        "truncated": 1,
    }
    assert summary.rejections == {d: r for d, r in reasons.items() if r is not None}

    good = manifest["good.pdf"]
    assert good["n_pages"] == 2
    assert good["page_sizes"] == [[595.276, 841.89], [595.276, 841.89]]
    with Corpus.open(tmp_path / "corpus") as corpus:
        assert corpus.page_text(PageRef("good.pdf", 1)) == "alpha one\nalpha two"
        assert corpus.page_text(PageRef("sub/nested.pdf", 1)) == "nested page"


def test_rerun_processes_only_new_changed_and_removed_files(tmp_path: Path):
    pdfs, out = tmp_path / "pdfs", tmp_path / "corpus"
    for name in "abcd":
        write_pdf(pdfs / f"{name}.pdf", [f"document {name}"])
    first = ingest_quietly(pdfs, out)
    assert (first.processed, first.skipped_unchanged) == (4, 0)
    manifest_before = (out / "manifest.jsonl").read_bytes()

    again = ingest_quietly(pdfs, out)
    assert (again.processed, again.skipped_unchanged, again.removed) == (0, 4, 0)
    assert (out / "manifest.jsonl").read_bytes() == manifest_before

    write_pdf(pdfs / "b.pdf", ["document b, second edition", "with a new page"])
    touched = pdfs / "c.pdf"  # same bytes, new mtime: confirmed unchanged by its sha256
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (pdfs / "d.pdf").unlink()
    write_pdf(pdfs / "e.pdf", ["document e"])
    changed = ingest_quietly(pdfs, out)

    assert (changed.processed, changed.skipped_unchanged, changed.removed) == (2, 2, 1)
    manifest = read_manifest(out)
    assert sorted(manifest) == ["a.pdf", "b.pdf", "c.pdf", "e.pdf"]
    assert manifest["b.pdf"]["n_pages"] == 2
    assert manifest["c.pdf"]["mtime_ns"] == touched.stat().st_mtime_ns
    with Corpus.open(out) as corpus:
        assert corpus.page_text(PageRef("b.pdf", 2)) == "with a new page"
        with pytest.raises(KeyError, match=r"unknown doc_id 'd\.pdf'"):
            corpus.document("d.pdf")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("kill", "worker_crash: worker killed by SIGKILL"),
        ("segv", "worker_crash: worker killed by SIGSEGV"),
        ("exit", "worker_crash: worker exited with status 3"),
    ],
)
def test_a_crashing_worker_rejects_only_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, reason: str
):
    pdfs, out = tmp_path / "pdfs", tmp_path / "corpus"
    for name in ["a", "b", "boom", "c", "d", "e"]:
        write_pdf(pdfs / f"{name}.pdf", [f"document {name}"])
    monkeypatch.setenv(FAULT_ENV, f"{fault}:boom.pdf")

    summary = ingest_quietly(pdfs, out)

    assert summary.rejections == {"boom.pdf": reason}
    assert summary.ok == 5
    # A crash says nothing certain about the file, so the next run tries it again.
    monkeypatch.delenv(FAULT_ENV)
    retried = ingest_quietly(pdfs, out)
    assert (retried.processed, retried.ok, retried.rejections) == (1, 6, {})


def test_sigkill_mid_run_loses_nothing_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    pdfs = tmp_path / "pdfs"
    write_sample_pdfs(pdfs, n_docs=40, seed=3, pages=(3, 8))
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"prerender: {SMALL.model_dump_json()}\n")
    command = [sys.executable, "-m", "docthink.cli", "ingest", str(pdfs), "--out", str(killed),
               "--recipe", str(recipe), "--runs-dir", str(tmp_path / "runs")]
    # The delay stretches the run so the kill lands half-way, whatever the machine's speed.
    env = {**os.environ, FAULT_ENV: "delay:0.1",
           "DOCTHINK_REGISTRY": str(tmp_path / "registry.sqlite")}
    process = subprocess.Popen(command, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        finished_before_kill = wait_for_journal_lines(killed / "journal.jsonl", at_least=8)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    journaled = {json.loads(line)["doc_id"] for line in journal_lines(killed / "journal.jsonl")}
    assert 8 <= finished_before_kill <= len(journaled) < 40
    assert not (killed / "manifest.jsonl").exists()
    # The killed command's run record stays, marked as never finished.
    (record,) = Registry(tmp_path / "registry.sqlite").list(kind="ingest")
    assert record.status == "running" and record.ended_at is None
    with pytest.raises(CorpusError, match="first ingest did not finish"):
        Corpus.open(killed)

    capsys.readouterr()
    resumed = ingest(pdfs, killed, render=SMALL, workers=2, progress=True)
    progress_lines = capsys.readouterr().err.splitlines()
    uninterrupted = ingest_quietly(pdfs, reference, render=SMALL)

    assert (resumed.processed, resumed.skipped_unchanged) == (40 - len(journaled), len(journaled))
    reprocessed = {line.split()[2].rstrip(":") for line in progress_lines if " ok, " in line}
    assert len(reprocessed) == 40 - len(journaled) and not reprocessed & journaled
    assert uninterrupted.processed == 40
    assert (resumed.ok, resumed.pages, resumed.rendered) == (
        40,
        uninterrupted.pages,
        uninterrupted.pages,
    )
    assert (killed / "manifest.jsonl").read_bytes() == (reference / "manifest.jsonl").read_bytes()
    assert not (killed / "journal.jsonl").exists()
    assert store_files(killed / "texts") == store_files(reference / "texts")
    assert store_files(killed / "images") == store_files(reference / "images")
    assert render_rows(killed) == render_rows(reference)


def test_a_torn_journal_tail_is_dropped_and_a_bad_line_is_named(tmp_path: Path):
    pdfs, out = tmp_path / "pdfs", tmp_path / "corpus"
    for name in "abc":
        write_pdf(pdfs / f"{name}.pdf", [f"document {name}"])
    ingest_quietly(pdfs, out)
    lines = (out / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    # As a run killed mid-append leaves it: a.pdf and b.pdf journaled, c.pdf's line cut short.
    (out / "manifest.jsonl").unlink()
    (out / "journal.jsonl").write_bytes(lines[0] + lines[1] + lines[2][:40])
    resumed = ingest_quietly(pdfs, out)
    assert (resumed.processed, resumed.skipped_unchanged) == (1, 2)
    assert (out / "manifest.jsonl").read_bytes() == b"".join(lines)

    (out / "manifest.jsonl").write_bytes(lines[0] + b'{"doc_id": "b.pdf"}\n' + lines[2])
    with pytest.raises(ValueError, match=r"manifest\.jsonl line 2: .*validation error"):
        ingest_quietly(pdfs, out)


def test_one_ingest_at_a_time(tmp_path: Path):
    write_pdf(tmp_path / "pdfs" / "a.pdf", ["a"])
    out = tmp_path / "corpus"
    out.mkdir()
    with open(out / ".ingest.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CorpusError, match="another ingest is writing"):
            ingest_quietly(tmp_path / "pdfs", out)


def test_a_corpus_mirrors_one_folder(tmp_path: Path):
    write_pdf(tmp_path / "one" / "a.pdf", ["a"])
    write_pdf(tmp_path / "two" / "b.pdf", ["b"])
    ingest_quietly(tmp_path / "one", tmp_path / "corpus")
    with pytest.raises(CorpusError, match=r"is the corpus of .*/one: ingest .*/two into another"):
        ingest_quietly(tmp_path / "two", tmp_path / "corpus")


def test_a_corpus_inside_the_pdf_folder_is_not_ingested_as_input(tmp_path: Path):
    write_pdf(tmp_path / "a.pdf", ["a"])
    ingest_quietly(tmp_path, tmp_path / "corpus")
    again = ingest_quietly(tmp_path, tmp_path / "corpus")
    assert (again.files, again.processed) == (1, 0)


def wait_for_journal_lines(journal: Path, at_least: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if journal.exists() and len(journal_lines(journal)) >= at_least:
            return len(journal_lines(journal))
        time.sleep(0.01)
    raise AssertionError(f"{journal} did not reach {at_least} lines in {timeout_s} s")


def journal_lines(journal: Path) -> list[str]:
    """Complete lines only: a line being written when we look has no newline yet."""
    return journal.read_text().split("\n")[:-1]


def store_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def render_rows(corpus: Path) -> list[tuple]:
    with sqlite3.connect(corpus / "renders.sqlite") as db:
        return db.execute("SELECT * FROM renders ORDER BY pdf_sha256, page, policy_key").fetchall()
