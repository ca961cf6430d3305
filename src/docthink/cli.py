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
from docthink.runs import Registry, default_registry_path, recipe_hash, start_run
from docthink.runs.run import RUN_MARKER
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
    limit: int = 20,
    registry: RegistryOpt = None,
) -> None:
    """Most recent runs first."""
    table = Table("id", "kind", "status", "started", "metrics")
    for column in table.columns[:4]:
        column.no_wrap = True
    for record in _registry(registry).list(kind=kind, limit=limit):
        metrics = ", ".join(f"{k}={v}" for k, v in record.metrics.items() if not isinstance(v, dict))
        table.add_row(record.id, record.kind, record.status, record.started_at[:19], metrics)
    out_console.print(table)


@runs_app.command("show")
def runs_show(run_id: str, registry: RegistryOpt = None) -> None:
    """Everything recorded about one run, as YAML."""
    try:
        record = _registry(registry).get(run_id)
    except KeyError as exc:
        raise _fail(exc.args[0]) from None
    data = {
        **{k: v for k, v in record.__dict__.items() if k not in ("artifacts", "parents")},
        "parents": list(record.parents),
        "artifacts": [a.__dict__ for a in record.artifacts],
    }
    out_console.print(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False), end="", markup=False)





def _mark_output(folder: Path, run_id: str, kind: str) -> None:
    (folder / RUN_MARKER).write_text(json.dumps({"run_id": run_id, "kind": kind}) + "\n")


def _parent_of(folder: Path) -> list[str]:
    marker = folder / RUN_MARKER
    return [json.loads(marker.read_text())["run_id"]] if marker.exists() else []


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
        _mark_output(resolved.out, run.id, "ingest")
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
    with start_run("synth", recipe, command=sys.argv, runs_dir=runs_dir, registry_path=registry,
                   parents=_parent_of(recipe.corpus), inputs=[recipe.questions]) as run, \
            Corpus.open(recipe.corpus) as corpus, RequestCache(recipe.out / "cache.sqlite") as cache:
        result, usage = asyncio.run(_synthesize(recipe, corpus, cache, run.log))
        write_tables(result, recipe.out)
        card = write_card(result, recipe.out, recipe_hash=recipe_hash(recipe), usage=usage)
        counts = result.counts()
        run.metrics.update({k: v for k, v in counts.items() if not isinstance(v, dict)})
        run.summary.update({"counts": counts, "usage": usage, "prompts": prompt_hashes()})
        run.add_output(recipe.out / "examples.jsonl")
        run.add_output(recipe.out / "evidence.parquet")
        _mark_output(recipe.out, run.id, "synth")
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
        resolved = _load(SynthRecipe, recipe, {**placeholders, **overrides})
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
                   parents=_parent_of(run_dir), inputs=[run_dir / "examples.jsonl"]) as run:
        images = Corpus.open(synth_recipe.corpus).layout.images
        counts = write_export(examples, recipe.format,
                              lambda key: sharded(images, key[0], key[1]), out)
        run.metrics.update(counts)
        run.add_output(out / ("train.parquet" if recipe.format == "trl" else "train.jsonl"))
        _mark_output(out, run.id, "export")
    _say(f"export {out}: {counts['examples']} examples, {counts['images']} images "
                  f"({recipe.format})  [run {run.id}]")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="folder for everything the demo makes")] = Path(
        "demo"
    ),
    docs: Annotated[int, typer.Option(help="sample PDFs to generate")] = 6,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """The main job on its embedded default, no server and no weights: sample PDFs -> corpus ->
    traces with the offline teacher -> TRL and LLaMA-Factory exports."""
    samples(out / "sample", docs=docs, seed=0)
    ingest(out / "sample" / "pdfs", out=out / "corpus", runs_dir=runs_dir, registry=registry)
    synth(corpus=out / "corpus", questions=out / "sample" / "questions.jsonl",
          out=out / "synth", runs_dir=runs_dir, registry=registry)
    for fmt in ExportFormatOpt:
        export_cmd(out / "synth", fmt=fmt, out=out / f"export-{fmt.value}", runs_dir=runs_dir,
                   registry=registry)


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
    parents = _parent_of(resolved.base) + _parent_of(resolved.tuned)
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
            _mark_output(output.path, run.id, "merge")
        run.metrics.update({"alphas": resolved.alphas, "tensors": report.n_tensors,
                            "seconds": round(report.seconds, 2)})
        run.summary["vocab_growth"] = [str(g) for g in report.vocab_growth]
    for output in report.outputs:
        _say(f"merged alpha={output.alpha:g} -> {output.path}")
    for growth in report.vocab_growth:
        _say(f"  vocabulary grew: {growth}")
    _say(f"{report.n_tensors} tensors in {report.seconds:.1f} s  [run {run.id}]")


def main() -> None:
    app(prog_name="docthink")


if __name__ == "__main__":
    sys.exit(main())
