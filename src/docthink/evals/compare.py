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
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from docthink.evals.benchmarks import rules_scored
from docthink.evals.data import Benchmark, BenchRow, DataError
from docthink.evals.metrics import Answer, Scored, compute
from docthink.evals.scoring import scoreable
from docthink.runs import file_sha256

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


def _metrics(scored: Sequence[Scored], seed: int) -> dict[str, object]:
    computed = compute(scored, seed, breakdowns=()).as_dict()
    return {key: computed[key] for key in METRIC_KEYS}


def _cause(v1: BenchRow, v2: BenchRow) -> str:
    if not scoreable(v1.answer, v1.answer_format):
        return "V1 cannot score its reference"
    if (v1.question, v1.answer, v1.answer_format) != (v2.question, v2.answer, v2.answer_format):
        return "reference corrected in V2"
    return "metric"


def _row_fields(answer: Answer, old: BenchRow | None, v1: Scored | None) -> dict[str, object]:
    row = answer.row
    return {"index": row.index, "v1_index": None if old is None else old.index,
            "mode": answer.mode, "doc_id": row.doc_id, "question": row.question,
            "v1_answer": None if old is None else old.answer,
            "v1_format": None if old is None else old.answer_format,
            "v2_answer": row.answer, "v2_format": row.answer_format, "pred": answer.pred,
            "v1_score": None if v1 is None else v1.score}


def _judge_fields(scored: Scored) -> dict[str, object]:
    judged = scored.judged
    return {"v2_score": scored.score,
            "v2_verdict": None if judged is None else judged.verdict,
            "abstained": None if judged is None else judged.abstained,
            "v2_failure": scored.failure}


def compare_with_v1(pairs: Sequence[tuple[Answer, Scored]], *, v1: Benchmark, v2: Benchmark,
                    seed: int) -> dict[str, object]:
    """`pairs`: V2 predictions and V2's judge's scores of them."""
    counterparts = v1_counterparts(v1, v2)
    sides: dict[str, dict[str, list[Scored]]] = {}
    not_compared: Counter[str] = Counter()
    differ: list[dict[str, object]] = []
    unscoreable: list[dict[str, object]] = []
    for answer, judged in pairs:
        row = answer.row
        found = counterparts[row.index]
        old = found[0] if len(found) == 1 else None
        v1_scored = None if old is None else _rules(old, answer)
        base = _row_fields(answer, old, v1_scored)
        cannot = [name for name, ref in (("V1's reference", old), ("V2's reference", row))
                  if ref is not None and not scoreable(ref.answer, ref.answer_format)]
        if cannot:
            unscoreable.append({**base, "unscoreable": cannot, **_judge_fields(judged)})
        if old is None or v1_scored is None:
            not_compared["no V1 row asks it" if not found else f"{len(found)} V1 rows ask it"] += 1
            continue
        mode = sides.setdefault(answer.mode, {side: [] for side in SIDES})
        mode["v1"].append(v1_scored)
        mode["v1_rules_v2_reference"].append(_rules(row, answer))
        mode["v2"].append(judged)
        if (v1_scored.score > 0) != (judged.score > 0):
            differ.append({**base, **_judge_fields(judged), "cause": _cause(old, row)})
    return {
        "v1_data": {"file": v1.path.name, "sha256": v1.sha256, "rows": len(v1.rows)},
        "corrections": {"file": CORRECTIONS,
                        "sha256": file_sha256(v2.path.parent / CORRECTIONS)},
        "compared": sum(len(m["v2"]) for m in sides.values()),
        "not_compared": dict(sorted(not_compared.items())),
        "modes": {mode: {side: _metrics(rows, seed) for side, rows in by_side.items()}
                  for mode, by_side in sides.items()},
        "differ_by_cause": dict(sorted(Counter(str(d["cause"]) for d in differ).items())),
        "differ": differ,
        "v1_unscoreable": unscoreable,
    }


# -- markdown -------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _pct(value: object) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"  # type: ignore[arg-type]


def _interval(bounds: object) -> str:
    return "-" if bounds is None else f"{_pct(bounds[0])} - {_pct(bounds[1])}"  # type: ignore[index]


def render_comparison(comparison: Mapping[str, object]) -> list[str]:
    v1: Mapping[str, object] = comparison["v1_data"]  # type: ignore[assignment]
    lines = [
        "## V1's rules and V2's judge on the same predictions",
        "",
        f"- V1 data: {v1['file']} ({v1['rows']} rows, sha256 {str(v1['sha256'])[:16]}); rows "
        f"matched on document and question, through V2's {CORRECTIONS} where V2 rewrote it",
        f"- predictions compared: {comparison['compared']}; not compared: "
        f"{json.dumps(comparison['not_compared'])}",
        "",
    ]
    modes: Mapping[str, Mapping[str, Mapping[str, object]]] = comparison["modes"]  # type: ignore[assignment]
    for mode, by_side in modes.items():
        lines += [f"### {mode}", "", f"| metric | {' | '.join(SIDES.values())} |",
                  "|---|" + "---:|" * len(SIDES)]
        for label, cell in (
            ("accuracy", lambda m: _pct(m["acc"])),
            ("95% interval", lambda m: _interval(m["acc_ci95"])),
            ("F1", lambda m: _pct(m["f1"])),
            ("F1 95% interval", lambda m: _interval(m["f1_ci95"])),
            ("recall / precision", lambda m: f"{_pct(m['recall'])} / {_pct(m['precision'])}"),
            ("answered", lambda m: str(m["answered"])),
            ("questions", lambda m: str(m["n"])),
        ):
            lines.append(f"| {label} | {' | '.join(cell(by_side[s]) for s in SIDES)} |")
        lines.append("")
    differ: list[Mapping[str, object]] = comparison["differ"]  # type: ignore[assignment]
    lines += [f"### Rows whose verdicts differ: {len(differ)} "
              f"{json.dumps(comparison['differ_by_cause'])}", ""]
    if differ:
        lines += ["| V2 row | V1 row | mode | question | V1 reference | V2 reference | extracted "
                  "| V1 score | V2 verdict | cause |", "|---:|---:|---|---|---|---|---|---:|---|---|"]
        for d in differ:
            lines.append("| " + " | ".join(_cell(d[k]) for k in (
                "index", "v1_index", "mode", "question", "v1_answer", "v2_answer", "pred",
                "v1_score", "v2_verdict", "cause")) + " |")
        lines.append("")
    unscoreable: list[Mapping[str, object]] = comparison["v1_unscoreable"]  # type: ignore[assignment]
    lines += [f"### Rows V1's rules cannot score: {len(unscoreable)}", ""]
    if unscoreable:
        lines += ["| V2 row | V1 row | mode | question | V1 reference (format) | V2 reference "
                  "(format) | unscoreable | V1 score | V2 verdict | abstained |",
                  "|---:|---:|---|---|---|---|---|---:|---|---|"]
        for u in unscoreable:
            v1_ref = None if u["v1_answer"] is None else f"{u['v1_answer']} ({u['v1_format']})"
            lines.append("| " + " | ".join(_cell(v) for v in (
                u["index"], u["v1_index"], u["mode"], u["question"], v1_ref,
                f"{u['v2_answer']} ({u['v2_format']})", ", ".join(u["unscoreable"]),  # type: ignore[arg-type]
                u["v1_score"], u["v2_verdict"], u["abstained"])) + " |")
    return lines
