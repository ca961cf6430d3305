"""Data commands: ingest, samples, questions, tasks, synth, export, demo."""

from __future__ import annotations

import enum
import json
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
    SeedOpt,
    ShardSizeOpt,
    _print_or_run,
    _run,
    _say,
    app,
)
from docthink.corpus.recipe import IngestRecipe
from docthink.engine.executor import executor_overrides
from docthink.export import ExportRecipe
from docthink.recipe import load_recipe
from docthink.stages import STAGES


class ExportFormatOpt(enum.StrEnum):
    trl = "trl"
    llamafactory = "llamafactory"

@app.command()
def ingest(
    pdf_dir: Annotated[
        Path | None, typer.Argument(help="folder of PDFs (searched recursively)")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="corpus folder")] = None,
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
    _run(STAGES["ingest"], load_recipe(IngestRecipe, recipe, overrides), runs_dir, registry)


@app.command()
def samples(
    out: Annotated[Path, typer.Argument(help="folder for pdfs/ and questions.jsonl")],
    docs: Annotated[int, typer.Option(help="number of PDFs")] = 6,
    seed: int = 0,
) -> None:
    """Sample PDFs with planted facts, and questions about them (known answers, source pages)."""
    from docthink.corpus.samples import write_sample_pdfs

    paths, facts = write_sample_pdfs(out / "pdfs", docs, seed)
    with (out / "questions.jsonl").open("w", encoding="utf-8") as f:
        for i, fact in enumerate(facts):
            row = {"qid": f"q{i:04d}", "doc_id": fact.doc_id, "question": fact.question,
                   "source_pages": [fact.page], "answer": fact.answer,
                   "answer_format": fact.answer_format}
            f.write(json.dumps(row) + "\n")
    _say(f"{len(paths)} PDFs in {out / 'pdfs'}, {len(facts)} questions in "
         f"{out / 'questions.jsonl'}; next: docthink ingest {out / 'pdfs'} --out CORPUS "
         "(the questions name documents by their path in that folder)")


@app.command()
def synth(
    corpus: Annotated[Path | None, typer.Option(help="corpus folder")] = None,
    questions: Annotated[Path | None, typer.Option(help="questions JSONL/Parquet/samples.json")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (resumable)")] = None,
    recipe: RecipeOpt = None,
    preset: PresetOpt = None,
    seed: SeedOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    shard_size: ShardSizeOpt = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Corpus + questions -> page evidence -> <think> traces -> answers -> SFT examples."""
    overrides = {"corpus": corpus, "questions": questions, "out": out, "seed": seed,
                 "executor": executor_overrides(executor, ray_address, shard_size)}
    _print_or_run(STAGES["synth"], recipe, overrides, print_recipe=print_recipe,
                  placeholders={"corpus": "CORPUS", "questions": "QUESTIONS.jsonl",
                                "out": "RUN_DIR"},
                  runs_dir=runs_dir, registry=registry, preset=preset, note=SYNTH_RECIPE_NOTE)


SYNTH_RECIPE_NOTE = """\
# A stage can use any OpenAI-compatible server (vLLM, SGLang, OpenAI) instead of the teacher:
# models:
#   evidence:
#     kind: openai
#     model: Qwen/Qwen3-VL-32B-Instruct-FP8
#     endpoints: [{base_url: "http://gpu-1:8000/v1"}, {base_url: "http://gpu-2:8000/v1"}]"""


@app.command("export")
def export_cmd(
    run_dir: Annotated[
        Path | None, typer.Argument(help="output folder of `docthink synth`")
    ] = None,
    fmt: Annotated[
        ExportFormatOpt | None, typer.Option("--format", help="trainer format")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="export folder")] = None,
    recipe: RecipeOpt = None,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """SFT examples -> TRL (Parquet, messages + images) or LLaMA-Factory (JSONL, <image>)."""
    overrides = {"run_dir": run_dir, "format": fmt.value if fmt else None, "out": out}
    _run(STAGES["export"], load_recipe(ExportRecipe, recipe, overrides), runs_dir, registry)


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


@app.command()
def questions(
    corpus: Annotated[Path | None, typer.Option(help="corpus folder")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder")] = None,
    recipe: RecipeOpt = None,
    preset: PresetOpt = None,
    seed: SeedOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    shard_size: ShardSizeOpt = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Corpus -> single-page, multi-page and unanswerable questions in long contexts
    (questions.jsonl, the input of `docthink synth`)."""
    overrides = {"corpus": corpus, "out": out, "seed": seed,
                 "executor": executor_overrides(executor, ray_address, shard_size)}
    _print_or_run(STAGES["questions"], recipe, overrides, print_recipe=print_recipe,
                  placeholders={"corpus": "CORPUS", "out": "RUN_DIR"}, runs_dir=runs_dir,
                  registry=registry, preset=preset)


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
    _print_or_run(STAGES["tasks"], recipe, overrides, print_recipe=print_recipe,
                  placeholders={"corpus": "CORPUS", "out": "RUN_DIR"}, runs_dir=runs_dir,
                  registry=registry)

