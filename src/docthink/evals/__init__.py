"""MMLongBench-Doc, MMLBD-C and MMLongBench-Doc-V2: loading, prompting, answer extraction,
scoring (V1's rules or V2's judge), reports.

`evaluate(EvalRecipe)` runs a model over a benchmark; `rescore(RescoreRecipe)` scores a file of
predictions without the evaluated model (and beside V1's rules, for V2); `scoring.score` is the
official rule set (never executing model output); `benchmarks.BENCHMARKS` names each benchmark's
loader and metric."""
