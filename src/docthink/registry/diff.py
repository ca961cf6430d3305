"""`runs diff`: two recipes side by side, field by field, as flattened dotted keys."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

MISSING = "(absent)"


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """`{"trace": {"top_k": 16}, "outs": ["a"]}` -> `{"trace.top_k": 16, "outs[0]": "a"}`.
    Empty mappings and lists stay as leaves, so a field that is `{}` still shows."""
    if isinstance(value, Mapping) and value:
        out: dict[str, object] = {}
        for key, item in value.items():
            out |= flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out |= flatten(item, f"{prefix}[{i}]")
        return out
    return {prefix: value}


def show(value: object) -> str:
    """A leaf as it reads in YAML-ish text: strings bare, the rest as JSON."""
    if value is MISSING:
        return MISSING
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class FieldDiff:
    key: str
    a: str
    b: str

    @property
    def same(self) -> bool:
        return self.a == self.b


def diff_recipes(a: Mapping[str, object], b: Mapping[str, object]) -> list[FieldDiff]:
    """Every field of either recipe, sorted by key, with both values (MISSING where absent)."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(fa.keys() | fb.keys())
    return [
        FieldDiff(k, show(fa[k]) if k in fa else MISSING, show(fb[k]) if k in fb else MISSING)
        for k in keys
    ]
