from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from docthink.cli import app


def docthink(*args: str | Path) -> str:
    """Run the CLI in-process; fail the test with its output if it fails."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus folder, questions.jsonl) over 4 generated PDFs with planted facts."""
    root = tmp_path_factory.mktemp("sample")
    registry = root / "registry.sqlite"
    docthink("samples", root / "sample", "--docs", "4", "--seed", "3")
    docthink("ingest", root / "sample" / "pdfs", "--out", root / "corpus",
             "--runs-dir", root / "runs", "--registry", registry)
    return root / "corpus", root / "sample" / "questions.jsonl"
