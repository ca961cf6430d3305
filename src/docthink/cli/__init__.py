"""The `docthink` command. Thin: each module parses arguments, resolves a recipe, calls one stage
and records the run; the work lives in the packages below."""

# Imported for their commands, in the order `docthink --help` lists them.
from docthink.cli import data, plan, training, evals, serving, registry  # noqa: F401, I001
from docthink.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="docthink")
