"""Every command's `--print-recipe` prints a commented recipe that loads back as the same recipe."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from docthink.cli import app
from docthink.evals import EvalRecipe
from docthink.recipe import SynthRecipe
from docthink.synth.question_recipe import QuestionsRecipe, TasksRecipe
from docthink.train import TrainRecipe


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
