"""The evaluation stages: eval (a model on a benchmark) and eval-rescore (predictions, no
model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docthink.evals.recipe import EvalRecipe, RescoreRecipe
from docthink.runs import Run
from docthink.stages.base import Outcome, Stage, Written


def scoring_lines(report: dict[str, object]) -> list[str]:
    """Who scored (a judge: its model and prompt) and, beside V1's rules, what differs."""
    from docthink.stages.data import tally

    lines = []
    scoring: dict[str, object] = report["scoring"]  # type: ignore[assignment]
    if scoring["metric"] == "judge":
        lines.append(f"  {report['benchmark']} scored by judge {scoring['judge']} (prompt "
                     f"{scoring['prompt']} sha256 {str(scoring['prompt_sha256'])[:16]}); "
                     f"{report['note']}")
    comparison: dict[str, Any] | None = report["comparison"]  # type: ignore[assignment]
    if comparison is not None:
        causes = tally(comparison["differ_by_cause"])
        lines.append(f"  beside V1's rules: {comparison['compared']} compared, "
                     f"{len(comparison['differ'])} verdicts differ"
                     + (f" ({causes})" if causes else "")
                     + f", {len(comparison['v1_unscoreable'])} rows V1's rules cannot score")
    return lines


def _eval(recipe: EvalRecipe, run: Run) -> Outcome:
    from docthink.evals.report import questions_summary, run_metrics
    from docthink.evals.runner import evaluate

    result = evaluate(recipe, show_progress=True)
    report = result.report
    questions: dict[str, object] = report["questions"]  # type: ignore[assignment]
    lines = [f"eval {recipe.out}: {questions_summary(questions)}", *scoring_lines(report)]
    for mode, m in report["modes"].items():  # type: ignore[union-attr]
        tokens = "-" if m["mean_output_tokens"] is None else f"{m['mean_output_tokens']:.1f}"
        lines.append(f"  {mode}: acc {m['acc']:.4f} f1 {m['f1']:.4f} ({m['n']} questions, "
                     f"{m['failures']} failed, mean output tokens {tokens})")
    lines.append(f"  report {result.report_files[0]}; predictions {result.predictions}")
    corpus = recipe.corpus or recipe.out / "corpus"
    return Outcome(
        lines,
        [Written(result.predictions), *(Written(path) for path in result.report_files)],
        run_metrics(report),
        {"questions": questions, "usage": result.usage, "extraction": report["extraction"],
         "scoring": report["scoring"]},
        marks=[recipe.out],
        # the labels beside a V2 data file, and the sha256 of every PDF that was read
        inputs=[*(Written(path) for path in result.data_files[1:]),
                Written(corpus / "manifest.jsonl")],
    )


def _read(recipe: EvalRecipe) -> list[Path]:
    """The runs that made the corpus and, for a local checkpoint, the model (train or merge)."""
    corpus = [recipe.corpus] if recipe.corpus is not None else []
    return corpus + ([recipe.model.path] if recipe.model.kind == "local" else [])


def _judged(recipe: EvalRecipe | RescoreRecipe) -> None:
    """A benchmark scored by a judge needs one: refused before a run is recorded."""
    from docthink.evals.benchmarks import BENCHMARKS, require_judge

    require_judge(BENCHMARKS[recipe.benchmark], recipe.scoring)


def _runnable(recipe: EvalRecipe) -> None:
    """A judge where the benchmark needs one, and requests its servers take (see
    `docthink.serving`)."""
    from docthink.serving import check, eval_demands

    _judged(recipe)
    check(eval_demands(recipe))


EVAL = Stage("eval", ("eval", "run"), EvalRecipe, _eval, inputs=lambda r: [r.data],
             parents=_read, recipe_option=False, check=_runnable)


def _rescore(recipe: RescoreRecipe, run: Run) -> Outcome:
    from docthink.evals.report import questions_summary, run_metrics
    from docthink.evals.runner import rescore

    report = rescore(recipe, show_progress=True)
    questions: dict[str, object] = report["questions"]  # type: ignore[assignment]
    summary = {"questions": questions, "scoring": report["scoring"]}
    if recipe.out is None:
        return Outcome([], [], run_metrics(report), summary, stdout=json.dumps(report, indent=2))
    lines = [f"rescore {recipe.out}: acc {report['acc']:.4f} f1 {report['f1']:.4f} "
             f"({questions_summary(questions)})", *scoring_lines(report)]
    return Outcome(lines, [Written(recipe.out)], run_metrics(report), summary)


RESCORE = Stage("eval-rescore", ("eval", "rescore"), RescoreRecipe, _rescore,
                inputs=lambda r: [r.predictions, r.data, *([r.v1_data] if r.v1_data else [])],
                check=_judged)
