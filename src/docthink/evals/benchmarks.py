"""The benchmarks `docthink eval` knows, each a loader and a metric, chosen by name:

| name | data | metric |
|---|---|---|
| mmlongbench-doc | samples.json, the HF Parquet or a TSV | V1's rules on the extracted answer |
| mmlbd-c | the same layouts (MMLBD-C's corrected TSV) | V1's rules |
| mmlongbench-v2 | V2's samples.json, question_types.json beside it | V2's judge on the full response |

The name is also what the run records and the leaderboard files scores under, one column per
benchmark: V1 and V2 numbers never share a column. A judge-scored benchmark with no judge model
set is refused (`JudgeRequired`) before anything runs; nothing falls back to V1's rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from docthink.core.vocab import NOT_ANSWERABLE
from docthink.evals.data import Benchmark, load_benchmark, load_v2
from docthink.evals.judge import DEFAULT_JUDGE_PROMPT, JudgeMetric, JudgeScoring
from docthink.evals.metrics import V1_BREAKDOWNS, V2_BREAKDOWNS, Answer, Scored
from docthink.evals.prompt import PromptFile
from docthink.evals.recipe import BenchmarkName, ScoringSettings
from docthink.evals.scoring import score
from docthink.models.base import UsageMeter
from docthink.models.specs import ServedModelSpec
from docthink.recipe import RecipeError


class JudgeRequired(RecipeError):
    """A benchmark scored by an LLM judge, and no judge model set; the message names the recipe
    field and the flags."""


@dataclass(frozen=True, slots=True)
class BenchmarkKind:
    name: BenchmarkName
    load: Callable[[Path], Benchmark]
    judged: bool  # scored by an LLM judge (scoring.judge) rather than V1's rules
    breakdowns: tuple[str, ...]
    note: str | None = None  # said in every report of it


BENCHMARKS: dict[BenchmarkName, BenchmarkKind] = {
    "mmlongbench-doc": BenchmarkKind("mmlongbench-doc", load_benchmark, False, V1_BREAKDOWNS),
    "mmlbd-c": BenchmarkKind("mmlbd-c", load_benchmark, False, V1_BREAKDOWNS),
    "mmlongbench-v2": BenchmarkKind(
        "mmlongbench-v2", load_v2, True, V2_BREAKDOWNS,
        note="MMLongBench-Doc-V2: corrected answers, scored by an LLM judge on the full response; "
        "V2 numbers are not comparable with V1 numbers."),
}


def rules_scored(answer: Answer) -> Scored:
    """V1's rules: the extracted answer against the reference; a failed row scores 0."""
    row = answer.row
    value = 0.0 if answer.failure is not None else score(row.answer, answer.pred, row.answer_format)
    return Scored(row, answer.pred, value, answer.output_tokens, answer.failure,
                  answered=answer.pred != NOT_ANSWERABLE)


@dataclass(frozen=True, slots=True)
class RulesScoring:
    """What a report says of scoring by V1's rules."""

    def to_json(self) -> dict[str, object]:
        return {"metric": "rules"}


Scoring = RulesScoring | JudgeScoring


class RulesMetric:
    record = RulesScoring()
    usage: UsageMeter | None = None  # asks no model

    async def score_all(self, answers: Sequence[Answer]) -> list[Scored]:
        return [rules_scored(a) for a in answers]

    async def aclose(self) -> None:
        return None


Metric = RulesMetric | JudgeMetric


def require_judge(kind: BenchmarkKind, scoring: ScoringSettings) -> ServedModelSpec | None:
    """The judge model a benchmark is scored by (None for V1's rules); refused when it needs one
    and none is set."""
    if not kind.judged:
        return None
    if scoring.judge is None:
        raise JudgeRequired(
            f"{kind.name} is scored by an LLM judge and none is set: give scoring.judge in the "
            "recipe (any OpenAI-compatible endpoint) or --scoring-judge-url and "
            "--scoring-judge-name")
    return scoring.judge


def build_metric(kind: BenchmarkKind, scoring: ScoringSettings, cache: Path, *,
                 concurrency: int, show_progress: bool) -> Metric:
    """The benchmark's metric; a judge keeps its replies in the request cache at `cache`."""
    judge = require_judge(kind, scoring)
    if judge is None:
        return RulesMetric()
    prompt = PromptFile.read(scoring.prompt or DEFAULT_JUDGE_PROMPT)
    return JudgeMetric(judge, prompt, cache, max_tokens=scoring.max_tokens,
                       concurrency=concurrency, show_progress=show_progress)
