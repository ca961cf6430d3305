"""The evaluation stages: eval (a model on a benchmark) and eval-rescore (predictions, no
model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from docthink.evals.recipe import EvalRecipe, RescoreRecipe
from docthink.runs import Run
from docthink.stages.base import Outcome, Stage, Written

if TYPE_CHECKING:
    from docthink.evals.report import Report


def scoring_lines(report: Report) -> list[str]:
    """Who scored (a judge: its model and prompt) and, beside V1's rules, what differs."""
    from docthink.evals.judge import JudgeScoring
    from docthink.stages.data import tally

    lines = []
    if isinstance(report.scoring, JudgeScoring):
        judge = report.scoring.judge
        lines.append(f"  {report.benchmark} scored by judge {judge.model} (prompt "
                     f"{judge.prompt} sha256 {judge.prompt_sha256[:16]}); {report.note}")
    comparison = report.comparison
    if comparison is not None:
        causes = tally(comparison.differ_by_cause)
        lines.append(f"  beside V1's rules: {comparison.compared} compared, "
                     f"{len(comparison.differ)} verdicts differ"
                     + (f" ({causes})" if causes else "")
                     + f", {len(comparison.v1_unscoreable)} rows V1's rules cannot score")
    return lines


def _eval(recipe: EvalRecipe, run: Run) -> Outcome:
    from docthink.evals.report import run_metrics
    from docthink.evals.runner import evaluate

    result = evaluate(recipe, show_progress=True)
    report = result.report
    lines = [f"eval {recipe.out}: {report.questions.describe()}", *scoring_lines(report)]
    for mode, m in report.modes.items():
        tokens = "-" if m.mean_output_tokens is None else f"{m.mean_output_tokens:.1f}"
        lines.append(f"  {mode}: acc {m.acc:.4f} f1 {m.f1:.4f} ({m.n} questions, "
                     f"{m.failures} failed, mean output tokens {tokens})")
    lines.append(f"  report {result.report_files[0]}; predictions {result.predictions}")
    corpus = recipe.corpus or recipe.out / "corpus"
    return Outcome(
        lines,
        [Written(result.predictions), *(Written(path) for path in result.report_files)],
        run_metrics(report),
        {"questions": report.questions.to_json(), "usage": result.usage,
         "extraction": None if report.extraction is None else report.extraction.to_json(),
         "scoring": report.scoring.to_json()},
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


EVAL = Stage("eval", ("eval", "run"), EvalRecipe, _eval, inputs=lambda r: [r.data],
             parents=_read, recipe_option=False, check=_judged)


def _rescore(recipe: RescoreRecipe, run: Run) -> Outcome:
    from docthink.evals.report import run_metrics
    from docthink.evals.runner import rescore

    report = rescore(recipe, show_progress=True)
    summary: dict[str, object] = {"questions": report.questions.to_json(),
                                  "scoring": report.scoring.to_json()}
    if recipe.out is None:
        return Outcome([], [], run_metrics(report), summary,
                       stdout=json.dumps(report.to_json(), indent=2))
    lines = [(f"rescore {recipe.out}: acc {report.primary.acc:.4f} f1 {report.primary.f1:.4f} "
             f"({report.questions.describe()})"), *scoring_lines(report)]
    return Outcome(lines, [Written(recipe.out)], run_metrics(report), summary)


RESCORE = Stage("eval-rescore", ("eval", "rescore"), RescoreRecipe, _rescore,
                inputs=lambda r: [r.predictions, r.data, *([r.v1_data] if r.v1_data else [])],
                check=_judged)
