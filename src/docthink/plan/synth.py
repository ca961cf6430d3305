"""The plan of a `docthink synth` run, built from the very requests the run would send.

Evidence requests are one per (question, context page), as `synth.pipeline.evidence_order` lists
them; each is built with `synth.requests` around a placeholder image that names its page and
counted by the stage model's reader (`plan.tokens`), so prompts, source notes and image policy are
the run's own. Every question is assumed to keep a trace: a question whose context holds a source
page always does when the source floor is above the threshold (and its pages are readable), so
then the answer counts are exact; otherwise they are upper bounds. Each question goes to the
branch the run will draw for it (`choose_branch`, same seed). What the trace holds depends on the
replies: without calibration a trace is taken to keep min(K, context pages) pages of evidence at
the extractor's token limit; with calibration the sample's measured shares and lengths are used."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from docthink.corpus.corpus import Corpus
from docthink.evals.judge import DEFAULT_JUDGE_PROMPT, judge_request
from docthink.evals.prompt import PromptFile
from docthink.models.base import UsageMeter
from docthink.plan.bill import Basis, Plan, Rates, StagePlan
from docthink.plan.tokens import Reader, model_name, placeholder, reader_for
from docthink.questions.rows import Question, check_documents, read_question_rows, resolve
from docthink.synth import requests as rq
from docthink.synth.pipeline import choose_branch, evidence_order
from docthink.synth.recipe import SynthRecipe
from docthink.synth.rows import Trace
from docthink.synth.verify import reference_format


@dataclass(frozen=True)
class Measured:
    """What a calibration sample showed, per request or per trace."""

    questions: int
    evidence_output: float  # output tokens per evidence request
    answer_output: dict[str, float]  # per branch, per answer request
    judge_output: float | None
    traced_share: float  # questions that kept a trace
    trace_page_share: float  # pages a trace keeps / min(K, context pages)
    trace_tokens_per_page: float  # trace text per kept page, in the text model's tokens
    seconds: float
    tokens: int  # prompt + output tokens the sample spent
    # per stage, the sample's actual prompt tokens / its plan's: corrects what the rules only
    # approximate (which pages a trace keeps, text counted by characters)
    prompt_scale: Mapping[str, float] = field(default_factory=dict)


def planned_questions(recipe: SynthRecipe, corpus: Corpus) -> tuple[list[Question], int, int]:
    """(questions the run will process, rows in the file, rows dropped at input) -- the run's own
    reading of the questions file."""
    rows = read_question_rows(recipe.questions)
    check_documents(rows, corpus, recipe.questions)
    n_pages = {d.doc_id: d.n_pages for d in corpus.documents.values()}
    questions, dropped = resolve(rows, n_pages, recipe.questions)
    return questions, len(rows), len(dropped)


def plan_synth(
    recipe: SynthRecipe,
    corpus: Corpus,
    *,
    recipe_hash: str,
    processor: Path | None = None,
    measured: Measured | None = None,
    rates: Rates | None = None,
    only: frozenset[str] | None = None,
) -> Plan:
    """The plan; `only` restricts it to some questions (a calibration sample)."""
    questions, n_rows, n_dropped = planned_questions(recipe, corpus)
    if only is not None:
        questions = [q for q in questions if q.qid in only]
        n_rows, n_dropped = len(questions), 0
    models = recipe.models
    readers = {name: reader_for(getattr(models, name), corpus, recipe.image, processor)
               for name in ("evidence", "answer_vision", "answer_text")}
    stages = [_evidence(recipe, questions, readers["evidence"], measured)]
    certain = recipe.evidence.source_floor > recipe.trace.threshold and all(
        set(q.source) & set(q.context) for q in questions)
    basis: Basis = "exact" if certain else "at most"
    branch = {q.qid: choose_branch(recipe.seed, q.qid, recipe.answer.vision_ratio)
              for q in questions}
    kept = {q.qid: _trace_pages(recipe, q, measured) for q in questions}
    for name in ("answer_vision", "answer_text"):
        ours = [q for q in questions if branch[q.qid] == name.removeprefix("answer_")]
        stages.append(_answer(recipe, name, ours, kept, readers[name], measured, basis))
    notes = [f"{name}: {readers[name].name}" for name in readers]
    verify = recipe.answer.verify
    if verify.method == "judge":
        assert verify.judge is not None  # the recipe validates it
        judge_reader = reader_for(verify.judge, corpus, recipe.image, processor)
        stages.append(_judge(recipe, questions, judge_reader, measured))
        notes.append(f"judge: {judge_reader.name}")
    notes.append(
        "answer requests are exact: every question has a source page in its context and the "
        f"source floor ({recipe.evidence.source_floor}) is above the threshold "
        f"({recipe.trace.threshold}), so each keeps a trace unless a request fails"
        if certain else
        "answer requests are upper bounds: some questions have no source page in their context "
        "and drop when no page scores above the threshold")
    notes.append(
        f"traces measured on {measured.questions} questions: {measured.traced_share:.0%} kept a "
        f"trace, keeping {measured.trace_page_share:.0%} of min(K, context) pages at "
        f"{measured.trace_tokens_per_page:.0f} tokens a page" if measured is not None else
        f"output tokens at the recipe's limits (evidence {recipe.evidence.max_tokens}, answer "
        f"{recipe.answer.max_tokens}); a trace taken to keep min(K={recipe.trace.top_k}, context) "
        "pages; --calibrate N measures them")
    if measured is not None and measured.prompt_scale:
        stages = [replace(s, prompt_tokens=round(s.prompt_tokens
                                                 * measured.prompt_scale.get(s.stage, 1.0)))
                  for s in stages]
        notes.append("prompt tokens scaled per stage by the sample's actual / planned: " + ", ".join(
            f"{stage} {scale:.3f}" for stage, scale in measured.prompt_scale.items()))
    pages = {ref for q in questions for ref in q.context}
    return Plan("synth", recipe_hash, n_rows, n_dropped, len(pages), stages,
                rates or Rates(), notes)


def _evidence(recipe: SynthRecipe, questions: Sequence[Question], reader: Reader,
              measured: Measured | None) -> StagePlan:
    settings = recipe.evidence
    prompt = 0
    pairs = evidence_order(questions)
    for question, ref in pairs:
        request = rq.evidence_request(
            placeholder(ref, recipe.image.mime), question.text, is_source=ref in question.source,
            temperature=settings.temperature, max_tokens=settings.max_tokens)
        prompt += reader.prompt_tokens(request)
    per_reply = measured.evidence_output if measured else settings.max_tokens
    return StagePlan("evidence", model_name(recipe.models.evidence), len(pairs), "exact",
                     len(pairs), 1 if pairs else 0, prompt, "exact" if reader.exact else "estimate",
                     round(per_reply * len(pairs)),
                     "measured" if measured else "limit")


def _trace_pages(recipe: SynthRecipe, question: Question, measured: Measured | None) -> float:
    """Pages the question's trace is expected to keep."""
    most = min(recipe.trace.top_k, len(question.context))
    if measured is None:
        return float(most)
    sources = min(most, len(set(question.source) & set(question.context)))
    return max(float(sources), measured.trace_page_share * most)


def _trace_images(question: Question, n: float, reader: Reader) -> float:
    """Image tokens of a trace's `n` pages: its source pages first (they rank on top), then
    pages at the mean of the other context pages."""
    sources = [r for r in question.context if r in question.source][:math.floor(n)]
    others = [r for r in question.context if r not in question.source]
    rest = n - len(sources)
    mean = sum(reader.image_tokens(r) for r in others) / len(others) if others and rest else 0.0
    return sum(reader.image_tokens(r) for r in sources) + rest * mean


def _answer(recipe: SynthRecipe, stage: str, questions: Sequence[Question],
            kept: dict[str, float], reader: Reader, measured: Measured | None,
            basis: Basis) -> StagePlan:
    settings = recipe.answer
    prompt, images, widest = 0.0, 0.0, 0
    for q in questions:
        n = kept[q.qid]
        if stage == "answer_vision":
            bare = rq.vision_answer_request([], q.text, temperature=settings.temperature,
                                            max_tokens=settings.max_tokens)
            prompt += reader.prompt_tokens(bare) + _trace_images(q, n, reader)
            images += n
            widest = max(widest, math.ceil(n))
        else:
            bare = rq.text_answer_request("", q.text, temperature=settings.temperature,
                                          max_tokens=settings.max_tokens)
            per_page = (measured.trace_tokens_per_page if measured else
                        recipe.evidence.max_tokens + reader.text_tokens(f"Page {n:.0f}:\n"))
            prompt += reader.prompt_tokens(bare) + n * per_page
    branch = stage.removeprefix("answer_")
    per_reply = measured.answer_output.get(branch) if measured else None  # a branch unsampled
    output = per_reply if per_reply is not None else settings.max_tokens
    return StagePlan(stage, model_name(getattr(recipe.models, stage)), len(questions), basis,
                     round(images), widest, round(prompt), "measured" if measured else "at most",
                     round(output * len(questions)),
                     "measured" if per_reply is not None else "limit")


def _judge(recipe: SynthRecipe, questions: Sequence[Question], reader: Reader,
           measured: Measured | None) -> StagePlan:
    verify = recipe.answer.verify
    assert verify.judge is not None  # the recipe validates it
    prompt_file = PromptFile.read(verify.prompt or DEFAULT_JUDGE_PROMPT)
    checked = [q for q in questions if q.answer is not None]
    answer = (sum(measured.answer_output.values()) / len(measured.answer_output)
              if measured and measured.answer_output else recipe.answer.max_tokens)
    prompt = sum(
        reader.prompt_tokens(judge_request(prompt_file, q.text, q.answer or "",
                                           reference_format(q), "", verify.max_tokens)) + answer
        for q in checked)
    judged = measured.judge_output if measured and measured.judge_output is not None else None
    per_reply = judged if judged is not None else verify.max_tokens
    return StagePlan("judge", model_name(verify.judge), len(checked), "at most", 0, 0,
                     round(prompt), "measured" if measured else "at most",
                     round(per_reply * len(checked)),
                     "measured" if judged is not None else "limit")


def calibration_sample(recipe: SynthRecipe, corpus: Corpus, n: int) -> frozenset[str]:
    """`n` questions drawn by seed: the same sample for the same recipe."""
    from docthink.core.seeded import uniform

    questions, _, _ = planned_questions(recipe, corpus)
    ranked = sorted(questions, key=lambda q: uniform(recipe.seed, q.qid, "calibrate"))
    return frozenset(q.qid for q in ranked[:n])


def measure(recipe: SynthRecipe, corpus: Corpus, run: Path, n_questions: int,
            usage: dict[str, UsageMeter], seconds: float, processor: Path | None) -> Measured:
    """What the calibration run's tables (in its folder `run`) and usage say, per request and
    per trace."""
    import pyarrow.parquet as pq

    questions, _, _ = planned_questions(recipe, corpus)
    context = {q.qid: len(q.context) for q in questions}

    def per_request(stage: str) -> float | None:
        u = usage[stage]
        served = u.requests - u.failures - u.cache_hits
        return u.completion_tokens / served if served else None

    answers: dict[str, list[int]] = {}
    for a in pq.read_table(run / "answers.parquet").to_pylist():
        if a["failure"] is None:
            answers.setdefault(a["branch"], []).append(a["completion_tokens"])
    text = reader_for(recipe.models.answer_text, corpus, recipe.image, processor)
    traces = [Trace(t["qid"], tuple(t["positions"]), t["text"])
              for t in pq.read_table(run / "traces.parquet").to_pylist()]
    spent = sum(u.prompt_tokens + u.completion_tokens for u in usage.values())
    return Measured(
        questions=n_questions,
        evidence_output=per_request("evidence") or 0.0,
        answer_output={b: sum(v) / len(v) for b, v in sorted(answers.items())},
        judge_output=per_request("judge") if "judge" in usage else None,
        traced_share=len(traces) / n_questions if n_questions else 0.0,
        trace_page_share=_mean([len(t.positions) / min(recipe.trace.top_k, context[t.qid])
                                for t in traces]),
        trace_tokens_per_page=_mean([text.text_tokens(t.text) / len(t.positions)
                                     for t in traces]),
        seconds=seconds,
        tokens=spent,
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
