"""An ablation's table: its varied fields against each point's scores, with and without `<cot>`,
mean output tokens, and the difference to the base recipe with a paired bootstrap interval.

Scores come from each point's predictions (one score per question and mode), so the difference
to the base is paired: each bootstrap sample draws the same questions for both (the questions
both answered), and the interval is that of the mean difference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docthink.core.seeded import np_rng
from docthink.runs.registry import Registry

MODES = ("plain", "cot")
MODE_NAMES = {"plain": "without <cot>", "cot": "with <cot>"}
SAMPLES = 2000


@dataclass(frozen=True)
class Cell:
    """One mode of one point: accuracy (percent) with its interval, output tokens, and the
    paired difference to the base (None on the base row, or without shared questions)."""

    n: int
    acc: float
    acc_ci: tuple[float, float]
    tokens: float | None
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class Point:
    values: dict[str, object]
    is_base: bool
    eval_run: str
    cells: dict[str, Cell]


@dataclass(frozen=True)
class AblationTable:
    name: str
    fields: list[str]
    points: list[Point]

    def lines(self) -> list[str]:
        """The table as aligned text (what `docthink sweep` and `leaderboard --ablation` print)."""
        head = [*self.fields]
        for mode in MODES:
            head += [f"acc {MODE_NAMES[mode]}", "vs base", "tokens"]
        rows = [head]
        for p in self.points:
            row = [f"{p.values[f]}" for f in self.fields]
            row[0] += " (base)" if p.is_base else ""
            for mode in MODES:
                c = p.cells.get(mode)
                if c is None:
                    row += ["-", "-", "-"]
                    continue
                row += [f"{c.acc:.1f} [{c.acc_ci[0]:.1f}, {c.acc_ci[1]:.1f}]",
                        "-" if c.diff is None or c.diff_ci is None else
                        f"{c.diff:+.1f} [{c.diff_ci[0]:+.1f}, {c.diff_ci[1]:+.1f}]",
                        "-" if c.tokens is None else f"{c.tokens:.0f}"]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                for r in rows]


def _scores(predictions: Path) -> dict[str, dict[int, tuple[float, int | None]]]:
    """mode -> question index -> (score, output tokens)."""
    out: dict[str, dict[int, tuple[float, int | None]]] = {}
    with predictions.open(encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            out.setdefault(p["mode"], {})[p["index"]] = (float(p["score"]), p["output_tokens"])
    return out


def _interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def mode_cell(scores: dict[int, tuple[float, int | None]], base: dict[int, tuple[float, int | None]]
          | None, seed: int) -> Cell:
    ids = sorted(scores)
    values = np.array([scores[i][0] for i in ids]) * 100
    draw = np_rng(seed, "ablation", "acc").integers(0, len(ids), (SAMPLES, len(ids)))
    tokens = [scores[i][1] for i in ids if scores[i][1] is not None]
    cell = Cell(len(ids), float(values.mean()), _interval(values[draw].mean(axis=1)),
                float(np.mean(tokens)) if tokens else None)
    if base is None:
        return cell
    shared = sorted(scores.keys() & base.keys())
    if not shared:
        return cell
    diff = np.array([scores[i][0] - base[i][0] for i in shared]) * 100
    paired = np_rng(seed, "ablation", "diff").integers(0, len(shared), (SAMPLES, len(shared)))
    return Cell(cell.n, cell.acc, cell.acc_ci, cell.tokens, float(diff.mean()),
                _interval(diff[paired].mean(axis=1)))


def predictions_of(registry: Registry, run_id: str) -> Path:
    paths = [Path(a.path) for a in registry.get(run_id).outputs()
             if a.path.endswith("/predictions.jsonl")]
    if not paths:
        raise LookupError(f"eval run {run_id} recorded no predictions.jsonl")
    return paths[0]


def ablation_table(registry: Registry, name: str, seed: int = 0) -> AblationTable:
    grid, recorded = registry.ablation(name)
    scores = [_scores(predictions_of(registry, run)) for _, _, run in recorded]
    base = next((s for (_, is_base, _), s in zip(recorded, scores, strict=True) if is_base), None)
    points = []
    for (values, is_base, run), mine in zip(recorded, scores, strict=True):
        against = None if is_base or base is None else base
        cells = {mode: mode_cell(mine[mode], None if against is None else against.get(mode), seed)
                 for mode in MODES if mode in mine}
        points.append(Point(values, is_base, run, cells))
    return AblationTable(name, list(grid), points)


def field_means(table: AblationTable, field: str, mode: str) -> list[tuple[str, float]]:
    """Mean accuracy per value of `field` over the points (the others averaged): a plot's bars."""
    by_value: dict[str, list[float]] = {}
    for p in table.points:
        if mode in p.cells:
            by_value.setdefault(str(p.values[field]), []).append(p.cells[mode].acc)
    return [(v, float(np.mean(accs))) for v, accs in by_value.items()]
