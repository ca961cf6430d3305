"""`docthink questions`: a corpus -> single-page, multi-page and unanswerable questions, each
widened into a long context, written as rows `docthink synth --questions` reads.

Stages, in order (each a plain function; failures are per-row records, counted):
1. index: text-layer embeddings of every page of every non-excluded document, ranked hard
   negatives from other documents (`embed`, `negatives`);
2. single-page: pages with at least `min_words` words (weaker pages are skipped) get a sampled
   specification (type, answer format, length, difficulty, 1-5 questions; each field drawn from
   (seed, page, field)); the writer writes 1-5 questions, one is kept (drawn from the seed);
3. multi-page: seeds of 2-17 consecutive pages; the writer writes questions that need two or more
   of them; the judge answers each kept question once per seed page, from that page alone; a page
   whose answer matches the reference answer rejects the question (dropped, counted);
4. unanswerable: a seeded share of single-page questions gets a twin with a context built without
   its source page and the answer `Not answerable`; the judge answers it on every context page and
   a page that gives the original answer rejects the twin;
5. contexts: every question gets its long context (`contexts`).

Writers (`question_writers`): a model through the model layer, or, when the recipe's generator
is the teacher spec, the offline extractive writer. Each question records the writer that made
it. The judge is any model through the model layer (offline: the extractive teacher), one request
per (question, page), a `ShortAnswer` compared with `answers_match`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal, cast

from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.core.seeded import rng, uniform
from docthink.core.vocab import NOT_ANSWERABLE
from docthink.corpus.corpus import Corpus
from docthink.engine.local import run_requests
from docthink.models.base import ChatModel, ChatRequest, ChatResult, Message, RequestFailure
from docthink.models.build import build_model
from docthink.models.tasks import ShortAnswer
from docthink.progress import progress
from docthink.questions import PROMPTS
from docthink.questions.contexts import Context, ContextSource, build_context
from docthink.questions.embed import PageIndex, page_words
from docthink.questions.negatives import HardNegatives, SimilarityGap, build_index, similarity_gap
from docthink.questions.recipe import QuestionsRecipe
from docthink.questions.rows import Dropped
from docthink.questions.writers import (
    Draft,
    ExtractiveWriter,
    ModelWriter,
    NoDrafts,
    Spec,
    Writer,
    sample_spec,
)

Kind = Literal["single", "multi", "unanswerable"]


@dataclass(frozen=True)
class GeneratedQuestion:
    qid: str
    kind: Kind
    doc_id: str
    question: str
    answer: str
    answer_format: str
    qtype: str
    origin: tuple[PageRef, ...]  # the pages it was written from
    generator: str
    spec: Spec
    context: Context | None = None

    @property
    def source(self) -> tuple[PageRef, ...]:
        """The pages that answer it within its context: none for an unanswerable question."""
        return () if self.kind == "unanswerable" else self.origin

    def row(self) -> dict[str, object]:
        assert self.context is not None  # rows are written after contexts are built
        return {
            "qid": self.qid,
            "doc_id": self.doc_id,
            "question": self.question,
            "source_pages": [[r.doc_id, r.page] for r in self.source],
            "context_pages": [[r.doc_id, r.page] for r in self.context.pages],
            "answer": self.answer,
            "answer_format": self.answer_format,
            "kind": self.kind,
            "question_type": self.qtype,
            "generator": self.generator,
            "spec": self.spec.as_dict(),
            "origin_pages": [[r.doc_id, r.page] for r in self.origin],
            "context_kind": self.context.kind,
        }


@dataclass(frozen=True, slots=True)
class Judgement:
    qid: str
    page: PageRef
    reply: str
    answers: bool  # the reply matches the reference answer
    failure: str | None = None


# -- the judge ----------------------------------------------------------------------------------


def judge_request(image: ImagePart, question: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=(
            Message.text("system", PROMPTS["judge_system"].text),
            Message("user", (image, TextPart(question))),
        ),
        response_model=ShortAnswer,
        temperature=0.0,
        max_tokens=max_tokens,
        purpose="judge",
    )


_NUMERIC_ANSWER = re.compile(r"[$€£]?\s*(-?\d[\d,]*(?:\.\d+)?)\s*%?")


def _normal(text: str) -> str:
    return " ".join(text.strip().strip(".").lower().split())


def _number(text: str) -> Decimal | None:
    match = _NUMERIC_ANSWER.fullmatch(text.strip().strip("."))
    if match is None:
        return None
    try:
        return Decimal(match.group(1).replace(",", ""))
    except InvalidOperation:
        return None


def answers_match(reply: str, reference: str) -> bool:
    """Whether a judge's reply gives the reference answer: equal after normalising case, spaces
    and a final period; equal as numbers (separators, currency and % ignored); or, for a text
    reference, every item of it (a List's items, else the whole) found in the reply as words."""
    reply_n, reference_n = _normal(reply), _normal(reference)
    if not reply_n or reply_n == _normal(NOT_ANSWERABLE):
        return False
    if reply_n == reference_n:
        return True
    a, b = _number(reply), _number(reference)
    if b is not None:
        return a is not None and a == b
    items = re.findall(r"'([^']*)'", reference) if reference.startswith("[") else [reference]
    return all(
        re.search(rf"(?<!\w){re.escape(_normal(item))}(?!\w)", reply_n) for item in items if item
    )


async def judge(
    model: ChatModel,
    images: dict[PageRef, ImagePart],
    items: Sequence[tuple[str, str, str, Sequence[PageRef]]],
    *,
    concurrency: int,
    max_tokens: int,
    show_progress: bool,
) -> list[Judgement]:
    """One request per (question, page): the page alone, then the question."""
    pairs = [(qid, q, answer, ref) for qid, q, answer, pages in items for ref in pages]
    requests = [judge_request(images[ref], q, max_tokens) for _, q, _, ref in pairs]
    with progress("judge", len(requests), show_progress) as bar:
        results = await run_requests(model, requests, concurrency=concurrency, on_done=bar.advance)
    judgements = []
    for (qid, _, answer, ref), result in zip(pairs, results, strict=True):
        if isinstance(result, RequestFailure):
            judgements.append(Judgement(qid, ref, "", False, failure=result.reason))
            continue
        reply = cast(ShortAnswer, cast(ChatResult, result).parsed).answer
        judgements.append(Judgement(qid, ref, reply, answers_match(reply, answer)))
    return judgements


def verdicts(judgements: Sequence[Judgement]) -> dict[str, str | None]:
    """qid -> why it is rejected (a judge request failed, or a page answers it alone), or None."""
    by_qid: dict[str, list[Judgement]] = {}
    for j in judgements:
        by_qid.setdefault(j.qid, []).append(j)
    out: dict[str, str | None] = {}
    for qid, rows in by_qid.items():
        failure = next((j.failure for j in rows if j.failure is not None), None)
        if failure is not None:
            out[qid] = f"judge request failed: {failure.split(':', 1)[0]}"
        elif any(j.answers for j in rows):
            out[qid] = "judge: a single page answers it"
        else:
            out[qid] = None
    return out


# -- the pipeline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Indexed:
    """What every shard of documents shares: the page index, its hard negatives and their
    similarity gap, the documents left out, and who writes and judges."""

    index: PageIndex
    negatives: HardNegatives
    gap: SimilarityGap
    excluded: list[str]
    writer: str
    judge: str

    def counts(self) -> dict[str, object]:
        return {
            "documents": len({r.doc_id for r in self.index.refs}),
            "excluded_documents": len(self.excluded),
            "indexed_pages": len(self.index.refs),
            "textless_pages": len(self.index.textless),
            "pages_embedded": self.index.embedded,
        }


@dataclass
class DocumentQuestions:
    """What the stages made of one shard of documents."""

    questions: list[GeneratedQuestion] = field(default_factory=list)  # by qid
    dropped: list[Dropped] = field(default_factory=list)  # by (qid, stage)
    judgements: list[Judgement] = field(default_factory=list)  # multi-page, then unanswerable

    def counts(self) -> dict[str, object]:
        """What the run adds up over shards (string keys: it is stored as JSON)."""
        lengths: dict[str, dict[str, int]] = {}
        for q in self.questions:
            assert q.context is not None  # every kept question has its context
            by_kind = lengths.setdefault(q.context.kind, {})
            by_kind[str(len(q.context.pages))] = by_kind.get(str(len(q.context.pages)), 0) + 1
        return {
            "questions": len(self.questions),
            "by_kind": dict(Counter(q.kind for q in self.questions)),
            "by_generator": dict(Counter(q.generator for q in self.questions)),
            "by_context": dict(Counter(q.context.kind for q in self.questions if q.context)),
            "by_question_type": dict(Counter(q.qtype for q in self.questions)),
            "by_answer_format": dict(Counter(q.answer_format for q in self.questions)),
            "judge_requests": len(self.judgements),
            "judge_rejected": sum(d.reason.startswith("judge: ") for d in self.dropped),
            "dropped": dict(Counter(f"{d.stage}: {d.reason}" for d in self.dropped)),
            "context_pages": lengths,
        }


def question_models(recipe: QuestionsRecipe, corpus: Corpus) -> tuple[ChatModel | None, ChatModel]:
    """(generator model or None for the extractive writer, judge), as the recipe names them."""
    generator_spec, judge_spec = recipe.models.generator, recipe.models.judge
    judge_model = build_model(judge_spec, pages=corpus)
    if generator_spec.kind == "teacher":
        return None, judge_model
    return build_model(generator_spec, pages=corpus), judge_model


def _keep(seed: int, qid: str, drafts: Sequence[Draft]) -> Draft:
    return drafts[int(uniform(seed, qid, "keep") * len(drafts))]


def single_items(
    recipe: QuestionsRecipe, corpus: Corpus, doc_ids: Sequence[str], dropped: list[Dropped]
) -> list[tuple[str, PageRef, Spec]]:
    """(qid, page, spec) of every page the writer drafts from; weak pages go to `dropped`."""
    settings = recipe.single_page
    items = []
    for doc_id in doc_ids:
        pages = []
        for ref in corpus.document(doc_id).pages():
            if page_words(corpus.page_text(ref)) < settings.min_words:
                dropped.append(Dropped(f"single:{ref}", "single", "weak page: too little text"))
            else:
                pages.append(ref)
        if settings.max_per_document is not None:
            draw = rng(recipe.seed, doc_id, "single-pages")
            pages = sorted(draw.sample(pages, min(len(pages), settings.max_per_document)),
                           key=lambda r: r.page)
        for ref in pages:
            qid = f"single:{ref}"
            items.append((qid, ref, sample_spec(recipe.seed, str(ref), settings.spec)))
    return items


def seed_items(
    recipe: QuestionsRecipe, corpus: Corpus, doc_ids: Sequence[str], dropped: list[Dropped]
) -> list[tuple[str, tuple[PageRef, ...], Spec]]:
    """(qid, seed pages, spec) of every multi-page seed; weak seeds go to `dropped`."""
    settings = recipe.multi_page
    items = []
    for doc_id in doc_ids:
        n = corpus.n_pages(doc_id)
        if n < 2:
            continue
        for k in range(settings.seeds_per_document):
            qid = f"multi:{doc_id}#{k}"
            draw = rng(recipe.seed, qid, "seed")
            low, high = min(settings.pages[0], n), min(settings.pages[1], n)
            length = draw.randint(low, high)
            start = draw.randint(1, n - length + 1)
            pages = tuple(PageRef(doc_id, p) for p in range(start, start + length))
            strong = sum(page_words(corpus.page_text(r)) >= settings.min_words for r in pages)
            if strong < 2:
                dropped.append(Dropped(qid, "multi", "weak seed: under two pages with text"))
                continue
            items.append((qid, pages, sample_spec(recipe.seed, qid, recipe.single_page.spec)))
    return items


class _Stages:
    """One `docthink questions` run: the stages share the writer, the judge, the page images
    rendered so far and the result they fill."""

    def __init__(
        self,
        recipe: QuestionsRecipe,
        corpus: Corpus,
        judge_model: ChatModel,
        result: DocumentQuestions,
        log: logging.Logger,
        show_progress: bool,
    ) -> None:
        self.recipe = recipe
        self.corpus = corpus
        self.judge_model = judge_model
        self.result = result
        self.log = log
        self.show_progress = show_progress
        self.images: dict[PageRef, ImagePart] = {}

    def render(self, refs: set[PageRef]) -> None:
        missing = sorted(refs - self.images.keys(), key=lambda r: (r.doc_id, r.page))
        if missing:
            parts = self.corpus.ensure_images(
                missing, self.recipe.image, self.recipe.workers, self.show_progress
            )
            self.images.update(zip(missing, parts, strict=True))

    def drop(self, qid: str, stage: str, reason: str) -> None:
        self.result.dropped.append(Dropped(qid, stage, reason))

    async def judged(
        self, items: Sequence[tuple[GeneratedQuestion, str, Sequence[PageRef]]]
    ) -> list[GeneratedQuestion]:
        """The questions no page answers alone: (question, reference answer, pages to try)."""
        self.render({r for _, _, pages in items for r in pages})
        judgements = await judge(
            self.judge_model, self.images,
            [(q.qid, q.question, reference, pages) for q, reference, pages in items],
            concurrency=self.recipe.concurrency, max_tokens=self.recipe.max_tokens,
            show_progress=self.show_progress,
        )
        self.result.judgements.extend(judgements)
        rejected = verdicts(judgements)
        kept = []
        for question, _, _ in items:
            reason = rejected[question.qid]
            if reason is None:
                kept.append(question)
            else:
                self.drop(question.qid, question.kind, reason)
        return kept

    def unique(self, questions: Sequence[GeneratedQuestion]) -> list[GeneratedQuestion]:
        """The first of questions with the same text in a document (overlapping seeds, a
        sentence printed on two pages); the others are dropped and counted."""
        seen: set[tuple[str, str]] = set()
        unique = []
        for question in questions:
            key = (question.doc_id, question.question)
            if key in seen:
                self.drop(question.qid, question.kind, "duplicate question")
            else:
                seen.add(key)
                unique.append(question)
        return unique

    async def single_page(
        self, writer: Writer, items: Sequence[tuple[str, PageRef, Spec]]
    ) -> list[GeneratedQuestion]:
        questions = []
        for (qid, ref, spec), outcome in zip(items, await writer.single(items), strict=True):
            if isinstance(outcome, NoDrafts):
                self.drop(qid, "single", outcome.reason)
                continue
            draft = _keep(self.recipe.seed, qid, outcome)
            questions.append(GeneratedQuestion(
                qid, "single", ref.doc_id, draft.question, draft.answer, draft.answer_format,
                draft.qtype, draft.source, writer.name, spec,
            ))
        questions = self.unique(questions)
        self.log.info("single-page: %d questions from %d pages", len(questions), len(items))
        return questions

    async def multi_page(
        self, writer: Writer, items: Sequence[tuple[str, tuple[PageRef, ...], Spec]]
    ) -> list[GeneratedQuestion]:
        drafted, seeds = [], {}
        for (qid, pages, spec), outcome in zip(items, await writer.multi(items), strict=True):
            if isinstance(outcome, NoDrafts):
                self.drop(qid, "multi", outcome.reason)
                continue
            draft = _keep(self.recipe.seed, qid, outcome)
            seeds[qid] = pages
            drafted.append(GeneratedQuestion(
                qid, "multi", pages[0].doc_id, draft.question, draft.answer, draft.answer_format,
                draft.qtype, draft.source, writer.name, spec,
            ))
        drafted = self.unique(drafted)
        # Every page of the seed, not only those the writer named: no single page may answer.
        kept = await self.judged([(q, q.answer, seeds[q.qid]) for q in drafted])
        self.log.info("multi-page: %d kept of %d judged", len(kept), len(drafted))
        return kept

    async def unanswerable(
        self, singles: Sequence[GeneratedQuestion], source: ContextSource
    ) -> list[GeneratedQuestion]:
        recipe = self.recipe
        items = []
        for question in singles:
            if uniform(recipe.seed, question.qid, "unanswerable") >= recipe.unanswerable.share:
                continue
            qid = question.qid.replace("single:", "unanswerable:", 1)
            context = build_context(qid, question.origin, source, recipe.contexts, recipe.seed,
                                    drop_source=True)
            if context is None:
                self.drop(qid, "context", "no context component fits")
                continue
            twin = replace(question, qid=qid, kind="unanswerable", answer=NOT_ANSWERABLE,
                           answer_format="None", context=context)
            items.append((twin, question.answer, context.pages))
        # A context page that gives the original answer makes the twin answerable after all.
        return await self.judged(items)

    def with_contexts(
        self, questions: Sequence[GeneratedQuestion], source: ContextSource
    ) -> list[GeneratedQuestion]:
        widened = []
        for question in questions:
            context = build_context(question.qid, question.origin, source, self.recipe.contexts,
                                    self.recipe.seed)
            if context is None:
                self.drop(question.qid, "context", "no context component fits")
            else:
                widened.append(replace(question, context=context))
        return widened


def index_corpus(recipe: QuestionsRecipe, corpus: Corpus, log: logging.Logger
                 ) -> tuple[PageIndex, HardNegatives, list[str], SimilarityGap]:
    """The page index of every document not excluded, its ranked hard negatives, the excluded
    documents, and how much closer hard negatives are than random pages."""
    index, negatives, excluded = build_index(
        corpus, recipe.embedding, recipe.decontamination, log
    )
    gap = similarity_gap(index, negatives, recipe.seed)
    log.info("similarity gap (top 8 hard negatives vs random): %s", gap.as_dict())
    return index, negatives, excluded, gap


def question_items(recipe: QuestionsRecipe, corpus: Corpus, doc_ids: Sequence[str],
                   result: DocumentQuestions
                   ) -> tuple[list[tuple[str, PageRef, Spec]], list[tuple[str, tuple[PageRef, ...], Spec]]]:
    """What the writer is asked for these documents: single pages and multi-page seeds."""
    singles = (single_items(recipe, corpus, doc_ids, result.dropped)
               if recipe.single_page.enabled else [])
    seeds = seed_items(recipe, corpus, doc_ids, result.dropped) if recipe.multi_page.enabled else []
    return singles, seeds


def writer_pages(singles: Sequence[tuple[str, PageRef, Spec]],
                 seeds: Sequence[tuple[str, tuple[PageRef, ...], Spec]]) -> set[PageRef]:
    """The pages a model writer is shown."""
    return {ref for _, ref, _ in singles} | {r for _, pages, _ in seeds for r in pages}


async def document_questions(
    recipe: QuestionsRecipe,
    corpus: Corpus,
    doc_ids: Sequence[str],
    generator: ChatModel | None,
    judge_model: ChatModel,
    source: ContextSource,
    log: logging.Logger,
    show_progress: bool = False,
) -> DocumentQuestions:
    """Every stage over a shard of documents (questions about a document depend on no other
    document's, except through the shared index)."""
    result = DocumentQuestions()
    stages = _Stages(recipe, corpus, judge_model, result, log, show_progress)
    singles, seeds = question_items(recipe, corpus, doc_ids, result)
    writer: Writer
    if generator is None:
        writer = ExtractiveWriter(corpus, recipe.seed)
    else:
        stages.render(writer_pages(singles, seeds))
        writer = ModelWriter(generator, stages.images, temperature=recipe.temperature,
                             max_tokens=recipe.max_tokens, concurrency=recipe.concurrency)

    single_questions = await stages.single_page(writer, singles)
    multi_questions = await stages.multi_page(writer, seeds)
    unanswerable = await stages.unanswerable(single_questions, source)
    result.questions = sorted(
        [*stages.with_contexts([*single_questions, *multi_questions], source), *unanswerable],
        key=lambda q: q.qid,
    )
    result.dropped.sort(key=lambda d: (d.qid, d.stage))
    return result


def question_line(question: GeneratedQuestion) -> str:
    return json.dumps(question.row(), ensure_ascii=False)


def dropped_line(d: Dropped) -> str:
    return json.dumps({"qid": d.qid, "stage": d.stage, "reason": d.reason})


def judgement_line(j: Judgement) -> str:
    row = {"qid": j.qid, "page": [j.page.doc_id, j.page.page], "reply": j.reply,
           "answers": j.answers, "failure": j.failure}
    return json.dumps(row, ensure_ascii=False)


def write_index(indexed: Indexed, out: Path) -> None:
    """The index (vectors, page ids, ranked negatives) and what it says, in `out/index`."""
    folder = out / "index"
    indexed.index.save(folder)
    indexed.negatives.save(folder)
    info = {
        "embedder": indexed.index.embedder,
        "pages": len(indexed.index.refs),
        "dim": int(indexed.index.vectors.shape[1]),
        "negatives_per_page": int(indexed.negatives.rows.shape[1]),
        "textless_pages": [[r.doc_id, r.page] for r in indexed.index.textless],
        "excluded_documents": indexed.excluded,
        "similarity_gap": indexed.gap.as_dict(),
    }
    (folder / "index.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
