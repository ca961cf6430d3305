"""Seeded generators for choices that need more than one number (a sample, a shuffle), derived
like `choice.uniform` from (recipe seed, row id, purpose): same recipe, same bytes."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def _seed_int(seed: int, row_id: str, purpose: str) -> int:
    digest = hashlib.sha256(f"{seed}\x00{row_id}\x00{purpose}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def rng(seed: int, row_id: str, purpose: str) -> random.Random:
    """Python's Mersenne Twister seeded with an int: the same sequence on every platform."""
    return random.Random(_seed_int(seed, row_id, purpose))


def np_rng(seed: int, row_id: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng(_seed_int(seed, row_id, purpose))
