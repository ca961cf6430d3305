"""Every random choice is derived from (recipe seed, row id, purpose): the same recipe gives the
same bytes, and changing the seed changes the choices and nothing else."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def _digest(seed: int, row_id: object, purpose: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{row_id}\x00{purpose}".encode()).digest()


def uniform(seed: int, row_id: object, purpose: str) -> float:
    """A number in [0, 1) fixed by its three arguments (`row_id` as its text)."""
    return int.from_bytes(_digest(seed, row_id, purpose)[:8], "big") / 2**64


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


def _seed_int(seed: int, row_id: str, purpose: str) -> int:
    return int.from_bytes(_digest(seed, row_id, purpose)[:16], "big")


def rng(seed: int, row_id: str, purpose: str) -> random.Random:
    """Python's Mersenne Twister for choices that need more than one number (a sample, a
    shuffle): the same sequence on every platform."""
    return random.Random(_seed_int(seed, row_id, purpose))


def np_rng(seed: int, row_id: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng(_seed_int(seed, row_id, purpose))
