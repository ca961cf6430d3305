"""Run folders and the run registry."""

from docthink.runs.registry import Artifact, Registry, RunRecord, default_registry_path
from docthink.runs.run import (
    RUN_MARKER,
    Run,
    file_sha256,
    mark_output,
    parent_runs,
    recipe_hash,
    recipe_json,
    start_run,
    tree_digest,
)

__all__ = [
    "RUN_MARKER",
    "Artifact",
    "Registry",
    "Run",
    "RunRecord",
    "default_registry_path",
    "file_sha256",
    "mark_output",
    "parent_runs",
    "recipe_hash",
    "recipe_json",
    "start_run",
    "tree_digest",
]
