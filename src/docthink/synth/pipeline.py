"""`docthink synth`: questions over a corpus -> page evidence -> traces -> answers -> SFT examples.

Each stage is a plain function over typed rows; `synthesize_shard` wires them for one shard of
questions (`synth.job` cuts a run into shards and merges their parts into the final tables) and
records what was dropped and why."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

from pydantic import ValidationError

from docthink.core.errors import UserError
from docthink.core.parts import ImagePart, PageRef
from docthink.core.seeded import uniform, weighted_choice
from docthink.corpus.corpus import Corpus
from docthink.engine.local import run_requests
from docthink.evals.judge import DEFAULT_JUDGE_PROMPT
from docthink.evals.prompt import PromptFile
from docthink.export import ImageKey, SFTExample, plain_example, trace_example
from docthink.models.base import ChatModel, ChatResult, RequestFailure
from docthink.models.tasks import EvidenceReply
from docthink.progress import progress
from docthink.questions.rows import (
    Dropped,
    Question,
    QuestionsError,
    read_question_rows,
    resolve,
)
from docthink.synth import PROMPTS
from docthink.synth import requests as rq
from docthink.synth.recipe import SynthRecipe
from docthink.synth.rows import Answer, Branch, PageEvidence, Trace
from docthink.synth.trace import build_trace, floored_score
from docthink.synth.verify import Verdict, verify_by_judge, verify_by_rules


@dataclass(frozen=True)
class SynthModels:
    evidence: ChatModel
    answer_vision: ChatModel
    answer_text: ChatModel
    judge: ChatModel | None = None  # verifies answers (answer.verify.method judge)


@dataclass
class ShardRows:
    """What the stages made of one shard's questions, in the order the final tables keep."""

    evidence: list[PageEvidence] = field(default_factory=list)  # by (qid, position)
    traces: list[Trace] = field(default_factory=list)  # in question order
    answers: list[Answer] = field(default_factory=list)  # by qid
    verdicts: list[Verdict] = field(default_factory=list)  # in question order
    examples: list[SFTExample] = field(default_factory=list)  # in question order
    dropped: list[Dropped] = field(default_factory=list)  # evidence, trace; answer, verify

    def verification(self) -> dict[str, dict[str, int]]:
        """Per answer branch: answers verified, matched, and what happened to mismatches."""
        table: dict[str, dict[str, int]] = {}
        for v in self.verdicts:
            row = table.setdefault(v.branch, dict.fromkeys(
                ("verified", "matched", "dropped", "flagged", "kept_mismatch"), 0))
            row["verified"] += 1
            row["matched"] += v.match
            if not v.match:
                row["kept_mismatch" if v.action == "kept" else v.action] += 1
        return {branch: table[branch] for branch in sorted(table)}

    def counts(self) -> dict[str, object]:
        """What the data card adds up over shards (string keys: it is stored as JSON)."""
        scored = [e for e in self.evidence if e.failure is None]
        return {
            "evidence_requests": len(self.evidence),
            "evidence_failures": len(self.evidence) - len(scored),
            "traces": len(self.traces),
            "answers": sum(a.failure is None for a in self.answers),
            "examples": len(self.examples),
            "dropped": dict(Counter(f"{d.stage}: {d.reason}" for d in self.dropped)),
            "branches": dict(Counter(a.branch for a in self.answers if a.failure is None)),
            "placements": dict(Counter(e.placement for e in self.examples if e.kind == "trace")),
            "relevance": {str(b): n for b, n in enumerate(_histogram(scored))},
            "trace_pages": dict(Counter(str(len(t.positions)) for t in self.traces)),
            "verified": len(self.verdicts),
            "verify_mismatches": sum(not v.match for v in self.verdicts),
            "verify_dropped": sum(v.action == "dropped" for v in self.verdicts),
            "verification": self.verification(),
            "verify_methods": dict(Counter(v.method for v in self.verdicts)),
        }


def _histogram(evidence: Sequence[PageEvidence]) -> list[int]:
    """Scored pages per unit of relevance score, 0-1 ... 9-10."""
    bins = Counter(min(int(e.relevance_score), 9) for e in evidence)
    return [bins[b] for b in range(10)]


def evidence_order(questions: Sequence[Question]) -> list[tuple[Question, PageRef]]:
    """(question, page) pairs in issue order: grouped by page (so requests sharing an image go
    out together), pages in corpus order, questions in input order within a page."""
    by_page: dict[PageRef, list[Question]] = {}
    for question in questions:
        for ref in question.context:
            by_page.setdefault(ref, []).append(question)
    return [
        (question, ref)
        for ref in sorted(by_page, key=lambda r: (r.doc_id, r.page))
        for question in by_page[ref]
    ]


async def collect_evidence(
    questions: Sequence[Question],
    images: dict[PageRef, ImagePart],
    recipe: SynthRecipe,
    model: ChatModel,
    advance: Callable[[int], None],
) -> list[PageEvidence]:
    pairs = evidence_order(questions)
    settings = recipe.evidence
    requests = [
        rq.evidence_request(
            images[ref],
            question.text,
            is_source=ref in question.source,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            source_note=settings.source_note,
        )
        for question, ref in pairs
    ]
    outcomes = await run_requests(model, requests, concurrency=recipe.concurrency, on_done=advance)
    prompt_hash = PROMPTS["evidence_system"].sha256[:16]
    rows = []
    for (question, ref), outcome in zip(pairs, outcomes, strict=True):
        is_source = ref in question.source
        if isinstance(outcome, RequestFailure):
            rows.append(
                PageEvidence(
                    question.qid, question.position(ref), ref, is_source, "", 0.0, False,
                    model.name, prompt_hash, failure=outcome.reason,
                )
            )
            continue
        parsed = cast(EvidenceReply, outcome.parsed)  # validated against this schema
        score = floored_score(parsed.relevance_score, is_source, settings.source_floor)
        rows.append(
            PageEvidence(
                question.qid, question.position(ref), ref, is_source, parsed.evidence, score,
                score > 0, model.name, prompt_hash,
            )
        )
    rows.sort(key=lambda e: (e.qid, e.position))
    return rows


def failure_drop(
    qid: str, evidence: Sequence[PageEvidence], rule: str
) -> Dropped | None:
    failed = [e for e in evidence if e.failure is not None]
    if not failed or rule == "skip_page":
        return None
    if rule == "drop_question":
        return Dropped(qid, "evidence", f"{len(failed)} page request(s) failed")
    if any(e.is_source for e in failed):
        return Dropped(qid, "evidence", "a source page's request failed")
    return None


def choose_branch(seed: int, qid: str, vision_ratio: float) -> Branch:
    return weighted_choice(seed, qid, "branch", {"vision": vision_ratio, "text": 1 - vision_ratio})


async def answer_questions(
    items: Sequence[tuple[Question, Trace]],
    images: dict[PageRef, ImagePart],
    recipe: SynthRecipe,
    models: SynthModels,
    advance: Callable[[int], None],
) -> list[Answer]:
    settings = recipe.answer
    by_branch: dict[Branch, list[tuple[Question, Trace]]] = {"vision": [], "text": []}
    for question, trace in items:
        by_branch[choose_branch(recipe.seed, question.qid, settings.vision_ratio)].append(
            (question, trace)
        )
    answers: list[Answer] = []
    for branch, model in (("vision", models.answer_vision), ("text", models.answer_text)):
        batch = by_branch[branch]
        if branch == "vision" or settings.text_input == "images":
            requests = [
                rq.vision_answer_request(
                    [images[q.context[p - 1]] for p in t.positions], q.text,
                    temperature=settings.temperature, max_tokens=settings.max_tokens,
                    purpose=f"answer-{branch}",
                )
                for q, t in batch
            ]
        else:
            requests = [
                rq.text_answer_request(
                    t.text, q.text, temperature=settings.temperature,
                    max_tokens=settings.max_tokens,
                )
                for q, t in batch
            ]
        outcomes = await run_requests(
            model, requests, concurrency=recipe.concurrency, on_done=advance
        )
        answers.extend(
            _answer(q.qid, branch, model.name, outcome)
            for (q, _), outcome in zip(batch, outcomes, strict=True)
        )
    answers.sort(key=lambda a: a.qid)
    return answers


def _answer(qid: str, branch: Branch, model: str, outcome: ChatResult | RequestFailure) -> Answer:
    if isinstance(outcome, RequestFailure):
        return Answer(qid, branch, "", model, 0, 0, failure=outcome.reason)
    text = outcome.text.strip()
    return Answer(
        qid, branch, text, model, outcome.usage.prompt_tokens, outcome.usage.completion_tokens,
        failure=None if text else "empty answer",
    )


def plain_examples(
    recipe: SynthRecipe, corpus: Corpus, n_trace: int, log: logging.Logger
) -> list[SFTExample]:
    """Plain QA rows, sampled by seed, `plain_qa_ratio` per trace example."""
    settings = recipe.export
    if settings.plain_qa is None or settings.plain_qa_ratio == 0:
        return []
    rows = read_question_rows(settings.plain_qa)
    n_pages = {d.doc_id: d.n_pages for d in corpus.documents.values()}
    questions, dropped = resolve(rows, n_pages, settings.plain_qa)
    for d in dropped:
        log.warning("plain QA row %s dropped: %s", d.qid, d.reason)
    unanswered = [q.qid for q in questions if q.answer is None]
    if unanswered:
        raise QuestionsError(
            f"{settings.plain_qa}: plain QA rows need an answer (qid {unanswered[0]})"
        )
    wanted = min(len(questions), round(settings.plain_qa_ratio * n_trace))
    chosen = sorted(questions, key=lambda q: uniform(recipe.seed, q.qid, "plain-qa"))[:wanted]
    refs = sorted({ref for q in chosen for ref in q.context}, key=lambda r: (r.doc_id, r.page))
    images = dict(zip(refs, corpus.ensure_images(refs, recipe.image, recipe.workers), strict=True))
    return [
        plain_example(
            f"plain:{q.qid}", [ImageKey.of(images[r]) for r in q.context], q.text, q.answer or "",
            page_index=settings.page_index,
        )
        for q in sorted(chosen, key=lambda q: q.qid)
    ]


def context_refs(questions: Sequence[Question]) -> list[PageRef]:
    """Every page of the questions' contexts, once, in corpus order."""
    return sorted({r for q in questions for r in q.context}, key=lambda r: (r.doc_id, r.page))


async def synthesize_shard(
    questions: Sequence[Question],
    images: dict[PageRef, ImagePart],
    recipe: SynthRecipe,
    models: SynthModels,
    show_progress: bool,
) -> ShardRows:
    """Evidence -> traces -> answers -> verification -> trace examples for one shard's questions
    (their context pages already rendered: `images`)."""
    rows = ShardRows()
    total = sum(len(q.context) for q in questions)
    with progress("evidence", total, show_progress) as bar:
        rows.evidence = await collect_evidence(
            questions, images, recipe, models.evidence, bar.advance
        )
    by_qid: dict[str, list[PageEvidence]] = {}
    for row in rows.evidence:
        by_qid.setdefault(row.qid, []).append(row)

    traced: list[tuple[Question, Trace]] = []
    for question in questions:
        evidence = by_qid[question.qid]
        drop = failure_drop(question.qid, evidence, recipe.evidence.on_failure)
        settings = recipe.trace
        outcome = drop or build_trace(
            question.qid, evidence, threshold=settings.threshold, top_k=settings.top_k,
            style=settings.style, order=settings.order,
        )
        if isinstance(outcome, Dropped):
            rows.dropped.append(outcome)
        else:
            rows.traces.append(outcome)
            traced.append((question, outcome))

    with progress("answer", len(traced), show_progress) as bar:
        rows.answers = await answer_questions(traced, images, recipe, models, bar.advance)
    answers = {a.qid: a for a in rows.answers}
    answered = [(q, answers[q.qid]) for q, _ in traced if answers[q.qid].failure is None]
    rows.verdicts = await verify(answered, recipe, models.judge)
    verdicts = {v.qid: v for v in rows.verdicts}
    for question, trace in traced:
        answer = answers[question.qid]
        if answer.failure is not None:
            rows.dropped.append(Dropped(question.qid, "answer", answer.failure))
            continue
        verdict = verdicts.get(question.qid)  # questions without a reference have none
        if verdict is not None and verdict.action == "dropped":
            rows.dropped.append(Dropped(question.qid, "verify", verdict.reason))
            continue
        placement = weighted_choice(recipe.seed, question.qid, "cot", recipe.export.placement)
        rows.examples.append(
            trace_example(
                question.qid,
                [ImageKey.of(images[r]) for r in question.context],
                question.text,
                trace.text,
                answer.text,
                branch=answer.branch,
                placement=placement,
                page_index=recipe.export.page_index,
            )
        )
    return rows


async def verify(
    answered: Sequence[tuple[Question, Answer]], recipe: SynthRecipe, judge: ChatModel | None
) -> list[Verdict]:
    """Verdicts on the answers whose question has a reference answer (see `synth.verify`)."""
    settings = recipe.answer.verify
    items = [(q, a) for q, a in answered if q.answer is not None]
    if settings.method == "none" or not items:
        return []
    if settings.method == "rules":
        return verify_by_rules(items, settings.on_mismatch)
    assert judge is not None  # the job builds one for method judge
    prompt = PromptFile.read(settings.prompt or DEFAULT_JUDGE_PROMPT)
    return await verify_by_judge(items, judge, prompt, on_mismatch=settings.on_mismatch,
                                 max_tokens=settings.max_tokens, concurrency=recipe.concurrency)


def table_rows(rows: Sequence[PageEvidence | Trace | Answer | Verdict]) -> list[dict[str, object]]:
    """Typed rows as the columns of their Parquet table (page refs as `doc_id` / `page`)."""
    return [_flat(asdict(r)) for r in rows]


def _flat(row: dict[str, object]) -> dict[str, object]:
    """Page refs as `doc_id` / `page` columns."""
    page = row.pop("page", None)
    if isinstance(page, dict):
        row["doc_id"], row["page"] = page["doc_id"], page["page"]
    return row


def examples_file(out: Path) -> Path:
    """The examples file of a synth run folder (the --out of `docthink synth`)."""
    path = out / "examples.jsonl"
    if not out.is_dir():
        raise UserError(f"{out}: no such folder (give the --out folder of a `docthink synth` run)")
    if not path.exists():
        raise UserError(f"{out}: no examples.jsonl, so not the --out folder of a finished "
                        "`docthink synth` run")
    return path


def read_examples(out: Path) -> list[SFTExample]:
    path = examples_file(out)
    examples = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                examples.append(SFTExample.from_json(line))
            except ValidationError as exc:
                # the deepest error: a part that is neither text nor an image names the image's field
                err = max(exc.errors(), key=lambda e: len(e["loc"]))
                where = ".".join(str(x) for x in err["loc"]) or "line"
                raise UserError(f"{path}: line {number}: {where}: {err['msg']}") from None
    return examples
