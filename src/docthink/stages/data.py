"""The data stages: ingest, questions, tasks, synth, export."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from docthink.corpus.recipe import IngestRecipe
from docthink.export import ExportRecipe
from docthink.plan.bill import Plan, PlanOptions, read_plan
from docthink.questions.recipe import QuestionsRecipe, TasksRecipe
from docthink.recipe import commented_yaml
from docthink.runs import Run, recipe_hash
from docthink.stages.base import Outcome, Stage, Written
from docthink.synth.recipe import SynthRecipe

# Each stage imports what it runs when it runs: the stage table is read by every command, and
# `docthink search` should not pay for PDF rendering or numpy.


def tally(counts: Mapping[str, int]) -> str:
    """Counts as people write them, largest first: "18 single, 4 multi, 1 unanswerable"."""
    return ", ".join(f"{n} {key}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def scalars(counts: Mapping[str, object]) -> dict[str, object]:
    """The counts that go into a run's metrics: the numbers, not the breakdowns."""
    return {k: v for k, v in counts.items() if not isinstance(v, dict)}


# -- ingest ---------------------------------------------------------------------------------------


def _ingest(recipe: IngestRecipe, run: Run) -> Outcome:
    from docthink.corpus.ingest import ingest

    summary = ingest(recipe.pdf_dir, recipe.out, render=recipe.prerender,
                     workers=recipe.workers, progress=True)
    rejected = sum(summary.rejected.values())
    lines = [f"corpus {recipe.out}: {summary.ok} documents ok ({summary.pages} pages), "
             f"{rejected} rejected" + (f" ({tally(summary.rejected)})" if rejected else "")
             + f"; {summary.processed} processed, {summary.skipped_unchanged} unchanged"
             f" in {summary.seconds:.1f} s"]
    lines += [f"  rejected {doc_id}: {why}" for doc_id, why in sorted(summary.rejections.items())]
    return Outcome(lines, [Written(recipe.out / "manifest.jsonl")],
                   {k: v for k, v in summary.as_dict().items() if k != "rejections"},
                   {"rejections": summary.rejections}, marks=[recipe.out])


INGEST = Stage("ingest", ("ingest",), IngestRecipe, _ingest)


# -- questions and tasks --------------------------------------------------------------------------


def _write_recipe(recipe: QuestionsRecipe | TasksRecipe | SynthRecipe) -> None:
    """The resolved recipe, commented, in the output folder (what `export` and people read)."""
    recipe.out.mkdir(parents=True, exist_ok=True)
    (recipe.out / "recipe.yaml").write_text(commented_yaml(recipe) + "\n", encoding="utf-8")


def _questions(recipe: QuestionsRecipe, run: Run) -> Outcome:
    from docthink.questions import PROMPTS
    from docthink.questions.card import write_questions_card
    from docthink.questions.job import make_questions

    _write_recipe(recipe)
    result = make_questions(recipe, run.log, show_progress=True)
    plan = _plan_in(recipe.out)
    card = write_questions_card(result, recipe.contexts, recipe.out,
                                recipe_hash=recipe_hash(recipe), plan=plan)
    counts = result.counts
    line = (f"questions {result.path}: {counts['questions']} questions ({tally(counts['by_kind'])}) "
            f"by {result.indexed.writer}; judge rejected {counts['judge_rejected']}; contexts "
            f"{tally(counts['by_context'])}; hard-negative gap {result.indexed.gap.as_dict()['gap']}"
            f"; {result.shards['total']} shards ({result.shards['reused']} reused); data card "
            f"{card}")
    summary: dict[str, object] = {
        "counts": counts, "usage": result.usage, "writer": result.indexed.writer,
        "judge": result.indexed.judge, "shards": result.shards, "prompts": PROMPTS.hashes()}
    if plan is not None:  # what `docthink plan questions` said beside what the run spent
        summary["planned_beside_actual"] = [b.as_dict() for b in plan.beside(result.meters())]
    return Outcome([line], [Written(result.path)], scalars(counts), summary, marks=[recipe.out])


def _fits_questions(recipe: QuestionsRecipe) -> None:
    """Refuses a recipe whose requests its servers would refuse (see `docthink.serving`)."""
    from docthink.serving import check, questions_demands

    check(questions_demands(recipe))


def _plan_in(out: Path) -> Plan | None:
    """The plan `docthink plan` left in a run folder, if it did."""
    path = out / "plan.json"
    return read_plan(path) if path.exists() else None


def _plan_questions(recipe: QuestionsRecipe, options: PlanOptions) -> Plan:
    """The questions run's plan, written to its folder as plan.json (no calibration: the judge's
    work depends on what the writer drafts, which only the run shows)."""
    from docthink.core.errors import UserError
    from docthink.corpus.corpus import Corpus
    from docthink.plan.questions import plan_questions

    if options.calibrate:
        raise UserError("--calibrate: only `docthink plan synth` calibrates")
    with Corpus.open(recipe.corpus) as corpus:
        plan = plan_questions(recipe, corpus, recipe_hash=recipe_hash(recipe),
                              processor=options.processor, rates=options.rates(None))
    plan.write(recipe.out / "plan.json")
    return plan


QUESTIONS = Stage("questions", ("questions",), QuestionsRecipe, _questions,
                  inputs=lambda r: r.decontamination.exclude_files, parents=lambda r: [r.corpus],
                  check=_fits_questions, plan=_plan_questions)


def _tasks(recipe: TasksRecipe, run: Run) -> Outcome:
    from docthink.corpus.corpus import Corpus
    from docthink.questions.card import write_tasks_card
    from docthink.questions.tasks import build_tasks, task_examples, write_tasks

    _write_recipe(recipe)
    with Corpus.open(recipe.corpus) as corpus:
        result, _ = build_tasks(recipe, corpus, run.log)
        examples = task_examples(result, recipe, corpus, show_progress=True)
        exports = write_tasks(result, examples, recipe, corpus)
    card = write_tasks_card(result, recipe.out, recipe_hash=recipe_hash(recipe), exports=exports)
    counts = result.counts()
    line = (f"tasks {recipe.out}: {counts['tasks']} tasks ({tally(counts['by_task'])}); "
            f"{counts['pages_with_printed_page_numbers']} pages print their page number; "
            f"exports {', '.join(sorted(exports))}; data card {card}")
    return Outcome([line], [Written(recipe.out / "tasks.jsonl"),
                            Written(recipe.out / "examples.jsonl")],
                   scalars(counts), {"counts": counts, "exports": exports}, marks=[recipe.out])


TASKS = Stage("tasks", ("tasks",), TasksRecipe, _tasks,
              inputs=lambda r: r.decontamination.exclude_files, parents=lambda r: [r.corpus])


# -- synth ----------------------------------------------------------------------------------------


def _synth(recipe: SynthRecipe, run: Run) -> Outcome:
    from docthink.synth import PROMPTS
    from docthink.synth.card import write_card
    from docthink.synth.job import synthesize

    _write_recipe(recipe)
    result = synthesize(recipe, run.log, show_progress=True)
    plan = _plan_in(recipe.out)
    card = write_card(result, recipe.out, recipe_hash=recipe_hash(recipe), plan=plan)
    counts = result.counts
    dropped_by: dict[str, int] = counts["dropped"]
    stages = Counter[str]()
    for key, n in dropped_by.items():
        stages[key.split(":", 1)[0]] += n
    dropped = f"{stages.total()} dropped" + (
        f" ({tally(stages)}; why: see the data card)" if stages else "")
    verified = (f"; {counts['verified']} answers verified, {counts['verify_mismatches']} "
                f"mismatched" if counts["verified"] else "")
    shards = result.shards
    line = (f"synth {recipe.out}: {counts['questions']} questions -> {counts['traces']} traces -> "
            f"{counts['examples']} examples; {dropped}{verified}; {shards['total']} shards "
            f"({shards['reused']} reused); data card {card}")
    summary: dict[str, object] = {
        "counts": counts, "usage": result.usage_now, "data_usage": result.usage,
        "shards": shards, "prompts": PROMPTS.hashes()}
    if plan is not None:  # what `docthink plan synth` said beside what the data cost
        summary["planned_beside_actual"] = [b.as_dict() for b in plan.beside(result.meters())]
    return Outcome([line], [Written(recipe.out / "examples.jsonl"),
                            Written(recipe.out / "evidence.parquet"),
                            Written(recipe.out / "verification.parquet")],
                   scalars(counts), summary, marks=[recipe.out])


def _plan_synth(recipe: SynthRecipe, options: PlanOptions) -> Plan:
    """The synth run's plan, written to its folder as plan.json (its data card shows it beside
    what the run spent). With calibration, a sample of questions runs for real first, in a
    scratch folder with its own shards and request cache, so the run itself sends every request
    again."""
    import logging
    import tempfile
    import time
    from dataclasses import replace

    from docthink.corpus.corpus import Corpus
    from docthink.plan.synth import calibration_sample, measure, plan_synth
    from docthink.synth.job import synthesize

    digest = recipe_hash(recipe)
    with Corpus.open(recipe.corpus) as corpus:
        measured, calibration = None, None
        if options.calibrate:
            only = calibration_sample(recipe, corpus, options.calibrate)
            log = logging.getLogger("docthink.plan")
            with tempfile.TemporaryDirectory() as scratch:
                started = time.perf_counter()
                sample_run = synthesize(recipe.model_copy(update={"out": Path(scratch)}), log,
                                        show_progress=False, only=only)
                seconds = time.perf_counter() - started
                meters = sample_run.meters()
                measured = measure(recipe, corpus, Path(scratch), sample_run.counts["questions"],
                                   meters, seconds, options.processor)
            sample = plan_synth(recipe, corpus, recipe_hash=digest, processor=options.processor,
                                measured=measured, only=only)
            beside = sample.beside(meters)
            calibration = {"questions": measured.questions, "seconds": round(seconds, 3),
                           "tokens": measured.tokens,
                           "sample_planned_beside_actual": [b.as_dict() for b in beside]}
            measured = replace(measured, prompt_scale={
                b.stage: b.prompt_tokens[1] / b.prompt_tokens[0]
                for b in beside if b.prompt_tokens[0]})
        rates = options.rates(None if measured is None else
                              (measured.tokens, measured.seconds, measured.questions))
        plan = plan_synth(recipe, corpus, recipe_hash=digest, processor=options.processor,
                          measured=measured, rates=rates)
    plan.calibration = calibration
    plan.write(recipe.out / "plan.json")
    return plan


def _fits_synth(recipe: SynthRecipe) -> None:
    """Refuses a recipe whose requests its servers would refuse (see `docthink.serving`)."""
    from docthink.serving import check, synth_demands

    check(synth_demands(recipe))


SYNTH = Stage("synth", ("synth",), SynthRecipe, _synth, inputs=lambda r: [r.questions],
              parents=lambda r: [r.corpus, r.questions.parent], check=_fits_synth,
              plan=_plan_synth)


# -- export ---------------------------------------------------------------------------------------


def _export(recipe: ExportRecipe, run: Run) -> Outcome:
    from docthink.corpus.corpus import Corpus
    from docthink.corpus.files import sharded
    from docthink.export import write_export
    from docthink.recipe import load_recipe
    from docthink.synth.pipeline import read_examples

    examples = read_examples(recipe.run_dir)
    synth = load_recipe(SynthRecipe, recipe.run_dir / "recipe.yaml", {})
    images = Corpus.open(synth.corpus).layout.images
    counts = write_export(examples, recipe.format, lambda key: sharded(images, key.sha256, key.suffix),
                          recipe.out)
    written = recipe.out / ("train.parquet" if recipe.format == "trl" else "train.jsonl")
    line = (f"export {recipe.out}: {counts['examples']} examples, {counts['images']} images "
            f"({recipe.format})")
    return Outcome([line], [Written(written)], dict(counts), marks=[recipe.out])


def _examples(recipe: ExportRecipe) -> list[Path]:
    from docthink.synth.pipeline import examples_file

    return [examples_file(recipe.run_dir)]


EXPORT = Stage("export", ("export",), ExportRecipe, _export, inputs=_examples,
               parents=lambda r: [r.run_dir])

