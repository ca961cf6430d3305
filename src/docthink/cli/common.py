"""What every command shares: the app, consoles, common options, recipe loading and errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from docthink.recipe import (
    RecipeError,
    commented_yaml,
    load_recipe,
)
from docthink.runs import (
    Registry,
    default_registry_path,
)

R = TypeVar("R", bound=BaseModel)


app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Long-context visual document models that reason: corpus, synthetic traces, SFT data.",
)
runs_app = typer.Typer(no_args_is_help=True, help="List and inspect recorded runs.")
app.add_typer(runs_app, name="runs")

console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 200)

RunsDir = Annotated[
    Path, typer.Option(envvar="DOCTHINK_RUNS_DIR", help="where run folders go")
]
RecipeOpt = Annotated[Path | None, typer.Option(help="recipe YAML (flags override it)")]
SeedOpt = Annotated[int | None, typer.Option(help="seed of every random choice")]
PrintRecipe = Annotated[
    bool, typer.Option("--print-recipe", help="print the resolved (or default) recipe and exit")
]
RegistryOpt = Annotated[
    Path | None,
    typer.Option(help="registry file [default: $DOCTHINK_REGISTRY or runs/registry.sqlite]"),
]


def _registry(path: Path | None) -> Registry:
    return Registry(path or default_registry_path())


def _say(message: str) -> None:
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _load(
    cls: type[R],
    recipe: Path | None,
    overrides: dict[str, object],
    defaults: dict[str, object] | None = None,
) -> R:
    try:
        return load_recipe(cls, recipe, overrides, defaults)
    except RecipeError as exc:
        raise _fail(str(exc)) from None


def _print_recipe(
    cls: type[R],
    recipe: Path | None,
    overrides: dict[str, object],
    placeholders: dict[str, object],
    note: str = "",
) -> None:
    """`--print-recipe`: the resolved recipe, commented; required paths not given on the command
    line show as placeholders."""
    resolved = _load(cls, recipe, overrides, defaults=placeholders)
    text = commented_yaml(resolved) + (f"\n{note}" if note else "")
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)
