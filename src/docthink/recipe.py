"""Recipes: pydantic models of everything that decides a run's result, loaded from YAML and
overridden by command-line flags. The resolved recipe is what the run folder and registry keep.

A preset is a named set of recipe files shipped in the package (`docthink/presets/NAME/`, one
file per command it covers, every value with its source in a comment): the papers' settings as a
starting point. Precedence, lowest first: the recipe's defaults, the preset, the recipe file, the
flags; nested settings merge key by key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)
from pydantic_core import ErrorDetails

from docthink.core.errors import UserError


class RecipeError(UserError, ValueError):
    """A recipe file or flag that does not validate; the message names the file and field."""


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the preset file that holds this recipe's settings (`presets/NAME/<section>.yaml`); None:
    # presets do not cover it
    preset_section: ClassVar[str | None] = None


R = TypeVar("R", bound=Recipe)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(
    cls: type[R],
    path: Path | None,
    overrides: dict[str, Any],
    defaults: dict[str, Any] | None = None,
    preset: str | None = None,
) -> R:
    """Recipe from `path` (YAML) with `overrides` (flags; None means "not given") on top, the
    `preset`'s settings for this recipe under it, and `defaults` under all (placeholders for
    fields none sets)."""
    data = _read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else f"preset {preset}" if preset else "flags"
    under = _merge(defaults or {}, preset_settings(preset, cls) if preset is not None else {})
    given = {k: v for k, v in overrides.items() if v is not None}
    data = _merge(_merge(under, data), given)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise RecipeError(f"{source}: invalid {cls.__name__}: {problems}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    if not isinstance(loaded, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping, got {type(loaded).__name__}")
    return loaded


# -- presets --------------------------------------------------------------------------------------

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> dict[str, str]:
    """Every shipped preset and its one-line description."""
    index: dict[str, str] = yaml.safe_load((PRESET_DIR / "index.yaml").read_text(encoding="utf-8"))
    return index


def preset_files(name: str) -> list[Path]:
    """The recipe files of a preset, one per command it covers."""
    if name not in preset_names():
        raise RecipeError(f"no preset {name!r} (have: {', '.join(preset_names())})")
    return sorted((PRESET_DIR / name).glob("*.yaml"))


def preset_settings(name: str, cls: type[Recipe]) -> dict[str, Any]:
    """What preset `name` sets for recipes of type `cls`."""
    files = {f.stem: f for f in preset_files(name)}
    section = cls.preset_section
    if section is None or section not in files:
        covers = ", ".join(files)
        raise RecipeError(f"preset {name!r} has no settings for {section or cls.__name__} "
                          f"(it covers: {covers})")
    return _read_yaml(files[section])


def _problem(err: ErrorDetails) -> str:
    """`field.path: message`; a check over several fields has no path."""
    where = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def commented_yaml(recipe: BaseModel, indent: int = 0) -> str:
    """The recipe as YAML with each field's description as a comment above it: what
    `--print-recipe` shows, and a valid recipe file to start from."""
    lines: list[str] = []
    pad = " " * indent
    for name, info in type(recipe).model_fields.items():
        value = getattr(recipe, name)
        if info.description:
            lines.append(f"{pad}# {info.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.append(commented_yaml(value, indent + 2))
            continue
        dumped = recipe.model_dump(mode="json", include={name})[name]
        text = yaml.safe_dump({name: dumped}, sort_keys=False, default_flow_style=False).rstrip()
        lines.extend(pad + line for line in text.splitlines())
    return "\n".join(lines)


K = TypeVar("K")


def in_order(weights: Mapping[K, float], order: Sequence[K]) -> dict[K, float]:
    """`weights` with its keys in a fixed order (those in `order` first, in that order; any other
    after them, sorted): a weighted choice walks its keys in order, so without this the same
    weights listed in another order (a file, the registry's JSON) would choose differently under
    the same recipe hash."""
    known = [k for k in order if k in weights]
    others = sorted((k for k in weights if k not in order), key=str)
    return {k: weights[k] for k in [*known, *others]}
