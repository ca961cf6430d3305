"""The data card: what a synth run made, as markdown with PNG charts (drawn with Pillow, so the
core install needs no plotting library)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from docthink.cards import bar_chart, count_table, usage_table
from docthink.plan.bill import Plan, beside_lines
from docthink.synth.job import SynthSummary


def write_card(summary: SynthSummary, out: Path, *, recipe_hash: str,
               plan: Plan | None = None) -> Path:
    """The card of a run, from the counts added up over its shards (no row is read again, but
    the flagged verdicts listed for review); with the plan `docthink plan synth` left in the
    folder, planned beside actual."""
    counts, usage = summary.counts, summary.usage
    scores: dict[str, int] = summary.card["relevance"]
    bins = [f"{b}-{b + 1}" for b in range(10)]
    bar_chart("relevance score (after source floor)", bins,
              [scores[str(b)] for b in range(10)], out / "card_relevance.png")
    lengths: dict[str, int] = summary.card["trace_pages"]
    keys = sorted(lengths, key=int)
    bar_chart("pages per trace", keys, [lengths[k] for k in keys], out / "card_trace_pages.png")
    placements: dict[str, int] = counts["placements"]
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
        *count_table("stage: reason", counts["dropped"], "Nothing was dropped."),
        "",
        "## Answer branches",
        "",
        *count_table("branch", counts["branches"], "No answers."),
        "",
        "## Answers checked against their reference",
        "",
        *verification_table(counts["verification"], summary.card["verify_methods"], out),
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
        *usage_table(usage, "stage model"),
        "",
        "## Planned beside actual",
        "",
        *(beside_lines(plan, summary.meters(), recipe_hash) if plan is not None else
          ["No plan: `docthink plan synth` with this recipe writes one into the run folder."]),
        "",
    ]
    path = out / "card.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def verification_table(table: dict[str, dict[str, int]], methods: dict[str, int],
                       out: Path) -> list[str]:
    """Per branch: answers verified, matched, and mismatches dropped, flagged or kept; then the
    flagged ones (read from verification.parquet), for review."""
    if not table:
        return ["No answer had a reference answer to check (or verification is off)."]
    lines = [f"Checked by {', '.join(methods)}.", "",
             "| branch | verified | matched | dropped | flagged | kept (mismatch) |",
             "|---|---|---|---|---|---|"]
    for branch, row in table.items():
        lines.append(f"| {branch} | {row['verified']} | {row['matched']} | {row['dropped']} | "
                     f"{row['flagged']} | {row['kept_mismatch']} |")
    if sum(row["flagged"] for row in table.values()):
        flagged = pq.read_table(out / "verification.parquet",
                                columns=["qid", "reference", "pred", "answer"],
                                filters=[("action", "=", "flagged")]).to_pylist()
        lines += ["", "Flagged (kept in the examples):", "",
                  "| qid | reference | answer read as |", "|---|---|---|"]
        lines += [f"| {v['qid']} | {v['reference']} | {v['pred'] or v['answer'][:80]} |"
                  for v in flagged]
    return lines
