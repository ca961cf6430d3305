"""MMLongBench-Doc, MMLBD-C and MMLongBench-Doc-V2: loading, prompting, answer extraction,
scoring (V1's rules or V2's judge), reports.

`evaluate(EvalRecipe)` runs a model over a benchmark; `rescore(RescoreRecipe)` scores a file of
predictions without the evaluated model (and beside V1's rules, for V2); `scoring.score` is the
official rule set (never executing model output); `benchmarks.BENCHMARKS` names each benchmark's
loader and metric."""

from docthink.evals.benchmarks import BENCHMARKS, JudgeRequired
from docthink.evals.data import Benchmark, BenchRow, DataError, load_benchmark, load_v2
from docthink.evals.extract import rule_extract
from docthink.evals.prompt import PromptFile
from docthink.evals.recipe import EvalRecipe, RescoreRecipe
from docthink.evals.runner import EvalResult, PredictionsError, evaluate, rescore, run_eval
from docthink.evals.scoring import score

__all__ = [
    "BENCHMARKS",
    "BenchRow",
    "Benchmark",
    "DataError",
    "EvalRecipe",
    "EvalResult",
    "JudgeRequired",
    "PredictionsError",
    "PromptFile",
    "RescoreRecipe",
    "evaluate",
    "load_benchmark",
    "load_v2",
    "rescore",
    "rule_extract",
    "run_eval",
    "score",
]
