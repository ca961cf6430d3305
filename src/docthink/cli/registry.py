"""The run registry: runs list/show/diff/lineage/note/tag/verify, leaderboard, search, serve, reproduce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from docthink.cli.common import (
    RegistryOpt,
    RunsDir,
    _registry,
    _say,
    app,
    out_console,
    runs_app,
)
from docthink.core.errors import UserError, needs_extra
from docthink.runs import (
    Registry,
    default_registry_path,
)

if TYPE_CHECKING:
    from docthink.core.embedding import MiniLM


@runs_app.command("list")
def runs_list(
    kind: Annotated[str | None, typer.Option(help="only runs of this kind")] = None,
    status: Annotated[str | None, typer.Option(help="ok, failed, running or interrupted")] = None,
    model: Annotated[
        str | None, typer.Option(help="a recipe field model/base/tuned contains this")
    ] = None,
    where: Annotated[
        list[str] | None, typer.Option(help="recipe field equals, e.g. trace.top_k=16 (repeatable)")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="metric range, e.g. 'acc_cot>=0.4' (repeatable)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="started on or after: 2026-11-01, 7d, 12h")] = None,
    until: Annotated[str | None, typer.Option(help="started before the end of this date/time")] = None,
    tag: Annotated[str | None, typer.Option(help="only runs with this tag")] = None,
    limit: int = 20,
    registry: RegistryOpt = None,
) -> None:
    """Most recent runs first."""
    from docthink.runs.registry import RunFilter, parse_metric, parse_when, parse_where

    run_filter = RunFilter(
        kind=kind, status=status, model=model,
        where=tuple(parse_where(w) for w in where or ()),
        metrics=tuple(parse_metric(m) for m in metric or ()),
        since=None if since is None else parse_when(since, end=False),
        until=None if until is None else parse_when(until, end=True),
        tag=tag,
    )
    table = Table("id", "kind", "status", "started", "tags", "metrics")
    for column in table.columns[:4]:
        column.no_wrap = True
    for record in _registry(registry).find(run_filter, limit=limit):
        metrics = ", ".join(f"{k}={v}" for k, v in record.metrics.items() if not isinstance(v, dict))
        table.add_row(record.id, record.kind, record.status, record.started_at[:19],
                      escape(", ".join(record.tags)), escape(metrics))
    out_console.print(table)


@runs_app.command("show")
def runs_show(run_id: str, registry: RegistryOpt = None) -> None:
    """Everything recorded about one run, as YAML."""
    from docthink.registry.index import skipped_files

    reg = _registry(registry)
    record = reg.get(_run_id(reg, run_id))
    data = {
        **{k: v for k, v in record.__dict__.items()
           if k not in ("artifacts", "parents", "notes", "tags")},
        "parents": list(record.parents),
        "artifacts": [a.__dict__ for a in record.artifacts],
        "tags": list(record.tags),
        "notes": [n.__dict__ for n in record.notes],
        # as of the search index's last update; `runs verify` reads them now
        "search_skipped": [{"path": s.path, "reason": s.reason}
                           for s in skipped_files(reg, [record.id])],
    }
    out_console.print(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False), end="", markup=False)




def _run_id(reg: Registry, prefix: str) -> str:
    try:
        return reg.resolve(prefix)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None


@runs_app.command("diff")
def runs_diff(
    run_a: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    run_b: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    all_fields: Annotated[bool, typer.Option("--all", help="also the fields that are equal")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Two runs' recipes side by side, field by field (dotted keys); equal fields hidden."""
    from docthink.registry.diff import diff_recipes

    reg = _registry(registry)
    a, b = reg.get(_run_id(reg, run_a)), reg.get(_run_id(reg, run_b))
    fields = diff_recipes(a.recipe, b.recipe)
    table = Table("field", a.id, b.id, title=f"{a.kind} vs {b.kind}")
    for meta, va, vb in (("recipe_hash", a.recipe_hash, b.recipe_hash),
                         ("git_commit", a.git_commit, b.git_commit)):
        table.add_row(f"({meta})", escape(str(va)), escape(str(vb)), style="dim")
    shown = [f for f in fields if all_fields or not f.same]
    for f in shown:
        table.add_row(escape(f.key), escape(f.a), escape(f.b), style=None if f.same else "bold")
    out_console.print(table)
    _say(f"{sum(not f.same for f in fields)} of {len(fields)} fields differ")


@runs_app.command("lineage")
def runs_lineage(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    depth: Annotated[int, typer.Option(help="levels up and down")] = 32,
    registry: RegistryOpt = None,
) -> None:
    """Ancestors (what made this run's inputs) and descendants (what used its outputs)."""
    from rich.text import Text
    from rich.tree import Tree

    from docthink.registry.lineage import Node, ancestors, descendants

    reg = _registry(registry)
    root = _run_id(reg, run_id)

    def label(node: Node) -> Text:
        via = "" if node.via is None else f"  <- {node.via}"
        if node.kind is None:
            return Text(f"{node.run_id}  (not in this registry){via}", style="dim")
        seen = "  (shown above)" if node.repeated else ""
        return Text(f"{node.run_id}  {node.kind} {node.status} {str(node.started_at)[:19]}"
                    f"{via}{seen}")

    def tree(node: Node, title: str) -> Tree:
        top = Tree(Text(title, style="bold"))
        stack = [(top.add(label(node)), node)]
        while stack:
            branch, current = stack.pop()
            for child in current.children:
                stack.append((branch.add(label(child)), child))
        return top

    out_console.print(tree(ancestors(reg, root, depth), "ancestors (made its inputs)"))
    out_console.print(tree(descendants(reg, root, depth), "descendants (used its outputs)"))


@runs_app.command("note")
def runs_note(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    text: Annotated[str, typer.Argument(help="the note")],
    author: Annotated[str | None, typer.Option(help="[default: $USER]")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Attach a free-form note to a run (searchable)."""
    import getpass

    reg = _registry(registry)
    rid = _run_id(reg, run_id)
    note_id = reg.add_note(rid, text, author=author or getpass.getuser())
    _say(f"note {note_id} on {rid}")


@runs_app.command("tag")
def runs_tag(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    tags: Annotated[list[str], typer.Argument(help="tags to add")],
    remove: Annotated[bool, typer.Option("--remove", help="remove these tags instead")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Tag a run (filter with `runs list --tag`)."""
    reg = _registry(registry)
    rid = _run_id(reg, run_id)
    if remove:
        reg.remove_tags(rid, tags)
    else:
        reg.add_tags(rid, tags)
    _say(f"{rid}: tags {', '.join(reg.get(rid).tags) or '(none)'}")


@runs_app.command("verify")
def runs_verify(
    run_ids: Annotated[list[str] | None, typer.Argument(help="runs to check [default: all]")] = None,
    kind: Annotated[str | None, typer.Option(help="only runs of this kind")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Re-hash every recorded input and output; list what changed, is missing or cannot be read
    (exit 1 if any); then the data files search cannot read, and why."""
    from collections import Counter

    from docthink.registry.verify import unreadable, verify
    from docthink.runs.registry import RunFilter

    reg = _registry(registry)
    ids = ([_run_id(reg, r) for r in run_ids] if run_ids
           else reg.find_ids(RunFilter(kind=kind), limit=None))
    records = reg.records(ids)
    checks = verify(records)
    bad = [c for c in checks if c.status != "ok"]
    for c in bad:
        now = "" if c.digest is None else f" now {c.digest[:12]} ({c.size} bytes)"
        why = "" if c.reason is None else f" ({c.reason})"
        _say(f"{c.status:10} {c.run_id} {c.artifact.role} {c.artifact.path}{why}: recorded "
             f"{c.artifact.algorithm} {c.artifact.digest[:12]} ({c.artifact.size} bytes){now}")
    gone = {c.artifact.path for c in checks if c.status == "missing"}
    skipped = unreadable(records, gone)
    for s in skipped:
        _say(f"{'no search':10} {s.run_id} {s.path}: {s.reason}")
    counts = Counter(c.status for c in checks)
    _say(f"{len(ids)} runs, {len(checks)} artifacts: {counts['ok']} ok, {counts['changed']} "
         f"changed, {counts['missing']} missing, {counts['unreadable']} unreadable; "
         f"{len({s.path for s in skipped})} data files search cannot read")
    if bad:
        raise typer.Exit(1)


@app.command()
def leaderboard(
    benchmark: Annotated[str | None, typer.Option(help="rank by this benchmark")] = None,
    metric: Annotated[
        str | None, typer.Option(help="acc, acc_cot, mean_output_tokens[_cot] [default: acc_cot]")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="write a static HTML page here")] = None,
    csv: Annotated[Path | None, typer.Option(help="write CSV here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write JSON here")] = None,
    limit: Annotated[int, typer.Option(help="rows printed (files get all)")] = 30,
    ablation: Annotated[
        str | None, typer.Option(help="print this ablation's table (made by `docthink sweep`)")
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Checkpoints ranked by benchmark, with and without <cot>, and the recipe that made each."""
    from docthink.registry.leaderboard import EMPTY, METRICS, build_leaderboard
    from docthink.registry.page import render_static

    if ablation is not None:
        _print_ablation(_registry(registry), ablation)
        return

    try:
        board = build_leaderboard(_registry(registry), benchmark=benchmark, metric=metric)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    for path, text in ((html, render_static(board) if html else ""),
                       (csv, board.to_csv() if csv else ""),
                       (json_out, board.to_json() if json_out else "")):
        if path is not None:
            path.write_text(text, encoding="utf-8")
            _say(f"wrote {path}")
    if not len(board):
        _say(EMPTY)
        return
    head = board.head(limit)
    # The terminal gets the ranked benchmark in full, the others' accuracies and the main recipe
    # columns; the files get every column.
    bench, key = board.ranked_by
    shown = [(bench, label, k) for label, k in METRICS] + [
        (b, label, k) for b in board.benchmarks if b != bench for label, k in METRICS[:2]]
    recipe_cols = [n for n in ("base model", "alpha", "K", "think share", "plain QA ratio")
                   if any(n in r.recipe for r in head)]
    table = Table("#", "checkpoint", title=f"ranked by {bench} {key} (accuracy in %)")
    for b, label, _ in shown:
        table.add_column(f"{b} {label}", justify="right")
    for name in recipe_cols:
        table.add_column(name)
    table.add_column("runs")
    for rank, row in enumerate(head, start=1):
        values = []
        for b, _, k in shown:
            v = row.value(b, k)
            values.append("" if v is None else f"{v:.0f}" if k.startswith("mean")
                          else f"{100 * v:.1f}")
        table.add_row(str(rank), escape(row.checkpoint), *values,
                      *(escape(row.recipe.get(n, "")) for n in recipe_cols),
                      str(len(row.lineage) + len(row.scores)))
    out_console.print(table)
    _say(f"{len(board)} checkpoint{'' if len(board) == 1 else 's'}; lineage of each: `docthink runs lineage EVAL_RUN`, "
         "or the --html page")


def _print_ablation(reg: Registry, name: str) -> None:
    from docthink.registry.ablation import ablation_table

    try:
        table = ablation_table(reg, name)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    _say(f"ablation {name}: accuracy in % [95% bootstrap interval]; vs base: paired difference "
         "on the same questions")
    for line in table.lines():
        typer.echo(line)


@app.command()
def sweep(
    base: Annotated[Path, typer.Argument(help="pipeline recipe: synth, export, train, merge, "
                                         "eval sections")],
    grid: Annotated[list[str], typer.Argument(help="FIELD=V1,V2 ... (trace.top_k=8,16 "
                                              "merge.alpha=0.25,0.5)")],
    name: Annotated[str, typer.Option(help="the ablation's name in the registry")],
    out: Annotated[Path, typer.Option(help="folder for every stage's outputs")] = Path("sweep"),
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """A base recipe and a grid of its fields -> the runs of every point (those done before,
    same recipe hash, are not run again), grouped as one ablation; prints its table."""
    from docthink.stages.sweep import sweep as run_sweep

    results = run_sweep(name, base, grid, out, registry, runs_dir, _say)
    ran = sum(not r.reused for p in results for r in p.runs)
    _say(f"ablation {name}: {len(results)} points, {ran} stage runs made, "
         f"{sum(len(p.runs) for p in results) - ran} found done")
    _print_ablation(_registry(registry), name)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="words, a phrase, or a description")],
    limit: Annotated[int, typer.Option(help="hits shown")] = 10,
    source: Annotated[
        list[str] | None,
        typer.Option(help="only run, note, question, trace, answer or prediction (repeatable)"),
    ] = None,
    semantic: Annotated[bool, typer.Option(help="add embedding similarity to full-text")] = True,
    per_run: Annotated[bool, typer.Option("--per-run", help="best hit per run only")] = False,
    rescan: Annotated[
        bool, typer.Option("--rescan", help="re-check every run's data files, not only new runs")
    ] = False,
    registry: RegistryOpt = None,
) -> None:
    """Search runs, recipes, notes, generated data and eval answers: BM25 and MiniLM, fused."""
    from docthink.registry.index import skipped_files, skipped_line, update_index
    from docthink.registry.search import Searcher, marked

    reg = _registry(registry)
    embedder = _semantic_encoder() if semantic else None
    stats = update_index(reg, embedder, rescan=rescan)
    if stats.runs:
        _say(stats.line())
    skipped = skipped_files(reg)
    if skipped:
        _say(skipped_line(skipped))
    result = Searcher(reg, embedder).search(query, limit=limit * 5 if per_run else limit,
                                            sources=source)
    hits = result.hits
    if per_run:
        firsts = {}
        for h in hits:
            firsts.setdefault(h.run_id, h)
        hits = list(firsts.values())[:limit]
    if not hits:
        _say("no match")
    for n, h in enumerate(hits, start=1):
        ranks = f"bm25 #{h.fts_rank or '-'}, semantic #{h.semantic_rank or '-'}"
        out_console.print(f"{n}. [bold]{escape(h.run_id)}[/bold] {h.source} {escape(h.key)}"
                          f"  [dim]({ranks})[/dim]", highlight=False)
        out_console.print("   " + escape(marked(h.snippet, "\x00", "\x01"))
                          .replace("\x00", "[reverse]").replace("\x01", "[/reverse]"),
                          highlight=False, soft_wrap=True)


def _semantic_encoder() -> MiniLM:
    """MiniLM for search, or one line saying how to get it or do without it."""
    from docthink.core.embedding import EmbeddingUnavailable, minilm, unavailable

    try:
        return minilm()
    except EmbeddingUnavailable:
        raise unavailable("semantic search", "pass --no-semantic for full-text (BM25) search "
                          "only") from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind (other than loopback: on purpose)")] = "127.0.0.1",
    port: int = 8321,
    semantic: Annotated[bool, typer.Option(help="search adds embedding similarity to full-text")] = True,
    registry: RegistryOpt = None,
) -> None:
    """A read-only web UI: leaderboard, run pages (lineage, recipe, artifacts, notes), search."""
    with needs_extra("web", "docthink serve"):
        import uvicorn

        from docthink.registry.web import create_app
    encoder = _semantic_encoder() if semantic else None  # loaded now, not at the first search
    _say(f"serving {registry or default_registry_path()} on http://{host}:{port} (read-only)")
    uvicorn.run(create_app(registry or default_registry_path(), encoder), host=host, port=port,
                log_level="warning")


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    execute: Annotated[bool, typer.Option("--run", help="run it and compare output hashes")] = False,
    out: Annotated[
        Path | None, typer.Option(help="where the rerun's outputs go [default: a new folder under runs/]")
    ] = None,
    cwd: Annotated[
        Path | None, typer.Option(help="the directory the run was started in [default: read "
                                  "from its artifacts]")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """The exact command, recipe and commit of a run; with --run, rerun it and compare hashes."""
    from docthink.registry.reproduce import plan, rerun

    reg = _registry(registry)
    record = reg.get(_run_id(reg, run_id))
    target = out or runs_dir / f"reproduce-{record.id}"
    steps = plan(record, target, cwd)
    if execute:
        steps.require_inputs()
    for line in steps.describe():
        typer.echo(line)
    if not execute:
        return
    outcome = rerun(steps, reg)
    for c in outcome.comparisons:
        typer.echo(f"{c.status:9} {c.recorded.path} {c.recorded.digest[:12]}"
                   + ("" if c.now is None else f" -> {c.now.digest[:12]}"))
    typer.echo(f"rerun {outcome.run_id}: {outcome.summary()}")
    if not outcome.identical:
        raise typer.Exit(1)

