"""The evaluation stages: eval (a model on a benchmark) and eval-rescore (predictions, no
model)."""

from __future__ import annotations

import json
from pathlib import Path

from docthink.evals.recipe import EvalRecipe, RescoreRecipe
from docthink.runs import Run
from docthink.stages.base import Outcome, Stage, Written


def _eval(recipe: EvalRecipe, run: Run) -> Outcome:
    from docthink.evals.report import questions_summary, run_metrics
    from docthink.evals.runner import evaluate

    result = evaluate(recipe, show_progress=True)
    report = result.report
    questions: dict[str, object] = report["questions"]  # type: ignore[assignment]
    lines = [f"eval {recipe.out}: {questions_summary(questions)}"]
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
        {"questions": questions, "usage": result.usage, "extraction": report["extraction"]},
        marks=[recipe.out],
        inputs=[Written(corpus / "manifest.jsonl")],  # the sha256 of every PDF that was read
    )


def _read(recipe: EvalRecipe) -> list[Path]:
    """The runs that made the corpus and, for a local checkpoint, the model (train or merge)."""
    corpus = [recipe.corpus] if recipe.corpus is not None else []
    return corpus + ([recipe.model.path] if recipe.model.kind == "local" else [])


EVAL = Stage("eval", ("eval", "run"), EvalRecipe, _eval, inputs=lambda r: [r.data],
             parents=_read, recipe_option=False)


def _rescore(recipe: RescoreRecipe, run: Run) -> Outcome:
    from docthink.evals.report import questions_summary, run_metrics
    from docthink.evals.runner import rescore

    report = rescore(recipe)
    questions: dict[str, object] = report["questions"]  # type: ignore[assignment]
    if recipe.out is None:
        return Outcome([], [], run_metrics(report), {"questions": questions},
                       stdout=json.dumps(report, indent=2))
    line = (f"rescore {recipe.out}: acc {report['acc']:.4f} f1 {report['f1']:.4f} "
            f"({questions_summary(questions)})")
    return Outcome([line], [Written(recipe.out)], run_metrics(report), {"questions": questions})


RESCORE = Stage("eval-rescore", ("eval", "rescore"), RescoreRecipe, _rescore,
                inputs=lambda r: [r.predictions, r.data])
