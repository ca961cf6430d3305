"""What every command shares: the app, consoles, common options, recipe printing and how a user
error ends."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from docthink import __version__
from docthink.core.errors import UserError
from docthink.runs import Registry, default_registry_path

if TYPE_CHECKING:  # the stage table and recipes: imported by the commands that run a stage
    # (a registry command such as `docthink search` starts without them, see cli/__init__.py)
    from docthink.recipe import Recipe
    from docthink.stages import Outcome, Stage

S = TypeVar("S", bound="Recipe")

console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 200)


class _Commands(TyperGroup):
    """Every command runs inside this: a UserError (a bad file, row, field, flag or install) ends
    as one line on stderr and exit status 2; any other exception is a bug and keeps its traceback.
    A run the command had started has recorded the error as its failure before it gets here."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            line = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
            console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


# Help text is plain: rich markup would eat `docthink[embed]` and `[default: 2]`, and the rich
# panels print a `<bool>` type after every flag.
app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="Long-context visual document models that reason: corpus, synthetic traces, SFT data.",
)
runs_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="List and inspect recorded runs."
)
app.add_typer(runs_app, name="runs")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"docthink {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version,
                     help="print docthink's version and exit"),
    ] = False,
) -> None:
    pass


RunsDir = Annotated[
    Path, typer.Option(envvar="DOCTHINK_RUNS_DIR", help="where run folders go")
]
RecipeOpt = Annotated[Path | None, typer.Option(help="recipe YAML (flags override it)")]
PresetOpt = Annotated[str | None, typer.Option(
    help="start from a shipped preset (docthink presets list); the recipe file and flags "
    "override it")]
SeedOpt = Annotated[int | None, typer.Option(help="seed of every random choice")]
PrintRecipe = Annotated[
    bool, typer.Option("--print-recipe", help="print the resolved (or default) recipe and exit")
]
ExecutorOpt = Annotated[str | None, typer.Option(
    "--executor", help="where shards run: local (this process) or ray (a Ray cluster; "
    "pip install 'docthink[ray]') [default: local]")]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="the Ray cluster to join (host:port, ray://host:10001 or auto); "
    "default: one started for the run on this machine")]
ShardSizeOpt = Annotated[int | None, typer.Option(
    "--shard-size", help="questions per shard (documents per shard for `questions`) [128]")]
RegistryOpt = Annotated[
    Path | None,
    typer.Option(help="registry file [default: $DOCTHINK_REGISTRY or runs/registry.sqlite]"),
]


def _registry(path: Path | None) -> Registry:
    return Registry(path or default_registry_path())


def _say(message: str) -> None:
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _run(stage: Stage[S], recipe: S, runs_dir: Path, registry: Path | None) -> Outcome:
    """Run a stage as a recorded run and print what it says, the run id on its first line."""
    from docthink.stages import run_stage

    run_id, outcome = run_stage(stage, recipe, runs_dir=runs_dir, registry=registry)
    for i, line in enumerate(outcome.lines):
        _say(f"{line}  [run {run_id}]" if i == 0 else line)
    if outcome.stdout:
        typer.echo(outcome.stdout)
    return outcome


def _print_or_run(
    stage: Stage[S],
    recipe: Path | None,
    overrides: dict[str, object],
    *,
    print_recipe: bool,
    placeholders: dict[str, object],
    runs_dir: Path,
    registry: Path | None,
    note: str = "",
    preset: str | None = None,
) -> None:
    """What a command with `--print-recipe` does: print the resolved recipe, or run the stage."""
    from docthink.recipe import load_recipe

    if print_recipe:
        _print_recipe(stage.recipe, recipe, overrides, placeholders, note, preset)
    else:
        _run(stage, load_recipe(stage.recipe, recipe, overrides, preset=preset), runs_dir,
             registry)


def _print_recipe(
    cls: type[S],
    recipe: Path | None,
    overrides: dict[str, object],
    placeholders: dict[str, object],
    note: str = "",
    preset: str | None = None,
) -> None:
    """`--print-recipe`: the resolved recipe, commented; required paths not given on the command
    line show as placeholders."""
    from docthink.recipe import commented_yaml, load_recipe

    resolved = load_recipe(cls, recipe, overrides, defaults=placeholders, preset=preset)
    text = commented_yaml(resolved) + (f"\n{note}" if note else "")
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)
