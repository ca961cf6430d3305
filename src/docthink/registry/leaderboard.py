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
import gc
import heapq
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from docthink.registry.lineage import Edge, all_edges, child_edges, parent_edges
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


class Leaderboard:
    """Rows in rank order. A board read from the registry keeps each row as stored (JSON) and
    parses them when `rows` is first read: the static page embeds the stored rows as they are,
    and the terminal parses only the rows it prints (`head`)."""

    def __init__(self, benchmarks: list[str], rows: list[Row] | None,
                 ranked_by: tuple[str, str], *, stored: list[str] | None = None) -> None:
        assert (rows is None) != (stored is None), "rows or stored rows, not both"
        self.benchmarks, self.ranked_by = benchmarks, ranked_by  # (benchmark, metric key)
        self._rows, self._stored = rows, stored

    def __len__(self) -> int:
        return len(self._rows if self._rows is not None else self._stored)  # type: ignore[arg-type]

    @property
    def rows(self) -> list[Row]:
        if self._rows is None:
            self._rows = self.head(len(self))
        return self._rows

    def head(self, n: int) -> list[Row]:
        """The first `n` rows (only these parsed, for a board not yet parsed)."""
        if self._rows is not None:
            return self._rows[:n]
        with _gc_paused():  # tens of thousands of small containers: no collection in between
            return [_decode(orjson.loads(r)) for r in self._stored[:n]]  # type: ignore[index]

    def stored(self) -> list[str]:
        """Each row's JSON as `leaderboard_checkpoints` keeps it, in rank order."""
        if self._stored is None:
            self._stored = [_encode(r).decode() for r in self.rows]
        return self._stored

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


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _lineage(row: Row) -> list[str]:
    return [f"{kind}:{run_id}" for run_id, kind in row.lineage]


def _checkpoint(kind: str | None, model: str | None, path: str | None,
                similarity: str | None) -> str:
    if kind == "teacher":
        return f"docthink-teacher/{similarity}"
    if kind == "local":  # a checkpoint folder: train or merge output
        return str(path)
    return str(model)


def checkpoint_of(recipe: Mapping[str, object]) -> str:
    """The checkpoint an eval run's recipe evaluated, named as on the board."""
    # a recorded model spec; which of these fields it has depends on its kind
    model = cast(dict[str, str | None], recipe["model"])
    return _checkpoint(model["kind"], model.get("model"), model.get("path"),
                       model.get("similarity"))


# -- the materialised table: one row per successful eval run -------------------------------------
#
# What a board row needs from the lineage (a walk over every ancestor, their recipes) is computed
# once per eval run, when the run is recorded or changes (`run_changes`, read with the cursor
# `board_seq`), and kept in `leaderboard_evals`. A run that changes also recomputes the evals that
# descend from it (a parent recorded late). The same update recomputes the board row of each
# checkpoint whose evals changed (its latest score per benchmark, its lineage and recipe) into
# `leaderboard_checkpoints`, so a board is one read of that table. When the columns below change
# (BOARD_VERSION), or the tables were never filled, every row of both is recomputed.

BOARD_VERSION = "2:" + json.dumps([[c.name, c.sources] for c in RECIPE_COLUMNS] + [METRICS])
BULK = 2000  # changed runs beyond which every row is recomputed in one pass over all edges


@dataclass(frozen=True)
class EvalRow:
    """A successful eval run as the board reads it."""

    run_id: str
    checkpoint: str
    benchmark: str
    started_at: str
    scores: dict[str, float | None]  # metric key -> value
    lineage: list[tuple[str, str]]  # (run id, kind), dependency order
    recipe: dict[str, str]  # column name -> value(s), alpha included


def _state(registry: Registry, key: str) -> str | None:
    row = registry.db.execute("SELECT value FROM search_state WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def update_board(registry: Registry) -> int:
    """Bring `leaderboard_evals` up to date with the change log; the number of eval runs whose row
    was recomputed (or dropped)."""
    after = registry.cursor("board_seq")
    ids, top = registry.changes("board_seq")
    fresh = _state(registry, "board_version") != BOARD_VERSION or _state(registry, "board_seq") is None
    if not ids and not fresh:
        return 0
    if fresh or len(ids) > BULK:
        evals, rows = rows_from_lineage(registry)
    else:
        evals = _affected_evals(registry, ids)
        ok = _ok_evals(registry, evals)
        rows = _rows(registry, [e for e in evals if e in ok], _parents_of(registry, evals))
    with registry.write():
        # another process that updated the table meanwhile read other changes: start again
        moved = registry.cursor("board_seq") != after
        if not moved:
            _store(registry, rows, None if fresh or len(ids) > BULK else evals, top)
    return update_board(registry) if moved else len(evals)


def _store(registry: Registry, rows: list[EvalRow], evals: list[str] | None, top: int) -> None:
    """Replace the rows of `evals` (None: every row) with `rows`, and move the cursor to `top`;
    inside `registry.write()`."""
    db = registry.db
    if evals is None:
        for table in ("leaderboard_evals", "leaderboard_checkpoints", "leaderboard_scores"):
            db.execute(f"DELETE FROM {table}")
    else:
        stale = {c for chunk in _chunks(list(evals)) for (c,) in db.execute(
            "SELECT DISTINCT checkpoint FROM leaderboard_evals WHERE run_id IN"
            f" ({', '.join('?' for _ in chunk)})", chunk)}
        db.executemany("DELETE FROM leaderboard_evals WHERE run_id = ?", [(e,) for e in evals])
    db.executemany(
        "INSERT INTO leaderboard_evals (run_id, checkpoint, benchmark, started_at, scores,"
        " lineage, recipe) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(r.run_id, r.checkpoint, r.benchmark, r.started_at, orjson.dumps(r.scores),
          orjson.dumps(r.lineage), orjson.dumps(r.recipe)) for r in rows])
    # the board rows of the checkpoints these evals belonged to, or belong to now
    if evals is None:
        by_checkpoint = _by_checkpoint(rows)
    else:
        by_checkpoint = {c: stored_rows(registry, c) for c in sorted(stale | {r.checkpoint for r in rows})}
        for table in ("leaderboard_checkpoints", "leaderboard_scores"):
            db.executemany(f"DELETE FROM {table} WHERE checkpoint = ?", [(c,) for c in by_checkpoint])
    board_rows = [checkpoint_row(registry, mine) for mine in by_checkpoint.values() if mine]
    db.executemany("INSERT INTO leaderboard_checkpoints (checkpoint, board_row) VALUES (?, ?)",
                   [(r.checkpoint, _encode(r).decode()) for r in board_rows])
    keys = [key for _, key in METRICS]
    db.executemany(
        f"INSERT INTO leaderboard_scores (checkpoint, benchmark, {', '.join(keys)})"
        f" VALUES (?, ?, {', '.join('?' for _ in keys)})",
        [(r.checkpoint, b, *(s.values.get(k) for k in keys))
         for r in board_rows for b, s in r.scores.items()])
    db.execute("INSERT OR REPLACE INTO search_state (key, value) VALUES ('board_version', ?)",
               (BOARD_VERSION,))
    registry.advance("board_seq", top)


def _encode(row: Row) -> bytes:
    return orjson.dumps({
        "checkpoint": row.checkpoint, "evals": row.evals, "lineage": row.lineage,
        "recipe": row.recipe,
        "scores": {b: [s.run_id, s.started_at, s.values] for b, s in row.scores.items()},
    })


def _decode(data: dict[str, Any]) -> Row:  # one `_encode`d row, parsed
    return Row(data["checkpoint"], {b: Score(*s) for b, s in data["scores"].items()},
               data["recipe"], [(r, k) for r, k in data["lineage"]], data["evals"])


def rows_from_lineage(registry: Registry) -> tuple[list[str], list[EvalRow]]:
    """Every successful eval's row, from one query over all edges."""
    parents: dict[str, list[Edge]] = {}
    for edge in all_edges(registry, distinct=False):
        parents.setdefault(edge.child, []).append(edge)
    evals = [r for (r,) in registry.db.execute(
        "SELECT id FROM runs WHERE kind = 'eval' AND status = 'ok'")]
    return evals, _rows(registry, evals, parents)


def _ok_evals(registry: Registry, ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for chunk in _chunks(list(ids)):
        marks = ", ".join("?" for _ in chunk)
        out |= {r for (r,) in registry.db.execute(
            f"SELECT id FROM runs WHERE id IN ({marks}) AND kind = 'eval' AND status = 'ok'",
            chunk)}
    return out


def _affected_evals(registry: Registry, changed: Sequence[str]) -> list[str]:
    """The changed runs that are evals, and the evals descending from any changed run."""
    kinds = _kinds(registry, list(changed))
    found = [r for r in changed if r in kinds and kinds[r][0] == "eval"]
    seen, frontier = set(changed), list(changed)
    while frontier:
        children = {e.child for e in child_edges(registry, frontier)} - seen
        seen |= children
        frontier = sorted(children)
        child_kinds = _kinds(registry, frontier)
        found += [r for r in frontier if r in child_kinds and child_kinds[r][0] == "eval"]
    return list(dict.fromkeys(found))


def _parents_of(registry: Registry, ids: Sequence[str]) -> dict[str, list[Edge]]:
    """The parent edges of `ids` and of all their ancestors, walked level by level."""
    parents: dict[str, list[Edge]] = {}
    seen, frontier = set(ids), list(ids)
    while frontier:
        edges = parent_edges(registry, frontier)
        for edge in edges:
            parents.setdefault(edge.child, []).append(edge)
        frontier = sorted({e.parent for e in edges} - seen)
        seen |= set(frontier)
    return parents


def _rows(registry: Registry, evals: Sequence[str],
          parents: dict[str, list[Edge]]) -> list[EvalRow]:
    """The rows of these successful eval runs, given the parent edges of all their ancestors."""
    heads: dict[str, tuple[Any, ...]] = {}
    for chunk in _chunks(list(evals)):
        marks = ", ".join("?" for _ in chunk)
        heads |= {r[0]: r for r in registry.db.execute(
            "SELECT id, started_at, json_extract(recipe, '$.model.kind'),"
            " json_extract(recipe, '$.model.model'), json_extract(recipe, '$.model.path'),"
            f" json_extract(recipe, '$.model.similarity'), metrics FROM runs WHERE id IN ({marks})",
            chunk)}
    lineages = {e: _ancestors(parents, [e]) for e in evals}
    ancestor_ids = sorted({r for lineage in lineages.values() for r in lineage})
    recipes = _recipe_values(registry, ancestor_ids)
    kinds = _kinds(registry, ancestor_ids)
    # the evals of one checkpoint share their ancestors: order them and read their recipe once
    shared: dict[frozenset[str], tuple[list[str], dict[str, str]]] = {}
    rows = []
    for run_id in evals:
        _, started, kind, model, path, similarity, metrics = heads[run_id]
        m = orjson.loads(metrics)
        checkpoint = _checkpoint(kind, model, path, similarity)
        key = frozenset(lineages[run_id])
        if key not in shared:
            ordered = _dependency_order(lineages[run_id], parents,
                                        {r: kinds[r][1] for r in key if r in kinds})
            shared[key] = ordered, _recipe([recipes[r] for r in ordered if r in recipes])
        ordered, recipe = shared[key]
        rows.append(EvalRow(run_id, checkpoint, m["benchmark"], started,
                            {key: m.get(key) for _, key in METRICS},
                            [(r, kinds[r][0] if r in kinds else "?") for r in ordered],
                            _with_alpha(recipe, ordered, recipes, checkpoint)))
    return rows


def _with_alpha(recipe: dict[str, str], ordered: list[str],
                recipes: dict[str, dict[str, object]], checkpoint: str) -> dict[str, str]:
    """The recipe columns with the checkpoint's merge strength (from the merges in its lineage)."""
    alphas = [_alpha(recipes[r], checkpoint) for r in ordered
              if r in recipes and recipes[r]["_kind"] == "merge"]
    if not alphas:
        return recipe
    return {**recipe, ALPHA: " | ".join(dict.fromkeys(a for a in alphas if a is not None))}


def _union(registry: Registry, evals: list[EvalRow]) -> tuple[list[tuple[str, str]],
                                                                 dict[str, str]]:
    """The lineage and recipe of a checkpoint whose evals descend from different runs: all their
    ancestors, in dependency order, and the recipe read from them."""
    ids = [r.run_id for r in evals]
    parents = _parents_of(registry, ids)
    union = _ancestors(parents, ids)
    kinds = _kinds(registry, union)
    ordered = _dependency_order(union, parents, {r: kinds[r][1] for r in union if r in kinds})
    recipes = _recipe_values(registry, ordered)
    recipe = _recipe([recipes[r] for r in ordered if r in recipes])
    return ([(r, kinds[r][0] if r in kinds else "?") for r in ordered],
            _with_alpha(recipe, ordered, recipes, evals[0].checkpoint))


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


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


def _recipe_values(registry: Registry, ids: list[str]) -> dict[str, dict[str, object]]:
    """run id -> {column name: value} for the recipe columns, read in SQL (no JSON parsing of
    whole recipes in Python), plus the merge fields that give a checkpoint's alpha."""
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for column in RECIPE_COLUMNS:
        for kind, path in column.sources:
            by_kind.setdefault(kind, []).append((column.name, path))
    by_kind.setdefault("merge", []).extend([("_alphas", "$.alphas"), ("_outs", "$.outs")])
    values: dict[str, dict[str, object]] = {}
    for kind, fields in by_kind.items():
        select = ", ".join(f"json_extract(recipe, '{path}')" for _, path in fields)
        for chunk in _chunks(ids):
            marks = ", ".join("?" for _ in chunk)
            for run_id, *vals in registry.db.execute(
                    f"SELECT id, {select} FROM runs WHERE kind = ? AND id IN ({marks})",
                    [kind, *chunk]):
                mine = values.setdefault(run_id, {"_kind": kind})
                for (name, _), value in zip(fields, vals, strict=True):
                    if value is not None and name not in mine:
                        mine[name] = value
    return values


def _alpha(merge: dict[str, object], checkpoint: str) -> str | None:
    """The merge strength whose output folder is the checkpoint (outs may be relative)."""
    alphas, outs = json.loads(str(merge["_alphas"])), json.loads(str(merge["_outs"]))
    for alpha, out in zip(alphas, outs, strict=True):
        if checkpoint == out or checkpoint.endswith("/" + str(out).removeprefix("./")):
            return f"{alpha:g}"
    return " | ".join(f"{a:g}" for a in alphas)


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
    for chunk in _chunks(ids):
        marks = ", ".join("?" for _ in chunk)
        out |= {r: (k, t) for r, k, t in registry.db.execute(
            f"SELECT id, kind, started_at FROM runs WHERE id IN ({marks})", chunk)}
    return out


# -- the board ------------------------------------------------------------------------------------


def build_leaderboard(registry: Registry, *, benchmark: str | None = None,
                      metric: str | None = None) -> Leaderboard:
    """Every checkpoint with a successful eval, ranked by `metric` (acc, acc_cot, ...) on
    `benchmark` (default: the most evaluated benchmark; acc_cot when any row has it, else acc);
    rows without that score come last. One ranked read of `leaderboard_checkpoints`, brought up
    to date first; the rows are parsed only when read (`Leaderboard.rows`, `head`)."""
    update_board(registry)
    db = registry.db
    counts = dict(db.execute("SELECT benchmark, count(*) FROM leaderboard_scores GROUP BY benchmark"))
    benchmarks = sorted(counts, key=lambda b: (-counts[b], b))  # ties by name
    chosen, key = _ranking(benchmarks, benchmark, metric, lambda b: db.execute(
        "SELECT 1 FROM leaderboard_scores WHERE benchmark = ? AND acc_cot IS NOT NULL LIMIT 1",
        (b,)).fetchone() is not None)
    order = "ASC" if key.startswith("mean_output_tokens") else "DESC"  # `key` is a METRICS name
    stored = [r for (r,) in db.execute(
        "SELECT c.board_row FROM leaderboard_checkpoints c LEFT JOIN leaderboard_scores s"
        f" ON s.benchmark = ? AND s.checkpoint = c.checkpoint"
        f" ORDER BY s.{key} IS NULL, s.{key} {order}, c.checkpoint", (chosen,))]
    return Leaderboard(benchmarks, None, (chosen, key), stored=stored)


def board_from_rows(registry: Registry, rows: Sequence[EvalRow], benchmark: str | None,
                    metric: str | None) -> Leaderboard:
    """The board from eval rows: per checkpoint the latest score on each benchmark, and the
    lineage and recipe its evals share (evals of one checkpoint with different ancestors: their
    union, ordered and read again)."""
    return _ranked([checkpoint_row(registry, evals) for evals in _by_checkpoint(rows).values()],
                   benchmark, metric)


def _by_checkpoint(rows: Sequence[EvalRow]) -> dict[str, list[EvalRow]]:
    grouped: dict[str, list[EvalRow]] = {}
    for r in rows:
        grouped.setdefault(r.checkpoint, []).append(r)
    return grouped


def checkpoint_row(registry: Registry, evals: Sequence[EvalRow]) -> Row:
    """A checkpoint's board row from its eval rows (one or more)."""
    row = Row(evals[0].checkpoint, evals=len(evals))
    for r in sorted(evals, key=lambda r: (r.started_at, r.run_id)):
        row.scores[r.benchmark] = Score(r.run_id, r.started_at, r.scores)  # the latest wins
    first = evals[0]
    if all(r.lineage == first.lineage for r in evals[1:]):
        row.lineage, row.recipe = first.lineage, first.recipe
    else:
        row.lineage, row.recipe = _union(registry, list(evals))
    return row


def _ranked(rows: list[Row], benchmark: str | None, metric: str | None) -> Leaderboard:
    counts = Counter(b for row in rows for b in row.scores)
    benchmarks = sorted(counts, key=lambda b: (-counts[b], b))  # ties by name, not by row order
    ranked_by = _ranking(benchmarks, benchmark, metric, lambda b: any(
        r.value(b, "acc_cot") is not None for r in rows if b in r.scores))
    rows.sort(key=lambda r: _sort_key(r, *ranked_by))
    return Leaderboard(benchmarks, rows, ranked_by)


def stored_rows(registry: Registry, checkpoint: str | None = None) -> list[EvalRow]:
    """The table's rows (of one checkpoint, or all)."""
    sql = ("SELECT run_id, checkpoint, benchmark, started_at, scores, lineage, recipe"
           " FROM leaderboard_evals")
    rows = (registry.db.execute(sql) if checkpoint is None
            else registry.db.execute(sql + " WHERE checkpoint = ?", (checkpoint,)))
    return [EvalRow(run_id, checkpoint, benchmark, started, orjson.loads(scores),
                    [tuple(x) for x in orjson.loads(lineage)], orjson.loads(recipe))
            for run_id, checkpoint, benchmark, started, scores, lineage, recipe in rows]


def _ranking(benchmarks: list[str], benchmark: str | None, metric: str | None,
             has_cot: Callable[[str], bool]) -> tuple[str, str]:
    """(benchmark, metric key) to rank by: the one asked for (checked), else the most evaluated
    benchmark and acc_cot where any checkpoint has it on that benchmark, else acc."""
    if benchmark is not None and benchmark not in benchmarks:
        raise KeyError(f"no eval on benchmark {benchmark!r}; benchmarks: {', '.join(benchmarks)}")
    chosen = benchmark if benchmark is not None else (benchmarks[0] if benchmarks else "")
    keys = [key for _, key in METRICS]
    if metric is not None and metric not in keys:
        raise KeyError(f"no metric {metric!r}; metrics: {', '.join(keys)}")
    if metric is None:
        metric = "acc_cot" if has_cot(chosen) else "acc"
    return chosen, metric


def _sort_key(row: Row, benchmark: str, metric: str) -> tuple[bool, float, str]:
    value = row.value(benchmark, metric)
    lower_is_better = metric.startswith("mean_output_tokens")
    if value is None:
        return (True, 0.0, row.checkpoint)
    return (False, value if lower_is_better else -value, row.checkpoint)
