"""The data card: what a synth run made, as markdown with PNG charts (drawn with Pillow, so the
core install needs no plotting library)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from docthink.cards import bar_chart, count_table, usage_table
from docthink.models.base import UsageMeter
from docthink.plan.bill import Plan, beside_lines
from docthink.synth.pipeline import SynthResult


def write_card(
    result: SynthResult, out: Path, *, recipe_hash: str, usage: dict[str, UsageMeter],
    plan: Plan | None = None,
) -> Path:
    """The card; with the plan `docthink plan` left in the folder, planned beside actual."""
    counts = result.counts()
    scores = Counter(min(int(e.relevance_score), 9) for e in result.evidence if e.failure is None)
    bins = [f"{b}-{b + 1}" for b in range(10)]
    bar_chart("relevance score (after source floor)", bins, [scores[b] for b in range(10)],
              out / "card_relevance.png")
    lengths = Counter(len(t.positions) for t in result.traces)
    keys = sorted(lengths)
    bar_chart("pages per trace", [str(k) for k in keys], [lengths[k] for k in keys],
              out / "card_trace_pages.png")
    placements = Counter(e.placement for e in result.examples if e.kind == "trace")
    bar_chart("<cot> placement", list(placements), list(placements.values()),
              out / "card_placements.png")
    lines = [
        "# Data card",
        "",
        f"Recipe hash: `{recipe_hash}`",
        "",
        "## Counts per stage",
        "",
        "| stage | rows |",
        "|---|---|",
        f"| questions in | {counts['questions']} |",
        f"| evidence requests | {counts['evidence_requests']} |",
        f"| evidence failures | {counts['evidence_failures']} |",
        f"| traces | {counts['traces']} |",
        f"| answers | {counts['answers']} |",
        f"| SFT examples (trace) | {counts['examples'] - counts['plain_examples']} |",
        f"| SFT examples (plain QA) | {counts['plain_examples']} |",
        "",
        "## Dropped, and why",
        "",
        *count_table("stage: reason", Counter(f"{d.stage}: {d.reason}" for d in result.dropped),
                     "Nothing was dropped."),
        "",
        "## Answer branches",
        "",
        *count_table("branch", Counter(a.branch for a in result.answers if a.failure is None),
                     "No answers."),
        "",
        "## Answers checked against their reference",
        "",
        *verification_table(result),
        "",
        "## Control-token placements",
        "",
        *count_table("placement", placements, "No trace examples."),
        "",
        "![placements](card_placements.png)",
        "",
        "## Relevance scores",
        "",
        "![relevance](card_relevance.png)",
        "",
        "## Pages per trace",
        "",
        "![trace pages](card_trace_pages.png)",
        "",
        "## Tokens spent",
        "",
        *usage_table({name: m.as_dict() for name, m in usage.items()}, "stage model"),
        "",
        "## Planned beside actual",
        "",
        *(beside_lines(plan, usage, recipe_hash) if plan is not None else
          ["No plan: `docthink plan synth` with this recipe writes one into the run folder."]),
        "",
    ]
    path = out / "card.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def verification_table(result: SynthResult) -> list[str]:
    """Per branch: answers verified, matched, and mismatches dropped, flagged or kept; then the
    flagged ones, for review."""
    table = result.verification()
    if not table:
        return ["No answer had a reference answer to check (or verification is off)."]
    method = result.verdicts[0].method
    lines = [f"Checked by {method}.", "",
             "| branch | verified | matched | dropped | flagged | kept (mismatch) |",
             "|---|---|---|---|---|---|"]
    for branch, row in table.items():
        lines.append(f"| {branch} | {row['verified']} | {row['matched']} | {row['dropped']} | "
                     f"{row['flagged']} | {row['kept_mismatch']} |")
    flagged = [v for v in result.verdicts if v.action == "flagged"]
    if flagged:
        lines += ["", "Flagged (kept in the examples):", "",
                  "| qid | reference | answer read as |", "|---|---|---|"]
        lines += [f"| {v.qid} | {v.reference} | {v.pred or v.answer[:80]} |" for v in flagged]
    return lines
