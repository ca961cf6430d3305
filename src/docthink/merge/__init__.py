"""Streaming task arithmetic over safetensors checkpoints: `base + alpha * (tuned - base)`."""

from docthink.merge.core import MergedOutput, MergeReport, merge_checkpoints
from docthink.merge.plan import MergeError, VocabGrowth
from docthink.merge.safetensors_io import CheckpointError

__all__ = [
    "CheckpointError",
    "MergeError",
    "MergeReport",
    "MergedOutput",
    "VocabGrowth",
    "merge_checkpoints",
]
