"""The command line itself: `--version`, help text as written, and every command's
`--print-recipe` printing a commented recipe that loads back as the same recipe."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml
from typer.testing import CliRunner

import docthink
from docthink.cli import LIGHT, app
from docthink.evals.recipe import EvalRecipe
from docthink.questions.recipe import QuestionsRecipe, TasksRecipe
from docthink.synth.recipe import SynthRecipe
from docthink.train.recipe import TrainRecipe


@pytest.mark.parametrize(
    ("command", "cls"),
    [
        (["synth"], SynthRecipe),
        (["questions"], QuestionsRecipe),
        (["tasks"], TasksRecipe),
        (["train"], TrainRecipe),
        (["eval", "run"], EvalRecipe),
    ],
)
def test_print_recipe_without_flags_is_a_valid_recipe(command, cls) -> None:
    result = CliRunner().invoke(app, [*command, "--print-recipe"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.lstrip().startswith("#")  # commented
    data = yaml.safe_load(result.output)
    cls.model_validate(data)


def test_print_recipe_takes_the_flags(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["synth", "--print-recipe", "--seed", "7", "--corpus", str(tmp_path)],
        catch_exceptions=False,
    )
    data = yaml.safe_load(result.output)
    assert data["seed"] == 7 and data["corpus"] == str(tmp_path)


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
    return paths


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output == f"docthink {docthink.__version__}\n"


@pytest.mark.parametrize("path", [(), *_command_paths(typer.main.get_command(app))],
                         ids=lambda path: " ".join(path) or "docthink")
def test_help_shows_its_text_as_written(path: tuple[str, ...]) -> None:
    """No markup is interpreted (it ate `docthink[embed]` and `[default: 2]`) and no `<bool>` type
    follows a flag."""
    result = CliRunner().invoke(app, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "<bool>" not in text
    if "--registry" in text:
        assert "registry file [default: $DOCTHINK_REGISTRY or runs/registry.sqlite]" in text


def test_help_keeps_brackets() -> None:
    demo = CliRunner().invoke(app, ["demo", "--help"]).output
    assert "minilm (needs docthink[embed])" in " ".join(demo.split())
    ingest = CliRunner().invoke(app, ["ingest", "--help"]).output
    assert "worker processes [default: 2]" in ingest


def test_demo_speaks_in_sentences(tmp_path: Path) -> None:
    """What the demo prints and the data card it writes hold no Python reprs ({}, [...], long
    floats), and an empty "Dropped" section says so."""
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--docs", "2",
                                      "--runs-dir", str(tmp_path / "runs")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines()
            if line.split(" ")[0] in ("corpus", "questions", "synth", "export")]
    assert len(said) == 5, result.output
    for line in said:
        assert not re.search(r"[{}]|\['|\d\.\d{5}", line.split("  [run ")[0]), line
    assert ", 0 rejected;" in said[0]
    assert "; 0 dropped;" in said[2]
    card = (tmp_path / "demo" / "synth" / "card.md").read_text()
    assert "## Dropped, and why\n\nNothing was dropped.\n" in card


def test_a_registry_command_starts_without_the_stage_table(tmp_path: Path) -> None:
    """`docthink search` is typed often and starts cold each time: it loads the registry's
    command module only, not the stage table, the recipes or the pipeline packages (most of a
    second of imports); every other command, and `--help`, still sees every command."""
    code = ("import sys\nfrom docthink.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nheavy = ('stages', 'recipe', 'synth', 'questions', "
            "'train', 'evals', 'cli.data')\nprint(sorted(m for m in sys.modules if any("
            "m == 'docthink.' + h or m.startswith('docthink.' + h + '.') for h in heavy)))")
    for command, heavy in ((["search", "anything", "--no-semantic"], "[]"),
                           (["runs", "list"], "[]")):
        proc = subprocess.run(
            [sys.executable, "-c", code, *command, "--registry", str(tmp_path / "r.sqlite")],
            capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == heavy, (command, proc.stdout)
    # each command main() runs with one module loaded is defined there (else "No such command")
    for name in LIGHT:
        subprocess.run([sys.executable, "-m", "docthink.cli", name, "--help"], capture_output=True,
                       text=True, check=True, timeout=120, cwd=tmp_path)
    proc = subprocess.run([sys.executable, "-m", "docthink.cli", "--help"], capture_output=True,
                          text=True, check=True, timeout=120, cwd=tmp_path)
    listed = re.findall(r"^  (\S+)", proc.stdout, flags=re.MULTILINE)
    assert {"synth", "train", "eval", "search", "runs", "leaderboard"} <= set(listed)
