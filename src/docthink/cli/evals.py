"""`docthink eval run` and `docthink eval rescore`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from docthink.cli.common import (
    ExecutorOpt,
    PresetOpt,
    PrintRecipe,
    RayAddressOpt,
    RecipeOpt,
    RegistryOpt,
    RunsDir,
    ShardSizeOpt,
    _print_or_run,
    _run,
    app,
)
from docthink.recipe import load_recipe
from docthink.stages import STAGES

ScoringJudgeUrl = Annotated[str | None, typer.Option(
    help="the scoring judge's OpenAI-compatible base URL (mmlongbench-v2)")]
ScoringJudgeName = Annotated[str | None, typer.Option(
    help="the scoring judge's model name (mmlongbench-v2)")]
ScoringPrompt = Annotated[Path | None, typer.Option(
    help="the scoring judge's rubric file (default: evals/prompts/judge_v2.txt)")]

eval_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Evaluate a model on MMLongBench-Doc / MMLBD-C / MMLongBench-Doc-V2; rescore "
    "predictions without the evaluated model.",
)
app.add_typer(eval_app, name="eval")


@eval_app.command("run")
def eval_run(
    recipe: Annotated[Path | None, typer.Argument(help="recipe YAML (flags override it)")] = None,
    data: Annotated[Path | None, typer.Option(help="samples.json, HF Parquet or MMLBD-C TSV")] = None,
    documents: Annotated[Path | None, typer.Option(help="folder of the benchmark's PDFs")] = None,
    corpus: Annotated[Path | None, typer.Option(help="an existing corpus instead")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (resumable)")] = None,
    benchmark: Annotated[str | None, typer.Option(
        help="mmlongbench-doc, mmlbd-c (V1's rules) or mmlongbench-v2 (an LLM judge: "
        "--scoring-judge-url/--scoring-judge-name); the leaderboard's column (default: "
        "mmlongbench-doc)")
    ] = None,
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
    scoring_judge_url: ScoringJudgeUrl = None,
    scoring_judge_name: ScoringJudgeName = None,
    scoring_prompt: ScoringPrompt = None,
    concurrency: Annotated[int | None, typer.Option(help="requests in flight")] = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    shard_size: ShardSizeOpt = None,
    preset: PresetOpt = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Ask a model every selected question over the document's pages; extract, score, report."""
    from docthink.engine.executor import executor_overrides
    from docthink.evals.recipe import eval_overrides

    overrides = eval_overrides(
        data=data, documents=documents, corpus=corpus, out=out, benchmark=benchmark, seed=seed,
        docs=docs, sample=sample, limit=limit, modes=modes, max_pages=max_pages,
        max_pixels=max_pixels, page_index=page_index, system=system, model_url=model_url,
        model_name=model_name, judge_url=judge_url, judge_name=judge_name,
        extract_prompt=extract_prompt, scoring_judge_url=scoring_judge_url,
        scoring_judge_name=scoring_judge_name, scoring_prompt=scoring_prompt,
        concurrency=concurrency, executor=executor_overrides(executor, ray_address, shard_size),
    )
    _print_or_run(STAGES["eval"], recipe, overrides, print_recipe=print_recipe,
                  placeholders={"data": "samples.json", "documents": "DOCUMENTS",
                                "out": "EVAL_DIR"},
                  runs_dir=runs_dir, registry=registry, preset=preset)


@eval_app.command("rescore")
def eval_rescore(
    predictions: Annotated[Path | None, typer.Argument(
        help="JSONL rows {index, pred, mode?, failure?, response?} (an eval run's "
        "predictions.jsonl)")] = None,
    data: Annotated[
        Path | None, typer.Option(help="the benchmark file (samples.json, Parquet, TSV)")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="report JSON (+ .md, .png beside); "
                                             "default: print the JSON")] = None,
    benchmark: Annotated[str | None, typer.Option(
        help="mmlongbench-doc, mmlbd-c (V1's rules) or mmlongbench-v2 (an LLM judge) "
        "[default: mmlongbench-doc]")
    ] = None,
    v1_data: Annotated[Path | None, typer.Option(
        help="V1's samples.json: with --benchmark mmlongbench-v2, also score the same "
        "predictions under V1's rules and list the rows whose verdicts differ")] = None,
    scoring_judge_url: ScoringJudgeUrl = None,
    scoring_judge_name: ScoringJudgeName = None,
    scoring_prompt: ScoringPrompt = None,
    cache: Annotated[Path | None, typer.Option(
        help="the judge's request cache (default: cache.sqlite beside the predictions)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the bootstrap [default: 0]")] = None,
    recipe: RecipeOpt = None,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Score predictions against the data without the evaluated model (V2: its judge, cached)."""
    from docthink.evals.recipe import RescoreRecipe, scoring_overrides

    overrides = {"predictions": predictions, "data": data, "out": out, "benchmark": benchmark,
                 "seed": seed, "v1_data": v1_data, "cache": cache,
                 "scoring": scoring_overrides(scoring_judge_url, scoring_judge_name,
                                              scoring_prompt)}
    _run(STAGES["eval-rescore"], load_recipe(RescoreRecipe, recipe, overrides), runs_dir, registry)
