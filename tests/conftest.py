"""Suite-wide settings: nothing may reach a model hub (there is no network), and nothing the tests
run may write the checkout or the user's default registry and run folders.

Runs recorded by tests go to a temporary registry and runs folder: one for the whole session (so
fixtures of any scope are covered) and a fresh registry per test. At the end of the session the
checkout and the current folder are compared with how they were at its start: anything left
behind fails the suite."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before any test imports transformers: without it a hub id fails only after minutes of retries.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

CHECKOUT = Path(__file__).resolve().parents[1]
# Files Python and pytest write by themselves, and the caches of linters a developer may run beside
# the suite; everything else a test leaves is a leak.
BY_PRODUCTS = ("__pycache__/", ".pytest_cache/", ".egg-info/", ".ruff_cache/", ".mypy_cache/")


def _left_behind(folder: Path) -> set[str]:
    """Every new file git would list in `folder`'s checkout, ignored ones included, and the default
    run folder (`runs/` under the current folder)."""
    status = subprocess.run(
        ["git", "-C", str(folder), "status", "--porcelain", "--ignored", "--untracked-files=all"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    # new files only (untracked or ignored): a tracked file changed during the run is a developer's
    # edit far more often than a test's
    files = {line for line in status
             if line[:2] in ("??", "!!") and not any(p in line for p in BY_PRODUCTS)}
    runs = Path.cwd() / "runs"
    if runs.exists():
        files |= {f"runs: {p}" for p in runs.rglob("*")}
    worktrees = subprocess.run(["git", "-C", str(folder), "worktree", "list", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout
    # a worktree a test added (in a temporary folder) and left registered in the checkout
    temporary = f"worktree {tempfile.gettempdir()}/"
    return files | {line for line in worktrees.splitlines() if line.startswith(temporary)}


@pytest.fixture(scope="session", autouse=True)
def _hermetic_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.mktemp("docthink-session")
    saved = {k: os.environ.get(k) for k in ("DOCTHINK_REGISTRY", "DOCTHINK_RUNS_DIR")}
    os.environ["DOCTHINK_REGISTRY"] = str(root / "registry.sqlite")
    os.environ["DOCTHINK_RUNS_DIR"] = str(root / "runs")
    before = _left_behind(CHECKOUT)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    leaked = sorted(_left_behind(CHECKOUT) - before)
    assert not leaked, f"the tests left these in the checkout or ./runs: {leaked}"


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTHINK_REGISTRY", str(tmp_path / "registry.sqlite"))


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus folder, questions.jsonl) over 4 generated PDFs with planted facts."""
    from tests.helpers import docthink

    root = tmp_path_factory.mktemp("sample")
    registry = root / "registry.sqlite"
    docthink("samples", root / "sample", "--docs", "4", "--seed", "3")
    docthink("ingest", root / "sample" / "pdfs", "--out", root / "corpus",
             "--runs-dir", root / "runs", "--registry", registry)
    return root / "corpus", root / "sample" / "questions.jsonl"
