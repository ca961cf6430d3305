"""`docthink leaderboard`: checkpoints ranked by benchmark, with and without `<cot>`, with mean
output tokens and the recipe that made each checkpoint.

A checkpoint is the model an eval run evaluated (its recipe's `model.model`, the folder of a
local `model.path`, or the offline teacher). Its score on a benchmark is that of its latest successful eval run on it. Its recipe is
read from the runs its evals descend from (see `lineage`): eval -> merge -> train -> export ->
synth; a value that differs between ancestors of the same kind shows them all, joined by ` | `.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from docthink.registry.lineage import Edge, all_edges
from docthink.runs.registry import Registry


@dataclass(frozen=True)
class Column:
    name: str
    sources: tuple[tuple[str, str], ...]  # (run kind, JSON path into its recipe), first found wins


# What made a checkpoint, by the kind of run that decides it. `alpha` is the merge strength of
# the checkpoint itself (the merge's output folder the eval's model names).
RECIPE_COLUMNS = (
    Column("base model", (("train", "$.model"), ("merge", "$.base"))),
    Column("finetune", (("train", "$.finetune"),)),
    Column("lr", (("train", "$.learning_rate"),)),
    Column("epochs", (("train", "$.epochs"),)),
    Column("think share", (("train", "$.mixture.think_share"),)),
    Column("traces", (("train", "$.mixture.traces"),)),
    Column("K", (("synth", "$.trace.top_k"),)),
    Column("vision ratio", (("synth", "$.answer.vision_ratio"),)),
    Column("plain QA ratio", (("synth", "$.export.plain_qa_ratio"),)),
    Column("<cot> none", (("synth", "$.export.placement.none"),)),
    Column("evidence model", (("synth", "$.models.evidence.model"),
                              ("synth", "$.models.evidence.kind"))),
    Column("synth seed", (("synth", "$.seed"),)),
)
ALPHA = "alpha"
RECIPE_NAMES = (RECIPE_COLUMNS[0].name, ALPHA, *(c.name for c in RECIPE_COLUMNS[1:]))
METRICS = (("acc", "acc"), ("acc <cot>", "acc_cot"), ("tokens", "mean_output_tokens"),
           ("tokens <cot>", "mean_output_tokens_cot"))


@dataclass(frozen=True)
class Score:
    run_id: str
    started_at: str
    values: dict[str, float | None]  # metric key (acc, acc_cot, ...) -> value


@dataclass
class Row:
    checkpoint: str
    scores: dict[str, Score] = field(default_factory=dict)  # benchmark -> latest score
    recipe: dict[str, str] = field(default_factory=dict)  # column name -> value(s)
    lineage: list[tuple[str, str]] = field(default_factory=list)  # (run id, kind), nearest first
    evals: int = 0

    def value(self, benchmark: str, metric: str) -> float | None:
        score = self.scores.get(benchmark)
        return None if score is None else score.values[metric]


@dataclass
class Leaderboard:
    benchmarks: list[str]
    rows: list[Row]
    ranked_by: tuple[str, str]  # (benchmark, metric key)

    def columns(self) -> list[str]:
        cols = ["rank", "checkpoint"]
        for b in self.benchmarks:
            cols += [f"{b} {label}" for label, _ in METRICS]
        return cols + list(RECIPE_NAMES) + ["lineage"]

    def records(self) -> list[dict[str, object]]:
        """One flat dict per row: the CSV and JSON exports."""
        out = []
        for rank, row in enumerate(self.rows, start=1):
            rec: dict[str, object] = {"rank": rank, "checkpoint": row.checkpoint}
            for b in self.benchmarks:
                for label, key in METRICS:
                    rec[f"{b} {label}"] = row.value(b, key)
                rec[f"{b} eval run"] = row.scores[b].run_id if b in row.scores else None
            rec |= {name: row.recipe.get(name) for name in RECIPE_NAMES}
            rec["lineage"] = [f"{kind}:{run_id}" for run_id, kind in row.lineage]
            out.append(rec)
        return out

    def to_json(self) -> str:
        return json.dumps({"benchmarks": self.benchmarks, "ranked_by": list(self.ranked_by),
                           "rows": self.records()}, indent=2)

    def to_csv(self) -> str:
        records = self.records()
        buffer = io.StringIO()
        if not records:
            return ""
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        for rec in records:
            writer.writerow({**rec, "lineage": " < ".join(rec["lineage"])})  # type: ignore[arg-type]
        return buffer.getvalue()


def _checkpoint(kind: str | None, model: str | None, path: str | None,
                similarity: str | None) -> str:
    if kind == "teacher":
        return f"docthink-teacher/{similarity}"
    if kind == "local":  # a checkpoint folder: train or merge output
        return str(path)
    return str(model)


def _eval_scores(registry: Registry) -> dict[str, list[tuple[str, Score]]]:
    """checkpoint -> [(benchmark, score)] for every successful eval run."""
    out: dict[str, list[tuple[str, Score]]] = {}
    rows = registry.db.execute(
        "SELECT id, started_at, json_extract(recipe, '$.model.kind'),"
        " json_extract(recipe, '$.model.model'), json_extract(recipe, '$.model.path'),"
        " json_extract(recipe, '$.model.similarity'), metrics"
        " FROM runs WHERE kind = 'eval' AND status = 'ok'"
    )
    for run_id, started, kind, model, path, similarity, metrics in rows:
        m = json.loads(metrics)
        score = Score(run_id, started, {key: m.get(key) for _, key in METRICS})
        out.setdefault(_checkpoint(kind, model, path, similarity), []).append((m["benchmark"], score))
    return out


def _ancestors(parents: dict[str, list[Edge]], roots: Sequence[str]) -> list[tuple[str, str]]:
    """(run id, via) of every ancestor of `roots`, nearest first."""
    seen = set(roots)
    order: list[tuple[str, str]] = []
    frontier = list(roots)
    while frontier:
        nxt = []
        for run_id in frontier:
            for edge in parents.get(run_id, []):
                if edge.parent not in seen:
                    seen.add(edge.parent)
                    order.append((edge.parent, edge.via))
                    nxt.append(edge.parent)
        frontier = nxt
    return order


def _recipe_values(registry: Registry, ids: set[str]) -> dict[str, dict[str, object]]:
    """run id -> {column name: value} for the recipe columns, read in SQL (no JSON parsing of
    whole recipes in Python), plus the merge fields that give a checkpoint's alpha."""
    values: dict[str, dict[str, object]] = {}
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for column in RECIPE_COLUMNS:
        for kind, path in column.sources:
            by_kind.setdefault(kind, []).append((column.name, path))
    by_kind.setdefault("merge", []).extend([("_alphas", "$.alphas"), ("_outs", "$.outs")])
    for kind, fields in by_kind.items():
        select = ", ".join(f"json_extract(recipe, '{path}')" for _, path in fields)
        for run_id, *vals in registry.db.execute(f"SELECT id, {select} FROM runs WHERE kind = ?",
                                                 (kind,)):
            if run_id not in ids:
                continue
            mine = values.setdefault(run_id, {"_kind": kind})
            for (name, _), value in zip(fields, vals, strict=True):
                if value is not None and name not in mine:
                    mine[name] = value
    return values


def _alpha(merge: dict[str, object], checkpoint: str) -> str | None:
    """The merge strength whose output folder is the checkpoint (outs may be relative)."""
    if "_parsed" not in merge:
        merge["_parsed"] = (json.loads(str(merge["_alphas"])), json.loads(str(merge["_outs"])))
    alphas, outs = merge["_parsed"]  # type: ignore[misc]
    for alpha, out in zip(alphas, outs, strict=True):
        if checkpoint == out or checkpoint.endswith("/" + str(out).removeprefix("./")):
            return f"{alpha:g}"
    return " | ".join(f"{a:g}" for a in alphas)


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_leaderboard(registry: Registry, *, benchmark: str | None = None,
                      metric: str | None = None) -> Leaderboard:
    """Every checkpoint with a successful eval, ranked by `metric` (acc, acc_cot, ...) on
    `benchmark` (default: the most evaluated benchmark; acc_cot when any row has it, else acc);
    rows without that score come last."""
    evals = _eval_scores(registry)
    parents: dict[str, list[Edge]] = {}
    for edge in all_edges(registry, distinct=False):
        parents.setdefault(edge.child, []).append(edge)
    rows: list[Row] = []
    lineages: dict[str, list[tuple[str, str]]] = {}
    for checkpoint, scored in evals.items():
        row = Row(checkpoint, evals=len(scored))
        for bench, score in sorted(scored, key=lambda s: s[1].started_at):
            row.scores[bench] = score  # the latest wins
        lineages[checkpoint] = _ancestors(parents, [s.run_id for _, s in scored])
        rows.append(row)
    ancestor_ids = {run_id for lineage in lineages.values() for run_id, _ in lineage}
    recipes = _recipe_values(registry, ancestor_ids)
    shared: dict[tuple[str, ...], dict[str, str]] = {}  # checkpoints of one merge share ancestors
    for row in rows:
        row.lineage = [(run_id, str(recipes[run_id]["_kind"]) if run_id in recipes else "")
                       for run_id, _ in lineages[row.checkpoint]]
        found = [recipes[run_id] for run_id, _ in row.lineage if run_id in recipes]
        key = tuple(run_id for run_id, _ in row.lineage)
        if key not in shared:
            shared[key] = _recipe(found)
        row.recipe = dict(shared[key])
        alphas = [_alpha(a, row.checkpoint) for a in found if a["_kind"] == "merge"]
        if alphas:
            row.recipe[ALPHA] = " | ".join(dict.fromkeys(a for a in alphas if a is not None))
    kinds = _kinds(registry, [r for row in rows for r, k in row.lineage if not k])
    for row in rows:
        row.lineage = [(r, k or kinds.get(r, "?")) for r, k in row.lineage]
    counts = Counter(b for row in rows for b in row.scores)
    benchmarks = [b for b, _ in counts.most_common()]
    ranked_by = _ranking(rows, benchmarks, benchmark, metric)
    rows.sort(key=lambda r: _sort_key(r, *ranked_by))
    return Leaderboard(benchmarks, rows, ranked_by)


def _recipe(ancestors: list[dict[str, object]]) -> dict[str, str]:
    """The recipe columns from the ancestors' values; for each column the first kind in its
    sources that has a value gives it (several ancestors of that kind: all their values)."""
    by_kind: dict[str, list[dict[str, object]]] = {}
    for a in ancestors:
        by_kind.setdefault(str(a["_kind"]), []).append(a)
    recipe: dict[str, str] = {}
    for column in RECIPE_COLUMNS:
        for kind in dict.fromkeys(k for k, _ in column.sources):
            found = list(dict.fromkeys(_fmt(a[column.name]) for a in by_kind.get(kind, ())
                                       if column.name in a))
            if found:
                recipe[column.name] = " | ".join(found)
                break
    return recipe


def _kinds(registry: Registry, ids: list[str]) -> dict[str, str]:
    out = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        out |= dict(registry.db.execute(f"SELECT id, kind FROM runs WHERE id IN ({marks})", chunk))
    return out


def _ranking(rows: list[Row], benchmarks: list[str], benchmark: str | None,
             metric: str | None) -> tuple[str, str]:
    if benchmark is not None and benchmark not in benchmarks:
        raise KeyError(f"no eval on benchmark {benchmark!r}; benchmarks: {', '.join(benchmarks)}")
    chosen = benchmark if benchmark is not None else (benchmarks[0] if benchmarks else "")
    keys = [key for _, key in METRICS]
    if metric is not None and metric not in keys:
        raise KeyError(f"no metric {metric!r}; metrics: {', '.join(keys)}")
    if metric is None:
        has_cot = any(r.value(chosen, "acc_cot") is not None for r in rows if chosen in r.scores)
        metric = "acc_cot" if has_cot else "acc"
    return chosen, metric


def _sort_key(row: Row, benchmark: str, metric: str) -> tuple[bool, float, str]:
    value = row.value(benchmark, metric)
    lower_is_better = metric.startswith("mean_output_tokens")
    if value is None:
        return (True, 0.0, row.checkpoint)
    return (False, value if lower_is_better else -value, row.checkpoint)
