"""The data card: what a synth run made, as markdown with PNG charts (drawn with Pillow, so the
core install needs no plotting library)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from docthink.synth.pipeline import SynthResult


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], path: Path) -> None:
    width, height, margin = 640, 320, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 10), title, fill="black")
    top = max(values, default=0) or 1
    slot = (width - 2 * margin) / max(len(values), 1)
    base = height - margin
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x0 = margin + i * slot + slot * 0.1
        x1 = margin + (i + 1) * slot - slot * 0.1
        y0 = base - (height - 2 * margin - 20) * value / top
        draw.rectangle((x0, y0, x1, base), fill=(70, 110, 180))
        draw.text((x0, base + 5), label, fill="black")
        draw.text((x0, y0 - 12), f"{value:g}", fill="black")
    draw.line((margin, base, width - margin, base), fill="black")
    image.save(path, optimize=False, compress_level=6)


def count_table(title: str, counts: Mapping[str, int], empty: str) -> list[str]:
    """Markdown rows of `counts` by key, or the sentence `empty` when there is nothing to count."""
    if not counts:
        return [empty]
    rows = [f"| {title} | count |", "|---|---|"]
    return rows + [f"| {key} | {count} |" for key, count in sorted(counts.items())]


def usage_table(usage: dict[str, dict[str, object]], label: str) -> list[str]:
    """Markdown rows of requests and tokens per model (`UsageMeter.as_dict()` values)."""
    rows = [
        f"| {label} | requests | cache hits | failures | prompt tokens | completion tokens |",
        "|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {name} | {u['requests']} | {u['cache_hits']} | {u['failures']} |"
        f" {u['prompt_tokens']} | {u['completion_tokens']} |"
        for name, u in usage.items()
    ]
    return rows


def write_card(
    result: SynthResult, out: Path, *, recipe_hash: str, usage: dict[str, dict[str, object]]
) -> Path:
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
