"""An evaluation's report: JSON (everything, per mode), markdown (modes side by side) and a PNG
bar chart drawn with Pillow. The report holds no paths, times or run ids, so an interrupted and
resumed run writes the same report as an uninterrupted one. It names the benchmark, and how it was
scored: V1's rules, or V2's judge with the judge model and the sha256 of its prompt.

The report is a typed record (`Report`), built once; `Report.to_json` is the layout of
report.json, which the leaderboard's readers and older report files share."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from docthink.evals.benchmarks import BenchmarkKind, RulesScoring, Scoring
from docthink.evals.compare import Comparison, render_comparison
from docthink.evals.data import Benchmark
from docthink.evals.extract import ExtractionMethod, RuleExtraction
from docthink.evals.judge import JudgeScoring
from docthink.evals.metrics import BREAKDOWNS, ModeMetrics, Scored, compute, interval, pct


@dataclass(frozen=True, slots=True)
class Questions:
    """How many questions were evaluated, and how many skipped, by reason."""

    evaluated: int
    skipped: int
    skipped_reasons: dict[str, int]

    @classmethod
    def of(cls, evaluated: int, skipped: Mapping[int, str]) -> Questions:
        """`skipped`: row index -> why it was skipped."""
        return cls(evaluated, len(skipped), dict(sorted(Counter(skipped.values()).items())))

    def describe(self) -> str:
        """As a phrase: "292 evaluated, 790 skipped (790 pdf missing)"."""
        why = ", ".join(f"{n} {reason}" for reason, n in self.skipped_reasons.items())
        return (f"{self.evaluated} evaluated, {self.skipped} skipped"
                + (f" ({why})" if why else ""))

    def to_json(self) -> dict[str, object]:
        return {"evaluated": self.evaluated, "skipped": self.skipped,
                "skipped_reasons": self.skipped_reasons}


@dataclass(frozen=True, slots=True)
class Labels:
    """The labels file joined into the data (V2's question_types.json)."""

    file: str
    sha256: str


@dataclass(frozen=True, slots=True)
class DataInfo:
    """The benchmark file that was read: name, hash, layout and size."""

    file: str
    sha256: str
    layout: str
    rows: int
    labels: Labels | None

    @classmethod
    def of(cls, data: Benchmark) -> DataInfo:
        labels = None
        if data.labels is not None:
            assert data.labels_sha256 is not None  # the loader sets both or neither
            labels = Labels(data.labels.name, data.labels_sha256)
        return cls(data.path.name, data.sha256, data.layout, len(data.rows), labels)

    def to_json(self) -> dict[str, object]:
        labels = None if self.labels is None else {"file": self.labels.file,
                                                   "sha256": self.labels.sha256}
        return {"file": self.file, "sha256": self.sha256, "layout": self.layout,
                "rows": self.rows, "labels": labels}


@dataclass(frozen=True, slots=True)
class RowScore:
    index: int
    score: float


@dataclass(frozen=True, slots=True)
class Report:
    benchmark: str
    note: str | None
    data: DataInfo
    model: str | None  # None for rescored predictions
    extraction: ExtractionMethod | None  # None for rescored predictions
    scoring: Scoring
    breakdowns: tuple[str, ...]
    settings: dict[str, object] | None  # the recipe's settings that decide the answers (JSON)
    questions: Questions
    primary_mode: str  # plain when it was run (the official protocol)
    modes: dict[str, ModeMetrics]
    scores: dict[str, tuple[RowScore, ...]]  # mode -> each row's score, by row index
    comparison: Comparison | None  # the same predictions under V1's rules

    @property
    def primary(self) -> ModeMetrics:
        return self.modes[self.primary_mode]

    def to_json(self) -> dict[str, object]:
        """The layout of report.json: the primary mode's acc, f1, mean output tokens and rows at
        the top level, every mode's metrics (with its rows) under `modes`."""
        rows = {mode: [{"index": r.index, "score": r.score} for r in scores]
                for mode, scores in self.scores.items()}
        return {
            "benchmark": self.benchmark,
            "note": self.note,
            "data": self.data.to_json(),
            "model": self.model,
            "extraction": None if self.extraction is None else self.extraction.to_json(),
            "scoring": self.scoring.to_json(),
            "breakdowns": list(self.breakdowns),
            "settings": self.settings,
            "questions": self.questions.to_json(),
            "primary_mode": self.primary_mode,
            "acc": self.primary.acc,
            "f1": self.primary.f1,
            "mean_output_tokens": self.primary.mean_output_tokens,
            "modes": {mode: {**m.as_dict(), "rows": rows[mode]} for mode, m in self.modes.items()},
            "rows": rows[self.primary_mode],
            "comparison": None if self.comparison is None else self.comparison.to_json(),
        }


def build_report(
    *,
    kind: BenchmarkKind,
    data: Benchmark,
    scored: Mapping[str, Sequence[Scored]],
    seed: int,
    questions: Questions,
    scoring: Scoring,
    model: str | None = None,
    extraction: ExtractionMethod | None = None,
    settings: dict[str, object] | None = None,
    comparison: Comparison | None = None,
) -> Report:
    """`scored` maps each mode ("plain", "cot") to its scored rows. The top-level acc, f1 and rows
    are the plain mode's (the official protocol) when it was run. `scoring` is the metric's
    record; `comparison` the same predictions under V1's rules (`compare.compare_with_v1`)."""
    return Report(
        benchmark=kind.name,
        note=kind.note,
        data=DataInfo.of(data),
        model=model,
        extraction=extraction,
        scoring=scoring,
        breakdowns=kind.breakdowns,
        settings=settings,
        questions=questions,
        primary_mode="plain" if "plain" in scored else next(iter(scored)),
        modes={mode: compute(rows, seed, kind.breakdowns) for mode, rows in scored.items()},
        scores={mode: tuple(RowScore(s.row.index, s.score)
                            for s in sorted(rows, key=lambda s: s.row.index))
                for mode, rows in scored.items()},
        comparison=comparison,
    )


def run_metrics(report: Report) -> dict[str, object]:
    """Flat scalars for the run record and the leaderboard: acc, f1, ... for the plain mode and
    acc_cot, f1_cot, ... for the cot mode; the judge and its prompt's sha256 when one scored."""
    flat: dict[str, object] = {"benchmark": report.benchmark}
    if isinstance(report.scoring, JudgeScoring):
        judge = report.scoring.judge
        flat |= {"judge": judge.model, "judge_prompt_sha256": judge.prompt_sha256}
    for mode, m in report.modes.items():
        suffix = "" if mode == "plain" else f"_{mode}"
        ci = m.acc_ci95
        flat |= {
            f"acc{suffix}": m.acc,
            f"f1{suffix}": m.f1,
            f"acc_ci95_low{suffix}": ci[0] if ci else None,
            f"acc_ci95_high{suffix}": ci[1] if ci else None,
            f"mean_output_tokens{suffix}": m.mean_output_tokens,
            f"failures{suffix}": m.failures,
            f"questions{suffix}": m.n,
        }
    flat["skipped"] = report.questions.skipped
    return flat


def write_report(report: Report, path: Path) -> list[Path]:
    """`path` (JSON) and, beside it, the markdown and the chart; returns the three paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n",
                    encoding="utf-8")
    markdown, chart = path.with_suffix(".md"), path.with_suffix(".png")
    markdown.write_text(render_markdown(report), encoding="utf-8")
    draw_chart(report, chart)
    return [path, markdown, chart]


# -- markdown -------------------------------------------------------------------------------------


def _extraction(method: ExtractionMethod) -> str:
    """rule, or llm (judge ..., prompt ..., prompt_sha256 ..., max_tokens ...)."""
    if isinstance(method, RuleExtraction):
        return "rule"
    judge = method.judge
    return (f"llm (judge {judge.model}, prompt {judge.prompt}, prompt_sha256 "
            f"{judge.prompt_sha256}, max_tokens {judge.max_tokens})")


def _scoring(scoring: Scoring) -> str:
    if isinstance(scoring, RulesScoring):
        return "V1's rules on the extracted answer"
    judge = scoring.judge
    return (f"LLM judge {judge.model} on the full response (prompt {judge.prompt}, "
            f"sha256 {judge.prompt_sha256[:16]}, max_tokens {judge.max_tokens})")


def _groups(modes: Mapping[str, ModeMetrics], name: str) -> list[tuple[str, int, list[float | None]]]:
    """Breakdown `name` as (group, its size, accuracy per mode: None where a mode has none)."""
    out = []
    for label in sorted({label for m in modes.values() for label in m.breakdowns[name]}):
        groups = [m.breakdowns[name].get(label) for m in modes.values()]
        n = next(g.n for g in groups if g is not None)
        out.append((label, n, [None if g is None else g.acc for g in groups]))
    return out


def render_markdown(report: Report) -> str:
    modes = report.modes
    names = list(modes)
    data = report.data
    lines = [f"# {report.benchmark}: {report.model or 'rescored predictions'}", ""]
    if report.note is not None:
        lines += [f"{report.note}", ""]
    lines.append(f"- data: {data.file} (layout {data.layout}, {data.rows} rows, sha256 "
                 f"{data.sha256[:16]})")
    if data.labels is not None:
        lines.append(f"- labels: {data.labels.file} (sha256 {data.labels.sha256[:16]})")
    lines.append(f"- questions: {report.questions.describe()}")
    if report.extraction is not None:
        lines.append(f"- answer extraction: {_extraction(report.extraction)}")
    lines.append(f"- scored by: {_scoring(report.scoring)}")
    lines += ["", "Scores in percent; 95% bootstrap intervals.", ""]
    lines += [f"| metric | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | {' | '.join(cell(modes[n]) for n in names)} |")

    row("accuracy", lambda m: pct(m.acc))
    row("95% interval", lambda m: interval(m.intervals["acc"]))
    row("F1 (generalized)", lambda m: pct(m.f1))
    row("F1 95% interval", lambda m: interval(m.intervals["f1"]))
    row("recall / precision", lambda m: f"{pct(m.recall)} / {pct(m.precision)}")
    row("recall 95% interval", lambda m: interval(m.intervals["recall"]))
    row("precision 95% interval", lambda m: interval(m.intervals["precision"]))
    row("answered (precision's denominator)", lambda m: str(m.answered))
    row("mean output tokens",
        lambda m: "-" if m.mean_output_tokens is None else f"{m.mean_output_tokens:.1f}")
    row("failures", lambda m: str(m.failures))
    row("questions", lambda m: str(m.n))
    for name in report.breakdowns:
        lines += ["", f"## {BREAKDOWNS[name][0]}", "",
                  f"| group | n | {' | '.join(names)} |", "|---|---:|" + "---:|" * len(names)]
        for label, n, accs in _groups(modes, name):
            lines.append(f"| {label} | {n} | {' | '.join(pct(a) for a in accs)} |")
    if report.comparison is not None:
        lines += ["", *render_comparison(report.comparison)]
    return "\n".join(lines) + "\n"


# -- chart ----------------------------------------------------------------------------------------

_COLOURS = {"plain": (66, 103, 178), "cot": (222, 125, 44)}
_LABEL_W, _BAR_W, _BAR_H, _GAP, _MARGIN = 330, 460, 14, 10, 16


def _chart_rows(modes: Mapping[str, ModeMetrics],
                breakdowns: Sequence[str]) -> list[tuple[str, list[float | None]]]:
    rows: list[tuple[str, list[float | None]]] = [("overall", [m.acc for m in modes.values()])]
    for name in breakdowns:
        rows.append((BREAKDOWNS[name][0], []))
        rows += [(f"{label} (n={n})", accs) for label, n, accs in _groups(modes, name)]
    return rows


def draw_chart(report: Report, path: Path) -> None:
    """Accuracy per group as horizontal bars, one colour per mode."""
    modes = report.modes
    rows = _chart_rows(modes, report.breakdowns)
    font = ImageFont.load_default(size=12)
    title_font = ImageFont.load_default(size=15)
    header = 56
    heights = [_BAR_H + _GAP if not values else _BAR_H * len(values) + _GAP for _, values in rows]
    width = _MARGIN * 2 + _LABEL_W + _BAR_W + 60
    image = Image.new("RGB", (width, header + sum(heights) + _MARGIN), "white")
    draw = ImageDraw.Draw(image)
    # The embedded default font has ASCII and Latin-1 glyphs only.
    title = f"{report.benchmark}: {report.model or 'rescored predictions'} - accuracy (%)"
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
