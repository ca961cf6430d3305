"""Accuracy, the generalized F1, breakdowns and bootstrap intervals over scored rows.

- acc = mean score.
- recall = summed score over rows whose reference is not `Not answerable` / their count;
  precision = the same sum / the number of rows answered; F1 = 2PR / (P + R), 0 when undefined
  (as the official code). What counts as answered is the metric's: under V1's rules a row whose
  extracted prediction is not exactly `Not answerable`; under V2's judge a row whose response the
  judge did not read as a decline, or answered correctly (see `judge.py`).
- Breakdowns (accuracy and count), each a function of the row: answer format; evidence source (a
  row counts under each of its labels); document type; single-page / cross-page / unanswerable
  (`BenchRow.page_kinds`, overlapping as in the official code); and, for MMLongBench-Doc-V2, its
  task type and whether the question needs the page images (V2's model-produced labels).
- Percentile bootstrap 95% intervals on accuracy, recall, precision and F1, resampling rows with a
  generator seeded from the recipe seed, so the intervals are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from docthink.core.seeded import uniform
from docthink.evals.data import BenchRow
from docthink.models.tasks import JudgeVerdict

BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True, slots=True)
class Answer:
    """One response to one row, as a metric receives it."""

    row: BenchRow
    mode: str
    response: str | None  # the full response; None when the request failed
    pred: str  # the short answer extracted from it: what V1's rules compare
    failure: str | None  # request or extraction failure
    output_tokens: int | None


@dataclass(frozen=True, slots=True)
class Scored:
    row: BenchRow
    pred: str
    score: float
    output_tokens: int | None = None  # None when unknown (a rescore) or nothing was generated
    failure: str | None = None  # why the row could not be scored (request, extraction, judge); 0
    answered: bool = field(kw_only=True)  # counts in precision's denominator (see above)
    judged: JudgeVerdict | None = field(default=None, kw_only=True)  # the judge's reading, if any


@dataclass(frozen=True, slots=True)
class Group:
    acc: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"acc": self.acc, "n": self.n}


def accuracy(scored: Sequence[Scored]) -> float:
    return sum(s.score for s in scored) / len(scored) if scored else 0.0


def f1_parts(scored: Sequence[Scored]) -> tuple[float, float, float]:
    """(recall, precision, F1) as the official `eval_acc_and_f1`, with the metric's `answered`."""
    answerable = [s for s in scored if not s.row.unanswerable]
    predicted = [s for s in scored if s.answered]
    hits = sum(s.score for s in answerable)
    if not answerable or not predicted:
        return (hits / len(answerable) if answerable else 0.0,
                hits / len(predicted) if predicted else 0.0, 0.0)
    recall, precision = hits / len(answerable), hits / len(predicted)
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    return recall, precision, f1


def _resamples(n: int, seed: int, samples: int) -> np.ndarray:
    rng = np.random.default_rng(int(uniform(seed, "acc", "bootstrap") * 2**63))
    return rng.integers(0, n, size=(samples, n))


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_ci(scores: Sequence[float], seed: int,
                 samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float] | None:
    if not scores:
        return None
    values = np.asarray(scores, dtype=np.float64)
    return _interval(values[_resamples(len(values), seed, samples)].mean(axis=1))


INTERVALS = ("acc", "recall", "precision", "f1")


def bootstrap_intervals(scored: Sequence[Scored], seed: int, samples: int = BOOTSTRAP_SAMPLES
                        ) -> dict[str, tuple[float, float] | None]:
    """95% intervals of acc, recall, precision and F1 over the same resamples of rows (acc's
    equals `bootstrap_ci` of the scores)."""
    if not scored:
        return dict.fromkeys(INTERVALS)
    idx = _resamples(len(scored), seed, samples)
    score = np.asarray([s.score for s in scored], dtype=np.float64)[idx]
    answerable = np.asarray([not s.row.unanswerable for s in scored])[idx]
    answered = np.asarray([s.answered for s in scored])[idx]
    hits = (score * answerable).sum(axis=1)
    n_answerable, n_answered = answerable.sum(axis=1), answered.sum(axis=1)
    recall = np.divide(hits, n_answerable, out=np.zeros_like(hits), where=n_answerable > 0)
    precision = np.divide(hits, n_answered, out=np.zeros_like(hits), where=n_answered > 0)
    total = recall + precision
    f1 = np.divide(2 * recall * precision, total, out=np.zeros_like(hits), where=total > 0)
    values = {"acc": score.mean(axis=1), "recall": recall, "precision": precision, "f1": f1}
    return {name: _interval(values[name]) for name in INTERVALS}


def breakdown(scored: Sequence[Scored],
              labels: Callable[[BenchRow], Iterable[str]]) -> dict[str, Group]:
    groups: dict[str, list[Scored]] = {}
    for s in scored:
        for label in labels(s.row):
            groups.setdefault(label, []).append(s)
    return {label: Group(accuracy(g), len(g)) for label, g in sorted(groups.items())}


def _visual(row: BenchRow) -> tuple[str, ...]:
    if row.requires_visual is None:
        return ()
    return ("needs the images",) if row.requires_visual else ("text suffices",)


# name -> (title, the groups a row counts in)
BREAKDOWNS: dict[str, tuple[str, Callable[[BenchRow], Iterable[str]]]] = {
    "by_page_kind": ("Evidence pages", lambda r: r.page_kinds),
    "by_answer_format": ("Answer format", lambda r: (r.answer_format,)),
    "by_evidence_source": ("Evidence source", lambda r: r.evidence_sources),
    "by_doc_type": ("Document type", lambda r: (r.doc_type,)),
    "by_task_type": ("Task type (V2 labels)",
                     lambda r: () if r.task_type is None else (r.task_type,)),
    "by_requires_visual": ("Needs the page images (V2 labels)", _visual),
}
V1_BREAKDOWNS = ("by_page_kind", "by_answer_format", "by_evidence_source", "by_doc_type")
V2_BREAKDOWNS = (*V1_BREAKDOWNS, "by_task_type", "by_requires_visual")


@dataclass(frozen=True, slots=True)
class ModeMetrics:
    n: int
    acc: float
    f1: float
    recall: float
    precision: float
    answered: int  # precision's denominator
    intervals: dict[str, tuple[float, float] | None]  # acc, recall, precision, f1 -> 95% interval
    mean_output_tokens: float | None
    failures: int  # rows that could not be scored (request, extraction or judge failed): 0
    breakdowns: dict[str, dict[str, Group]]  # breakdown name -> group -> accuracy and count

    @property
    def acc_ci95(self) -> tuple[float, float] | None:
        return self.intervals["acc"]

    def as_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "acc": self.acc,
            "f1": self.f1,
            "recall": self.recall,
            "precision": self.precision,
            "answered": self.answered,
            **{f"{name}_ci95": None if ci is None else list(ci)
               for name, ci in self.intervals.items()},
            "mean_output_tokens": self.mean_output_tokens,
            "failures": self.failures,
            **{name: {k: g.as_dict() for k, g in groups.items()}
               for name, groups in self.breakdowns.items()},
        }


def compute(scored: Sequence[Scored], seed: int,
            breakdowns: Sequence[str] = V1_BREAKDOWNS) -> ModeMetrics:
    recall, precision, f1 = f1_parts(scored)
    tokens = [s.output_tokens for s in scored if s.output_tokens is not None]
    return ModeMetrics(
        n=len(scored),
        acc=accuracy(scored),
        f1=f1,
        recall=recall,
        precision=precision,
        answered=sum(s.answered for s in scored),
        intervals=bootstrap_intervals(scored, seed),
        mean_output_tokens=sum(tokens) / len(tokens) if tokens else None,
        failures=sum(s.failure is not None for s in scored),
        breakdowns={name: breakdown(scored, BREAKDOWNS[name][1]) for name in breakdowns},
    )


# -- as reports print them ------------------------------------------------------------------------


def pct(value: float | None) -> str:
    """A score in percent, one decimal; "-" when there is none."""
    return "-" if value is None else f"{100 * value:.1f}"


def interval(bounds: tuple[float, float] | None) -> str:
    return "-" if bounds is None else f"{pct(bounds[0])} - {pct(bounds[1])}"
