"""The data card: what a synth run made, as markdown with PNG charts (drawn with Pillow, so the
core install needs no plotting library)."""

from __future__ import annotations

from pathlib import Path

from docthink.cards import bar_chart, count_table, usage_table
from docthink.synth.job import SynthSummary


def write_card(summary: SynthSummary, out: Path, *, recipe_hash: str) -> Path:
    """The card of a run, from the counts added up over its shards (no row is read again)."""
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
    ]
    path = out / "card.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
