"""`docthink eval run` and `docthink eval rescore`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from docthink.cli.common import (
    PrintRecipe,
    RegistryOpt,
    RunsDir,
    _print_recipe,
    _say,
    app,
)
from docthink.recipe import load_recipe

eval_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Evaluate a model on MMLongBench-Doc / MMLBD-C; rescore predictions without a model.",
)
app.add_typer(eval_app, name="eval")


@eval_app.command("run")
def eval_run(
    recipe: Annotated[Path | None, typer.Argument(help="recipe YAML (flags override it)")] = None,
    data: Annotated[Path | None, typer.Option(help="samples.json, HF Parquet or MMLBD-C TSV")] = None,
    documents: Annotated[Path | None, typer.Option(help="folder of the benchmark's PDFs")] = None,
    corpus: Annotated[Path | None, typer.Option(help="an existing corpus instead")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (resumable)")] = None,
    benchmark: Annotated[str | None, typer.Option(help="name for the leaderboard")] = None,
    limit: Annotated[int | None, typer.Option(help="first N selected questions")] = None,
    docs: Annotated[
        list[str] | None, typer.Option("--docs", "--doc", help="only this doc_id (repeatable)")
    ] = None,
    sample: Annotated[int | None, typer.Option(help="stratified sample of N questions")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of sampling and bootstrap")] = None,
    modes: Annotated[list[str] | None, typer.Option("--mode", help="plain and/or cot (repeatable)")] = None,
    max_pages: Annotated[int | None, typer.Option(help="first N pages shown [120]")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="pixel cap per page")] = None,
    page_index: Annotated[str | None, typer.Option(help="line before each page, e.g. 'Page {i}:'")] = None,
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    model_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    model_name: Annotated[str | None, typer.Option(help="model name at that URL")] = None,
    judge_url: Annotated[str | None, typer.Option(help="judge base URL (LLM extraction)")] = None,
    judge_name: Annotated[str | None, typer.Option(help="judge model name")] = None,
    extract_prompt: Annotated[Path | None, typer.Option(help="judge prompt file")] = None,
    concurrency: Annotated[int | None, typer.Option(help="requests in flight")] = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Ask a model every selected question over the document's pages; extract, score, report."""
    from docthink.evals import EvalRecipe, run_eval
    from docthink.evals.recipe import eval_overrides
    from docthink.evals.report import questions_summary

    overrides = eval_overrides(
        data=data, documents=documents, corpus=corpus, out=out, benchmark=benchmark, seed=seed,
        docs=docs, sample=sample, limit=limit, modes=modes, max_pages=max_pages,
        max_pixels=max_pixels, page_index=page_index, system=system, model_url=model_url,
        model_name=model_name, judge_url=judge_url, judge_name=judge_name,
        extract_prompt=extract_prompt, concurrency=concurrency,
    )
    if print_recipe:
        placeholders = {"data": "samples.json", "documents": "DOCUMENTS", "out": "EVAL_DIR"}
        _print_recipe(EvalRecipe, recipe, overrides, placeholders)
        return
    resolved = load_recipe(EvalRecipe, recipe, overrides)
    run_id, result = run_eval(resolved, runs_dir=runs_dir, registry_path=registry)
    report = result.report
    questions: dict[str, object] = report["questions"]  # type: ignore[assignment]
    _say(f"eval {resolved.out}: {questions_summary(questions)}  [run {run_id}]")
    for mode, m in report["modes"].items():  # type: ignore[union-attr]
        tokens = "-" if m["mean_output_tokens"] is None else f"{m['mean_output_tokens']:.1f}"
        _say(f"  {mode}: acc {m['acc']:.4f} f1 {m['f1']:.4f} ({m['n']} questions, "
             f"{m['failures']} failed, mean output tokens {tokens})")
    _say(f"  report {result.report_files[0]}; predictions {result.predictions}")


@eval_app.command("rescore")
def eval_rescore(
    predictions: Annotated[Path, typer.Argument(help="JSONL rows {index, pred, mode?, failure?}")],
    data: Annotated[Path, typer.Option(help="the benchmark file (samples.json, Parquet, TSV)")],
    out: Annotated[Path | None, typer.Option("--out", help="report JSON (+ .md, .png beside); "
                                             "default: print the JSON")] = None,
    benchmark: str = "mmlongbench-doc",
    seed: int = 0,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Score extracted predictions against the data with no model at all."""
    from docthink.evals import RescoreRecipe
    from docthink.evals.report import questions_summary
    from docthink.evals.runner import run_rescore

    resolved = load_recipe(RescoreRecipe, None, {"predictions": predictions, "data": data,
                                                 "out": out, "benchmark": benchmark, "seed": seed})
    run_id, report = run_rescore(resolved, runs_dir=runs_dir, registry_path=registry)
    if out is None:
        typer.echo(json.dumps(report, indent=2))
    else:
        questions: dict[str, object] = report["questions"]  # type: ignore[assignment]
        _say(f"rescore {out}: acc {report['acc']:.4f} f1 {report['f1']:.4f} "
             f"({questions_summary(questions)})  [run {run_id}]")

