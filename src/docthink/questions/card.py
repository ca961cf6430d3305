"""Data cards of `docthink questions` and `docthink tasks`: counts, what was dropped and why, and
the context length distribution of each mixture component against the recipe's range."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from docthink.cards import bar_chart, count_table, usage_table
from docthink.plan.bill import Plan, beside_lines
from docthink.questions.job import QuestionsSummary
from docthink.questions.recipe import ContextSettings
from docthink.questions.tasks import TasksResult

BINS = 8


def length_bins(lengths: Sequence[int], low: int, high: int) -> tuple[list[str], list[int]]:
    """Histogram of `lengths` over [low, high] in at most `BINS` equal integer bins."""
    width = max(1, -(-(high - low + 1) // BINS))
    edges = list(range(low, high + 1, width))
    labels = [f"{e}-{min(e + width - 1, high)}" if width > 1 else str(e) for e in edges]
    counts = [sum(e <= n <= e + width - 1 for n in lengths) for e in edges]
    return labels, counts


def context_section(
    lengths: dict[str, list[int]], settings: ContextSettings, out: Path
) -> list[str]:
    """Per component: requested weight vs share, length range vs observed, a histogram."""
    total = sum(len(v) for v in lengths.values()) or 1
    weight_sum = sum(c.weight for c in settings.components().values())
    lines = [
        ("| component | weight share | observed share | pages range (recipe) | observed min | "
        "median | max | questions |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    charts = []
    for name, component in settings.components().items():
        observed = lengths.get(name, [])
        stats = (
            (min(observed), f"{statistics.median(observed):g}", max(observed)) if observed
            else ("-",) * 3
        )
        lines.append(
            f"| {name} | {component.weight / weight_sum:.2f} | {len(observed) / total:.2f} |"
            f" {component.pages[0]}-{component.pages[1]} | {stats[0]} | {stats[1]} | {stats[2]} |"
            f" {len(observed)} |"
        )
        labels, counts = length_bins(observed, *component.pages)
        chart = f"card_context_{name}.png"
        bar_chart(f"context pages: {name} (recipe {component.pages[0]}-{component.pages[1]})",
                  labels, counts, out / chart)
        charts.append(f"![{name}]({chart})")
    return [*lines, "", *charts]


def write_questions_card(
    summary: QuestionsSummary,
    settings: ContextSettings,
    out: Path,
    *,
    recipe_hash: str,
    plan: Plan | None = None,
) -> Path:
    """The card of a run, from the counts added up over its shards (no row is read again); with
    the plan `docthink plan questions` left in the folder, planned beside actual."""
    counts, totals, result, usage = summary.counts, summary.card, summary.indexed, summary.usage
    lengths = {kind: [int(n) for n, times in sorted(by_length.items(), key=lambda kv: int(kv[0]))
                      for _ in range(times)]
               for kind, by_length in totals["context_pages"].items()}
    gap = result.gap.as_dict()
    lines = [
        "# Data card: questions and long contexts",
        "",
        f"Recipe hash: `{recipe_hash}`. Writer: `{result.writer}`. Judge: `{result.judge}`.",
        "",
        "## Index",
        "",
        (f"- embedder `{result.index.embedder}`: {counts['indexed_pages']} pages indexed, "
        f"{counts['pages_embedded']} embedded in this run, {counts['textless_pages']} without "
        f"a text layer (left out), {counts['excluded_documents']} documents excluded"),
        (f"- hard negatives vs random other-document pages (top {gap['top_k']}, "
        f"{gap['pages']} pages): mean cosine {gap['hard_mean']} vs {gap['random_mean']}, "
        f"gap {gap['gap']}"),
        "",
        "## Questions",
        "",
        *count_table("kind", totals["by_kind"], "No questions."),
        "",
        *count_table("question type", totals["by_question_type"], ""),
        "",
        *count_table("answer format", totals["by_answer_format"], ""),
        "",
        *count_table("generator", totals["by_generator"], ""),
        "",
        "## Dropped, and why",
        "",
        *count_table("stage: reason", totals["dropped"], "Nothing was dropped."),
        "",
        (f"Judge requests: {counts['judge_requests']}; questions rejected by the judge: "
        f"{counts['judge_rejected']}."),
        "",
        "## Context length per mixture component",
        "",
        *context_section(lengths, settings, out),
        "",
        "## Requests",
        "",
        *usage_table(usage, "model"),
        "",
        "## Planned beside actual",
        "",
        *(beside_lines(plan, summary.meters(), recipe_hash) if plan is not None else
          ["No plan: `docthink plan questions` with this recipe writes one into the run folder."]),
        "",
    ]
    path = out / "card.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _offsets(printed: dict[int, int]) -> str:
    """The distinct (printed - physical) page number offsets of a document, as text."""
    return ", ".join(str(o) for o in sorted({shown - page for page, shown in printed.items()}))


def write_tasks_card(
    result: TasksResult, out: Path, *, recipe_hash: str, exports: dict[str, dict[str, int]]
) -> Path:
    counts = result.counts()
    lengths: dict[str, list[int]] = {}
    for row in result.rows:
        lengths.setdefault(row.task, []).append(len(row.context))
    charts = []
    for task, observed in sorted(lengths.items()):
        labels, values = length_bins(observed, min(observed), max(observed))
        bar_chart(f"pages shown: {task}", labels, values, out / f"card_task_{task}.png")
        charts.append(f"![{task}](card_task_{task}.png)")
    printed_docs = {d: p for d, p in result.printed.items() if p}
    lines = [
        "# Data card: model-free tasks",
        "",
        f"Recipe hash: `{recipe_hash}`.",
        "",
        "## Tasks",
        "",
        *count_table("task", Counter(r.task for r in result.rows), "No tasks."),
        "",
        "## Dropped, and why",
        "",
        *count_table("task: reason", Counter(f"{d.stage}: {d.reason}" for d in result.dropped),
                     "Nothing was dropped."),
        "",
        "## Printed page numbers (they give the unshuffle answer away)",
        "",
        (f"{counts['pages_with_printed_page_numbers']} pages of "
        f"{counts['documents_with_printed_page_numbers']} documents print their page number; "
        f"{counts['unshuffle_with_printed_page_numbers']} unshuffle tasks show such pages "
        "(listed in printed_page_numbers.jsonl, flagged in each task's meta)."),
        "",
        "| document | pages with a printed number | offset (printed - physical) |",
        "|---|---|---|",
        *[
            f"| {doc} | {len(pages)} | {_offsets(pages)} |"
            for doc, pages in sorted(printed_docs.items())
        ],
        "",
        "## Pages shown per task",
        "",
        *charts,
        "",
        "## Exports",
        "",
        *[f"- {fmt}: {c['examples']} examples, {c['images']} images" for fmt, c in exports.items()],
        "",
    ]
    path = out / "card.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
