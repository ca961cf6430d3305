"""An evaluation's report: JSON (everything, per mode), markdown (modes side by side) and a PNG
bar chart drawn with Pillow. The report holds no paths, times or run ids, so an interrupted and
resumed run writes the same report as an uninterrupted one. It names the benchmark, and how it was
scored: V1's rules, or V2's judge with the judge model and the sha256 of its prompt."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from docthink.evals.benchmarks import BenchmarkKind
from docthink.evals.compare import render_comparison
from docthink.evals.data import Benchmark
from docthink.evals.metrics import BREAKDOWNS, Scored, compute


def build_report(
    *,
    kind: BenchmarkKind,
    data: Benchmark,
    scored: Mapping[str, Sequence[Scored]],
    seed: int,
    questions: dict[str, object],
    scoring: dict[str, object],
    model: str | None = None,
    extraction: dict[str, object] | None = None,
    settings: dict[str, object] | None = None,
    comparison: dict[str, object] | None = None,
) -> dict[str, object]:
    """`scored` maps each mode ("plain", "cot") to its scored rows. The top-level acc, f1 and rows
    are the plain mode's (the official protocol) when it was run. `scoring` is the metric's
    record; `comparison` the same predictions under V1's rules (`compare.compare_with_v1`)."""
    metrics = {mode: compute(rows, seed, kind.breakdowns) for mode, rows in scored.items()}
    primary = "plain" if "plain" in scored else next(iter(scored))
    rows = {
        mode: [{"index": s.row.index, "score": s.score} for s in sorted(r, key=lambda s: s.row.index)]
        for mode, r in scored.items()
    }
    labels = None if data.labels is None else {"file": data.labels.name,
                                                "sha256": data.labels_sha256}
    return {
        "benchmark": kind.name,
        "note": kind.note,
        "data": {"file": data.path.name, "sha256": data.sha256, "layout": data.layout,
                 "rows": len(data.rows), "labels": labels},
        "model": model,
        "extraction": extraction,
        "scoring": scoring,
        "breakdowns": list(kind.breakdowns),
        "settings": settings,
        "questions": questions,
        "primary_mode": primary,
        "acc": metrics[primary].acc,
        "f1": metrics[primary].f1,
        "mean_output_tokens": metrics[primary].mean_output_tokens,
        "modes": {mode: {**m.as_dict(), "rows": rows[mode]} for mode, m in metrics.items()},
        "rows": rows[primary],
        "comparison": comparison,
    }


def run_metrics(report: Mapping[str, object]) -> dict[str, object]:
    """Flat scalars for the run record and the leaderboard: acc, f1, ... for the plain mode and
    acc_cot, f1_cot, ... for the cot mode; the judge and its prompt's sha256 when one scored."""
    flat: dict[str, object] = {"benchmark": report["benchmark"]}
    scoring: Mapping[str, object] = report["scoring"]  # type: ignore[assignment]
    if scoring["metric"] == "judge":
        flat |= {"judge": scoring["judge"], "judge_prompt_sha256": scoring["prompt_sha256"]}
    modes: Mapping[str, Mapping[str, object]] = report["modes"]  # type: ignore[assignment]
    for mode, m in modes.items():
        suffix = "" if mode == "plain" else f"_{mode}"
        ci = m["acc_ci95"]
        flat |= {
            f"acc{suffix}": m["acc"],
            f"f1{suffix}": m["f1"],
            f"acc_ci95_low{suffix}": ci[0] if ci else None,  # type: ignore[index]
            f"acc_ci95_high{suffix}": ci[1] if ci else None,  # type: ignore[index]
            f"mean_output_tokens{suffix}": m["mean_output_tokens"],
            f"failures{suffix}": m["failures"],
            f"questions{suffix}": m["n"],
        }
    questions: Mapping[str, object] = report["questions"]  # type: ignore[assignment]
    flat["skipped"] = questions["skipped"]
    return flat


def write_report(report: Mapping[str, object], path: Path) -> list[Path]:
    """`path` (JSON) and, beside it, the markdown and the chart; returns the three paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    markdown, chart = path.with_suffix(".md"), path.with_suffix(".png")
    markdown.write_text(render_markdown(report), encoding="utf-8")
    draw_chart(report, chart)
    return [path, markdown, chart]


# -- markdown -------------------------------------------------------------------------------------


def _pct(value: object) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"  # type: ignore[arg-type]


def questions_summary(questions: Mapping[str, Any]) -> str:
    """`report["questions"]` as a phrase: "292 evaluated, 790 skipped (790 pdf missing)"."""
    why = ", ".join(f"{n} {reason}" for reason, n in questions["skipped_reasons"].items())
    return (f"{questions['evaluated']} evaluated, {questions['skipped']} skipped"
            + (f" ({why})" if why else ""))


def _extraction(record: Mapping[str, object]) -> str:
    """The extraction record as a phrase: rule, or llm (judge ..., prompt ..., ...)."""
    details = ", ".join(f"{key} {value}" for key, value in record.items() if key != "method")
    return f"{record['method']}" + (f" ({details})" if details else "")


def _interval(bounds: object) -> str:
    return "-" if bounds is None else f"{_pct(bounds[0])} - {_pct(bounds[1])}"  # type: ignore[index]


def _scoring(record: Mapping[str, object]) -> str:
    if record["metric"] == "rules":
        return "V1's rules on the extracted answer"
    return (f"LLM judge {record['judge']} on the full response (prompt {record['prompt']}, "
            f"sha256 {str(record['prompt_sha256'])[:16]}, max_tokens {record['max_tokens']})")


def render_markdown(report: Mapping[str, object]) -> str:
    modes: Mapping[str, Mapping[str, object]] = report["modes"]  # type: ignore[assignment]
    names = list(modes)
    data: Mapping[str, object] = report["data"]  # type: ignore[assignment]
    questions: Mapping[str, object] = report["questions"]  # type: ignore[assignment]
    lines = [f"# {report['benchmark']}: {report['model'] or 'rescored predictions'}", ""]
    if report["note"] is not None:
        lines += [f"{report['note']}", ""]
    lines.append(f"- data: {data['file']} (layout {data['layout']}, {data['rows']} rows, sha256 "
                 f"{str(data['sha256'])[:16]})")
    labels: Mapping[str, object] | None = data["labels"]  # type: ignore[assignment]
    if labels is not None:
        lines.append(f"- labels: {labels['file']} (sha256 {str(labels['sha256'])[:16]})")
    lines.append(f"- questions: {questions_summary(questions)}")
    extraction: Mapping[str, object] | None = report["extraction"]  # type: ignore[assignment]
    if extraction is not None:
        lines.append(f"- answer extraction: {_extraction(extraction)}")
    lines.append(f"- scored by: {_scoring(report['scoring'])}")  # type: ignore[arg-type]
    lines += ["", "Scores in percent; 95% bootstrap intervals.", ""]
    lines += [f"| metric | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | {' | '.join(cell(modes[n]) for n in names)} |")

    row("accuracy", lambda m: _pct(m["acc"]))
    row("95% interval", lambda m: _interval(m["acc_ci95"]))
    row("F1 (generalized)", lambda m: _pct(m["f1"]))
    row("F1 95% interval", lambda m: _interval(m["f1_ci95"]))
    row("recall / precision", lambda m: f"{_pct(m['recall'])} / {_pct(m['precision'])}")
    row("recall 95% interval", lambda m: _interval(m["recall_ci95"]))
    row("precision 95% interval", lambda m: _interval(m["precision_ci95"]))
    row("answered (precision's denominator)", lambda m: str(m["answered"]))
    row("mean output tokens",
        lambda m: "-" if m["mean_output_tokens"] is None else f"{m['mean_output_tokens']:.1f}")
    row("failures", lambda m: str(m["failures"]))
    row("questions", lambda m: str(m["n"]))
    for name in report["breakdowns"]:  # type: ignore[attr-defined]
        labels_seen = sorted({label for m in modes.values() for label in m[name]})  # type: ignore[attr-defined]
        lines += ["", f"## {BREAKDOWNS[name][0]}", "",
                  f"| group | n | {' | '.join(names)} |", "|---|---:|" + "---:|" * len(names)]
        for label in labels_seen:
            groups = [m[name].get(label) for m in modes.values()]  # type: ignore[attr-defined]
            n = next(g["n"] for g in groups if g is not None)
            cells = " | ".join("-" if g is None else _pct(g["acc"]) for g in groups)
            lines.append(f"| {label} | {n} | {cells} |")
    if report["comparison"] is not None:
        lines += ["", *render_comparison(report["comparison"])]  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


# -- chart ----------------------------------------------------------------------------------------

_COLOURS = {"plain": (66, 103, 178), "cot": (222, 125, 44)}
_LABEL_W, _BAR_W, _BAR_H, _GAP, _MARGIN = 330, 460, 14, 10, 16


def _chart_rows(modes: Mapping[str, Mapping[str, object]],
                breakdowns: Sequence[str]) -> list[tuple[str, list[float | None]]]:
    rows: list[tuple[str, list[float | None]]] = [
        ("overall", [float(m["acc"]) for m in modes.values()])  # type: ignore[arg-type]
    ]
    for name in breakdowns:
        labels = sorted({label for m in modes.values() for label in m[name]})  # type: ignore[attr-defined]
        rows.append((BREAKDOWNS[name][0], []))
        for label in labels:
            groups = [m[name].get(label) for m in modes.values()]  # type: ignore[attr-defined]
            n = next(g["n"] for g in groups if g is not None)
            rows.append((f"{label} (n={n})", [None if g is None else g["acc"] for g in groups]))
    return rows


def draw_chart(report: Mapping[str, object], path: Path) -> None:
    """Accuracy per group as horizontal bars, one colour per mode."""
    modes: Mapping[str, Mapping[str, object]] = report["modes"]  # type: ignore[assignment]
    rows = _chart_rows(modes, report["breakdowns"])  # type: ignore[arg-type]
    font = ImageFont.load_default(size=12)
    title_font = ImageFont.load_default(size=15)
    header = 56
    heights = [_BAR_H + _GAP if not values else _BAR_H * len(values) + _GAP for _, values in rows]
    width = _MARGIN * 2 + _LABEL_W + _BAR_W + 60
    image = Image.new("RGB", (width, header + sum(heights) + _MARGIN), "white")
    draw = ImageDraw.Draw(image)
    # The embedded default font has ASCII and Latin-1 glyphs only.
    title = f"{report['benchmark']}: {report['model'] or 'rescored predictions'} - accuracy (%)"
    draw.text((_MARGIN, 10), title, fill="black", font=title_font)
    x = _MARGIN
    for mode in modes:
        colour = _COLOURS.get(mode, (120, 120, 120))
        draw.rectangle((x, 36, x + 12, 48), fill=colour)
        draw.text((x + 16, 35), mode, fill="black", font=font)
        x += 90
    left = _MARGIN + _LABEL_W
    y = header
    for (label, values), height in zip(rows, heights, strict=True):
        if not values:
            draw.line((_MARGIN, y - 2, width - _MARGIN, y - 2), fill=(210, 210, 210))
        draw.text((_MARGIN, y), label[:52], fill="black" if not values else (40, 40, 40),
                  font=title_font if not values else font)
        for i, (mode, value) in enumerate(zip(modes, values)):  # a heading row has no values
            top = y + i * _BAR_H
            if value is None:
                continue
            draw.rectangle((left, top + 1, left + round(_BAR_W * value), top + _BAR_H - 2),
                           fill=_COLOURS.get(mode, (120, 120, 120)))
            draw.text((left + round(_BAR_W * value) + 4, top), f"{100 * value:.1f}",
                      fill="black", font=font)
        y += height
    draw.line((left, header - 4, left, y), fill=(160, 160, 160))
    image.save(path, format="PNG", optimize=False)
