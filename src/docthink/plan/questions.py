"""The plan of a `docthink questions` run, from the requests the run would build.

The writer's requests are exact: one per page the single-page stage drafts from and one per
multi-page seed, chosen and specified by seed exactly as the run chooses them
(`questions.generate.single_items` / `seed_items`), each built by `questions.writers` around
placeholder images. The extractive writer (a teacher spec) reads the text layer and sends none.
The judge's requests depend on what the writer returns: each drafted multi-page question is tried
on every page of its seed (at most one per seed page), and each unanswerable twin on every page of
a context drawn from hard negatives the plan does not compute, so that part is an estimate: the
twins the seed will draw, times the mixture's mean context length. The question texts are not
written yet, so the judge's prompts count the pages and instructions only."""

from __future__ import annotations

from pathlib import Path

from docthink.core.seeded import uniform
from docthink.corpus.corpus import Corpus
from docthink.plan.bill import Plan, Rates, StagePlan
from docthink.plan.tokens import model_name, placeholder, reader_for
from docthink.questions.generate import judge_request, seed_items, single_items
from docthink.questions.negatives import excluded_doc_ids
from docthink.questions.recipe import QuestionsRecipe
from docthink.questions.rows import Dropped
from docthink.questions.writers import multi_request, single_request


def plan_questions(recipe: QuestionsRecipe, corpus: Corpus, *, recipe_hash: str,
                   processor: Path | None = None, rates: Rates | None = None) -> Plan:
    decontamination = recipe.decontamination
    excluded = excluded_doc_ids(corpus.documents, decontamination.exclude_doc_ids,
                                decontamination.exclude_files)
    doc_ids = sorted(set(corpus.documents) - set(excluded))
    dropped: list[Dropped] = []
    singles = single_items(recipe, corpus, doc_ids, dropped) if recipe.single_page.enabled else []
    seeds = seed_items(recipe, corpus, doc_ids, dropped) if recipe.multi_page.enabled else []
    mime, limit = recipe.image.mime, recipe.max_tokens
    stages, notes = [], []
    generator = recipe.models.generator
    if generator.kind == "teacher":
        notes.append("the extractive writer drafts from the text layer: no writer requests")
    else:
        reader = reader_for(generator, corpus, recipe.image, processor)
        writes = [single_request(placeholder(ref, mime), spec, temperature=recipe.temperature,
                                   max_tokens=limit) for _, ref, spec in singles]
        writes += [multi_request([placeholder(r, mime) for r in pages], spec,
                                   temperature=recipe.temperature, max_tokens=limit)
                     for _, pages, spec in seeds]
        images = len(singles) + sum(len(pages) for _, pages, _ in seeds)
        widest = max([1 if singles else 0, *(len(p) for _, p, _ in seeds)])
        stages.append(StagePlan("generator", model_name(generator), len(writes), "exact",
                                images, widest, sum(reader.prompt_tokens(r) for r in writes),
                                "exact" if reader.exact else "estimate", limit * len(writes),
                                "limit"))
        notes.append(f"generator: {reader.name}")

    judge = reader_for(recipe.models.judge, corpus, recipe.image, processor)
    seed_pages = [r for _, pages, _ in seeds for r in pages]
    twins = [qid for qid, _, _ in singles
             if uniform(recipe.seed, qid, "unanswerable") < recipe.unanswerable.share]
    context = mean_context(recipe, corpus, doc_ids)
    all_pages = [r for d in doc_ids for r in corpus.document(d).pages()]
    mean_page = (sum(judge.prompt_tokens(judge_request(placeholder(r, mime), "", limit))
                     for r in all_pages) / len(all_pages)) if all_pages else 0.0
    seed_prompt = sum(judge.prompt_tokens(judge_request(placeholder(r, mime), "", limit))
                      for r in seed_pages)
    twin_requests = round(len(twins) * context)
    requests = len(seed_pages) + twin_requests
    stages.append(StagePlan("judge", model_name(recipe.models.judge), requests,
                            "estimate" if twins else "at most", requests, 1 if requests else 0,
                            round(seed_prompt + twin_requests * mean_page), "estimate",
                            limit * requests, "limit"))
    seeds_note = (f"judge requests: at most {len(seed_pages)} for {len(seeds)} multi-page seeds "
                  "(each page of each seed whose question survives)")
    twins_note = (f"about {twin_requests} for up to {len(twins)} unanswerable twins (those whose "
                  f"single-page question survives; contexts of {context:.1f} pages on average "
                  "from the mixture)")
    unwritten = "question texts are not counted (not yet written)"
    notes += [f"judge: {judge.name}", f"{seeds_note}, {twins_note}; {unwritten}",
              f"output tokens at the recipe's limit ({limit} per request)"]
    pages = {ref for _, ref, _ in singles} | set(seed_pages)
    return Plan("questions", recipe_hash, len(singles) + len(seeds), len(dropped), len(pages),
                stages, rates or Rates(), notes)


def mean_context(recipe: QuestionsRecipe, corpus: Corpus, doc_ids: list[str]) -> float:
    """The mixture's expected context length: each component's mean length (a whole document:
    the mean length of the documents in its range), weighted."""
    weighted, total = 0.0, 0.0
    for name, component in recipe.contexts.components().items():
        low, high = component.pages
        if name == "document":
            lengths = [n for n in (corpus.n_pages(d) for d in doc_ids) if low <= n <= high]
            if not lengths:
                continue
            mean = sum(lengths) / len(lengths)
        else:
            mean = (low + high) / 2
        weighted += component.weight * mean
        total += component.weight
    return weighted / total if total else 0.0
