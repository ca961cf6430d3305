"""Answer verification: a generated answer checked against the question's reference answer (a
generated question's, or an MMLongBench-Doc row's) before it becomes training data.

Two methods, named in the recipe:
- `rules`: MMLongBench-Doc's official scorer (`evals.scoring.score`) on the short answer that the
  evaluation's rule extractor reads from the generated text, for the reference's answer format
  (`Int`, `Float`, `Str`, `List`, or `None` for `Not answerable`; a reference without a format is
  scored as `Str`, free text by ANLS). Knowing the format, a numeric reference also reads the one
  number of a short answer ("2,159 million" -> 2159), as the official LLM extractor would. An
  answer matches when its score is above 0: exact for numbers, lists of numbers and exact-type
  strings, ANLS above 0.5 for other text.
- `judge`: an LLM judge (the V2 equivalence judge: its rubric, `JudgeVerdict` through structured
  output) reads the question, the reference, its format and the whole generated answer. A judge
  request that fails is a mismatch with its reason: an answer no one could check is not trusted.

A mismatch is kept, flagged (kept, and listed for review) or dropped, by the recipe's rule. A
question without a reference answer is not verified. Every verdict is a row of
`verification.parquet`, counted per answer branch in the data card."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

from docthink.core.vocab import NOT_ANSWERABLE
from docthink.engine.local import run_requests
from docthink.evals.extract import rule_extract
from docthink.evals.judge import judge_request
from docthink.evals.prompt import PromptFile
from docthink.evals.scoring import AnswerFormat, score
from docthink.models.base import ChatModel, RequestFailure
from docthink.models.tasks import JudgeVerdict
from docthink.questions.rows import Question
from docthink.synth.rows import Answer, Branch

Action = Literal["kept", "flagged", "dropped"]
_NUMBER = re.compile(r"[-+]?[$€£]?\s?\d[\d,]*(?:\.\d+)?\s?%?")


@dataclass(frozen=True, slots=True)
class Verdict:
    qid: str
    branch: Branch
    method: str  # "rules" or the judge model's name
    reference: str
    answer_format: AnswerFormat  # the format the reference is compared as
    answer: str  # the generated answer, whole
    pred: str  # the short answer the rules compared ("" for a judge)
    score: float  # the official score (rules), 1.0 / 0.0 (judge)
    match: bool
    action: Action
    failure: str | None = None  # the judge's request failed

    @property
    def reason(self) -> str:
        """Why a mismatch is one, as the data card and dropped.jsonl say it."""
        if self.failure is not None:
            return f"answer not verified: {self.failure}"
        return "answer does not match the reference"


def reference_format(question: Question) -> AnswerFormat:
    """The format the reference is scored as (see the module docstring)."""
    if question.answer_format is not None:
        return question.answer_format
    return "None" if question.answer == NOT_ANSWERABLE else "Str"


def short_answer(question: str, answer: str, answer_format: AnswerFormat) -> str:
    """What the rules compare: the evaluation's rule extraction, and for a numeric reference the
    one number of a short answer, bare."""
    pred = rule_extract(question, answer).pred
    if answer_format in ("Int", "Float"):
        numbers = _NUMBER.findall(pred)
        if len(numbers) == 1 and len(pred.split()) <= 4:
            return re.sub(r"[$€£,%\s]", "", numbers[0])
    return pred


OnMismatch = Literal["drop", "flag", "keep"]
_ACTIONS: dict[OnMismatch, Action] = {"drop": "dropped", "flag": "flagged", "keep": "kept"}


def _action(match: bool, on_mismatch: OnMismatch) -> Action:
    return "kept" if match else _ACTIONS[on_mismatch]


def verify_by_rules(
    items: Sequence[tuple[Question, Answer]], on_mismatch: OnMismatch
) -> list[Verdict]:
    verdicts = []
    for question, answer in items:
        assert question.answer is not None  # callers pass questions with a reference
        fmt = reference_format(question)
        pred = short_answer(question.text, answer.text, fmt)
        value = score(question.answer, pred, fmt)
        verdicts.append(Verdict(question.qid, answer.branch, "rules", question.answer, fmt,
                                answer.text, pred, value, value > 0,
                                _action(value > 0, on_mismatch)))
    return verdicts


async def verify_by_judge(
    items: Sequence[tuple[Question, Answer]],
    judge: ChatModel,
    prompt: PromptFile,
    *,
    on_mismatch: OnMismatch,
    max_tokens: int,
    concurrency: int,
) -> list[Verdict]:
    requests = []
    for question, answer in items:
        assert question.answer is not None  # callers pass questions with a reference
        requests.append(judge_request(prompt, question.text, question.answer,
                                      reference_format(question), answer.text, max_tokens))
    outcomes = await run_requests(judge, requests, concurrency=concurrency)
    verdicts = []
    for (question, answer), outcome in zip(items, outcomes, strict=True):
        reference, fmt = cast(str, question.answer), reference_format(question)
        if isinstance(outcome, RequestFailure):
            verdicts.append(Verdict(question.qid, answer.branch, judge.name, reference, fmt,
                                    answer.text, "", 0.0, False, _action(False, on_mismatch),
                                    failure=f"judge failed: {outcome.reason}"))
            continue
        match = cast(JudgeVerdict, outcome.parsed).equivalent  # validated against this schema
        verdicts.append(Verdict(question.qid, answer.branch, judge.name, reference, fmt,
                                answer.text, "", float(match), match,
                                _action(match, on_mismatch)))
    return verdicts
