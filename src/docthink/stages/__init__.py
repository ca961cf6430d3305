"""Every command that records a run is a stage (see `base`); `STAGES` is the table the CLI and
`docthink reproduce` share, keyed by run kind."""

from docthink.stages.base import Outcome, Stage, Written, run_stage
from docthink.stages.data import EXPORT, INGEST, QUESTIONS, SYNTH, TASKS
from docthink.stages.evals import EVAL, RESCORE
from docthink.stages.training import MERGE, TRAIN

STAGES: dict[str, Stage] = {
    stage.kind: stage
    for stage in (INGEST, QUESTIONS, TASKS, SYNTH, EXPORT, TRAIN, MERGE, EVAL, RESCORE)
}

__all__ = ["STAGES", "Outcome", "Stage", "Written", "run_stage"]
