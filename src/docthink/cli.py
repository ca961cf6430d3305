"""The `docthink` command. Thin: parse arguments, resolve the recipe, call one stage, record the run."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from docthink.corpus import Corpus
from docthink.corpus import ingest as run_ingest
from docthink.corpus.files import sharded
from docthink.corpus.samples import write_sample_pdfs
from docthink.merge import CheckpointError, MergeError, merge_checkpoints
from docthink.models import CachedModel, ChatModel, RequestCache, build_model
from docthink.recipe import (
    ExportRecipe,
    IngestRecipe,
    MergeRecipe,
    RecipeError,
    SynthRecipe,
    commented_yaml,
    load_recipe,
)
from docthink.runs import (
    Registry,
    default_registry_path,
    mark_output,
    parent_runs,
    recipe_hash,
    start_run,
)
from docthink.synth.card import write_card
from docthink.synth.export import write_export
from docthink.synth.pipeline import (
    StageModels,
    SynthResult,
    read_examples,
    synthesize,
    write_tables,
)
from docthink.synth.prompts import prompt_hashes

R = TypeVar("R", bound=BaseModel)


class ExportFormatOpt(enum.StrEnum):
    trl = "trl"
    llamafactory = "llamafactory"

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Long-context visual document models that reason: corpus, synthetic traces, SFT data.",
)
runs_app = typer.Typer(no_args_is_help=True, help="List and inspect recorded runs.")
app.add_typer(runs_app, name="runs")

console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 200)

RunsDir = Annotated[Path, typer.Option(help="where run folders go")]
RegistryOpt = Annotated[
    Path | None, typer.Option(help="registry file [default: $DOCTHINK_REGISTRY or runs/registry.sqlite]")
]


def _registry(path: Path | None) -> Registry:
    return Registry(path or default_registry_path())


@runs_app.command("list")
def runs_list(
    kind: Annotated[str | None, typer.Option(help="only runs of this kind")] = None,
    status: Annotated[str | None, typer.Option(help="ok, failed, running or interrupted")] = None,
    model: Annotated[
        str | None, typer.Option(help="a recipe field model/base/tuned contains this")
    ] = None,
    where: Annotated[
        list[str] | None, typer.Option(help="recipe field equals, e.g. trace.top_k=16 (repeatable)")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="metric range, e.g. 'acc_cot>=0.4' (repeatable)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="started on or after: 2026-11-01, 7d, 12h")] = None,
    until: Annotated[str | None, typer.Option(help="started before the end of this date/time")] = None,
    tag: Annotated[str | None, typer.Option(help="only runs with this tag")] = None,
    limit: int = 20,
    registry: RegistryOpt = None,
) -> None:
    """Most recent runs first."""
    from docthink.runs.registry import FilterError, RunFilter, parse_metric, parse_when, parse_where

    try:
        run_filter = RunFilter(
            kind=kind, status=status, model=model,
            where=tuple(parse_where(w) for w in where or ()),
            metrics=tuple(parse_metric(m) for m in metric or ()),
            since=None if since is None else parse_when(since, end=False),
            until=None if until is None else parse_when(until, end=True),
            tag=tag,
        )
    except FilterError as exc:
        raise _fail(str(exc)) from None
    table = Table("id", "kind", "status", "started", "tags", "metrics")
    for column in table.columns[:4]:
        column.no_wrap = True
    for record in _registry(registry).find(run_filter, limit=limit):
        metrics = ", ".join(f"{k}={v}" for k, v in record.metrics.items() if not isinstance(v, dict))
        table.add_row(record.id, record.kind, record.status, record.started_at[:19],
                      escape(", ".join(record.tags)), escape(metrics))
    out_console.print(table)


@runs_app.command("show")
def runs_show(run_id: str, registry: RegistryOpt = None) -> None:
    """Everything recorded about one run, as YAML."""
    reg = _registry(registry)
    try:
        record = reg.get(reg.resolve(run_id))
    except KeyError as exc:
        raise _fail(exc.args[0]) from None
    data = {
        **{k: v for k, v in record.__dict__.items()
           if k not in ("artifacts", "parents", "notes", "tags")},
        "parents": list(record.parents),
        "artifacts": [a.__dict__ for a in record.artifacts],
        "tags": list(record.tags),
        "notes": [n.__dict__ for n in record.notes],
    }
    out_console.print(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False), end="", markup=False)


# TODO(integration): old names, until the train block is rebased on the runs helpers.
_parent_of, _mark_output = parent_runs, mark_output


def _say(message: str) -> None:
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _load(cls: type[R], recipe: Path | None, overrides: dict[str, object]) -> R:
    try:
        return load_recipe(cls, recipe, overrides)
    except RecipeError as exc:
        raise _fail(str(exc)) from None


@app.command()
def ingest(
    pdf_dir: Annotated[Path, typer.Argument(help="folder of PDFs (searched recursively)")],
    out: Annotated[Path, typer.Option("--out", help="corpus folder")],
    workers: Annotated[int | None, typer.Option(help="worker processes [default: 2]")] = None,
    render: Annotated[
        bool, typer.Option("--render", help="also render every page at the recipe's policy now")
    ] = False,
    recipe: Annotated[Path | None, typer.Option(help="recipe YAML (flags override it)")] = None,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """PDFs -> corpus: page counts, sizes, text layers; bad files listed with a reason."""
    overrides: dict[str, object] = {"pdf_dir": pdf_dir, "out": out, "workers": workers}
    if render:
        overrides["prerender"] = {}
    resolved = _load(IngestRecipe, recipe, overrides)
    with start_run("ingest", resolved, command=sys.argv, runs_dir=runs_dir,
                   registry_path=registry) as run:
        summary = run_ingest(resolved.pdf_dir, resolved.out, render=resolved.prerender,
                             workers=resolved.workers, progress=True)
        run.metrics.update({k: v for k, v in summary.as_dict().items() if k != "rejections"})
        run.summary["rejections"] = summary.rejections
        run.add_output(resolved.out / "manifest.jsonl")
        mark_output(resolved.out, run.id, "ingest")
    _say(
        f"corpus {resolved.out}: {summary.ok} documents ok ({summary.pages} pages),"
        f" {sum(summary.rejected.values())} rejected {dict(summary.rejected)};"
        f" {summary.processed} processed, {summary.skipped_unchanged} unchanged"
        f" in {summary.seconds:.1f} s  [run {run.id}]"
    )
    for doc_id, reason in sorted(summary.rejections.items()):
        _say(f"  rejected {doc_id}: {reason}")


@app.command()
def samples(
    out: Annotated[Path, typer.Argument(help="folder for pdfs/ and questions.jsonl")],
    docs: Annotated[int, typer.Option(help="number of PDFs")] = 6,
    seed: int = 0,
) -> None:
    """Sample PDFs with planted facts, and questions about them (known answers, source pages)."""
    paths, facts = write_sample_pdfs(out / "pdfs", docs, seed)
    with (out / "questions.jsonl").open("w", encoding="utf-8") as f:
        for i, fact in enumerate(facts):
            row = {"qid": f"q{i:04d}", "doc_id": fact.doc_id, "question": fact.question,
                   "source_pages": [fact.page], "answer": fact.answer}
            f.write(json.dumps(row) + "\n")
    _say(f"{len(paths)} PDFs in {out / 'pdfs'}, {len(facts)} questions in "
                  f"{out / 'questions.jsonl'}")


def _stage_models(recipe: SynthRecipe, corpus: Corpus, cache: RequestCache) -> StageModels:
    """One inner model per distinct spec (shared across stages), each stage behind its own cache
    wrapper so usage is accounted per stage."""
    inner: dict[str, ChatModel] = {}
    stages = {}
    for stage in ("evidence", "answer_vision", "answer_text"):
        spec = getattr(recipe.models, stage)
        key = spec.model_dump_json()
        if key not in inner:
            inner[key] = build_model(spec, pages=corpus)
        stages[stage] = CachedModel(inner[key], cache)
    return StageModels(**stages)


async def _synthesize(recipe: SynthRecipe, corpus: Corpus, cache: RequestCache,
                      log: logging.Logger) -> tuple[SynthResult, dict[str, dict[str, object]]]:
    models = _stage_models(recipe, corpus, cache)
    try:
        result = await synthesize(recipe, corpus, models, log, show_progress=True)
    finally:
        for inner in {id(m.inner): m.inner for m in vars(models).values()}.values():
            await inner.aclose()
    return result, {stage: m.usage.as_dict() for stage, m in vars(models).items()}


def run_synth(recipe: SynthRecipe, runs_dir: Path, registry: Path | None) -> Path:
    recipe.out.mkdir(parents=True, exist_ok=True)
    (recipe.out / "recipe.yaml").write_text(commented_yaml(recipe) + "\n", encoding="utf-8")
    parents = parent_runs(recipe.corpus) + parent_runs(recipe.questions.parent)
    with start_run("synth", recipe, command=sys.argv, runs_dir=runs_dir, registry_path=registry,
                   parents=parents, inputs=[recipe.questions]) as run, \
            Corpus.open(recipe.corpus) as corpus, RequestCache(recipe.out / "cache.sqlite") as cache:
        result, usage = asyncio.run(_synthesize(recipe, corpus, cache, run.log))
        write_tables(result, recipe.out)
        card = write_card(result, recipe.out, recipe_hash=recipe_hash(recipe), usage=usage)
        counts = result.counts()
        run.metrics.update({k: v for k, v in counts.items() if not isinstance(v, dict)})
        run.summary.update({"counts": counts, "usage": usage, "prompts": prompt_hashes()})
        run.add_output(recipe.out / "examples.jsonl")
        run.add_output(recipe.out / "evidence.parquet")
        mark_output(recipe.out, run.id, "synth")
    _say(
        f"synth {recipe.out}: {counts['questions']} questions -> {counts['traces']} traces -> "
        f"{counts['examples']} examples; dropped {counts['dropped']}; data card {card}"
        f"  [run {run.id}]"
    )
    return recipe.out


@app.command()
def synth(
    corpus: Annotated[Path | None, typer.Option(help="corpus folder")] = None,
    questions: Annotated[Path | None, typer.Option(help="questions JSONL/Parquet/samples.json")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (resumable)")] = None,
    recipe: Annotated[Path | None, typer.Option(help="recipe YAML (flags override it)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of every random choice")] = None,
    print_recipe: Annotated[
        bool, typer.Option("--print-recipe", help="print the resolved (or default) recipe and exit")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Corpus + questions -> page evidence -> <think> traces -> answers -> SFT examples."""
    overrides = {"corpus": corpus, "questions": questions, "out": out, "seed": seed}
    if print_recipe:
        placeholders = {"corpus": "CORPUS", "questions": "QUESTIONS.jsonl", "out": "RUN_DIR"}
        given = {k: v for k, v in overrides.items() if v is not None}
        resolved = _load(SynthRecipe, recipe, {**placeholders, **given})
        out_console.print(commented_yaml(resolved) + "\n" + SYNTH_RECIPE_NOTE, markup=False,
                          highlight=False, soft_wrap=True)
        return
    resolved = _load(SynthRecipe, recipe, overrides)
    run_synth(resolved, runs_dir, registry)


SYNTH_RECIPE_NOTE = """\
# A stage can use any OpenAI-compatible server (vLLM, SGLang, OpenAI) instead of the teacher:
# models:
#   evidence:
#     kind: openai
#     model: Qwen/Qwen3-VL-32B-Instruct-FP8
#     endpoints: [{base_url: "http://gpu-1:8000/v1"}, {base_url: "http://gpu-2:8000/v1"}]"""


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="output folder of `docthink synth`")],
    fmt: Annotated[ExportFormatOpt, typer.Option("--format", help="trainer format")],
    out: Annotated[Path, typer.Option("--out", help="export folder")],
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """SFT examples -> TRL (Parquet, messages + images) or LLaMA-Factory (JSONL, <image>)."""
    try:
        examples = read_examples(run_dir)
        synth_recipe = _load(SynthRecipe, run_dir / "recipe.yaml", {})
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from None
    recipe = ExportRecipe(run_dir=run_dir, format=fmt.value, out=out)
    with start_run("export", recipe, command=sys.argv, runs_dir=runs_dir, registry_path=registry,
                   parents=parent_runs(run_dir), inputs=[run_dir / "examples.jsonl"]) as run:
        images = Corpus.open(synth_recipe.corpus).layout.images
        counts = write_export(examples, recipe.format,
                              lambda key: sharded(images, key[0], key[1]), out)
        run.metrics.update(counts)
        run.add_output(out / ("train.parquet" if recipe.format == "trl" else "train.jsonl"))
        mark_output(out, run.id, "export")
    _say(f"export {out}: {counts['examples']} examples, {counts['images']} images "
                  f"({recipe.format})  [run {run.id}]")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="folder for everything the demo makes")] = Path(
        "demo"
    ),
    docs: Annotated[int, typer.Option(help="sample PDFs to generate")] = 6,
    embedding: Annotated[
        str, typer.Option(help="page embeddings for hard negatives: tfidf (core install) or "
                          "minilm (needs docthink[embed])")
    ] = "tfidf",
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """The main job on its embedded default, no server and no weights: sample PDFs -> corpus ->
    questions and long contexts -> traces with the offline teacher -> TRL and LLaMA-Factory
    exports."""
    samples(out / "sample", docs=docs, seed=0)
    ingest(out / "sample" / "pdfs", out=out / "corpus", runs_dir=runs_dir, registry=registry)
    questions_recipe = out / "questions-recipe.yaml"
    questions_recipe.write_text(f"embedding: {{model: {embedding}}}\n", encoding="utf-8")
    questions(corpus=out / "corpus", out=out / "questions", recipe=questions_recipe,
              runs_dir=runs_dir, registry=registry)
    synth(corpus=out / "corpus", questions=out / "questions" / "questions.jsonl",
          out=out / "synth", runs_dir=runs_dir, registry=registry)
    for fmt in ExportFormatOpt:
        export_cmd(out / "synth", fmt=fmt, out=out / f"export-{fmt.value}", runs_dir=runs_dir,
                   registry=registry)


# ---- questions and tasks (issue 7): `docthink questions` / `docthink tasks` ----------------------
# Thin: flags -> QuestionsRecipe / TasksRecipe; the work lives in docthink.synth.questions_gen and
# docthink.synth.tasks_free.

from docthink.synth.embed import EmbeddingUnavailable
from docthink.synth.question_recipe import QuestionsRecipe, TasksRecipe


def run_questions(recipe: QuestionsRecipe, runs_dir: Path, registry: Path | None) -> Path:
    from docthink.synth.questions_card import write_questions_card
    from docthink.synth.questions_gen import run_question_stages, write_questions

    recipe.out.mkdir(parents=True, exist_ok=True)
    (recipe.out / "recipe.yaml").write_text(commented_yaml(recipe) + "\n", encoding="utf-8")
    with start_run("questions", recipe, command=sys.argv, runs_dir=runs_dir,
                   registry_path=registry, parents=parent_runs(recipe.corpus),
                   inputs=recipe.decontamination.exclude_files) as run, \
            Corpus.open(recipe.corpus) as corpus, RequestCache(recipe.out / "cache.sqlite") as cache:
        result, usage = asyncio.run(run_question_stages(recipe, corpus, cache, run.log, True))
        path = write_questions(result, recipe.out)
        card = write_questions_card(result, recipe.contexts, recipe.out,
                                    recipe_hash=recipe_hash(recipe), usage=usage)
        counts = result.counts()
        run.metrics.update({k: v for k, v in counts.items() if not isinstance(v, dict)})
        run.summary.update({"counts": counts, "usage": usage, "writer": result.writer,
                            "judge": result.judge, "prompts": prompt_hashes()})
        run.add_output(path)
        mark_output(recipe.out, run.id, "questions")
    gap = result.gap.as_dict()
    _say(f"questions {path}: {counts['questions']} questions {counts['by_kind']} by "
         f"{result.writer}; judge rejected {counts['judge_rejected']}; contexts "
         f"{counts['by_context']}; hard-negative gap {gap['gap']}; data card {card}  [run {run.id}]")
    return path


@app.command()
def questions(
    corpus: Annotated[Path | None, typer.Option(help="corpus folder")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder")] = None,
    recipe: Annotated[Path | None, typer.Option(help="recipe YAML (flags override it)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of every random choice")] = None,
    print_recipe: Annotated[
        bool, typer.Option("--print-recipe", help="print the resolved (or default) recipe and exit")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Corpus -> single-page, multi-page and unanswerable questions in long contexts
    (questions.jsonl, the input of `docthink synth`)."""
    overrides = {"corpus": corpus, "out": out, "seed": seed}
    if print_recipe:
        given = {k: v for k, v in overrides.items() if v is not None}
        resolved = _load(QuestionsRecipe, recipe, {"corpus": "CORPUS", "out": "RUN_DIR", **given})
        out_console.print(commented_yaml(resolved), markup=False, highlight=False, soft_wrap=True)
        return
    resolved = _load(QuestionsRecipe, recipe, overrides)
    try:
        run_questions(resolved, runs_dir, registry)
    except (EmbeddingUnavailable, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None


def run_tasks(recipe: TasksRecipe, runs_dir: Path, registry: Path | None) -> Path:
    from docthink.synth.questions_card import write_tasks_card
    from docthink.synth.tasks_free import build_tasks, task_examples, write_tasks

    recipe.out.mkdir(parents=True, exist_ok=True)
    (recipe.out / "recipe.yaml").write_text(commented_yaml(recipe) + "\n", encoding="utf-8")
    with start_run("tasks", recipe, command=sys.argv, runs_dir=runs_dir, registry_path=registry,
                   parents=parent_runs(recipe.corpus),
                   inputs=recipe.decontamination.exclude_files) as run, \
            Corpus.open(recipe.corpus) as corpus:
        result, _ = build_tasks(recipe, corpus, run.log)
        examples = task_examples(result, recipe, corpus, show_progress=True)
        exports = write_tasks(result, examples, recipe, corpus)
        card = write_tasks_card(result, recipe.out, recipe_hash=recipe_hash(recipe),
                                exports=exports)
        counts = result.counts()
        run.metrics.update({k: v for k, v in counts.items() if not isinstance(v, dict)})
        run.summary.update({"counts": counts, "exports": exports})
        run.add_output(recipe.out / "tasks.jsonl")
        run.add_output(recipe.out / "examples.jsonl")
        mark_output(recipe.out, run.id, "tasks")
    _say(f"tasks {recipe.out}: {counts['tasks']} tasks {counts['by_task']}; "
         f"{counts['pages_with_printed_page_numbers']} pages print their page number; "
         f"exports {sorted(exports)}; data card {card}  [run {run.id}]")
    return recipe.out


@app.command()
def tasks(
    corpus: Annotated[Path | None, typer.Option(help="corpus folder")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder")] = None,
    recipe: Annotated[Path | None, typer.Option(help="recipe YAML (flags override it)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of every random choice")] = None,
    print_recipe: Annotated[
        bool, typer.Option("--print-recipe", help="print the resolved (or default) recipe and exit")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Corpus -> model-free tasks (unshuffle, missing page, key and position retrieval, counting)
    as SFT examples and exports."""
    overrides = {"corpus": corpus, "out": out, "seed": seed}
    if print_recipe:
        given = {k: v for k, v in overrides.items() if v is not None}
        resolved = _load(TasksRecipe, recipe, {"corpus": "CORPUS", "out": "RUN_DIR", **given})
        out_console.print(commented_yaml(resolved), markup=False, highlight=False, soft_wrap=True)
        return
    resolved = _load(TasksRecipe, recipe, overrides)
    try:
        run_tasks(resolved, runs_dir, registry)
    except (EmbeddingUnavailable, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None

# ---- end questions -------------------------------------------------------------------------------


# ---- eval (issue 4): `docthink eval run` / `docthink eval rescore` -------------------------------
# Thin: flags -> EvalRecipe / RescoreRecipe; the work lives in docthink.evals.

eval_app = typer.Typer(
    no_args_is_help=True,
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
    print_recipe: Annotated[
        bool, typer.Option("--print-recipe", help="print the resolved recipe and exit")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Ask a model every selected question over the document's pages; extract, score, report."""
    from docthink.evals import DataError, EvalRecipe, run_eval
    from docthink.evals.recipe import eval_overrides

    overrides = eval_overrides(
        data=data, documents=documents, corpus=corpus, out=out, benchmark=benchmark, seed=seed,
        docs=docs, sample=sample, limit=limit, modes=modes, max_pages=max_pages,
        max_pixels=max_pixels, page_index=page_index, system=system, model_url=model_url,
        model_name=model_name, judge_url=judge_url, judge_name=judge_name,
        extract_prompt=extract_prompt, concurrency=concurrency,
    )
    if print_recipe:
        placeholders = {"data": "samples.json", "documents": "DOCUMENTS", "out": "EVAL_DIR"}
        resolved = _load(EvalRecipe, recipe, {**placeholders, **overrides})
        out_console.print(commented_yaml(resolved), markup=False, highlight=False, soft_wrap=True)
        return
    resolved = _load(EvalRecipe, recipe, overrides)
    try:
        run_id, result = run_eval(resolved, runs_dir=runs_dir, registry_path=registry)
    except (DataError, FileNotFoundError, NotADirectoryError) as exc:
        raise _fail(str(exc)) from None
    report = result.report
    _say(f"eval {resolved.out}: {report['questions']}  [run {run_id}]")
    for mode, m in report["modes"].items():  # type: ignore[union-attr]
        _say(f"  {mode}: acc {m['acc']:.4f} f1 {m['f1']:.4f} ({m['n']} questions, "
             f"{m['failures']} failed, mean output tokens {m['mean_output_tokens']})")
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
    from docthink.evals import DataError, PredictionsError, RescoreRecipe
    from docthink.evals.runner import run_rescore

    resolved = _load(RescoreRecipe, None, {"predictions": predictions, "data": data, "out": out,
                                           "benchmark": benchmark, "seed": seed})
    try:
        run_id, report = run_rescore(resolved, runs_dir=runs_dir, registry_path=registry)
    except (DataError, PredictionsError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    if out is None:
        typer.echo(json.dumps(report, indent=2))
    else:
        _say(f"rescore {out}: acc {report['acc']:.4f} f1 {report['f1']:.4f} "
             f"({report['questions']})  [run {run_id}]")

# ---- end eval -------------------------------------------------------------------------------------


@app.command()
def merge(
    base: Annotated[Path, typer.Option(help="starting checkpoint (safetensors)")],
    tuned: Annotated[Path, typer.Option(help="fine-tuned checkpoint or PEFT LoRA adapter")],
    alpha: Annotated[str, typer.Option(help="strength(s), comma-separated: 0.25 or 0.25,0.5,1.0")],
    out: Annotated[
        list[Path],
        typer.Option(help="output folder per alpha, or one containing {alpha}"),
    ],
    shard_size: Annotated[int | None, typer.Option(help="bytes per output shard")] = None,
    chunk_bytes: Annotated[int | None, typer.Option(help="buffer budget (memory)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing output folders")] = False,
    recipe: Annotated[Path | None, typer.Option(help="recipe YAML (flags override it)")] = None,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Task arithmetic, streamed: base + alpha * (tuned - base), several alphas in one pass."""
    try:
        alphas = [float(a) for a in alpha.split(",")]
    except ValueError:
        raise _fail(f"--alpha: expected numbers separated by commas, got {alpha!r}") from None
    outs = out
    if len(out) == 1 and "{alpha}" in str(out[0]):
        outs = [Path(str(out[0]).replace("{alpha}", f"{a:g}")) for a in alphas]
    overrides = {"base": base, "tuned": tuned, "alphas": alphas, "outs": outs,
                 "shard_size": shard_size, "chunk_bytes": chunk_bytes}
    resolved = _load(MergeRecipe, recipe, overrides)
    parents = parent_runs(resolved.base) + parent_runs(resolved.tuned)
    with start_run("merge", resolved, command=sys.argv, runs_dir=runs_dir,
                   registry_path=registry, parents=parents) as run:
        try:
            report = merge_checkpoints(
                resolved.base, resolved.tuned, resolved.alphas, resolved.outs,
                shard_size=resolved.shard_size, chunk_bytes=resolved.chunk_bytes,
                progress=True, overwrite=overwrite,
            )
        except (MergeError, CheckpointError, FileExistsError) as exc:
            raise _fail(str(exc)) from None
        run.add_hashed_folder("input", resolved.base, report.base_files)
        run.add_hashed_folder("input", resolved.tuned, report.tuned_files)
        for output in report.outputs:
            run.add_hashed_folder("output", output.path, output.files)
            mark_output(output.path, run.id, "merge")
        run.metrics.update({"alphas": resolved.alphas, "tensors": report.n_tensors,
                            "seconds": round(report.seconds, 2)})
        run.summary["vocab_growth"] = [str(g) for g in report.vocab_growth]
    for output in report.outputs:
        _say(f"merged alpha={output.alpha:g} -> {output.path}")
    for growth in report.vocab_growth:
        _say(f"  vocabulary grew: {growth}")
    _say(f"{report.n_tensors} tensors in {report.seconds:.1f} s  [run {run.id}]")


# ---- train (issue 6): `docthink train RECIPE.yaml [--merge 0.25[,0.5]]` ---------------------------
# Thin: flags -> TrainRecipe; the work lives in docthink.train (imported late: torch, TRL).


@app.command()
def train(
    recipe: Annotated[Path | None, typer.Argument(help="recipe YAML (flags override it)")] = None,
    model: Annotated[str | None, typer.Option(help="starting checkpoint: folder or hub id")] = None,
    data: Annotated[Path | None, typer.Option(help="export folder (docthink export --format trl)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="checkpoints, logs, model [run folder]")] = None,
    finetune: Annotated[str | None, typer.Option(help="full or lora")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="learning rate [5e-6]")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the data [1]")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimizer steps")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of data order, mixture and new rows")] = None,
    merge_alphas: Annotated[
        str | None, typer.Option("--merge", help="then merge into the starting model: 0.25 or 0.25,0.5")
    ] = None,
    print_recipe: Annotated[
        bool, typer.Option("--print-recipe", help="print the resolved recipe and exit")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """SFT on an export with TRL: control tokens, loss on the answer, optional merge after."""
    import torch

    from docthink.train import ExportError, TemplateError, TrainRecipe, resolve
    from docthink.train.sft import run_training
    from docthink.train.tokens import CONTROL_TOKENS

    overrides = {"model": model, "data": data, "out": out, "finetune": finetune,
                 "learning_rate": learning_rate, "epochs": epochs, "max_steps": max_steps,
                 "seed": seed}
    if print_recipe:
        placeholders = {"model": "MODEL", "data": "EXPORT_DIR"}
        resolved = _load(TrainRecipe, recipe, {**placeholders, **overrides})
        out_console.print(commented_yaml(resolved), markup=False, highlight=False, soft_wrap=True)
        return
    resolved = resolve(_load(TrainRecipe, recipe, overrides), cuda=torch.cuda.is_available())
    start = Path(resolved.model)
    parents = parent_runs(resolved.data) + (parent_runs(start) if start.is_dir() else [])
    with start_run("train", resolved, command=sys.argv, runs_dir=runs_dir, registry_path=registry,
                   parents=parents, inputs=[resolved.data]) as run:
        try:
            result = run_training(resolved, resolved.out or run.dir, run.log)
        except (ExportError, TemplateError) as exc:
            raise _fail(str(exc)) from None
        run.metrics.update(result.metrics)
        run.summary.update({"mixture": result.mixture, "tokens": result.tokens,
                            "model_dir": str(result.model_dir.resolve())})
        run.add_output(result.model_dir)
        mark_output(result.model_dir, run.id, "train")
    m = result.metrics
    _say(f"train {result.model_dir}: {m['steps']} steps on {m['rows_trained']} rows "
         f"({m['rows_think']} with a trace), loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}, "
         f"{m['tokens_per_s']} tokens/s; added tokens {result.tokens['added'] or 'none'} "
         f"of {list(CONTROL_TOKENS)}  [run {run.id}]")
    if merge_alphas is not None:
        merge(base=_local_checkpoint(resolved.model), tuned=result.model_dir, alpha=merge_alphas,
              out=[result.model_dir.parent / "merged-{alpha}"], shard_size=None, chunk_bytes=None,
              overwrite=False, recipe=None, runs_dir=runs_dir, registry=registry)


def _local_checkpoint(model: str) -> Path:
    """The folder a model id names: itself, or its snapshot in the local hub cache."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, local_files_only=True))

# ---- end train ------------------------------------------------------------------------------------


# ---- registry (issue 8): runs diff/lineage/note/tag/verify, leaderboard, search, serve, reproduce
# Thin: the work lives in docthink.registry (and docthink.runs.registry for the storage).


def _run_id(reg: Registry, prefix: str) -> str:
    try:
        return reg.resolve(prefix)
    except KeyError as exc:
        raise _fail(exc.args[0]) from None


@runs_app.command("diff")
def runs_diff(
    run_a: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    run_b: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    all_fields: Annotated[bool, typer.Option("--all", help="also the fields that are equal")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Two runs' recipes side by side, field by field (dotted keys); equal fields hidden."""
    from docthink.registry.diff import diff_recipes

    reg = _registry(registry)
    a, b = reg.get(_run_id(reg, run_a)), reg.get(_run_id(reg, run_b))
    fields = diff_recipes(a.recipe, b.recipe)
    table = Table("field", a.id, b.id, title=f"{a.kind} vs {b.kind}")
    for meta, va, vb in (("recipe_hash", a.recipe_hash, b.recipe_hash),
                         ("git_commit", a.git_commit, b.git_commit)):
        table.add_row(f"({meta})", escape(str(va)), escape(str(vb)), style="dim")
    shown = [f for f in fields if all_fields or not f.same]
    for f in shown:
        table.add_row(escape(f.key), escape(f.a), escape(f.b), style=None if f.same else "bold")
    out_console.print(table)
    _say(f"{sum(not f.same for f in fields)} of {len(fields)} fields differ")


@runs_app.command("lineage")
def runs_lineage(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    depth: Annotated[int, typer.Option(help="levels up and down")] = 32,
    registry: RegistryOpt = None,
) -> None:
    """Ancestors (what made this run's inputs) and descendants (what used its outputs)."""
    from rich.text import Text
    from rich.tree import Tree

    from docthink.registry.lineage import Node, ancestors, descendants

    reg = _registry(registry)
    root = _run_id(reg, run_id)

    def label(node: Node) -> Text:
        via = "" if node.via is None else f"  <- {node.via}"
        if node.kind is None:
            return Text(f"{node.run_id}  (not in this registry){via}", style="dim")
        seen = "  (shown above)" if node.repeated else ""
        return Text(f"{node.run_id}  {node.kind} {node.status} {str(node.started_at)[:19]}"
                    f"{via}{seen}")

    def tree(node: Node, title: str) -> Tree:
        top = Tree(Text(title, style="bold"))
        stack = [(top.add(label(node)), node)]
        while stack:
            branch, current = stack.pop()
            for child in current.children:
                stack.append((branch.add(label(child)), child))
        return top

    out_console.print(tree(ancestors(reg, root, depth), "ancestors (made its inputs)"))
    out_console.print(tree(descendants(reg, root, depth), "descendants (used its outputs)"))


@runs_app.command("note")
def runs_note(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    text: Annotated[str, typer.Argument(help="the note")],
    author: Annotated[str | None, typer.Option(help="[default: $USER]")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Attach a free-form note to a run (searchable)."""
    import getpass

    reg = _registry(registry)
    rid = _run_id(reg, run_id)
    note_id = reg.add_note(rid, text, author=author or getpass.getuser())
    _say(f"note {note_id} on {rid}")


@runs_app.command("tag")
def runs_tag(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    tags: Annotated[list[str], typer.Argument(help="tags to add")],
    remove: Annotated[bool, typer.Option("--remove", help="remove these tags instead")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Tag a run (filter with `runs list --tag`)."""
    reg = _registry(registry)
    rid = _run_id(reg, run_id)
    if remove:
        reg.remove_tags(rid, tags)
    else:
        reg.add_tags(rid, tags)
    _say(f"{rid}: tags {', '.join(reg.get(rid).tags) or '(none)'}")


@runs_app.command("verify")
def runs_verify(
    run_ids: Annotated[list[str] | None, typer.Argument(help="runs to check [default: all]")] = None,
    kind: Annotated[str | None, typer.Option(help="only runs of this kind")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Re-hash every recorded input and output; list what changed or is missing (exit 1 if any)."""
    from collections import Counter

    from docthink.registry.verify import verify
    from docthink.runs.registry import RunFilter

    reg = _registry(registry)
    ids = ([_run_id(reg, r) for r in run_ids] if run_ids
           else reg.find_ids(RunFilter(kind=kind), limit=None))
    checks = verify(reg.records(ids))
    bad = [c for c in checks if c.status != "ok"]
    for c in bad:
        now = "" if c.sha256 is None else f" now {c.sha256[:12]} ({c.size} bytes)"
        _say(f"{c.status:8} {c.run_id} {c.artifact.role} {c.artifact.path}: recorded "
             f"{c.artifact.sha256[:12]} ({c.artifact.size} bytes){now}")
    counts = Counter(c.status for c in checks)
    _say(f"{len(ids)} runs, {len(checks)} artifacts: {counts['ok']} ok, {counts['changed']} "
         f"changed, {counts['missing']} missing")
    if bad:
        raise typer.Exit(1)


@app.command()
def leaderboard(
    benchmark: Annotated[str | None, typer.Option(help="rank by this benchmark")] = None,
    metric: Annotated[
        str | None, typer.Option(help="acc, acc_cot, mean_output_tokens[_cot] [default: acc_cot]")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="write a static HTML page here")] = None,
    csv: Annotated[Path | None, typer.Option(help="write CSV here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write JSON here")] = None,
    limit: Annotated[int, typer.Option(help="rows printed (files get all)")] = 30,
    registry: RegistryOpt = None,
) -> None:
    """Checkpoints ranked by benchmark, with and without <cot>, and the recipe that made each."""
    from docthink.registry.leaderboard import METRICS, build_leaderboard
    from docthink.registry.page import render_static

    try:
        board = build_leaderboard(_registry(registry), benchmark=benchmark, metric=metric)
    except KeyError as exc:
        raise _fail(exc.args[0]) from None
    for path, text in ((html, render_static(board) if html else ""),
                       (csv, board.to_csv() if csv else ""),
                       (json_out, board.to_json() if json_out else "")):
        if path is not None:
            path.write_text(text, encoding="utf-8")
            _say(f"wrote {path}")
    # The terminal gets the ranked benchmark in full, the others' accuracies and the main recipe
    # columns; the files get every column.
    bench, key = board.ranked_by
    shown = [(bench, label, k) for label, k in METRICS] + [
        (b, label, k) for b in board.benchmarks if b != bench for label, k in METRICS[:2]]
    recipe_cols = [n for n in ("base model", "alpha", "K", "think share", "plain QA ratio")
                   if any(n in r.recipe for r in board.rows)]
    table = Table("#", "checkpoint", title=f"ranked by {bench} {key} (accuracy in %)")
    for b, label, _ in shown:
        table.add_column(f"{b} {label}", justify="right")
    for name in recipe_cols:
        table.add_column(name)
    table.add_column("runs")
    for rank, row in enumerate(board.rows[:limit], start=1):
        values = []
        for b, _, k in shown:
            v = row.value(b, k)
            values.append("" if v is None else f"{v:.0f}" if k.startswith("mean")
                          else f"{100 * v:.1f}")
        table.add_row(str(rank), escape(row.checkpoint), *values,
                      *(escape(row.recipe.get(n, "")) for n in recipe_cols),
                      str(len(row.lineage) + len(row.scores)))
    out_console.print(table)
    _say(f"{len(board.rows)} checkpoints; lineage of each: `docthink runs lineage EVAL_RUN`, "
         "or the --html page")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="words, a phrase, or a description")],
    limit: Annotated[int, typer.Option(help="hits shown")] = 10,
    source: Annotated[
        list[str] | None,
        typer.Option(help="only run, note, question, trace, answer or prediction (repeatable)"),
    ] = None,
    semantic: Annotated[bool, typer.Option(help="add embedding similarity to full-text")] = True,
    per_run: Annotated[bool, typer.Option("--per-run", help="best hit per run only")] = False,
    rescan: Annotated[
        bool, typer.Option("--rescan", help="re-check every run's data files, not only new runs")
    ] = False,
    registry: RegistryOpt = None,
) -> None:
    """Search runs, recipes, notes, generated data and eval answers: BM25 and MiniLM, fused."""
    from docthink.registry.embed import MISSING, embedding_available, load_embedder
    from docthink.registry.index import update_index
    from docthink.registry.search import Searcher, marked

    reg = _registry(registry)
    embedder = load_embedder(semantic)
    stats = update_index(reg, embedder, rescan=rescan)
    if stats.runs:
        _say(stats.line())
    if semantic and not embedding_available():
        _say(MISSING)
    result = Searcher(reg, embedder).search(query, limit=limit * 5 if per_run else limit,
                                            sources=source)
    hits = result.hits
    if per_run:
        firsts = {}
        for h in hits:
            firsts.setdefault(h.run_id, h)
        hits = list(firsts.values())[:limit]
    if not hits:
        _say("no match")
    for n, h in enumerate(hits, start=1):
        ranks = f"bm25 #{h.fts_rank or '-'}, semantic #{h.semantic_rank or '-'}"
        out_console.print(f"{n}. [bold]{escape(h.run_id)}[/bold] {h.source} {escape(h.key)}"
                          f"  [dim]({ranks})[/dim]", highlight=False)
        out_console.print("   " + escape(marked(h.snippet, "\x00", "\x01"))
                          .replace("\x00", "[reverse]").replace("\x01", "[/reverse]"),
                          highlight=False, soft_wrap=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind (other than loopback: on purpose)")] = "127.0.0.1",
    port: int = 8321,
    registry: RegistryOpt = None,
) -> None:
    """A read-only web UI: leaderboard, run pages (lineage, recipe, artifacts, notes), search."""
    try:
        import uvicorn

        from docthink.registry.web import create_app
    except ImportError as exc:
        raise _fail(f"{exc}; the web UI needs: pip install 'docthink[web]'") from None
    _say(f"serving {registry or default_registry_path()} on http://{host}:{port} (read-only)")
    uvicorn.run(create_app(registry or default_registry_path()), host=host, port=port,
                log_level="warning")


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    execute: Annotated[bool, typer.Option("--run", help="run it and compare output hashes")] = False,
    out: Annotated[
        Path | None, typer.Option(help="where the rerun's outputs go [default: a new folder under runs/]")
    ] = None,
    cwd: Annotated[
        Path | None, typer.Option(help="the directory the run was started in [default: read "
                                  "from its artifacts]")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """The exact command, recipe and commit of a run; with --run, rerun it and compare hashes."""
    from docthink.registry.reproduce import ReproduceError, plan, rerun

    reg = _registry(registry)
    record = reg.get(_run_id(reg, run_id))
    target = out or runs_dir / f"reproduce-{record.id}"
    try:
        steps = plan(record, target, cwd)
    except ReproduceError as exc:
        raise _fail(str(exc)) from None
    for line in steps.describe():
        typer.echo(line)
    if not execute:
        return
    try:
        outcome = rerun(steps, reg)
    except ReproduceError as exc:
        raise _fail(str(exc)) from None
    for c in outcome.comparisons:
        typer.echo(f"{c.status:9} {c.recorded.path} {c.recorded.sha256[:12]}"
                   + ("" if c.now is None else f" -> {c.now.sha256[:12]}"))
    typer.echo(f"rerun {outcome.run_id}: {outcome.summary()}")
    if not outcome.identical:
        raise typer.Exit(1)

# ---- end registry ---------------------------------------------------------------------------------


def main() -> None:
    app(prog_name="docthink")


if __name__ == "__main__":
    sys.exit(main())
