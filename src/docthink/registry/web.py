"""`docthink serve`: a read-only web UI over the registry, rendered on the server (FastAPI,
Jinja2 with autoescaping): the leaderboard (at `/` and `/leaderboard`), run pages (lineage,
recipe, artifacts, notes) and search. Only GET routes: no page changes a run, note or tag. Search
brings its index up to date before it answers, as `docthink search` does, and says which data
files it skipped; a run page marks its artifacts that are gone and the files search skipped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from docthink.core.embedding import MiniLM
from docthink.registry.diff import flatten, show
from docthink.registry.index import look, skipped_files, skipped_line, update_index
from docthink.registry.leaderboard import EMPTY, build_leaderboard
from docthink.registry.lineage import ancestors, descendants
from docthink.registry.page import STYLE, TABLE_JS, header_cells, row_cells
from docthink.registry.search import MARK_END, MARK_START, Searcher, VectorCache
from docthink.runs.registry import Registry, RunFilter

SOURCES = ("run", "note", "question", "trace", "answer", "prediction")
FULL_TEXT_ONLY = "full-text (BM25) search only: the server was started with --no-semantic"


def run_href(run_id: str) -> str:
    return f"/runs/{quote(run_id, safe='')}"


def _snippet(text: str) -> Markup:
    """Escape first, then turn the match markers into <mark>."""
    return Markup(str(escape(text)).replace(MARK_START, "<mark>").replace(MARK_END, "</mark>"))


def create_app(registry_path: Path, encoder: MiniLM | None) -> FastAPI:
    """The app over `registry_path`; search is semantic with `encoder` (loaded by the caller, at
    start-up), full-text only without."""
    env = Environment(loader=PackageLoader("docthink.registry", "templates"),
                      autoescape=select_autoescape(["html"]))
    env.globals.update(style=Markup(STYLE), table_js=Markup(TABLE_JS), run_href=run_href)
    app = FastAPI(title="docthink registry", docs_url=None, redoc_url=None, openapi_url=None)
    vectors = VectorCache()

    @contextmanager
    def open_registry() -> Iterator[Registry]:
        # one connection per request: requests run on a thread pool
        registry = Registry(registry_path)
        try:
            yield registry
        finally:
            registry.close()

    def render(name: str, **context: object) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context))

    @app.get("/", response_class=HTMLResponse)
    @app.get("/leaderboard", response_class=HTMLResponse)
    def leaderboard_page(benchmark: str | None = None, metric: str | None = None) -> HTMLResponse:
        with open_registry() as registry:
            try:
                board = build_leaderboard(registry, benchmark=benchmark, metric=metric)
            except KeyError as exc:
                raise HTTPException(404, exc.args[0]) from None
        rows = []
        for rank, row in enumerate(board.rows, start=1):
            latest = max(row.scores.values(), key=lambda s: s.started_at).run_id
            rows.append(Markup(row_cells(board, rank, row, run_href(latest) + "#lineage", run_href)))
        return render("leaderboard.html", board=board, header=Markup(header_cells(board)),
                      rows=rows, empty=EMPTY)

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(kind: str | None = None, tag: str | None = None,
                  limit: int = Query(100, ge=1, le=5000)) -> HTMLResponse:
        with open_registry() as registry:
            records = registry.find(RunFilter(kind=kind, tag=tag), limit=limit)
            kinds = [k for (k,) in registry.db.execute("SELECT DISTINCT kind FROM runs ORDER BY kind")]
        return render("runs.html", records=records, kinds=kinds, kind=kind, tag=tag)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str) -> HTMLResponse:
        with open_registry() as registry:
            try:
                record = registry.get(run_id)
            except KeyError:
                raise HTTPException(404, f"no run {run_id!r}") from None
            up, down = ancestors(registry, run_id), descendants(registry, run_id)
            skipped = skipped_files(registry, [run_id])
        recipe = [(k, show(v)) for k, v in flatten(record.recipe).items()]
        metrics = [(k, show(v)) for k, v in flatten(record.metrics).items()]
        gone = {a.path for a in record.artifacts if look(Path(a.path))[1] == "missing"}
        return render("run.html", r=record, recipe=recipe, metrics=metrics, up=up, down=down,
                      gone=gone, skipped=skipped)

    @app.get("/search", response_class=HTMLResponse)
    def search_page(q: str = "", source: str | None = None,
                    limit: int = Query(20, ge=1, le=200)) -> HTMLResponse:
        hits = []
        skipped = None
        if q:
            with open_registry() as registry:
                update_index(registry, encoder)
                files = skipped_files(registry)
                searcher = Searcher(registry, encoder, vectors=vectors)
                result = searcher.search(q, limit=limit, sources=[source] if source else None)
            hits = [(h, _snippet(h.snippet)) for h in result.hits]
            skipped = skipped_line(files) if files else None
        notice = FULL_TEXT_ONLY if q and encoder is None else None
        return render("search.html", q=q, hits=hits, source=source, sources=SOURCES,
                      notice=notice, skipped=skipped)

    return app
