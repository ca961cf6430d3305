"""What a person sees when they give docthink something wrong: the real command in a subprocess
prints one line on stderr naming the file, row, field or install, and exits 2; no traceback, no
panel. A bug (any other exception) keeps its traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import docthink
from docthink.corpus.ingest import ingest
from docthink.runs import Registry

# The import path of the docthink under test, for the subprocesses.
SRC = str(Path(docthink.__file__).resolve().parents[1])
CORE_INSTALL = "import sys; sys.modules['torch'] = None; "  # `import torch` fails as when absent
CORE_LOCK = Path(__file__).resolve().parents[1] / "requirements" / "core.txt"


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def core_only() -> str:
    """A prelude after which every package the core install (`pip install -c
    requirements/core.txt -e .`) lacks fails to import: what only an extra or the dev install
    brings, as on a newcomer's machine."""
    core = {_dist(line.split("==")[0]) for line in CORE_LOCK.read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    blocked = sorted(top for top, dists in packages_distributions().items()
                     if top.isidentifier() and top != "docthink"
                     and not any(_dist(d) in core for d in dists))
    # a finder ahead of the others: `import x` raises ModuleNotFoundError as for an absent package
    return ("import sys\n"
            "class Absent:\n"
            f"    blocked = set({blocked!r})\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.partition('.')[0] in self.blocked:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Absent())\n")


def docthink_cli(*args: str | Path, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    """`docthink ARGS` as a user runs it (`python -m docthink`), `prelude` run first."""
    code = prelude + "import runpy; runpy.run_module('docthink', run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The single line a user error prints; fails with everything printed otherwise."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@dataclass(frozen=True)
class Samples:
    root: Path  # what `docthink samples ROOT` makes: pdfs/ and questions.jsonl
    corpus: Path  # ROOT/pdfs ingested

    @property
    def questions(self) -> Path:
        return self.root / "questions.jsonl"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    root = tmp_path_factory.mktemp("front-door")
    proc = docthink_cli("samples", root / "samples", "--docs", "2", cwd=root)
    assert proc.returncode == 0, proc.stderr
    ingest(root / "samples" / "pdfs", root / "corpus", workers=1, progress=False)
    return Samples(root / "samples", root / "corpus")


def write_rows(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def registry_error(kind: str) -> str:
    (record,) = Registry(Path(os.environ["DOCTHINK_REGISTRY"])).list(kind=kind)
    assert record.status == "failed"
    return str(record.error)


def test_the_quick_start_runs_on_a_core_install(tmp_path: Path) -> None:
    """The README's quick start with only what the core install has: the demo, then the registry
    commands a newcomer tries next. (An `import click` in the CLI, which only the dev install
    brought, once made every command fail there.)"""
    prelude = core_only()
    assert "'torch'" in prelude and "'typer'" not in prelude  # it tells the installs apart
    demo = docthink_cli("demo", "--out", "demo", cwd=tmp_path, prelude=prelude)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (tmp_path / "demo" / "export-trl").is_dir(), demo.stderr[-3000:]
    for command in (["search", "revenue", "--no-semantic"], ["runs", "list"], ["leaderboard"],
                    ["--help"]):
        proc = docthink_cli(*command, cwd=tmp_path, prelude=prelude)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])


def test_ingest_of_a_missing_folder(tmp_path: Path) -> None:
    line = one_line(docthink_cli("ingest", "no-such-pdfs", "--out", "corpus", cwd=tmp_path))
    assert f"PDF folder {tmp_path.resolve() / 'no-such-pdfs'} does not exist" in line
    assert "does not exist" in registry_error("ingest")  # the run it started failed, with why


def test_synth_on_a_folder_that_is_not_a_corpus(samples: Samples, tmp_path: Path) -> None:
    (tmp_path / "not-a-corpus").mkdir()
    line = one_line(docthink_cli("synth", "--corpus", "not-a-corpus", "--questions",
                                 samples.questions, "--out", "run", cwd=tmp_path))
    assert "not-a-corpus has no manifest.jsonl: not a corpus" in line
    assert registry_error("synth").startswith("CorpusError: not-a-corpus has no manifest.jsonl")


@pytest.mark.parametrize(
    ("second_row", "message"),
    [
        ('{"qid": "b", "doc_id": "x.pdf", "question": "?", ', "questions.jsonl: row 2: not JSON"),
        ('{"qid": "b", "doc_id": "x.pdf", "question": "Which year?"}',
         "questions.jsonl: row 2: field source_pages: Field required"),
    ],
    ids=["malformed", "no-source-pages"],
)
def test_a_bad_questions_row(samples: Samples, tmp_path: Path, second_row: str,
                             message: str) -> None:
    first = samples.questions.read_text(encoding="utf-8").splitlines()[0]
    write_rows(tmp_path / "questions.jsonl", [first, second_row])
    line = one_line(docthink_cli("synth", "--corpus", samples.corpus, "--questions",
                                 "questions.jsonl", "--out", "run", cwd=tmp_path))
    assert message in line
    assert message in registry_error("synth")


def test_train_on_a_core_install_names_the_extra(tmp_path: Path) -> None:
    proc = docthink_cli("train", "--model", "m", "--data", "export", cwd=tmp_path,
                        prelude=CORE_INSTALL)
    assert one_line(proc) == (
        "error: docthink train needs torch, which is not installed: pip install 'docthink[train]'")
    # What needs no torch still works there.
    recipe = docthink_cli("train", "--print-recipe", cwd=tmp_path, prelude=CORE_INSTALL)
    assert recipe.returncode == 0 and "learning_rate:" in recipe.stdout, recipe.stderr


@pytest.mark.parametrize("alpha", ["-0.5", "1.5"])
def test_merge_refuses_extrapolation_unless_asked(tmp_path: Path, alpha: str) -> None:
    line = one_line(docthink_cli("merge", "--base", "base", "--tuned", "tuned", "--alpha",
                                 f"0.25,{alpha}", "--out", "merged-{alpha}", cwd=tmp_path))
    expected = f"alpha {alpha} is outside [0, 1], an extrapolation: ask for it with --extrapolate"
    assert expected in line


def test_merge_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "tuned").mkdir()
    line = one_line(docthink_cli("merge", "--base", "no-such-model", "--tuned", "tuned",
                                 "--alpha", "0.25", "--out", "merged", cwd=tmp_path))
    assert line == "error: base no-such-model: no such folder"


@pytest.mark.parametrize("folder", ["corpus", "no-such-run"])
def test_export_of_a_folder_that_is_not_a_synth_run(samples: Samples, tmp_path: Path,
                                                     folder: str) -> None:
    run_dir = samples.corpus if folder == "corpus" else tmp_path / folder
    line = one_line(docthink_cli("export", run_dir, "--format", "trl", "--out", "export",
                                 cwd=tmp_path))
    expected = ("no examples.jsonl, so not the --out folder of a finished `docthink synth` run"
                if folder == "corpus" else
                "no such folder (give the --out folder of a `docthink synth` run)")
    assert line == f"error: {run_dir}: {expected}"


def test_questions_about_no_document_of_the_corpus_say_which_folder_to_ingest(
    samples: Samples, tmp_path: Path
) -> None:
    """`docthink samples S` then `docthink ingest S` gives ids `pdfs/...` while the questions
    name the files: synth stops before any model call and names the folder whose ingest
    matches; that ingest then synthesizes every question."""
    wide = tmp_path / "wide-corpus"
    ingest(samples.root, wide, workers=1, progress=False)
    line = one_line(docthink_cli("synth", "--corpus", wide, "--questions", samples.questions,
                                 "--out", "run", cwd=tmp_path))
    first = json.loads(samples.questions.read_text().splitlines()[0])["doc_id"]
    assert (f"none of its {len(samples.questions.read_text().splitlines())} questions is about a "
            f"document of corpus {wide}: the questions name {first!r}, the corpus has "
            f"'pdfs/{first}'") in line
    assert line.endswith(f"ingest {samples.root.resolve() / 'pdfs'} into a new corpus folder")
    assert registry_error("synth").startswith("QuestionsError: ")
    assert not (tmp_path / "run" / "evidence.parquet").exists()

    proc = docthink_cli("synth", "--corpus", samples.corpus, "--questions", samples.questions,
                        "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "run" / "examples.jsonl").read_text().splitlines()
    assert len(rows) == len(samples.questions.read_text().splitlines())


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    """An exception that is not a user error (here the test hook's own argument check, a
    ValueError) is not turned into one line."""
    (tmp_path / "pdfs").mkdir()
    env_hook = "import os; os.environ['DOCTHINK_TEST_FAULT'] = 'explode:a.pdf'; "
    proc = docthink_cli("ingest", "pdfs", "--out", "corpus", cwd=tmp_path, prelude=env_hook)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: DOCTHINK_TEST_FAULT" in proc.stderr
    assert "error: " not in proc.stderr
