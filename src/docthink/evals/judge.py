"""MMLongBench-Doc-V2's metric: an LLM judge decides whether a full response means the reference.

The judge gets our rubric (`prompts/judge_v2.txt`, written from V2's published one: wording, case,
units, separators and list order are free; a different value, a missing or extra list member, a
decline, or an enumeration that merely contains the reference are not) as the system message, and
one user message with the question, the reference answer, its answer format and the model's FULL
response, reasoning included. It replies through the client's structured output (strict
json_schema) with `JudgeVerdict`: verdict and abstained.

A row scores 1 when judged equivalent, else 0, and counts as answered unless the judge read a
decline (a correct answer to an answerable question counts as answered whatever the judge's
abstained says: precision's numerator is part of its denominator). A row whose request failed has no response to judge: it scores 0 and counts as answered,
as V1's rules count a failed extraction. A judge request that fails after its retries, or whose
reply never validates, is that row's failure (score 0, with the reason). Judge replies go through
the request cache like every request: a rerun asks only what was never answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from docthink.engine.local import run_requests
from docthink.evals.metrics import Answer, Scored
from docthink.evals.prompt import PROMPT_DIR, JudgeRecord, PromptFile
from docthink.models.base import (
    ChatModel,
    ChatRequest,
    ChatResult,
    Message,
    RequestFailure,
    UsageMeter,
)
from docthink.models.build import build_served
from docthink.models.cache import CachedModel, RequestCache
from docthink.models.specs import ServedModelSpec
from docthink.models.tasks import JudgeVerdict
from docthink.progress import progress

DEFAULT_JUDGE_PROMPT = PROMPT_DIR / "judge_v2.txt"


def judge_request(prompt: PromptFile, question: str, reference: str, answer_format: str,
                  response: str, max_tokens: int) -> ChatRequest:
    item = (f"Question: {question}\nReference answer: {reference}\n"
            f"Answer format: {answer_format}\nResponse:\n{response}")
    return ChatRequest(
        messages=(Message.text("system", prompt.text), Message.text("user", item)),
        response_model=JudgeVerdict,
        temperature=0.0,
        max_tokens=max_tokens,
        purpose="judge",
    )


@dataclass(frozen=True, slots=True)
class JudgeScoring:
    """What a report says of scoring by an LLM judge: the judge, its prompt and token budget."""

    judge: JudgeRecord

    def to_json(self) -> dict[str, object]:
        return {"metric": "judge", **self.judge.to_json()}


class JudgeMetric:
    """The judge model behind its own connection to a request cache (an eval run's
    `cache.sqlite`, which the evaluated model's replies share), closed by `aclose`."""

    def __init__(self, spec: ServedModelSpec, prompt: PromptFile, cache: Path, *, max_tokens: int,
                 concurrency: int, show_progress: bool) -> None:
        self.cache = RequestCache(cache)
        self.judge: ChatModel = CachedModel(build_served(spec), self.cache)
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.show_progress = show_progress

    @property
    def record(self) -> JudgeScoring:
        return JudgeScoring(JudgeRecord.of(self.judge.name, self.prompt, self.max_tokens))

    @property
    def usage(self) -> UsageMeter:
        return self.judge.usage

    async def score_all(self, answers: Sequence[Answer]) -> list[Scored]:
        asked = {i: judge_request(self.prompt, a.row.question, a.row.answer, a.row.answer_format,
                                  a.response, self.max_tokens)
                 for i, a in enumerate(answers) if a.response is not None}
        with progress("judge", len(asked), self.show_progress) as bar:
            outcomes = await run_requests(self.judge, list(asked.values()),
                                          concurrency=self.concurrency,
                                          on_done=lambda n: bar.advance(n))
        replies = dict(zip(asked, outcomes, strict=True))
        return [self._scored(a, replies.get(i)) for i, a in enumerate(answers)]

    @staticmethod
    def _scored(answer: Answer, outcome: ChatResult | RequestFailure | None) -> Scored:
        row, pred, tokens = answer.row, answer.pred, answer.output_tokens
        if outcome is None:  # the request failed: no response to judge
            return Scored(row, pred, 0.0, tokens, answer.failure, answered=True)
        if isinstance(outcome, RequestFailure):
            return Scored(row, pred, 0.0, tokens, f"judge failed: {outcome.reason}", answered=True)
        verdict = cast(JudgeVerdict, outcome.parsed)  # validated against this schema
        answered = not verdict.abstained or (verdict.equivalent and not row.unanswerable)
        return Scored(row, pred, float(verdict.equivalent), tokens, answered=answered,
                      judged=verdict)

    async def aclose(self) -> None:
        await self.judge.aclose()
        self.cache.close()
