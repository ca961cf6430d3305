"""Errors in what a person gave docthink (a file, a row, a field, a flag, an install), as opposed
to bugs. Each names what is wrong and, where it can, what to do; `docthink` prints its message as
one line and exits 2. Any other exception is a bug and keeps its traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Raised directly for a one-off; a module with several has its own subclass (RecipeError,
    QuestionsError, CorpusError, DataError, MergeError, ...)."""


class MissingExtra(UserError, ModuleNotFoundError):
    """An optional part is not installed; the message names the extra that installs it."""


class OutputExists(UserError, FileExistsError):
    """An output folder is there already, and replacing it was not asked for."""


@contextmanager
def needs_extra(extra: str, what: str) -> Iterator[None]:
    """Imports for an optional part: a missing third-party module becomes a MissingExtra that says
    `pip install 'docthink[extra]'`. A missing docthink module is a bug, and stays one."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] == "docthink":
            raise
        raise MissingExtra(
            f"{what} needs {exc.name}, which is not installed: pip install 'docthink[{extra}]'",
            name=exc.name,
        ) from None
