"""From a model's free-form response to the short answer that is scored.

Two extractors, one interface (`Extraction` per response):
- `rule_extract`: no judge, for offline runs. It reads only the question and the response (never the
  reference or its format): drops a `<think>...</think>` block, takes the text after the last answer
  marker ("Extracted answer:", "Final answer:", "Answer:", "the answer is") or else the last line,
  and normalises what the official judge would: "Not answerable" phrasings, Yes/No, bullet lists
  (as a Python list literal), and bare numbers for numeric questions ("$2,952" -> "2952").
- LLM extraction, as in the official protocol: a judge model reads a prompt (ours by default,
  `prompts/extract.txt`; the official `prompt_for_answer_extraction.md` can be given by path), then
  an assistant turn `\\n\\nQuestion:{q}\\nAnalysis:{response}\\n`, at temperature 0 with 256 tokens,
  and the answer is the text between "Extracted answer:" and "Answer format:". A reply without
  "Extracted answer:" is an extraction failure, scored 0 as the official runner does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from docthink.core.vocab import NOT_ANSWERABLE, THINK_CLOSE, THINK_OPEN
from docthink.engine.local import run_requests
from docthink.evals.prompt import PROMPT_DIR, JudgeRecord, PromptFile
from docthink.models.base import ChatModel, ChatRequest, ChatResult, Message, RequestFailure
from docthink.progress import progress

DEFAULT_PROMPT = PROMPT_DIR / "extract.txt"
FAILED_TO_EXTRACT = "Failed to extract"


@dataclass(frozen=True, slots=True)
class Extraction:
    pred: str
    failure: str | None = None  # why no answer could be extracted (the row then scores 0)
    judge_tokens: int = 0


# -- rule-based -----------------------------------------------------------------------------------

_MARKER = re.compile(
    r"\b(?:extracted answer|final answer|short answer|answer)\s*[:：]\s*|\bthe answer is\s*:?\s*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+(.+?)\s*$")
_UNANSWERABLE = re.compile(
    r"\b(not answerable|unanswerable|cannot be answered|can(?:no|')t be (?:answered|determined)"
    r"|not possible to (?:answer|determine)|(?:does|do) not (?:provide|contain|mention|specify|"
    r"include|state)|no (?:information|mention|data) (?:about|on|regarding))\b",
    re.IGNORECASE,
)
_YES_NO_QUESTION = re.compile(
    r"^\s*(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b", re.IGNORECASE
)
_YES_NO = re.compile(r"^(yes|no)\b[\s,.;:!-]*", re.IGNORECASE)
_NUMERIC_QUESTION = re.compile(
    r"\b(how (many|much|long|old|far|large|big|high|often)|what (is the )?(percentage|percent|"
    r"proportion|share|ratio|rate|number|amount|total|sum|difference|average)|"
    r"(int|integer|float) format|in (millions?|billions?|thousands?))\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"[-+]?[$€£]?\s?\d[\d,]*(?:\.\d+)?\s?%?")
_BARE_NUMBER = re.compile(r"[-+]?[$€£]?\s?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s?%?|[-+]?[$€£]?\s?\d+(?:\.\d+)?\s?%?")
_SHORT_WORDS = 12


def final_text(response: str) -> str:
    """The response after its reasoning: the text after the last `</think>`; empty when a
    `<think>` block never closed (the model ran out of tokens before answering)."""
    if THINK_CLOSE in response:
        return response.rsplit(THINK_CLOSE, 1)[1].strip()
    return "" if THINK_OPEN in response else response.strip()


def _after_marker(text: str) -> str | None:
    matches = list(_MARKER.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    return rest.split("Answer format:")[0].strip().split("\n")[0].strip()


def _unmarked(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    items = [m.group(1) for m in (_BULLET.match(line) for line in lines) if m]
    if len(items) >= 2:  # a bulleted or numbered list, perhaps after an introducing line
        return repr([_tidy(i) for i in items])
    return lines[-1] if lines else ""


def _tidy(text: str) -> str:
    text = text.replace("**", "").replace("`", "").strip()
    if text.endswith(".") and text.count(".") == 1:
        text = text[:-1].strip()
    return text


def _number(text: str) -> str:
    return re.sub(r"[$€£,%\s]", "", text)


def rule_extract(question: str, response: str) -> Extraction:
    text = final_text(response)
    if not text:
        return Extraction(FAILED_TO_EXTRACT, "no answer after the reasoning")
    marked = _after_marker(text)
    answer = _tidy(marked if marked is not None else _unmarked(text))
    if _UNANSWERABLE.search(answer):
        return Extraction(NOT_ANSWERABLE)
    if answer.startswith("["):
        return Extraction(answer)
    if _YES_NO_QUESTION.match(question) and (yes_no := _YES_NO.match(answer)):
        return Extraction(yes_no.group(1).capitalize())
    if _NUMERIC_QUESTION.search(question):
        if _BARE_NUMBER.fullmatch(answer):
            return Extraction(_number(answer))
        numbers = _NUMBER.findall(answer)
        if len(answer.split()) <= _SHORT_WORDS and len(numbers) == 1:
            return Extraction(_number(numbers[0]))
    return Extraction(answer)


# -- LLM judge ------------------------------------------------------------------------------------


def extraction_request(prompt: PromptFile, question: str, response: str,
                       max_tokens: int) -> ChatRequest:
    """The official request layout: the prompt as the user turn, then the question and the
    response as an assistant turn."""
    return ChatRequest(
        messages=(
            Message.text("user", prompt.text),
            Message.text("assistant", f"\n\nQuestion:{question}\nAnalysis:{response}\n"),
        ),
        temperature=0.0,
        max_tokens=max_tokens,
        purpose="extract",
    )


def parse_judge(outcome: ChatResult | RequestFailure) -> Extraction:
    if isinstance(outcome, RequestFailure):
        return Extraction(FAILED_TO_EXTRACT, f"judge failed: {outcome.reason}")
    tokens = outcome.usage.completion_tokens
    parts = outcome.text.split("Answer format:")[0].split("Extracted answer:")
    if len(parts) < 2:
        return Extraction(FAILED_TO_EXTRACT, "judge reply has no 'Extracted answer:'", tokens)
    return Extraction(parts[1].strip(), None, tokens)


# -- the two extractors, one interface ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleExtraction:
    """What a report says of rule extraction."""

    def to_json(self) -> dict[str, object]:
        return {"method": "rule"}


@dataclass(frozen=True, slots=True)
class LLMExtraction:
    """What a report says of LLM extraction: the judge, its prompt and token budget."""

    judge: JudgeRecord

    def to_json(self) -> dict[str, object]:
        return {"method": "llm", **self.judge.to_json()}


ExtractionMethod = RuleExtraction | LLMExtraction


class RuleExtractor:
    """No judge: `rule_extract` on every (question, response)."""

    @property
    def record(self) -> RuleExtraction:
        return RuleExtraction()

    async def extract_all(self, asks: Sequence[tuple[str, str]]) -> list[Extraction]:
        return [rule_extract(question, response) for question, response in asks]

    async def aclose(self) -> None:
        return None


class JudgeExtractor:
    """A judge model reads each response (its text after any reasoning); one with nothing after
    its reasoning is an extraction failure without asking the judge."""

    def __init__(self, judge: ChatModel, prompt: PromptFile, *, max_tokens: int,
                 concurrency: int, show_progress: bool) -> None:
        self.judge = judge
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.show_progress = show_progress

    @property
    def record(self) -> LLMExtraction:
        return LLMExtraction(JudgeRecord.of(self.judge.name, self.prompt, self.max_tokens))

    async def extract_all(self, asks: Sequence[tuple[str, str]]) -> list[Extraction]:
        responses = [final_text(response) for _, response in asks]
        requests = [extraction_request(self.prompt, question, response, self.max_tokens)
                    for (question, _), response in zip(asks, responses, strict=True) if response]
        with progress("extract", len(requests), self.show_progress) as bar:
            replies = iter(await run_requests(self.judge, requests, concurrency=self.concurrency,
                                              on_done=lambda n: bar.advance(n)))
        return [parse_judge(next(replies)) if response else rule_extract(question, raw)
                for (question, raw), response in zip(asks, responses, strict=True)]

    async def aclose(self) -> None:
        await self.judge.aclose()


Extractor = RuleExtractor | JudgeExtractor
