"""`docthink serve-args`: the vLLM command line each model of a recipe needs."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from docthink.cli.common import app


class StageArg(enum.StrEnum):
    synth = "synth"
    questions = "questions"
    eval = "eval"


@app.command("serve-args")
def serve_args(
    stage: Annotated[StageArg, typer.Argument(help="the command the recipe is for")],
    recipe: Annotated[Path, typer.Argument(help="its recipe YAML, complete (e.g. the recipe.yaml "
                                           "a run folder keeps)")],
) -> None:
    """Print, for each OpenAI-compatible model the recipe names, its longest requests and the vLLM
    command line that serves them: --limit-mm-per-prompt for the most images, --max-model-len
    for the longest request at the recipe's image policy, prefix caching, and the structured-output
    backend for the stages that ask for JSON. Nothing runs and nothing is recorded."""
    from docthink.serving import file_demands, serve_commands

    demands = file_demands(stage.value, recipe)
    if not demands:
        typer.echo(f"# {recipe}: no model of this recipe is served over HTTP (the offline "
                   "teacher and local checkpoints need no server)")
        return
    typer.echo("\n".join(serve_commands(demands)))
