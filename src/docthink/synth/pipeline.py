"""`docthink synth`: questions over a corpus -> page evidence -> traces -> answers -> SFT examples.

Each stage is a plain function over typed rows; this module wires them with the local executor,
writes each stage's table into the output folder, and counts what was dropped and why."""

from __future__ import annotations

import json
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
    check_documents,
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
class SynthResult:
    questions: int = 0
    evidence: list[PageEvidence] = field(default_factory=list)
    traces: list[Trace] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    examples: list[SFTExample] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)

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
        return {
            "questions": self.questions,
            "evidence_requests": len(self.evidence),
            "evidence_failures": sum(e.failure is not None for e in self.evidence),
            "traces": len(self.traces),
            "answers": sum(a.failure is None for a in self.answers),
            "examples": len(self.examples),
            "dropped": dict(Counter(f"{d.stage}: {d.reason}" for d in self.dropped)),
            "branches": dict(Counter(a.branch for a in self.answers if a.failure is None)),
            "placements": dict(Counter(e.placement for e in self.examples if e.kind == "trace")),
            "plain_examples": sum(e.kind == "plain" for e in self.examples),
            "verified": len(self.verdicts),
            "verify_mismatches": sum(not v.match for v in self.verdicts),
            "verify_dropped": sum(v.action == "dropped" for v in self.verdicts),
            "verification": self.verification(),
        }


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
        if branch == "vision":
            requests = [
                rq.vision_answer_request(
                    [images[q.context[p - 1]] for p in t.positions], q.text,
                    temperature=settings.temperature, max_tokens=settings.max_tokens,
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


async def synthesize(
    recipe: SynthRecipe,
    corpus: Corpus,
    models: SynthModels,
    log: logging.Logger,
    show_progress: bool,
    only: frozenset[str] | None = None,
) -> SynthResult:
    """The whole pipeline; `only` restricts it to some questions (a plan's calibration sample)."""
    result = SynthResult()
    rows = read_question_rows(recipe.questions)
    check_documents(rows, corpus, recipe.questions)
    if only is not None:
        rows = [r for r in rows if r.qid in only]
    n_pages = {d.doc_id: d.n_pages for d in corpus.documents.values()}
    questions, dropped = resolve(rows, n_pages, recipe.questions)
    result.questions = len(rows)
    result.dropped.extend(dropped)
    log.info("%d questions, %d dropped at input", len(questions), len(dropped))

    refs = sorted({r for q in questions for r in q.context}, key=lambda r: (r.doc_id, r.page))
    log.info("rendering %d context pages at %s", len(refs), recipe.image.key)
    rendered = corpus.ensure_images(refs, recipe.image, recipe.workers, show_progress)
    images = dict(zip(refs, rendered, strict=True))

    total = sum(len(q.context) for q in questions)
    with progress("evidence", total, show_progress) as bar:
        result.evidence = await collect_evidence(
            questions, images, recipe, models.evidence, bar.advance
        )
    by_qid: dict[str, list[PageEvidence]] = {}
    for row in result.evidence:
        by_qid.setdefault(row.qid, []).append(row)

    traced: list[tuple[Question, Trace]] = []
    for question in questions:
        evidence = by_qid[question.qid]
        drop = failure_drop(question.qid, evidence, recipe.evidence.on_failure)
        outcome = drop or build_trace(
            question.qid, evidence, threshold=recipe.trace.threshold, top_k=recipe.trace.top_k
        )
        if isinstance(outcome, Dropped):
            result.dropped.append(outcome)
        else:
            result.traces.append(outcome)
            traced.append((question, outcome))

    with progress("answer", len(traced), show_progress) as bar:
        result.answers = await answer_questions(traced, images, recipe, models, bar.advance)
    answers = {a.qid: a for a in result.answers}
    answered = [(q, answers[q.qid]) for q, _ in traced if answers[q.qid].failure is None]
    result.verdicts = await verify(answered, recipe, models.judge)
    verdicts = {v.qid: v for v in result.verdicts}
    for question, trace in traced:
        answer = answers[question.qid]
        if answer.failure is not None:
            result.dropped.append(Dropped(question.qid, "answer", answer.failure))
            continue
        verdict = verdicts.get(question.qid)  # questions without a reference have none
        if verdict is not None and verdict.action == "dropped":
            result.dropped.append(Dropped(question.qid, "verify", verdict.reason))
            continue
        placement = weighted_choice(recipe.seed, question.qid, "cot", recipe.export.placement)
        result.examples.append(
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
    result.examples.extend(plain_examples(recipe, corpus, len(result.examples), log))
    return result


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
    assert judge is not None  # the stage builds one for method judge
    prompt = PromptFile.read(settings.prompt or DEFAULT_JUDGE_PROMPT)
    return await verify_by_judge(items, judge, prompt, on_mismatch=settings.on_mismatch,
                                 max_tokens=settings.max_tokens, concurrency=recipe.concurrency)


def write_tables(result: SynthResult, out: Path) -> None:
    """Each stage's rows as Parquet, examples as JSONL (the input of `docthink export`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(rows: Sequence[PageEvidence | Trace | Answer]) -> pa.Table:
        return pa.Table.from_pylist([_flat(asdict(r)) for r in rows])

    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table(result.evidence), out / "evidence.parquet")
    pq.write_table(table(result.traces), out / "traces.parquet")
    pq.write_table(table(result.answers), out / "answers.parquet")
    verdicts = pa.schema([("qid", pa.string()), ("branch", pa.string()), ("method", pa.string()),
                          ("reference", pa.string()), ("answer_format", pa.string()),
                          ("answer", pa.string()), ("pred", pa.string()),
                          ("score", pa.float64()), ("match", pa.bool_()),
                          ("action", pa.string()), ("failure", pa.string())])
    pq.write_table(pa.Table.from_pylist([asdict(v) for v in result.verdicts], schema=verdicts),
                   out / "verification.parquet")  # typed, so a run with no verdict has columns
    with (out / "dropped.jsonl").open("w", encoding="utf-8") as f:
        for d in result.dropped:
            f.write(json.dumps(asdict(d)) + "\n")
    with (out / "examples.jsonl").open("w", encoding="utf-8") as f:
        for e in result.examples:
            f.write(json.dumps(e.to_json(), ensure_ascii=False) + "\n")


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
