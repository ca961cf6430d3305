"""Recipes of `docthink questions` and `docthink tasks` (paper 1's data pipelines): every setting
that changes which questions, contexts and tasks come out, with the defaults written into the
resolved recipe of each run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from docthink.corpus.policy import RenderPolicy
from docthink.engine.executor import ExecutorSpec
from docthink.models.specs import ModelSpec, TeacherSpec
from docthink.recipe import Recipe, in_order

Weights = dict[str, float]


def _check_weights(value: dict[str, float]) -> dict[str, float]:
    if not value or min(value.values()) < 0 or sum(value.values()) <= 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    return value



class EmbeddingSettings(Recipe):
    model: Literal["minilm", "tfidf"] = Field(
        "minilm",
        description="minilm: all-MiniLM-L6-v2 on the text layer (needs the 'embed' extra); "
        "tfidf: hashed TF-IDF, no dependency",
    )
    max_tokens: int = Field(256, ge=16, le=512, description="minilm: word pieces read per page")
    tfidf_dim: int = Field(1024, ge=64, description="tfidf: hashed buckets")
    batch_size: int = Field(64, ge=1, description="pages per encoder batch")
    min_words: int = Field(
        5, ge=1, description="pages with fewer words have no text embedding (left out of the index)"
    )
    negatives: int = Field(288, ge=1, description="ranked hard negatives kept per page")
    block: int = Field(1024, ge=1, description="query pages per matmul block (bounds memory)")


class Decontamination(Recipe):
    exclude_doc_ids: list[str] = Field(
        default_factory=list, description="documents never used (doc_id or file name)"
    )
    exclude_files: list[Path] = Field(
        default_factory=list,
        description="files listing documents to exclude: one doc_id per line, or a JSON list of "
        "rows with a doc_id (MMLongBench-Doc's samples.json)",
    )


class QuestionModels(Recipe):
    generator: ModelSpec = Field(
        default_factory=TeacherSpec,
        description="writes questions from page images; the teacher spec selects the offline "
        "extractive writer (numeric facts and names from the text layer)",
    )
    judge: ModelSpec = Field(
        default_factory=TeacherSpec,
        description="answers a question from one page alone; a page whose answer matches the "
        "reference answer rejects a multi-page or unanswerable question",
    )


QUESTION_TYPES = {
    "numeric fact": 3.0,
    "named entity": 2.0,
    "table or chart reading": 1.0,
    "comparison": 1.0,
    "yes/no": 0.5,
    "list": 0.5,
}


class QuestionSpecWeights(Recipe):
    """Each field is sampled independently per page from (seed, page, field)."""

    type: Weights = Field(default_factory=lambda: dict(QUESTION_TYPES))
    answer_format: Weights = Field(
        default_factory=lambda: {"Int": 2.0, "Float": 1.0, "Str": 2.0, "List": 1.0},
        description="MMLongBench-Doc's answer formats",
    )
    length: Weights = Field(
        default_factory=lambda: {"short": 2.0, "medium": 2.0, "long": 1.0},
        description="how long the question is",
    )
    difficulty: Weights = Field(
        default_factory=lambda: {"easy": 1.0, "medium": 2.0, "hard": 1.0}
    )
    n_questions: dict[int, float] = Field(
        default_factory=lambda: {n: 1.0 for n in range(1, 6)},
        description="questions the generator writes for a page (one is kept)",
    )

    @field_validator("type", "answer_format", "length", "difficulty", "n_questions")
    @classmethod
    def _weights(cls, value: dict[Any, float], info: ValidationInfo) -> dict[Any, float]:
        default = cls.model_fields[info.field_name or ""].get_default(call_default_factory=True)
        return in_order(_check_weights(value), list(default))


class SinglePageSettings(Recipe):
    enabled: bool = True
    min_words: int = Field(
        30, ge=0, description="weak pages (fewer words in the text layer) are skipped"
    )
    max_per_document: int | None = Field(
        None, ge=1, description="pages used per document, chosen by seed (null: every page)"
    )
    spec: QuestionSpecWeights = Field(default_factory=QuestionSpecWeights)


class MultiPageSettings(Recipe):
    enabled: bool = True
    seeds_per_document: int = Field(1, ge=0, description="page seeds per document")
    pages: tuple[int, int] = Field((2, 17), description="seed length range (consecutive pages)")
    min_words: int = Field(30, ge=0, description="a seed needs two pages with this many words")

    @field_validator("pages")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 2 <= value[0] <= value[1]:
            raise ValueError("need 2 <= min <= max")
        return value


class UnanswerableSettings(Recipe):
    share: float = Field(
        0.1, ge=0, le=1, description="share of single-page questions that also get an "
        "unanswerable twin: same question, a context without its source page, answer "
        "`Not answerable`"
    )


class ContextComponent(Recipe):
    weight: float = Field(ge=0)
    pages: tuple[int, int] = Field(description="context length range, source pages included")
    ranks: tuple[int, int] | None = Field(
        None, description="hard-negative ranks [lo, hi) drawn from (null: same-document pages)"
    )
    shuffle: bool = Field(description="shuffle the page order")

    @model_validator(mode="after")
    def _ranges(self) -> ContextComponent:
        if not 1 <= self.pages[0] <= self.pages[1]:
            raise ValueError("pages: need 1 <= min <= max")
        if self.ranks is not None and not 0 <= self.ranks[0] < self.ranks[1]:
            raise ValueError("ranks: need 0 <= lo < hi")
        return self


class ContextSettings(Recipe):
    """Paper 1's long-context mixture, 1:1:1:2:2 by default."""

    far: ContextComponent = Field(
        default_factory=lambda: ContextComponent(
            weight=1, pages=(2, 16), ranks=(32, 288), shuffle=True
        ),
        description="far hard negatives: ranks 32-287, up to 16 pages in all",
    )
    near: ContextComponent = Field(
        default_factory=lambda: ContextComponent(
            weight=1, pages=(2, 16), ranks=(0, 32), shuffle=True
        ),
        description="near hard negatives: the top 32, up to 16 pages in all",
    )
    adjacent: ContextComponent = Field(
        default_factory=lambda: ContextComponent(weight=1, pages=(2, 17), shuffle=False),
        description="a window of consecutive pages of the source document",
    )
    negatives: ContextComponent = Field(
        default_factory=lambda: ContextComponent(
            weight=2, pages=(2, 96), ranks=(0, 96), shuffle=True
        ),
        description="up to 96 hard-negative pages",
    )
    document: ContextComponent = Field(
        default_factory=lambda: ContextComponent(weight=2, pages=(5, 336), shuffle=False),
        description="the whole source document, when its length is in range",
    )

    def components(self) -> dict[str, ContextComponent]:
        return {
            "far": self.far,
            "near": self.near,
            "adjacent": self.adjacent,
            "negatives": self.negatives,
            "document": self.document,
        }

    @model_validator(mode="after")
    def _kinds(self) -> ContextSettings:
        for name in ("far", "near", "negatives"):
            if self.components()[name].ranks is None:
                raise ValueError(f"{name}: hard-negative components need ranks")
        if sum(c.weight for c in self.components().values()) <= 0:
            raise ValueError("component weights need a positive sum")
        return self


class QuestionsRecipe(Recipe):
    preset_section = "questions"

    corpus: Path = Field(description="corpus folder made by `docthink ingest`")
    out: Path = Field(description="output folder: questions.jsonl, index, data card, cache")
    seed: int = Field(0, description="every random choice derives from (seed, row id, purpose)")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    decontamination: Decontamination = Field(default_factory=Decontamination)
    models: QuestionModels = Field(default_factory=QuestionModels)
    image: RenderPolicy = Field(
        default_factory=RenderPolicy, description="how pages become images for the models"
    )
    single_page: SinglePageSettings = Field(default_factory=SinglePageSettings)
    multi_page: MultiPageSettings = Field(default_factory=MultiPageSettings)
    unanswerable: UnanswerableSettings = Field(default_factory=UnanswerableSettings)
    contexts: ContextSettings = Field(default_factory=ContextSettings)
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the generator")
    max_tokens: int = Field(1024, ge=16, description="generator and judge output budget")
    concurrency: int = Field(64, ge=1, description="requests in flight")
    workers: int = Field(2, ge=1, description="render processes")
    executor: ExecutorSpec = Field(
        default_factory=ExecutorSpec, description="where shards of documents run, and their size"
    )


# -- tasks --------------------------------------------------------------------------------------


class WindowTask(Recipe):
    per_document: int = Field(1, ge=0, description="tasks per document")
    pages: tuple[int, int] = Field(description="pages shown, range")

    @field_validator("pages")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= value[0] <= value[1]:
            raise ValueError("need 1 <= min <= max")
        return value


class UnshuffleTask(WindowTask):
    pages: tuple[int, int] = (4, 16)
    printed_numbers: Literal["report", "skip"] = Field(
        "report",
        description="windows with pages whose printed page number gives the order away: "
        "report (keep and flag them) or skip",
    )


class MissingPageTask(WindowTask):
    pages: tuple[int, int] = Field((3, 17), description="window length before the removal")
    min_words: int = Field(20, ge=1, description="the removed page has at least this many words")


class RetrievalTask(WindowTask):
    pages: tuple[int, int] = Field((5, 63), description="hard-negative context length")
    whole_document: float = Field(
        0.5, ge=0, le=1, description="share of tasks over the whole document (else hard negatives)"
    )
    max_document_pages: int = Field(336, ge=1, description="longest document shown whole")


class CountingTask(WindowTask):
    pages: tuple[int, int] = (2, 8)
    units: Weights = Field(default_factory=lambda: {"sentences": 1.0, "paragraphs": 1.0})

    @field_validator("units")
    @classmethod
    def _units(cls, value: Weights) -> Weights:
        return in_order(_check_weights(value), ["sentences", "paragraphs"])


class TaskSettings(Recipe):
    unshuffle: UnshuffleTask = Field(default_factory=UnshuffleTask)
    missing_page: MissingPageTask = Field(default_factory=MissingPageTask)
    key_retrieval: RetrievalTask = Field(default_factory=RetrievalTask)
    position_retrieval: RetrievalTask = Field(default_factory=RetrievalTask)
    counting: CountingTask = Field(default_factory=CountingTask)


class TasksRecipe(Recipe):
    corpus: Path = Field(description="corpus folder made by `docthink ingest`")
    out: Path = Field(description="output folder: tasks.jsonl, examples.jsonl, exports, card")
    seed: int = Field(0, description="every random choice derives from (seed, row id, purpose)")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    decontamination: Decontamination = Field(default_factory=Decontamination)
    image: RenderPolicy = Field(default_factory=RenderPolicy)
    page_index: str = Field("Page {i}:", description="text line before each page image")
    tasks: TaskSettings = Field(default_factory=TaskSettings)
    formats: list[Literal["trl", "llamafactory"]] = Field(
        default_factory=lambda: ["trl", "llamafactory"], description="exports written"
    )
    workers: int = Field(2, ge=1, description="render processes")

    @field_validator("page_index")
    @classmethod
    def _has_index(cls, value: str) -> str:
        if "{i}" not in value:
            raise ValueError("the tasks name pages by their label: page_index needs {i}")
        return value
