"""MMLongBench-Doc and MMLBD-C: loading, prompting, answer extraction, scoring, reports.

`evaluate(EvalRecipe)` runs a model over a benchmark; `rescore(RescoreRecipe)` scores a file of
extracted predictions with no model; `scoring.score` is the official rule set (never executing
model output)."""

from docthink.evals.data import Benchmark, BenchRow, DataError, load_benchmark
from docthink.evals.extract import ExtractPrompt, rule_extract
from docthink.evals.recipe import EvalRecipe, RescoreRecipe
from docthink.evals.runner import EvalResult, PredictionsError, evaluate, rescore, run_eval
from docthink.evals.scoring import score

__all__ = [
    "BenchRow",
    "Benchmark",
    "DataError",
    "EvalRecipe",
    "EvalResult",
    "ExtractPrompt",
    "PredictionsError",
    "RescoreRecipe",
    "evaluate",
    "load_benchmark",
    "rescore",
    "rule_extract",
    "run_eval",
    "score",
]
