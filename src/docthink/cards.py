"""Pieces of the data cards every data stage writes: markdown tables and PNG bar charts (drawn
with Pillow, so the core install needs no plotting library)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw


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
