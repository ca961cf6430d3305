"""The same predictions under V1's rules and V2's judge, side by side (`eval rescore --v1-data`).

A V2 row's V1 counterpart asks the same question about the same document: the same text, or the
text V2's corrections diff rewrote (`corrections_diff.json` beside V2's samples.json). Each
prediction gets three scores:
- v1: V1's rules against V1's reference, what V1 reports;
- v1_rules_v2_reference: V1's rules against V2's reference, the string metric on the corrected
  annotations (the gap to v2 is the metric's alone);
- v2: V2's judge against V2's reference.
The three are computed over the rows with exactly one V1 counterpart; the others are counted with
the reason (V1's duplicate question has two).

A row is credited under V1's rules when its score is above 0 (ANLS credits partly above its
threshold), under V2's judge when judged equivalent. The rows whose verdicts differ are listed
with a cause: `V1 cannot score its reference` (it scores below 1 against itself under V1's
rules), `reference corrected in V2` (question, answer or format changed), else `metric` (the same
reference: the string metric and the judge disagree). The rows whose reference, V1's or V2's,
V1's rules cannot score at all are listed with what V2's judge made of them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from docthink.core.hashing import file_digest
from docthink.evals.benchmarks import rules_scored
from docthink.evals.data import Benchmark, BenchRow, DataError
from docthink.evals.metrics import Answer, ModeMetrics, Scored, compute, interval, pct
from docthink.evals.scoring import scoreable

CORRECTIONS = "corrections_diff.json"
SIDES = {"v1": "V1 rules, V1 reference", "v1_rules_v2_reference": "V1 rules, V2 reference",
         "v2": "V2 judge, V2 reference"}
METRIC_KEYS = ("n", "acc", "acc_ci95", "f1", "f1_ci95", "recall", "precision", "answered",
               "failures")


class _Change(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v1: str
    v2: str


class _Correction(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    doc_id: str
    question: _Change | None = None


def question_renames(path: Path) -> dict[tuple[str, str], str]:
    """(doc_id, V2's question) -> V1's question, for the questions V2 rewrote."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (mmlongbench-v2's corrections diff, which maps its "
                        "questions to V1's)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a list of corrections")
    renames = {}
    for number, entry in enumerate(raw):
        try:
            correction = _Correction.model_validate(entry)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise DataError(f"{path}: entry {number}: {where}: {err['msg']}") from None
        if correction.question is not None:
            renames[(correction.doc_id, correction.question.v2)] = correction.question.v1
    return renames


def v1_counterparts(v1: Benchmark, v2: Benchmark) -> dict[int, list[BenchRow]]:
    """V2 row index -> the V1 rows that ask its question (one, or none, or V1's duplicate)."""
    renames = question_renames(v2.path.parent / CORRECTIONS)
    by_key: dict[tuple[str, str], list[BenchRow]] = {}
    for row in v1.rows:
        by_key.setdefault((row.doc_id, row.question), []).append(row)
    counterparts = {}
    for row in v2.rows:
        key = (row.doc_id, row.question)
        asked = (row.doc_id, renames[key]) if key in renames else key
        counterparts[row.index] = by_key.get(asked, [])
    return counterparts


def _rules(row: BenchRow, answer: Answer) -> Scored:
    """V1's rules on this answer against `row`'s reference."""
    return rules_scored(Answer(row, answer.mode, answer.response, answer.pred, answer.failure,
                               answer.output_tokens))


def _cause(v1: BenchRow, v2: BenchRow) -> str:
    if not scoreable(v1.answer, v1.answer_format):
        return "V1 cannot score its reference"
    if (v1.question, v1.answer, v1.answer_format) != (v2.question, v2.answer, v2.answer_format):
        return "reference corrected in V2"
    return "metric"


@dataclass(frozen=True, slots=True)
class ComparedRow:
    """A V2 prediction, its V1 counterpart (None unless exactly one) and V1's rules' score."""

    index: int
    v1_index: int | None
    mode: str
    doc_id: str
    question: str
    v1_answer: str | None
    v1_format: str | None
    v2_answer: str
    v2_format: str
    pred: str
    v1_score: float | None

    @classmethod
    def of(cls, answer: Answer, old: BenchRow | None, v1: Scored | None) -> ComparedRow:
        row = answer.row
        return cls(index=row.index, v1_index=None if old is None else old.index,
                   mode=answer.mode, doc_id=row.doc_id, question=row.question,
                   v1_answer=None if old is None else old.answer,
                   v1_format=None if old is None else old.answer_format,
                   v2_answer=row.answer, v2_format=row.answer_format, pred=answer.pred,
                   v1_score=None if v1 is None else v1.score)

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "v1_index": self.v1_index, "mode": self.mode,
                "doc_id": self.doc_id, "question": self.question, "v1_answer": self.v1_answer,
                "v1_format": self.v1_format, "v2_answer": self.v2_answer,
                "v2_format": self.v2_format, "pred": self.pred, "v1_score": self.v1_score}


@dataclass(frozen=True, slots=True)
class JudgeReading:
    """V2's judge on a prediction: its score, verdict and abstained, or why it could not judge."""

    v2_score: float
    v2_verdict: str | None
    abstained: bool | None
    v2_failure: str | None

    @classmethod
    def of(cls, scored: Scored) -> JudgeReading:
        judged = scored.judged
        return cls(scored.score, None if judged is None else judged.verdict,
                   None if judged is None else judged.abstained, scored.failure)

    def to_json(self) -> dict[str, object]:
        return {"v2_score": self.v2_score, "v2_verdict": self.v2_verdict,
                "abstained": self.abstained, "v2_failure": self.v2_failure}


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A row credited by one of V1's rules and V2's judge and not the other, with the cause."""

    row: ComparedRow
    judged: JudgeReading
    cause: str

    def to_json(self) -> dict[str, object]:
        return {**self.row.to_json(), **self.judged.to_json(), "cause": self.cause}


@dataclass(frozen=True, slots=True)
class Unscoreable:
    """A row whose reference, V1's or V2's or both (named), V1's rules cannot score."""

    row: ComparedRow
    references: tuple[str, ...]
    judged: JudgeReading

    def to_json(self) -> dict[str, object]:
        return {**self.row.to_json(), "unscoreable": list(self.references),
                **self.judged.to_json()}


@dataclass(frozen=True, slots=True)
class Comparison:
    """The same predictions under V1's rules and V2's judge, side by side (the module's
    docstring says how rows are matched and what each side means)."""

    v1_file: str
    v1_sha256: str
    v1_rows: int
    corrections_sha256: str  # of V2's corrections_diff.json
    not_compared: dict[str, int]  # why -> rows
    modes: dict[str, dict[str, ModeMetrics]]  # mode -> side (SIDES) -> metrics
    differ: tuple[Disagreement, ...]
    v1_unscoreable: tuple[Unscoreable, ...]

    @property
    def compared(self) -> int:
        return sum(sides["v2"].n for sides in self.modes.values())

    @property
    def differ_by_cause(self) -> dict[str, int]:
        return dict(sorted(Counter(d.cause for d in self.differ).items()))

    def to_json(self) -> dict[str, object]:
        return {
            "v1_data": {"file": self.v1_file, "sha256": self.v1_sha256, "rows": self.v1_rows},
            "corrections": {"file": CORRECTIONS, "sha256": self.corrections_sha256},
            "compared": self.compared,
            "not_compared": self.not_compared,
            "modes": {mode: {side: _metrics_json(m) for side, m in sides.items()}
                      for mode, sides in self.modes.items()},
            "differ_by_cause": self.differ_by_cause,
            "differ": [d.to_json() for d in self.differ],
            "v1_unscoreable": [u.to_json() for u in self.v1_unscoreable],
        }


def _metrics_json(metrics: ModeMetrics) -> dict[str, object]:
    computed = metrics.as_dict()
    return {key: computed[key] for key in METRIC_KEYS}


def compare_with_v1(pairs: Sequence[tuple[Answer, Scored]], *, v1: Benchmark, v2: Benchmark,
                    seed: int) -> Comparison:
    """`pairs`: V2 predictions and V2's judge's scores of them."""
    counterparts = v1_counterparts(v1, v2)
    sides: dict[str, dict[str, list[Scored]]] = {}
    not_compared: Counter[str] = Counter()
    differ: list[Disagreement] = []
    unscoreable: list[Unscoreable] = []
    for answer, judged in pairs:
        row = answer.row
        found = counterparts[row.index]
        old = found[0] if len(found) == 1 else None
        v1_scored = None if old is None else _rules(old, answer)
        base = ComparedRow.of(answer, old, v1_scored)
        cannot = tuple(name for name, ref in (("V1's reference", old), ("V2's reference", row))
                       if ref is not None and not scoreable(ref.answer, ref.answer_format))
        if cannot:
            unscoreable.append(Unscoreable(base, cannot, JudgeReading.of(judged)))
        if old is None or v1_scored is None:
            not_compared["no V1 row asks it" if not found else f"{len(found)} V1 rows ask it"] += 1
            continue
        mode = sides.setdefault(answer.mode, {side: [] for side in SIDES})
        mode["v1"].append(v1_scored)
        mode["v1_rules_v2_reference"].append(_rules(row, answer))
        mode["v2"].append(judged)
        if (v1_scored.score > 0) != (judged.score > 0):
            differ.append(Disagreement(base, JudgeReading.of(judged), _cause(old, row)))
    return Comparison(
        v1_file=v1.path.name,
        v1_sha256=v1.sha256,
        v1_rows=len(v1.rows),
        corrections_sha256=file_digest(v2.path.parent / CORRECTIONS, "sha256"),
        not_compared=dict(sorted(not_compared.items())),
        modes={mode: {side: compute(rows, seed, breakdowns=()) for side, rows in by_side.items()}
               for mode, by_side in sides.items()},
        differ=tuple(differ),
        v1_unscoreable=tuple(unscoreable),
    )


# -- markdown -------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_comparison(comparison: Comparison) -> list[str]:
    lines = [
        "## V1's rules and V2's judge on the same predictions",
        "",
        (f"- V1 data: {comparison.v1_file} ({comparison.v1_rows} rows, sha256 "
        f"{comparison.v1_sha256[:16]}); rows matched on document and question, through V2's "
        f"{CORRECTIONS} where V2 rewrote it"),
        (f"- predictions compared: {comparison.compared}; not compared: "
        f"{json.dumps(comparison.not_compared)}"),
        "",
    ]
    for mode, by_side in comparison.modes.items():
        lines += [f"### {mode}", "", f"| metric | {' | '.join(SIDES.values())} |",
                  "|---|" + "---:|" * len(SIDES)]
        cells: tuple[tuple[str, Callable[[ModeMetrics], str]], ...] = (
            ("accuracy", lambda m: pct(m.acc)),
            ("95% interval", lambda m: interval(m.intervals["acc"])),
            ("F1", lambda m: pct(m.f1)),
            ("F1 95% interval", lambda m: interval(m.intervals["f1"])),
            ("recall / precision", lambda m: f"{pct(m.recall)} / {pct(m.precision)}"),
            ("answered", lambda m: str(m.answered)),
            ("questions", lambda m: str(m.n)),
        )
        for label, cell in cells:
            lines.append(f"| {label} | {' | '.join(cell(by_side[s]) for s in SIDES)} |")
        lines.append("")
    differ = comparison.differ
    lines += [(f"### Rows whose verdicts differ: {len(differ)} "
              f"{json.dumps(comparison.differ_by_cause)}"), ""]
    if differ:
        lines += [("| V2 row | V1 row | mode | question | V1 reference | V2 reference | extracted "
                  "| V1 score | V2 verdict | cause |"), "|---:|---:|---|---|---|---|---|---:|---|---|"]
        for d in differ:
            r = d.row
            lines.append("| " + " | ".join(_cell(v) for v in (
                r.index, r.v1_index, r.mode, r.question, r.v1_answer, r.v2_answer, r.pred,
                r.v1_score, d.judged.v2_verdict, d.cause)) + " |")
        lines.append("")
    unscoreable = comparison.v1_unscoreable
    lines += [f"### Rows V1's rules cannot score: {len(unscoreable)}", ""]
    if unscoreable:
        lines += [("| V2 row | V1 row | mode | question | V1 reference (format) | V2 reference "
                  "(format) | unscoreable | V1 score | V2 verdict | abstained |"),
                  "|---:|---:|---|---|---|---|---|---:|---|---|"]
        for u in unscoreable:
            r = u.row
            v1_ref = None if r.v1_answer is None else f"{r.v1_answer} ({r.v1_format})"
            lines.append("| " + " | ".join(_cell(v) for v in (
                r.index, r.v1_index, r.mode, r.question, v1_ref,
                f"{r.v2_answer} ({r.v2_format})", ", ".join(u.references),
                r.v1_score, u.judged.v2_verdict, u.judged.abstained)) + " |")
    return lines
