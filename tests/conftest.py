"""Suite-wide settings: nothing may reach a model hub (there is no network), and runs recorded
by tests go to a temporary registry, never the developer's `runs/`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before any test imports transformers: without it a hub id fails only after minutes of retries.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTHINK_REGISTRY", str(tmp_path / "registry.sqlite"))
