"""Every random choice is derived from (recipe seed, row id, purpose): the same recipe gives the
same bytes, and changing the seed changes the choices and nothing else."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def uniform(seed: int, row_id: str, purpose: str) -> float:
    """A number in [0, 1) fixed by its three arguments."""
    digest = hashlib.sha256(f"{seed}\x00{row_id}\x00{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def weighted_choice(seed: int, row_id: str, purpose: str, weights: Mapping[T, float]) -> T:
    """One key of `weights`, with probability proportional to its weight (keys in given order)."""
    total = sum(weights.values())
    point = uniform(seed, row_id, purpose) * total
    running = 0.0
    for key, weight in weights.items():
        running += weight
        if point < running and weight > 0:
            return key
    return next(k for k, w in reversed(list(weights.items())) if w > 0)
