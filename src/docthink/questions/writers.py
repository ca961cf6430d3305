"""Question writers: one interface, two implementations. `ModelWriter` asks a vision-language
model through the model layer (page images in, `PageQuestions` / `SeedQuestions` out);
`ExtractiveWriter` writes honest extractive questions from the text layer offline
(`extractive_questions`). Both take (qid, page or seed pages, sampled specification) items and
return, per item, drafts or the reason there are none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from pydantic import BaseModel, ConfigDict, Field

from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.core.seeded import rng, weighted_choice
from docthink.corpus.corpus import Corpus
from docthink.engine.local import run_requests
from docthink.models.base import ChatModel, ChatRequest, Message, RequestFailure
from docthink.questions import PROMPTS
from docthink.questions import extractive as ex
from docthink.questions.recipe import QuestionSpecWeights

# -- what models return -------------------------------------------------------------------------


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DraftQuestion(_Output):
    question: str = Field(description="a self-contained question about the page")
    answer: str = Field(description="its answer, in the requested format, as short as possible")


class PageQuestions(_Output):
    """Single-page generation: 1-5 questions the page answers."""

    questions: list[DraftQuestion] = Field(min_length=1, max_length=5)


class SeedDraft(_Output):
    question: str = Field(description="a self-contained question that needs two or more pages")
    answer: str = Field(description="its answer, in the requested format, as short as possible")
    pages: list[int] = Field(description="labels i of every page the answer needs")


class SeedQuestions(_Output):
    """Multi-page generation: 1-5 questions over a seed of pages."""

    questions: list[SeedDraft] = Field(min_length=1, max_length=5)


# -- specifications -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    type: str
    answer_format: str
    length: str
    difficulty: str
    n_questions: int

    def text(self) -> str:
        plural = "question" if self.n_questions == 1 else "questions"
        return (
            f"Write {self.n_questions} {plural}.\n"
            f"Question type: {self.type}\n"
            f"Answer format: {self.answer_format}\n"
            f"Question length: {self.length}\n"
            f"Difficulty: {self.difficulty}"
        )

    def as_dict(self) -> dict[str, str | int]:
        return {
            "type": self.type,
            "answer_format": self.answer_format,
            "length": self.length,
            "difficulty": self.difficulty,
            "n_questions": self.n_questions,
        }


def sample_spec(seed: int, row_id: str, weights: QuestionSpecWeights) -> Spec:
    """Each field drawn independently from (seed, row id, field)."""
    return Spec(
        type=weighted_choice(seed, row_id, "spec:type", weights.type),
        answer_format=weighted_choice(seed, row_id, "spec:answer_format", weights.answer_format),
        length=weighted_choice(seed, row_id, "spec:length", weights.length),
        difficulty=weighted_choice(seed, row_id, "spec:difficulty", weights.difficulty),
        n_questions=weighted_choice(seed, row_id, "spec:n_questions", weights.n_questions),
    )


# -- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Draft:
    question: str
    answer: str
    answer_format: str
    qtype: str
    source: tuple[PageRef, ...]


# -- writers ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NoDrafts:
    """Why an item gave no draft question (the item is dropped with this reason)."""

    reason: str


Outcome = list[Draft] | NoDrafts


class ExtractiveWriter:
    """The offline writer over the text layer (see `extractive_questions`)."""

    name = ex.WRITER_NAME

    def __init__(self, corpus: Corpus, seed: int) -> None:
        self._corpus = corpus
        self._seed = seed

    @staticmethod
    def _kinds(spec: Spec) -> list[str]:
        order = [ex.NUMERIC, ex.TABLE, ex.ENTITY]
        return [spec.type, *(k for k in order if k != spec.type)] if spec.type in order else order

    async def single(self, items: Sequence[tuple[str, PageRef, Spec]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for qid, ref, spec in items:
            facts = ex.page_facts(self._corpus.page_text(ref))
            kind = next((k for k in self._kinds(spec) if facts[k]), None)
            if kind is None:
                outcomes.append(NoDrafts("no extractable fact"))
                continue
            chosen = rng(self._seed, qid, "extractive").sample(
                facts[kind], min(spec.n_questions, len(facts[kind]))
            )
            outcomes.append(
                [Draft(f.question, f.answer, f.answer_format, f.kind, (ref,)) for f in chosen]
            )
        return outcomes

    async def multi(self, items: Sequence[tuple[str, tuple[PageRef, ...], Spec]]) -> list[Outcome]:
        """Pairs of facts from two different seed pages, the spec's kind first (see
        `extractive_questions.combined`)."""
        outcomes: list[Outcome] = []
        for qid, seed_pages, spec in items:
            facts = {ref: ex.page_facts(self._corpus.page_text(ref)) for ref in seed_pages}
            draw = rng(self._seed, qid, "extractive")
            drafts: list[Draft] = []
            for kind in self._kinds(spec):
                pages = [r for r in seed_pages if facts[r][kind]]
                others = [r for r in seed_pages if any(facts[r].values())]
                if not pages or len(others) < 2:
                    continue
                for _ in range(spec.n_questions):
                    first = draw.choice(pages)
                    second = draw.choice([r for r in others if r != first])
                    a = draw.choice(facts[first][kind])
                    b = draw.choice([f for fs in facts[second].values() for f in fs])
                    if second.page < first.page:
                        first, second, a, b = second, first, b, a
                    question, answer, fmt, qtype = ex.combined(a, b)
                    drafts.append(Draft(question, answer, fmt, qtype, (first, second)))
                break
            outcomes.append(drafts or NoDrafts("no two pages with extractable facts"))
        return outcomes


def single_request(image: ImagePart, spec: Spec, *, temperature: float,
                   max_tokens: int) -> ChatRequest:
    """The writer's request for questions about one page."""
    return ChatRequest(
        messages=(
            Message.text("system", PROMPTS["single_system"].text),
            Message("user", (image, TextPart(spec.text()))),
        ),
        response_model=PageQuestions,
        temperature=temperature,
        max_tokens=max_tokens,
        purpose="question-single",
    )


def multi_request(images: Sequence[ImagePart], spec: Spec, *, temperature: float,
                  max_tokens: int) -> ChatRequest:
    """The writer's request for questions that need several pages of a seed."""
    parts: list[TextPart | ImagePart] = []
    for i, image in enumerate(images, start=1):
        parts += [TextPart(f"Page {i}:"), image]
    parts.append(TextPart(spec.text()))
    return ChatRequest(
        messages=(
            Message.text("system", PROMPTS["multi_system"].text),
            Message("user", tuple(parts)),
        ),
        response_model=SeedQuestions,
        temperature=temperature,
        max_tokens=max_tokens,
        purpose="question-multi",
    )


class ModelWriter:
    """Questions from a vision-language model through the model layer."""

    def __init__(
        self,
        model: ChatModel,
        images: dict[PageRef, ImagePart],
        *,
        temperature: float,
        max_tokens: int,
        concurrency: int,
    ) -> None:
        self.model = model
        self.name = model.name
        self.images = images
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.concurrency = concurrency

    def single_request(self, ref: PageRef, spec: Spec) -> ChatRequest:
        return single_request(self.images[ref], spec, temperature=self.temperature,
                              max_tokens=self.max_tokens)

    def multi_request(self, pages: Sequence[PageRef], spec: Spec) -> ChatRequest:
        return multi_request([self.images[ref] for ref in pages], spec,
                             temperature=self.temperature, max_tokens=self.max_tokens)

    async def single(self, items: Sequence[tuple[str, PageRef, Spec]]) -> list[Outcome]:
        requests = [self.single_request(ref, spec) for _, ref, spec in items]
        results = await run_requests(self.model, requests, concurrency=self.concurrency)
        outcomes: list[Outcome] = []
        for (_, ref, spec), result in zip(items, results, strict=True):
            if isinstance(result, RequestFailure):
                outcomes.append(NoDrafts(f"generator failed: {result.reason}"))
                continue
            parsed = cast(PageQuestions, result.parsed)
            drafts = [
                Draft(q.question.strip(), q.answer.strip(), spec.answer_format, spec.type, (ref,))
                for q in parsed.questions
                if q.question.strip() and q.answer.strip()
            ]
            outcomes.append(drafts or NoDrafts("generator wrote no usable question"))
        return outcomes

    async def multi(self, items: Sequence[tuple[str, tuple[PageRef, ...], Spec]]) -> list[Outcome]:
        requests = [self.multi_request(pages, spec) for _, pages, spec in items]
        results = await run_requests(self.model, requests, concurrency=self.concurrency)
        outcomes: list[Outcome] = []
        for (_, pages, spec), result in zip(items, results, strict=True):
            if isinstance(result, RequestFailure):
                outcomes.append(NoDrafts(f"generator failed: {result.reason}"))
                continue
            drafts = []
            for q in cast(SeedQuestions, result.parsed).questions:
                used = sorted({i for i in q.pages if 1 <= i <= len(pages)})
                if len(used) >= 2 and q.question.strip() and q.answer.strip():
                    source = tuple(pages[i - 1] for i in used)
                    drafts.append(
                        Draft(q.question.strip(), q.answer.strip(), spec.answer_format, spec.type,
                              source)
                    )
            outcomes.append(drafts or NoDrafts("generator wrote no question needing two seed pages"))
        return outcomes


Writer = ExtractiveWriter | ModelWriter
