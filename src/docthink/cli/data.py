"""Data commands: ingest, samples, questions, tasks, synth, export, demo."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from docthink.cli.common import (
    PrintRecipe,
    RecipeOpt,
    RegistryOpt,
    RunsDir,
    SeedOpt,
    _fail,
    _load,
    _print_recipe,
    _say,
    app,
)
from docthink.corpus import Corpus
from docthink.corpus import ingest as run_ingest
from docthink.corpus.files import sharded
from docthink.corpus.samples import write_sample_pdfs
from docthink.embedding import EmbeddingUnavailable
from docthink.models import CachedModel, ChatModel, RequestCache, build_model
from docthink.recipe import (
    ExportRecipe,
    IngestRecipe,
    SynthRecipe,
    commented_yaml,
)
from docthink.runs import (
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
from docthink.synth.question_recipe import QuestionsRecipe, TasksRecipe


class ExportFormatOpt(enum.StrEnum):
    trl = "trl"
    llamafactory = "llamafactory"

@app.command()
def ingest(
    pdf_dir: Annotated[Path, typer.Argument(help="folder of PDFs (searched recursively)")],
    out: Annotated[Path, typer.Option("--out", help="corpus folder")],
    workers: Annotated[int | None, typer.Option(help="worker processes [default: 2]")] = None,
    render: Annotated[
        bool, typer.Option("--render", help="also render every page at the recipe's policy now")
    ] = False,
    recipe: RecipeOpt = None,
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
    recipe: RecipeOpt = None,
    seed: SeedOpt = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Corpus + questions -> page evidence -> <think> traces -> answers -> SFT examples."""
    overrides = {"corpus": corpus, "questions": questions, "out": out, "seed": seed}
    if print_recipe:
        placeholders = {"corpus": "CORPUS", "questions": "QUESTIONS.jsonl", "out": "RUN_DIR"}
        _print_recipe(SynthRecipe, recipe, overrides, placeholders, SYNTH_RECIPE_NOTE)
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
    recipe: RecipeOpt = None,
    seed: SeedOpt = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Corpus -> single-page, multi-page and unanswerable questions in long contexts
    (questions.jsonl, the input of `docthink synth`)."""
    overrides = {"corpus": corpus, "out": out, "seed": seed}
    if print_recipe:
        _print_recipe(QuestionsRecipe, recipe, overrides, {"corpus": "CORPUS", "out": "RUN_DIR"})
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
    recipe: RecipeOpt = None,
    seed: SeedOpt = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Corpus -> model-free tasks (unshuffle, missing page, key and position retrieval, counting)
    as SFT examples and exports."""
    overrides = {"corpus": corpus, "out": out, "seed": seed}
    if print_recipe:
        _print_recipe(TasksRecipe, recipe, overrides, {"corpus": "CORPUS", "out": "RUN_DIR"})
        return
    resolved = _load(TasksRecipe, recipe, overrides)
    try:
        run_tasks(resolved, runs_dir, registry)
    except (EmbeddingUnavailable, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None

