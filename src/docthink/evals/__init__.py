"""MMLongBench-Doc and MMLBD-C: loading, prompting, answer extraction, scoring, reports.

`evaluate(EvalRecipe)` runs a model over a benchmark; `rescore(RescoreRecipe)` scores a file of
extracted predictions with no model; `scoring.score` is the official rule set (never executing
model output)."""
