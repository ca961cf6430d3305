"""Helpers shared by every test folder."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from docthink.cli import app


def docthink(*args: str | Path) -> str:
    """Run the CLI in-process; fail the test with its output if it fails."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output
