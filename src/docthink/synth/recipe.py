"""The synth stage's recipe: models per stage, image policy, evidence, trace, answer and export
settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, FilePath, field_validator, model_validator

from docthink.core.vocab import Placement
from docthink.corpus.policy import RenderPolicy
from docthink.engine.executor import ExecutorSpec
from docthink.models.specs import ModelSpec, ServedModelSpec, TeacherSpec
from docthink.recipe import Recipe, in_order
from docthink.synth.trace import TraceOrder, TraceStyle


class SynthModelSpecs(Recipe):
    evidence: ModelSpec = Field(
        default_factory=TeacherSpec,
        description="reads one page and the question, returns evidence and a relevance score "
        "(reference: Qwen3-VL-32B-Instruct)",
    )
    answer_vision: ModelSpec = Field(
        default_factory=TeacherSpec,
        description="answers from the top-K page images (reference: Qwen3-VL-235B-A22B)",
    )
    answer_text: ModelSpec = Field(
        default_factory=TeacherSpec,
        description="answers from the trace (reference: Qwen3-235B-A22B-2507)",
    )


class EvidenceSettings(Recipe):
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the extractor")
    max_tokens: int = Field(1024, ge=16)
    source_floor: float = Field(
        6.0, ge=0, le=10, description="source pages' scores are raised to at least this"
    )
    source_note: bool = Field(
        True, description="tell the extractor a source page is known to be relevant (score 6-10); "
        "false: the request is the same as for any page (the floor still applies)"
    )
    on_failure: Literal["skip_page", "drop_if_source", "drop_question"] = Field(
        "drop_if_source",
        description="a page whose request failed after retries: skip_page keeps the question "
        "without that page; drop_if_source drops the question only when the page is a source "
        "page; drop_question drops it on any failed page",
    )


class TraceSettings(Recipe):
    threshold: float = Field(1.0, ge=0, description="keep pages scoring above this")
    top_k: int = Field(16, ge=1, description="pages kept in a trace (reference code: 8, then 24)")
    style: TraceStyle = Field(
        "sorted", description="sorted: paper 2's second version (relevant pages only, top K); "
        "all_pages: its first version (every page in document order, the others written "
        "'Page i: irrelevant'; top_k and order do not apply)"
    )
    order: TraceOrder = Field(
        "score", description="order of the kept pages: score (most relevant first) or page"
    )


class VerifySettings(Recipe):
    """Checks each answer against the question's reference answer, when it has one."""

    method: Literal["rules", "judge", "none"] = Field(
        "rules", description="rules: MMLongBench-Doc's official scorer on the extracted short "
        "answer, by the reference's answer format; judge: an LLM judge (the V2 equivalence "
        "judge) reads the whole answer; none: no check",
    )
    on_mismatch: Literal["drop", "flag", "keep"] = Field(
        "drop", description="an answer that does not match its reference: drop the example, flag "
        "it (kept, and listed as flagged in verification.parquet and the data card), or keep it "
        "(counted only)",
    )
    judge: ServedModelSpec | None = Field(
        None, description="the judge model (method judge): an OpenAI-compatible server or a "
        "local checkpoint; the offline teacher cannot judge",
    )
    prompt: FilePath | None = Field(
        None, description="judge rubric file; null: docthink's (evals/prompts/judge_v2.txt)"
    )
    max_tokens: int = Field(256, ge=1, description="judge reply budget (the JSON verdict)")

    @model_validator(mode="after")
    def _judge_named(self) -> VerifySettings:
        if self.method == "judge" and self.judge is None:
            raise ValueError("verify.method judge needs verify.judge (a served model)")
        return self


class AnswerSettings(Recipe):
    vision_ratio: float = Field(
        0.5, ge=0, le=1,
        description="share of questions answered from images; the rest from the trace",
    )
    text_input: Literal["evidence", "images"] = Field(
        "evidence", description="what the text branch's model sees with the question: the trace's "
        "evidence (text only), or the trace's page images only (no evidence; then answer_text must "
        "read images)"
    )
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(1024, ge=16)
    verify: VerifySettings = Field(default_factory=VerifySettings)


class ExportSettings(Recipe):
    placement: dict[Placement, float] = Field(
        default_factory=lambda: {"system": 0.45, "prefix": 0.25, "suffix": 0.25, "none": 0.05},
        description="how <cot> is placed: a system message that is exactly <cot>, a prefix or "
        "suffix of the question, or none (then no trace either)",
    )
    page_index: str | None = Field(
        "Page {i}:", description="text line before each page image ({i} is 1-based); null: none"
    )
    plain_qa: Path | None = Field(
        None, description="JSONL of plain QA rows {qid, doc_id, question, answer, context_pages?} "
        "mixed in without trace or token"
    )
    plain_qa_ratio: float = Field(
        0.0, ge=0, description="plain rows per trace example (sampled from plain_qa by seed)"
    )

    @field_validator("placement")
    @classmethod
    def _some_weight(cls, value: dict[Placement, float]) -> dict[Placement, float]:
        if sum(value.values()) <= 0 or min(value.values()) < 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return in_order(value, get_args(Placement))


class SynthRecipe(Recipe):
    preset_section = "synth"

    corpus: Path = Field(description="corpus folder made by `docthink ingest`")
    questions: Path = Field(
        description="questions: JSONL/Parquet rows {qid, doc_id, question, source_pages, "
        "context_pages?}, or MMLongBench-Doc's samples.json"
    )
    out: Path = Field(description="output folder: stage tables, examples, data card, request cache")
    seed: int = Field(0, description="every random choice derives from (seed, qid, purpose)")
    models: SynthModelSpecs = Field(default_factory=SynthModelSpecs)
    image: RenderPolicy = Field(
        default_factory=RenderPolicy, description="how pages become images for models and export"
    )
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    concurrency: int = Field(64, ge=1, description="requests in flight per stage")
    workers: int = Field(2, ge=1, description="render processes")
    executor: ExecutorSpec = Field(
        default_factory=ExecutorSpec, description="where shards run, and their size"
    )
