"""`docthink leaderboard`: checkpoints ranked by benchmark, with and without `<cot>`, with mean
output tokens and the recipe that made each checkpoint.

A checkpoint is the model an eval run evaluated (its recipe's `model.model`, the folder of a
local `model.path`, or the offline teacher). Its score on a benchmark is that of its latest
successful eval run on it. Its recipe is read from the runs its evals descend from (see
`lineage`): eval -> merge -> train -> export -> synth; a value that differs between ancestors of
the same kind shows them all, joined by ` | `. Its lineage lists those runs in dependency order,
from the data to the checkpoint: each run after every run it used.
"""

from __future__ import annotations

import csv
import heapq
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
# Said where the board is empty (as after `docthink demo`, which makes data, not checkpoints).
EMPTY = ("No checkpoints yet: a row is a model scored by `docthink eval run`, e.g. "
         "`docthink eval run --data samples.json --documents PDF_DIR --out eval` (the offline "
         "teacher), or a recipe with `model: {kind: local, path: CHECKPOINT}` for a trained or "
         "merged one (examples/cpu_loop.sh does both steps). Data runs (ingest, synth, export, "
         "train) show in a row's lineage, not as rows.")
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
    # (run id, kind) in dependency order: from the data to the checkpoint
    lineage: list[tuple[str, str]] = field(default_factory=list)
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

    def _columns(self, rank: int, row: Row) -> dict[str, object]:
        """A row's cells before its lineage."""
        rec: dict[str, object] = {"rank": rank, "checkpoint": row.checkpoint}
        for b in self.benchmarks:
            for label, key in METRICS:
                rec[f"{b} {label}"] = row.value(b, key)
            rec[f"{b} eval run"] = row.scores[b].run_id if b in row.scores else None
        return rec | {name: row.recipe.get(name) for name in RECIPE_NAMES}

    def records(self) -> list[dict[str, object]]:
        """One flat dict per row, its lineage a list of kind:run_id: the JSON export."""
        return [{**self._columns(rank, row), "lineage": _lineage(row)}
                for rank, row in enumerate(self.rows, start=1)]

    def to_json(self) -> str:
        return json.dumps({"benchmarks": self.benchmarks, "ranked_by": list(self.ranked_by),
                           "rows": self.records()}, indent=2)

    def to_csv(self) -> str:
        """The JSON export's records, the lineage joined by ` -> `."""
        records = [{**self._columns(rank, row), "lineage": " -> ".join(_lineage(row))}
                   for rank, row in enumerate(self.rows, start=1)]
        buffer = io.StringIO()
        if not records:
            return ""
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()


def _lineage(row: Row) -> list[str]:
    return [f"{kind}:{run_id}" for run_id, kind in row.lineage]


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


def _ancestors(parents: dict[str, list[Edge]], roots: Sequence[str]) -> list[str]:
    """Every ancestor of `roots` (nearest first)."""
    seen = set(roots)
    order: list[str] = []
    frontier = list(roots)
    while frontier:
        nxt = []
        for run_id in frontier:
            for edge in parents.get(run_id, []):
                if edge.parent not in seen:
                    seen.add(edge.parent)
                    order.append(edge.parent)
                    nxt.append(edge.parent)
        frontier = nxt
    return order


def _dependency_order(ids: list[str], parents: dict[str, list[Edge]],
                      started: dict[str, str]) -> list[str]:
    """`ids` with each run after the runs among them it used (Kahn's algorithm); runs with no
    order between them by start time. A cycle (edges are evidence, not declarations) is broken at
    its earliest run."""
    wanted = set(ids)
    waiting = {r: {e.parent for e in parents.get(r, []) if e.parent in wanted and e.parent != r}
               for r in ids}
    users: dict[str, list[str]] = {}
    for run_id, used in waiting.items():
        for parent in used:
            users.setdefault(parent, []).append(run_id)
    key = {r: (started.get(r, ""), r) for r in ids}  # a recorded parent not in the registry: first
    ready = [key[r] for r, used in waiting.items() if not used]
    heapq.heapify(ready)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(ids):
        if not ready:  # a cycle: take its earliest run
            heapq.heappush(ready, min(key[r] for r in ids if r not in placed))
        _, run_id = heapq.heappop(ready)
        if run_id in placed:
            continue
        placed.add(run_id)
        order.append(run_id)
        for user in users.get(run_id, []):
            waiting[user].discard(run_id)
            if not waiting[user] and user not in placed:
                heapq.heappush(ready, key[user])
    return order


@dataclass(frozen=True)
class MergeOutputs:
    """A merge run's strengths and the output folder of each."""

    alphas: list[float]
    outs: list[str]

    def alpha(self, checkpoint: str) -> str:
        """The strength whose output folder is the checkpoint (outs may be relative); all of
        them when none is."""
        for alpha, out in zip(self.alphas, self.outs, strict=True):
            if checkpoint == out or checkpoint.endswith("/" + str(out).removeprefix("./")):
                return f"{alpha:g}"
        return " | ".join(f"{a:g}" for a in self.alphas)


def _recipe_values(registry: Registry, ids: set[str]
                   ) -> tuple[dict[str, dict[str, object]], dict[str, MergeOutputs]]:
    """run id -> {column name: value} for the recipe columns, read in SQL (no JSON parsing of
    whole recipes in Python); and merge run id -> its outputs, which give a checkpoint's alpha."""
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
    merges = {run_id: MergeOutputs(json.loads(str(v.pop("_alphas"))),
                                   json.loads(str(v.pop("_outs"))))
              for run_id, v in values.items() if v["_kind"] == "merge"}
    return values, merges


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
    lineages: dict[str, list[str]] = {}
    for checkpoint, scored in evals.items():
        row = Row(checkpoint, evals=len(scored))
        for bench, score in sorted(scored, key=lambda s: s[1].started_at):
            row.scores[bench] = score  # the latest wins
        lineages[checkpoint] = _ancestors(parents, [s.run_id for _, s in scored])
        rows.append(row)
    ancestor_ids = {run_id for lineage in lineages.values() for run_id in lineage}
    recipes, merges = _recipe_values(registry, ancestor_ids)
    kinds = _kinds(registry, sorted(ancestor_ids))
    # the checkpoints of one merge share their ancestors: order them and read their recipe once
    shared: dict[frozenset[str], tuple[list[str], dict[str, str]]] = {}
    for row in rows:
        key = frozenset(lineages[row.checkpoint])
        if key not in shared:
            ordered = _dependency_order(lineages[row.checkpoint], parents,
                                        {r: kinds[r][1] for r in key if r in kinds})
            shared[key] = ordered, _recipe([recipes[r] for r in ordered if r in recipes])
        ordered, recipe = shared[key]
        row.lineage = [(r, kinds[r][0] if r in kinds else "?") for r in ordered]
        row.recipe = dict(recipe)
        alphas = [merges[r].alpha(row.checkpoint) for r in ordered if r in merges]
        if alphas:
            row.recipe[ALPHA] = " | ".join(dict.fromkeys(alphas))
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


def _kinds(registry: Registry, ids: list[str]) -> dict[str, tuple[str, str]]:
    """run id -> (kind, started_at), for the runs in this registry."""
    out: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        out |= {r: (k, t) for r, k, t in registry.db.execute(
            f"SELECT id, kind, started_at FROM runs WHERE id IN ({marks})", chunk)}
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
