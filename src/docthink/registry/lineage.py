"""Lineage: the runs that made a run's inputs (ancestors) and the runs that used its outputs
(descendants): data -> export -> train -> merge -> eval.

An edge says how it is known:
- `recorded`: the command named the parent (the run marker of an input folder);
- `digest`: an input of the child has the digest of an output the parent wrote earlier, by the same
  algorithm (empty files are ignored: every empty file has the same hash);
- `model path`: an eval's model name is the path of a checkpoint folder a run wrote (as when a
  server is started with the checkpoint's path as the model name).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from docthink.runs.registry import Registry

EDGE_ORDER = ("recorded", "digest", "model path")

_EDGES = """
SELECT run_id, parent_id, 'recorded' FROM run_parents WHERE {recorded}
UNION ALL
SELECT i.run_id, o.run_id, 'digest'
FROM artifacts i
JOIN artifacts o ON o.digest = i.digest AND o.algorithm = i.algorithm AND o.role = 'output'
    AND o.run_id != i.run_id
JOIN runs child ON child.id = i.run_id
JOIN runs parent ON parent.id = o.run_id
WHERE i.role = 'input' AND i.size > 0 AND parent.started_at <= child.started_at AND {sha}
UNION ALL
SELECT r.id, a.run_id, 'model path'
FROM runs r JOIN artifacts a ON a.path = json_extract(r.recipe, '$.model.model') AND a.role = 'output'
WHERE r.kind = 'eval' AND a.run_id != r.id AND {model}
"""


@dataclass(frozen=True)
class Edge:
    child: str
    parent: str
    via: str


def _edges_sql(side: str, n: int) -> str:
    """The edge query restricted to `n` runs on the child or parent side."""
    marks = ", ".join("?" for _ in range(n))
    if side == "child":
        where = {"recorded": f"run_id IN ({marks})", "sha": f"i.run_id IN ({marks})",
                 "model": f"r.id IN ({marks})"}
    else:
        where = {"recorded": f"parent_id IN ({marks})", "sha": f"o.run_id IN ({marks})",
                 "model": f"a.run_id IN ({marks})"}
    return _EDGES.format(**where)


def _distinct(rows: Iterable[tuple[str, str, str]]) -> list[Edge]:
    """One edge per (child, parent), the strongest evidence kept."""
    best: dict[tuple[str, str], str] = {}
    for child, parent, via in rows:
        known = best.get((child, parent))
        if known is None or EDGE_ORDER.index(via) < EDGE_ORDER.index(known):
            best[(child, parent)] = via
    return [Edge(c, p, v) for (c, p), v in sorted(best.items())]


def parent_edges(registry: Registry, ids: Sequence[str]) -> list[Edge]:
    if not ids:
        return []
    rows = registry.db.execute(_edges_sql("child", len(ids)), [*ids, *ids, *ids]).fetchall()
    return _distinct(rows)


def child_edges(registry: Registry, ids: Sequence[str]) -> list[Edge]:
    if not ids:
        return []
    rows = registry.db.execute(_edges_sql("parent", len(ids)), [*ids, *ids, *ids]).fetchall()
    return _distinct(rows)


def all_edges(registry: Registry, *, distinct: bool = True) -> list[Edge]:
    """Every edge in the registry, in one query (for the leaderboard's walks, which do not need
    one edge per pair: `distinct=False` skips that step)."""
    rows = registry.db.execute(_EDGES.format(recorded="1", sha="1", model="1")).fetchall()
    return _distinct(rows) if distinct else [Edge(*row) for row in rows]


@dataclass
class Node:
    run_id: str
    via: str | None  # how it is linked to the node above it (None at the root)
    kind: str | None  # None: a parent id recorded but not in this registry
    status: str | None
    started_at: str | None
    children: list[Node] = field(default_factory=list)
    repeated: bool = False  # already shown elsewhere in this tree


def _walk(registry: Registry, root: str, up: bool, depth: int) -> Node:
    """The tree of ancestors (up) or descendants of `root`, breadth first, each run expanded
    once."""
    info = _run_info(registry, [root])
    top = Node(root, None, *info[root])
    frontier = [top]
    seen = {root}
    for _ in range(depth):
        if not frontier:
            break
        ids = [n.run_id for n in frontier]
        edges = parent_edges(registry, ids) if up else child_edges(registry, ids)
        linked = {e.parent if up else e.child for e in edges}
        info |= _run_info(registry, sorted(linked - info.keys()))
        by_id = {n.run_id: n for n in frontier}
        next_frontier = []
        for edge in edges:
            here, there = (edge.child, edge.parent) if up else (edge.parent, edge.child)
            node = Node(there, edge.via, *info[there], repeated=there in seen)
            by_id[here].children.append(node)
            if not node.repeated:
                seen.add(there)
                next_frontier.append(node)
        frontier = next_frontier
    return top


def _run_info(registry: Registry, ids: Sequence[str]) -> dict[str, tuple[str | None, ...]]:
    found: dict[str, tuple[str | None, ...]] = {i: (None, None, None) for i in ids}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for run_id, *rest in registry.db.execute(
            f"SELECT id, kind, status, started_at FROM runs WHERE id IN ({marks})", chunk
        ):
            found[run_id] = tuple(rest)
    return found


def ancestors(registry: Registry, run_id: str, depth: int = 32) -> Node:
    return _walk(registry, run_id, True, depth)


def descendants(registry: Registry, run_id: str, depth: int = 32) -> Node:
    return _walk(registry, run_id, False, depth)


def flatten(node: Node) -> list[Node]:
    """The nodes of a tree, root first, depth first."""
    out = [node]
    for child in node.children:
        out.extend(flatten(child))
    return out
