"""Run folders and the run registry."""

from docthink.runs.registry import Artifact, Registry, RunRecord, default_registry_path
from docthink.runs.run import (
    RUN_MARKER,
    Run,
    artifact_digest,
    mark_output,
    parent_runs,
    recipe_hash,
    recipe_json,
    start_run,
)

__all__ = [
    "RUN_MARKER",
    "Artifact",
    "Registry",
    "Run",
    "RunRecord",
    "artifact_digest",
    "default_registry_path",
    "mark_output",
    "parent_runs",
    "recipe_hash",
    "recipe_json",
    "start_run",
]
