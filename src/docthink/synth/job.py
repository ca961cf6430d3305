"""A synth run in shards: the questions file is read as a stream and cut into shards of
`executor.shard_size` questions; each shard runs the stages (`pipeline.synthesize_shard`) wherever
the recipe's executor puts it and commits its rows as parts (`shards/`); the final tables are
merged from the parts, so a run holds one shard's rows at a time, a killed run redoes at most the
shards it had not committed (their finished requests come from the request cache), and the result
does not depend on where or in which order shards ran.

The final tables keep the order of an unsharded run: evidence by (qid, position), answers by qid
(both merged by key across shards), traces, verdicts and examples in question order (shards in
order), and dropped rows input first, then evidence and trace, then answer and verification (each
in question order)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import pyarrow as pa

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
    write_concatenated,
    write_lines,
    write_part,
    write_sorted,
)
from docthink.export import SFTExample
from docthink.models.base import ChatModel, UsageMeter
from docthink.models.build import build_model, build_served
from docthink.models.cache import CachedModel, RequestCache
from docthink.questions.rows import Dropped, Question, check_documents, question_rows, resolve_row
from docthink.synth.pipeline import (
    ShardRows,
    SynthModels,
    context_refs,
    plain_examples,
    synthesize_shard,
    table_rows,
)
from docthink.synth.recipe import SynthRecipe

STAGE_MODELS = ("evidence", "answer_vision", "answer_text")
# verification.parquet's columns, typed: a run (or a shard) without a verdict still has them
VERDICTS = pa.schema([("qid", pa.string()), ("branch", pa.string()), ("method", pa.string()),
                      ("reference", pa.string()), ("answer_format", pa.string()),
                      ("answer", pa.string()), ("pred", pa.string()), ("score", pa.float64()),
                      ("match", pa.bool_()), ("action", pa.string()), ("failure", pa.string())])


@dataclass
class QuestionShards:
    """The questions file read again from the start on each iteration, cut into shards as it is
    read. Rows dropped at input and every shard's digest are collected on the way. `only` keeps
    some questions (a plan's calibration sample) and leaves the rest unread."""

    recipe: SynthRecipe
    n_pages: Mapping[str, int]
    only: frozenset[str] | None = None
    rows: int = 0  # rows read (those `only` keeps)
    dropped: list[Dropped] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Shard[Question]]:
        self.rows, self.dropped, self.digests = 0, [], []
        plan, size = plan_digest(self.recipe), self.recipe.executor.shard_size
        batch: list[Question] = []
        for row in question_rows(self.recipe.questions):
            if self.only is not None and row.qid not in self.only:
                continue
            self.rows += 1
            resolved = resolve_row(row, self.n_pages, self.recipe.questions)
            if isinstance(resolved, Dropped):
                self.dropped.append(resolved)
                continue
            batch.append(resolved)
            if len(batch) == size:
                yield self._shard(plan, batch)
                batch = []
        if batch:
            yield self._shard(plan, batch)

    def _shard(self, plan: str, questions: list[Question]) -> Shard[Question]:
        shard = Shard(len(self.digests), tuple(questions), items_digest(plan, questions))
        self.digests.append(shard.digest)
        return shard


@dataclass(frozen=True)
class SynthSession:
    corpus: Corpus
    cache: RequestCache
    models: dict[str, ChatModel]  # by stage (and the judge); one instance per distinct spec


class SynthJob:
    """The synth stages on one shard (`engine.executor.ShardJob`); pickled to Ray workers."""

    def __init__(self, recipe: SynthRecipe) -> None:
        self.recipe = recipe
        self.store = ShardStore(recipe.out / "shards")
        self._corpus: Corpus | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_corpus": None}  # an open corpus stays in its process

    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = Corpus.open(self.recipe.corpus)
        return self._corpus

    def prepare(self, shard: Shard[Question], workers: int, show_progress: bool) -> None:
        self.corpus().ensure_images(context_refs(shard.items), self.recipe.image, workers,
                                    show_progress)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[SynthSession]:
        # One inner model per distinct spec, shared across stages; each stage gets its own cache
        # wrapper per shard, so usage is accounted per stage and per shard.
        corpus = self.corpus()
        inner: dict[str, ChatModel] = {}
        models = {}
        for name in STAGE_MODELS:
            spec = getattr(self.recipe.models, name)
            key = spec.model_dump_json()
            if key not in inner:
                inner[key] = build_model(spec, pages=corpus)
            models[name] = inner[key]
        verify = self.recipe.answer.verify
        if verify.method == "judge":
            assert verify.judge is not None  # the recipe validates it
            key = verify.judge.model_dump_json()
            if key not in inner:
                inner[key] = build_served(verify.judge)
            models["judge"] = inner[key]
        try:
            with RequestCache(self.recipe.out / "cache.sqlite") as cache:
                yield SynthSession(corpus, cache, models)
        finally:
            for model in inner.values():
                await model.aclose()

    async def process(self, shard: Shard[Question], session: SynthSession,
                      show_progress: bool) -> Committed:
        refs = context_refs(shard.items)
        # rendered by `prepare`: found in the store, nothing renders here
        images = dict(zip(refs, session.corpus.ensure_images(refs, self.recipe.image, 1),
                          strict=True))
        models = {name: CachedModel(m, session.cache) for name, m in session.models.items()}
        rows = await synthesize_shard(shard.items, images, self.recipe, SynthModels(**models),
                                      show_progress)
        counts = {**rows.counts(), "usage": {n: m.usage.as_dict() for n, m in models.items()}}

        def write(folder: Path) -> dict[str, object]:
            write_part(table_rows(rows.evidence), folder / "evidence.parquet")
            write_part(table_rows(rows.traces), folder / "traces.parquet")
            write_part(table_rows(rows.answers), folder / "answers.parquet")
            write_part(table_rows(rows.verdicts), folder / "verification.parquet", VERDICTS)
            write_lines((json.dumps(asdict(d)) for d in rows.dropped), folder / "dropped.jsonl")
            write_lines((json.dumps(e.to_json(), ensure_ascii=False) for e in rows.examples),
                        folder / "examples.jsonl")
            return counts

        return self.store.commit(shard, write)


@dataclass(frozen=True)
class SynthSummary:
    counts: dict[str, Any]  # the run's metrics, as JSON (see `summary_counts`)
    card: dict[str, Any]  # what the data card draws besides the counts, as JSON
    usage: dict[str, dict[str, object]]  # per stage, summed over every shard: what the data cost
    usage_now: dict[str, dict[str, object]]  # the same over the shards this run processed
    shards: dict[str, int]  # total, processed by this run, reused from an earlier one

    def meters(self) -> dict[str, UsageMeter]:
        """`usage` as meters: what a plan of the run is set beside."""
        return {stage: UsageMeter.of(u) for stage, u in self.usage.items()}


def synthesize(recipe: SynthRecipe, log: logging.Logger, show_progress: bool,
               only: frozenset[str] | None = None) -> SynthSummary:
    """The whole run: shards processed where the recipe's executor says, then the final tables,
    examples and counts merged from the committed parts. `only` restricts it to some questions
    (a plan's calibration sample)."""
    with Corpus.open(recipe.corpus) as corpus:
        check_documents(question_rows(recipe.questions), corpus, recipe.questions)
        n_pages = {d.doc_id: d.n_pages for d in corpus.documents.values()}
    job = SynthJob(recipe)
    job.store.sweep()
    shards = QuestionShards(recipe, n_pages, only)
    processed: list[int] = []

    def pending() -> Iterator[Shard[Question]]:
        for shard in shards:
            if not job.store.done(shard):
                processed.append(shard.index)
                yield shard

    run_shards(recipe.executor, job, pending(), workers=recipe.workers,
               show_progress=show_progress)
    committed = [job.store.get(index, digest) for index, digest in enumerate(shards.digests)]
    job.store.sweep(keep=len(committed))
    n_rows = shards.rows
    log.info("%d questions, %d dropped at input; %d shards (%d processed now)", n_rows,
             len(shards.dropped), len(committed), len(processed))
    # a shard's counts with nothing in them first: every key is there even with no shard
    zero = {**ShardRows().counts(), "usage": {}}
    totals: dict[str, Any] = sum_counts([zero, *(c.counts for c in committed)])
    now: dict[str, Any] = sum_counts([zero, *(committed[i].counts for i in processed)])
    with Corpus.open(recipe.corpus) as corpus:
        plain = plain_examples(recipe, corpus, totals["examples"], log)
    write_tables([c.folder for c in committed], shards.dropped, plain, recipe.out)
    return SynthSummary(
        summary_counts(n_rows, shards.dropped, totals, plain),
        {key: totals[key] for key in ("relevance", "trace_pages", "verify_methods")},
        totals["usage"],
        now["usage"],
        {"total": len(committed), "processed": len(processed),
         "reused": len(committed) - len(processed)},
    )


# dropped after the answers are in (in question order, after every evidence and trace drop)
LAST_STAGES = ("answer: ", "verify: ")


def summary_counts(n_rows: int, input_dropped: Sequence[Dropped], totals: Mapping[str, Any],
                   plain: Sequence[SFTExample]) -> dict[str, object]:
    dropped = dict(Counter(f"{d.stage}: {d.reason}" for d in input_dropped))
    later: dict[str, int] = totals["dropped"]
    dropped |= {k: n for k, n in later.items() if not k.startswith(LAST_STAGES)}
    dropped |= {k: n for k, n in later.items() if k.startswith(LAST_STAGES)}
    return {
        "questions": n_rows,
        **{key: totals[key] for key in ("evidence_requests", "evidence_failures", "traces",
                                        "answers")},
        "examples": totals["examples"] + len(plain),
        "dropped": dropped,
        "branches": totals["branches"],
        "placements": totals["placements"],
        "plain_examples": len(plain),
        **{key: totals[key] for key in ("verified", "verify_mismatches", "verify_dropped")},
        "verification": {branch: totals["verification"][branch]
                         for branch in sorted(totals["verification"])},
    }


def write_tables(folders: Sequence[Path], input_dropped: Sequence[Dropped],
                 plain: Sequence[SFTExample], out: Path) -> None:
    """The final tables from the parts of every shard (`folders`, in shard order): each stage's
    rows as Parquet, dropped rows and examples as JSONL (examples are `docthink export`'s input)."""
    out.mkdir(parents=True, exist_ok=True)
    write_sorted([f / "evidence.parquet" for f in folders], ["qid", "position"],
                 out / "evidence.parquet")
    write_concatenated([f / "traces.parquet" for f in folders], out / "traces.parquet")
    write_sorted([f / "answers.parquet" for f in folders], ["qid"], out / "answers.parquet")
    write_concatenated([f / "verification.parquet" for f in folders], out / "verification.parquet",
                       VERDICTS)
    dropped = [f / "dropped.jsonl" for f in folders]

    def at_answer(line: str) -> bool:
        return json.loads(line)["stage"] in ("answer", "verify")

    write_atomically(chain(
        (json.dumps(asdict(d)) for d in input_dropped),
        concatenated_lines(dropped, lambda line: not at_answer(line)),
        concatenated_lines(dropped, at_answer),
    ), out / "dropped.jsonl")
    write_atomically(chain(
        concatenated_lines(f / "examples.jsonl" for f in folders),
        (json.dumps(e.to_json(), ensure_ascii=False) for e in plain),
    ), out / "examples.jsonl")
