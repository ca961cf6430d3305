"""Recipes: pydantic models of everything that decides a run's result, loaded from YAML and
overridden by command-line flags. The resolved recipe is what the run folder and registry keep."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from docthink.core.errors import UserError
from docthink.corpus import RenderPolicy
from docthink.models.specs import ModelSpec, TeacherSpec


class RecipeError(UserError, ValueError):
    """A recipe file or flag that does not validate; the message names the file and field."""


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestRecipe(Recipe):
    pdf_dir: Path = Field(description="folder searched recursively for *.pdf (and other files)")
    out: Path = Field(description="corpus folder: manifest.jsonl, text and image stores")
    workers: int = Field(2, ge=1, description="worker processes (PDFium is not thread-safe)")
    prerender: RenderPolicy | None = Field(
        None, description="render every page at this policy now (default: render on demand)"
    )


R = TypeVar("R", bound=Recipe)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(
    cls: type[R],
    path: Path | None,
    overrides: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> R:
    """Recipe from `path` (YAML) with `overrides` (flags; None means "not given") on top, and
    `defaults` under it (placeholders for fields neither sets)."""
    data: dict[str, Any] = {}
    source = "flags"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
        if not isinstance(loaded, dict):
            raise RecipeError(f"{path}: a recipe is a YAML mapping, got {type(loaded).__name__}")
        data = loaded
    given = {k: v for k, v in overrides.items() if v is not None}
    data = _merge(_merge(defaults or {}, data), given)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise RecipeError(f"{source}: invalid {cls.__name__}: {problems}") from None


def _problem(err: ErrorDetails) -> str:
    """`field.path: message`; a check over several fields has no path."""
    where = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class StageModels(Recipe):
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
    on_failure: Literal["skip_page", "drop_if_source", "drop_question"] = Field(
        "drop_if_source",
        description="a page whose request failed after retries: skip_page keeps the question "
        "without that page; drop_if_source drops the question only when the page is a source "
        "page; drop_question drops it on any failed page",
    )


class TraceSettings(Recipe):
    threshold: float = Field(1.0, ge=0, description="keep pages scoring above this")
    top_k: int = Field(16, ge=1, description="pages kept in a trace (reference code: 8, then 24)")


class AnswerSettings(Recipe):
    vision_ratio: float = Field(
        0.5, ge=0, le=1,
        description="share of questions answered from images; the rest from the trace",
    )
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(1024, ge=16)


class ExportSettings(Recipe):
    placement: dict[Literal["system", "prefix", "suffix", "none"], float] = Field(
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
    def _some_weight(cls, value: dict[str, float]) -> dict[str, float]:
        if sum(value.values()) <= 0 or min(value.values()) < 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return value


class SynthRecipe(Recipe):
    corpus: Path = Field(description="corpus folder made by `docthink ingest`")
    questions: Path = Field(
        description="questions: JSONL/Parquet rows {qid, doc_id, question, source_pages, "
        "context_pages?}, or MMLongBench-Doc's samples.json"
    )
    out: Path = Field(description="output folder: stage tables, examples, data card, request cache")
    seed: int = Field(0, description="every random choice derives from (seed, qid, purpose)")
    models: StageModels = Field(default_factory=StageModels)
    image: RenderPolicy = Field(
        default_factory=RenderPolicy, description="how pages become images for models and export"
    )
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    concurrency: int = Field(64, ge=1, description="requests in flight per stage")
    workers: int = Field(2, ge=1, description="render processes")


def commented_yaml(recipe: BaseModel, indent: int = 0) -> str:
    """The recipe as YAML with each field's description as a comment above it: what
    `--print-recipe` shows, and a valid recipe file to start from."""
    lines: list[str] = []
    pad = " " * indent
    for name, info in type(recipe).model_fields.items():
        value = getattr(recipe, name)
        if info.description:
            lines.append(f"{pad}# {info.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.append(commented_yaml(value, indent + 2))
            continue
        dumped = recipe.model_dump(mode="json", include={name})[name]
        text = yaml.safe_dump({name: dumped}, sort_keys=False, default_flow_style=False).rstrip()
        lines.extend(pad + line for line in text.splitlines())
    return "\n".join(lines)


class ExportRecipe(Recipe):
    run_dir: Path = Field(description="output folder of `docthink synth`")
    format: Literal["trl", "llamafactory"] = Field(description="trainer format")
    out: Path = Field(description="export folder")


class MergeRecipe(Recipe):
    base: Path = Field(description="the starting checkpoint (safetensors, single or sharded)")
    tuned: Path = Field(description="the fine-tuned checkpoint, or a PEFT LoRA adapter folder")
    alphas: list[float] = Field(min_length=1, description="merge strengths: base + a*(tuned-base)")
    outs: list[Path] = Field(min_length=1, description="one output folder per alpha")
    shard_size: int = Field(5 * 2**30, gt=0, description="bytes per output shard, at most")
    chunk_bytes: int = Field(256 * 2**20, gt=0, description="buffer budget of one step (memory)")
    extrapolate: bool = Field(
        False, description="allow strengths outside [0, 1] (past the base or past the tuned model)"
    )

    @model_validator(mode="after")
    def _one_out_per_alpha(self) -> MergeRecipe:
        if len(self.outs) != len(self.alphas):
            raise ValueError(f"{len(self.alphas)} alphas need as many outs, got {len(self.outs)}")
        return self

    @model_validator(mode="after")
    def _extrapolation_only_when_asked(self) -> MergeRecipe:
        outside = [a for a in self.alphas if not 0 <= a <= 1]
        if outside and not self.extrapolate:
            raise ValueError(f"alpha {outside[0]:g} is outside [0, 1], an extrapolation: ask for "
                             "it with --extrapolate (extrapolate: true in a recipe)")
        return self
