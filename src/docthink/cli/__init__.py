"""The `docthink` command. Thin: each module parses arguments, resolves a recipe, calls one stage
and records the run; the work lives in the packages below.

`main` loads only the module of the command it is asked for when that is a registry command
(`search`, `runs`, `leaderboard`, ...): those do not need the stage table and the recipes, whose
import is most of a second, and a search is typed often. Every other command, `--help` and
`docthink.cli.app` load every module, in the order `docthink --help` lists them."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["app", "main"]

MODULES = ("data", "plan", "training", "evals", "serving", "registry")
# command -> the one module that defines it, for the commands that run without the others
LIGHT = dict.fromkeys(("runs", "leaderboard", "sweep", "search", "serve", "reproduce"), "registry")


def _load(modules: tuple[str, ...]) -> typer.Typer:
    for name in modules:
        import_module(f"docthink.cli.{name}")
    from docthink.cli.common import app

    return app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the whole command, every module loaded
        return _load(MODULES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    light = LIGHT.get(sys.argv[1]) if len(sys.argv) > 1 else None
    _load((light,) if light else MODULES)(prog_name="docthink")
