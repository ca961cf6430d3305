"""Accuracy, the official generalized F1, breakdowns and a bootstrap interval over scored rows.

- acc = mean score.
- recall = summed score over rows whose reference is not `Not answerable` / their count;
  precision = the same sum / the number of rows whose extracted prediction is not exactly
  `Not answerable`; F1 = 2PR / (P + R), 0 when undefined (as the official code).
- Breakdowns (accuracy and count): answer format; evidence source (a row counts under each of
  its labels); document type; single-page / cross-page / unanswerable (`BenchRow.page_kinds`,
  overlapping as in the official code).
- A percentile bootstrap 95% interval on accuracy, resampling rows with a generator seeded from
  the recipe seed, so the interval is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from docthink.core.seeded import uniform
from docthink.core.vocab import NOT_ANSWERABLE
from docthink.evals.data import BenchRow

BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True, slots=True)
class Scored:
    row: BenchRow
    pred: str
    score: float
    output_tokens: int | None = None  # None when unknown (a rescore) or nothing was generated
    failure: str | None = None  # why the row has no answer (request or extraction failed); score 0


@dataclass(frozen=True, slots=True)
class Group:
    acc: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"acc": self.acc, "n": self.n}


def accuracy(scored: Sequence[Scored]) -> float:
    return sum(s.score for s in scored) / len(scored) if scored else 0.0


def f1_parts(scored: Sequence[Scored]) -> tuple[float, float, float]:
    """(recall, precision, F1) as the official `eval_acc_and_f1`."""
    answerable = [s for s in scored if s.row.answer != NOT_ANSWERABLE]
    predicted = [s for s in scored if s.pred != NOT_ANSWERABLE]
    hits = sum(s.score for s in answerable)
    if not answerable or not predicted:
        return (hits / len(answerable) if answerable else 0.0,
                hits / len(predicted) if predicted else 0.0, 0.0)
    recall, precision = hits / len(answerable), hits / len(predicted)
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    return recall, precision, f1


def bootstrap_ci(scores: Sequence[float], seed: int,
                 samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float] | None:
    if not scores:
        return None
    rng = np.random.default_rng(int(uniform(seed, "acc", "bootstrap") * 2**63))
    values = np.asarray(scores, dtype=np.float64)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def breakdown(scored: Sequence[Scored],
              labels: Callable[[BenchRow], Iterable[str]]) -> dict[str, Group]:
    groups: dict[str, list[Scored]] = {}
    for s in scored:
        for label in labels(s.row):
            groups.setdefault(label, []).append(s)
    return {label: Group(accuracy(g), len(g)) for label, g in sorted(groups.items())}


@dataclass(frozen=True, slots=True)
class ModeMetrics:
    n: int
    acc: float
    f1: float
    recall: float
    precision: float
    acc_ci95: tuple[float, float] | None
    mean_output_tokens: float | None
    failures: int  # rows without an answer (request or extraction failed), scored 0
    by_page_kind: dict[str, Group]
    by_answer_format: dict[str, Group]
    by_evidence_source: dict[str, Group]
    by_doc_type: dict[str, Group]

    def as_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "acc": self.acc,
            "f1": self.f1,
            "recall": self.recall,
            "precision": self.precision,
            "acc_ci95": list(self.acc_ci95) if self.acc_ci95 else None,
            "mean_output_tokens": self.mean_output_tokens,
            "failures": self.failures,
            **{
                name: {k: g.as_dict() for k, g in getattr(self, name).items()}
                for name in BREAKDOWNS
            },
        }


BREAKDOWNS = ("by_page_kind", "by_answer_format", "by_evidence_source", "by_doc_type")


def compute(scored: Sequence[Scored], seed: int) -> ModeMetrics:
    recall, precision, f1 = f1_parts(scored)
    tokens = [s.output_tokens for s in scored if s.output_tokens is not None]
    return ModeMetrics(
        n=len(scored),
        acc=accuracy(scored),
        f1=f1,
        recall=recall,
        precision=precision,
        acc_ci95=bootstrap_ci([s.score for s in scored], seed),
        mean_output_tokens=sum(tokens) / len(tokens) if tokens else None,
        failures=sum(s.failure is not None for s in scored),
        by_page_kind=breakdown(scored, lambda r: r.page_kinds),
        by_answer_format=breakdown(scored, lambda r: [r.answer_format]),
        by_evidence_source=breakdown(scored, lambda r: r.evidence_sources),
        by_doc_type=breakdown(scored, lambda r: [r.doc_type]),
    )
