"""The evaluation recipe: which benchmark, which model, and how questions are asked and answers
read. Its defaults are the official MMLongBench-Doc protocol (first 120 pages at 144 dpi as JPEG,
the bare question, temperature 0, 1,024 max tokens), with docthink's `<cot>` column added."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, field_validator, model_validator

from docthink.corpus.policy import RenderPolicy
from docthink.engine.executor import ExecutorSpec
from docthink.models.specs import ModelSpec, ServedModelSpec, TeacherSpec
from docthink.recipe import Recipe

Mode = Literal["plain", "cot"]
# The benchmarks of `docthink.evals.benchmarks.BENCHMARKS`: each a loader and a metric.
BenchmarkName = Literal["mmlongbench-doc", "mmlbd-c", "mmlongbench-v2"]
BENCHMARK_HELP = (
    "mmlongbench-doc or mmlbd-c (V1's rules on the extracted answer), mmlongbench-v2 (V2's "
    "questions, scored by an LLM judge: needs scoring.judge); also the leaderboard's column"
)

# The official runner renders each page at the given dpi with no size cap and sends it as a JPEG
# saved by PIL at its default quality (75). max_side only guards against absurd page sizes.
OFFICIAL_IMAGE = RenderPolicy(dpi=144, max_side=16384, format="jpeg", jpeg_quality=75)


class SelectSettings(Recipe):
    docs: list[str] | None = Field(None, description="only questions about these doc_ids")
    sample: int | None = Field(
        None, ge=1, description="stratified sample of this many questions (by answer format, "
        "chosen by seed); null: all"
    )
    limit: int | None = Field(None, ge=1, description="then keep the first N (by row index)")


class InferenceSettings(Recipe):
    max_pages: int = Field(120, ge=1, description="pages shown: the first N of the document")
    image: RenderPolicy = Field(
        default_factory=lambda: OFFICIAL_IMAGE, description="how pages become images"
    )
    max_pixels: int | None = Field(
        None, ge=4096, description="pixel cap per page (width x height): larger pages are "
        "rendered at a lower dpi; null: no cap"
    )
    page_index: str | None = Field(
        None, description="text line before each page image, e.g. 'Page {i}:' ({i} is 1-based); "
        "null: none (official)"
    )
    system: str | None = Field(None, description="system prompt; null: none (official)")
    question_first: bool = Field(
        False, description="question before the page images (the official GPT-4o script's "
        "order); default after them, docthink's convention, which prefix caches and the offline "
        "teacher rely on"
    )
    modes: list[Mode] = Field(
        default_factory=lambda: ["plain", "cot"], min_length=1,
        description="plain: the official protocol; cot: the same with docthink's <cot> token, "
        "which asks a trained model to think first",
    )
    cot_placement: Literal["system", "prefix", "suffix"] = Field(
        "system", description="where <cot> goes, as in training data: a system message that is "
        "exactly <cot> (after the system prompt, on its own line, when one is set), the first "
        "words of the user turn (before the first page), or the last words of the question"
    )
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(1024, ge=1)

    @field_validator("page_index")
    @classmethod
    def _formats(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.format(i=1)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"page_index {value!r} is not a format with {{i}}: {exc!r}") from None
        return value

    @model_validator(mode="after")
    def _distinct_modes(self) -> InferenceSettings:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes repeat: {self.modes}")
        return self


class ExtractSettings(Recipe):
    method: Literal["rule", "llm"] = Field(
        "rule", description="rule: rule-based, no judge (offline); llm: a judge model reads the "
        "response, as in the official protocol"
    )
    judge: ModelSpec | None = Field(None, description="the judge model (method llm)")
    prompt: FilePath | None = Field(
        None, description="judge prompt file; null: docthink's (evals/prompts/extract.txt). Pass "
        "the official prompt_for_answer_extraction.md for exact parity"
    )
    max_tokens: int = Field(256, ge=1, description="judge reply budget (official: 256)")

    @model_validator(mode="after")
    def _judge_for_llm(self) -> ExtractSettings:
        if self.method == "llm" and self.judge is None:
            raise ValueError("extract.method llm needs extract.judge (a model spec)")
        return self


class ScoringSettings(Recipe):
    judge: ServedModelSpec | None = Field(
        None, description="the LLM judge of judge-scored benchmarks (mmlongbench-v2): reads the "
        "question, the reference, its format and the full response, and says whether the "
        "response means the reference and whether it declines; required by them, unused by the "
        "others"
    )
    prompt: FilePath | None = Field(
        None, description="judge rubric file; null: docthink's (evals/prompts/judge_v2.txt, "
        "written from V2's published rubric)"
    )
    max_tokens: int = Field(256, ge=1, description="judge reply budget (the JSON verdict)")


class EvalRecipe(Recipe):
    preset_section = "eval"

    benchmark: BenchmarkName = Field("mmlongbench-doc", description=BENCHMARK_HELP)
    data: Path = Field(description="samples.json, the Hugging Face Parquet or an MMLBD-C TSV; "
                       "for mmlongbench-v2 its samples.json")
    documents: Path | None = Field(
        None, description="folder of the benchmark's PDFs (a corpus is built under out/corpus); "
        "null with no corpus: the PDFs the data carries (an MMLBD-C TSV's base64 image column, "
        "decoded into out/documents)"
    )
    corpus: Path | None = Field(None, description="an existing corpus instead of documents")
    out: Path = Field(
        description="output folder: predictions, report, request cache (a rerun resumes)"
    )
    model: ModelSpec = Field(default_factory=TeacherSpec, description="the model evaluated")
    seed: int = Field(0, description="sampling and the bootstrap derive from it")
    select: SelectSettings = Field(default_factory=SelectSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    extract: ExtractSettings = Field(default_factory=ExtractSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    concurrency: int = Field(32, ge=1, description="requests in flight")
    workers: int = Field(2, ge=1, description="ingest and render processes")
    executor: ExecutorSpec = Field(
        default_factory=ExecutorSpec, description="where shards of questions run, and their size"
    )

    @model_validator(mode="after")
    def _one_source(self) -> EvalRecipe:
        if self.documents is not None and self.corpus is not None:
            raise ValueError("give one of documents (a PDF folder) or corpus, not both")
        return self


class RescoreRecipe(Recipe):
    predictions: Path = Field(description="JSONL rows {index, pred, mode?, failure?, response?} "
                              "(a judge-scored benchmark needs the full response)")
    data: Path = Field(description="the benchmark file the predictions answer")
    out: Path | None = Field(None, description="report JSON (with .md and .png beside it)")
    benchmark: BenchmarkName = Field("mmlongbench-doc", description=BENCHMARK_HELP)
    seed: int = 0
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    cache: Path | None = Field(
        None, description="the judge's request cache; null: cache.sqlite beside the predictions "
        "(in an eval run's folder, the judge replies it already has are reused)"
    )
    v1_data: Path | None = Field(
        None, description="V1's samples.json: also score the same predictions under V1's rules "
        "and list the rows whose verdicts differ (benchmark mmlongbench-v2)"
    )
    concurrency: int = Field(32, ge=1, description="judge requests in flight")

    @model_validator(mode="after")
    def _v1_beside_v2(self) -> RescoreRecipe:
        if self.v1_data is not None and self.benchmark != "mmlongbench-v2":
            raise ValueError("v1_data compares V1's rules with V2's judge: it needs benchmark "
                             "mmlongbench-v2")
        return self


def _pruned(overrides: dict[str, object]) -> dict[str, object]:
    """Nested overrides without the flags that were not given (None), so they do not erase what
    the recipe file sets."""
    kept = {k: _pruned(v) if isinstance(v, dict) else v for k, v in overrides.items()
            if v is not None}
    return {k: v for k, v in kept.items() if v != {}}


def eval_overrides(
    *,
    data: Path | None = None,
    documents: Path | None = None,
    corpus: Path | None = None,
    out: Path | None = None,
    benchmark: str | None = None,
    seed: int | None = None,
    docs: list[str] | None = None,
    sample: int | None = None,
    limit: int | None = None,
    modes: list[str] | None = None,
    max_pages: int | None = None,
    max_pixels: int | None = None,
    page_index: str | None = None,
    system: str | None = None,
    model_url: str | None = None,
    model_name: str | None = None,
    judge_url: str | None = None,
    judge_name: str | None = None,
    extract_prompt: Path | None = None,
    scoring_judge_url: str | None = None,
    scoring_judge_name: str | None = None,
    scoring_prompt: Path | None = None,
    concurrency: int | None = None,
    executor: dict[str, object] | None = None,
) -> dict[str, object]:
    """Command-line flags as a nested recipe override (flags win over the recipe file)."""
    judge = endpoint(judge_url, judge_name)
    return _pruned({
        "data": data, "documents": documents, "corpus": corpus, "out": out,
        "benchmark": benchmark, "seed": seed, "concurrency": concurrency,
        "model": endpoint(model_url, model_name),
        "select": {"docs": docs or None, "sample": sample, "limit": limit},
        "inference": {"modes": modes or None, "max_pages": max_pages, "max_pixels": max_pixels,
                      "page_index": page_index, "system": system},
        "extract": {"method": "llm" if judge else None, "judge": judge,
                    "prompt": extract_prompt},
        "scoring": scoring_overrides(scoring_judge_url, scoring_judge_name, scoring_prompt),
        "executor": executor,
    })


def endpoint(url: str | None, name: str | None) -> dict[str, object] | None:
    """An OpenAI-compatible model spec from a URL and a model name flag (None when neither)."""
    if url is None and name is None:
        return None
    return {"kind": "openai", "model": name, "endpoints": [{"base_url": url}]}


def scoring_overrides(judge_url: str | None, judge_name: str | None,
                      prompt: Path | None) -> dict[str, object]:
    return _pruned({"judge": endpoint(judge_url, judge_name), "prompt": prompt})
