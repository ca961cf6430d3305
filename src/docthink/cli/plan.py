"""Before a run: the shipped presets (`docthink presets`) and the cost plan (`docthink plan`)."""

from __future__ import annotations

from typing import Annotated

import typer

from docthink.cli.common import app, out_console
from docthink.recipe import preset_files, preset_names

presets_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None,
    help="The papers' settings shipped as recipe files: list them, show one.",
)
app.add_typer(presets_app, name="presets")


def _echo(text: str) -> None:
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)


@presets_app.command("list")
def presets_list() -> None:
    """Every preset, the commands it covers (--preset NAME on each) and what it is."""
    for name, about in preset_names().items():
        covers = ", ".join(f.stem for f in preset_files(name))
        _echo(f"{name}  ({covers})\n    {about}")


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="preset name (docthink presets list)")],
) -> None:
    """The preset's recipe files, each value with its source; `docthink COMMAND --preset NAME
    --print-recipe` prints one resolved."""
    for path in preset_files(name):
        _echo(f"# ---- docthink {path.stem.replace('eval', 'eval run')} --preset {name} "
              f"({path.name}) ----\n{path.read_text(encoding='utf-8').rstrip()}\n")
