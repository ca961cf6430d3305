"""A `docthink questions` run in shards of documents: the page index and its hard negatives are
built once for the corpus, then each shard of `executor.shard_size` documents runs the writer, the
judge and the contexts (`generate.document_questions`: no document's questions depend on another
document's, except through the shared index) wherever the recipe's executor puts it, and commits
its rows as parts; the final files are merged from the parts in the order of an unsharded run:
questions by qid, dropped rows by (qid, stage), judgements multi-page first, then unanswerable
(documents in order within each)."""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from docthink.corpus.corpus import Corpus
from docthink.engine.executor import run_shards
from docthink.engine.shards import (
    Committed,
    Shard,
    ShardStore,
    concatenated_lines,
    items_digest,
    plan_digest,
    sum_counts,
    write_atomically,
    write_lines,
)
from docthink.models.base import ChatModel, UsageMeter
from docthink.models.cache import CachedModel, RequestCache
from docthink.questions import extractive as ex
from docthink.questions.contexts import ContextSource
from docthink.questions.generate import (
    DocumentQuestions,
    Indexed,
    document_questions,
    dropped_line,
    index_corpus,
    judgement_line,
    question_items,
    question_line,
    question_models,
    write_index,
    writer_pages,
)
from docthink.questions.recipe import QuestionsRecipe


@dataclass(frozen=True)
class QuestionsSession:
    corpus: Corpus
    cache: RequestCache
    generator: ChatModel | None  # None: the extractive writer
    judge: ChatModel


class QuestionsJob:
    """The question stages on one shard of documents (`engine.executor.ShardJob`)."""

    def __init__(self, recipe: QuestionsRecipe, source: ContextSource, log: str) -> None:
        self.recipe = recipe
        self.source = source
        self.log = log  # the run's logger, by name: where this process has it, lines go there
        self.store = ShardStore(recipe.out / "shards")

    def prepare(self, shard: Shard[str], workers: int, show_progress: bool) -> None:
        """A model writer is shown page images: render them (the judge's pages are known only
        once questions are written, and are rendered then)."""
        if self.recipe.models.generator.kind == "teacher":
            return
        with Corpus.open(self.recipe.corpus) as corpus:
            singles, seeds = question_items(self.recipe, corpus, shard.items, DocumentQuestions())
            pages = sorted(writer_pages(singles, seeds), key=lambda r: (r.doc_id, r.page))
            corpus.ensure_images(pages, self.recipe.image, workers, show_progress)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[QuestionsSession]:
        with Corpus.open(self.recipe.corpus) as corpus, \
                RequestCache(self.recipe.out / "cache.sqlite") as cache:
            generator, judge = question_models(self.recipe, corpus)
            try:
                yield QuestionsSession(corpus, cache, generator, judge)
            finally:
                for model in (generator, judge):
                    if model is not None:
                        await model.aclose()

    async def process(self, shard: Shard[str], session: QuestionsSession,
                      show_progress: bool) -> Committed:
        generator = None if session.generator is None else CachedModel(session.generator,
                                                                       session.cache)
        judge = CachedModel(session.judge, session.cache)
        made = await document_questions(self.recipe, session.corpus, shard.items, generator,
                                        judge, self.source, logging.getLogger(self.log),
                                        show_progress)
        counts: dict[str, Any] = {**made.counts(), "usage": {"judge": judge.usage.as_dict()}}
        if generator is not None:
            counts["usage"] = {"generator": generator.usage.as_dict(), **counts["usage"]}
        names = {"writer": ex.WRITER_NAME if generator is None else generator.name,
                 "judge": judge.name}

        def write(folder: Path) -> dict[str, object]:
            (folder / "names.json").write_text(json.dumps(names), encoding="utf-8")
            write_lines(map(question_line, made.questions), folder / "questions.jsonl")
            write_lines(map(dropped_line, made.dropped), folder / "dropped.jsonl")
            write_lines(map(judgement_line, made.judgements), folder / "judgements.jsonl")
            return counts

        return self.store.commit(shard, write)

    def names(self, folder: Path | None) -> dict[str, str]:
        """Who wrote and judged, as a shard recorded it; with no shard, from the models the
        recipe names (built, asked nothing)."""
        if folder is not None:
            return json.loads((folder / "names.json").read_text(encoding="utf-8"))
        with Corpus.open(self.recipe.corpus) as corpus:
            generator, judge = question_models(self.recipe, corpus)
        return {"writer": ex.WRITER_NAME if generator is None else generator.name,
                "judge": judge.name}


@dataclass(frozen=True)
class QuestionsSummary:
    indexed: Indexed
    counts: dict[str, Any]  # the run's metrics
    card: dict[str, Any]  # added up over shards: what the data card counts
    usage: dict[str, dict[str, object]]  # per role, over the shards this run processed
    shards: dict[str, int]
    path: Path  # questions.jsonl

    def meters(self) -> dict[str, UsageMeter]:
        """Per role, summed over every shard: what a plan of the run is set beside."""
        return {role: UsageMeter.of(u) for role, u in self.card["usage"].items()}


def make_questions(recipe: QuestionsRecipe, log: logging.Logger,
                   show_progress: bool) -> QuestionsSummary:
    with Corpus.open(recipe.corpus) as corpus:
        index, negatives, excluded, gap = index_corpus(recipe, corpus, log)
        doc_ids = sorted(set(corpus.documents) - set(excluded))
        n_pages = {d: corpus.n_pages(d) for d in doc_ids}
    recipe.out.mkdir(parents=True, exist_ok=True)
    job = QuestionsJob(recipe, ContextSource(index, negatives, n_pages), log.name)
    plan, size = plan_digest(recipe), recipe.executor.shard_size
    shards = [Shard(i, tuple(doc_ids[s:s + size]), items_digest(plan, doc_ids[s:s + size]))
              for i, s in enumerate(range(0, len(doc_ids), size))]
    job.store.sweep()
    pending = [s for s in shards if not job.store.done(s)]
    run_shards(recipe.executor, job, pending, workers=recipe.workers, show_progress=show_progress)
    committed = [job.store.get(s.index, s.digest) for s in shards]
    job.store.sweep(keep=len(committed))
    names = job.names(committed[0].folder if committed else None)
    indexed = Indexed(index, negatives, gap, excluded, names["writer"], names["judge"])
    write_index(indexed, recipe.out)
    roles = ("generator", "judge") if recipe.models.generator.kind != "teacher" else ("judge",)
    zero = {**DocumentQuestions().counts(),
            "usage": {role: UsageMeter().as_dict() for role in roles}}
    totals: dict[str, Any] = sum_counts([zero, *(c.counts for c in committed)])
    now: dict[str, Any] = sum_counts([zero, *(committed[s.index].counts for s in pending)])
    path = write_files([c.folder for c in committed], recipe.out)
    counts = {
        **indexed.counts(),
        "questions": totals["questions"],
        **{key: dict(sorted(totals[key].items()))
           for key in ("by_kind", "by_generator", "by_context")},
        "judge_requests": totals["judge_requests"],
        "judge_rejected": totals["judge_rejected"],
        "dropped": dict(sorted(totals["dropped"].items())),
        "similarity_gap": gap.as_dict(),
    }
    return QuestionsSummary(indexed, counts, totals, now["usage"],
                            {"total": len(committed), "processed": len(pending),
                             "reused": len(committed) - len(pending)}, path)


def write_files(folders: Sequence[Path], out: Path) -> Path:
    """questions.jsonl (the input of `docthink synth`), dropped.jsonl and judgements.jsonl from
    the parts of every shard (`folders`, in shard order)."""

    def by_key(name: str, key: Any) -> Iterator[str]:
        return heapq.merge(*(concatenated_lines([f / name]) for f in folders),
                           key=lambda line: key(json.loads(line)))

    path = out / "questions.jsonl"
    write_atomically(by_key("questions.jsonl", lambda row: row["qid"]), path)
    write_atomically(by_key("dropped.jsonl", lambda row: (row["qid"], row["stage"])),
                     out / "dropped.jsonl")
    judgements = [f / "judgements.jsonl" for f in folders]
    write_atomically(chain(
        concatenated_lines(judgements, lambda line: json.loads(line)["qid"].startswith("multi:")),
        concatenated_lines(judgements,
                           lambda line: not json.loads(line)["qid"].startswith("multi:")),
    ), out / "judgements.jsonl")
    return path
