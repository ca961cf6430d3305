"""`docthink serve`: a read-only web UI over the registry, rendered on the server (FastAPI,
Jinja2 with autoescaping): the leaderboard (at `/` and `/leaderboard`), run pages (lineage,
recipe, artifacts, notes) and search. Only GET routes: no page changes a run, note or tag. Search
brings its index up to date before it answers, as `docthink search` does, and says which data
files it skipped; a run page marks its artifacts that are gone and the files search skipped.

The data explorer (`registry/explorer.py`): a synth run's examples as a filtered, paged list and
one page per example (its pages as the model saw them, scores, evidence, trace, answer); an eval
question's answers by every checkpoint, and two eval runs side by side where they disagree."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from docthink.core.embedding import MiniLM
from docthink.registry.ablation import MODE_NAMES, MODES, ablation_table, field_means
from docthink.registry.diff import flatten, show
from docthink.registry.explorer import (
    PER_PAGE,
    ExampleFilter,
    ExampleIndex,
    Indexes,
    disagreements,
    eval_predictions,
)
from docthink.registry.index import look, skipped_files, skipped_line, update_index
from docthink.registry.leaderboard import EMPTY, build_leaderboard
from docthink.registry.lineage import ancestors, descendants
from docthink.registry.page import STYLE, TABLE_JS, board_table
from docthink.registry.search import MARK_END, MARK_START, Searcher, VectorCache
from docthink.runs.registry import Registry, RunFilter, RunRecord

SOURCES = ("run", "note", "question", "trace", "answer", "prediction")
FULL_TEXT_ONLY = "full-text (BM25) search only: the server was started with --no-semantic"


def run_href(run_id: str) -> str:
    return f"/runs/{quote(run_id, safe='')}"


def example_href(run_id: str, qid: str) -> str:
    return f"{run_href(run_id)}/examples/{quote(qid, safe='')}"


def question_href(benchmark: str, index: int) -> str:
    return f"/evals/{quote(benchmark, safe='')}/{index}"


IMAGE_NAME = re.compile(r"^[0-9a-f]{64}\.(png|jpg)$")


def _float(text: str | None, name: str) -> float | None:
    """A number from a form field; empty means not given."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise HTTPException(422, f"{name}: not a number: {text!r}") from None


def _int(text: str | None, name: str) -> int | None:
    number = _float(text, name)
    return None if number is None else int(number)


def hit_href(hit_source: str, run_id: str, key: str, benchmark: str | None) -> str:
    """Where a search hit leads: its example or eval question when it is a data row."""
    if hit_source in ("question", "trace"):
        return example_href(run_id, key)
    if hit_source == "answer":
        return example_href(run_id, key.rsplit("/", 1)[0])
    if hit_source == "prediction" and benchmark is not None:
        return question_href(benchmark, int(key.split("/", 1)[0]))
    return run_href(run_id)


def _snippet(text: str) -> Markup:
    """Escape first, then turn the match markers into <mark>."""
    return Markup(str(escape(text)).replace(MARK_START, "<mark>").replace(MARK_END, "</mark>"))


def create_app(registry_path: Path, encoder: MiniLM | None) -> FastAPI:
    """The app over `registry_path`; search is semantic with `encoder` (loaded by the caller, at
    start-up), full-text only without."""
    env = Environment(loader=PackageLoader("docthink.registry", "templates"),
                      autoescape=select_autoescape(["html"]))
    env.globals.update(style=Markup(STYLE), table_js=Markup(TABLE_JS), run_href=run_href,
                       example_href=example_href, question_href=question_href)
    app = FastAPI(title="docthink registry", docs_url=None, redoc_url=None, openapi_url=None)
    vectors = VectorCache()
    indexes = Indexes()

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
            ablations = registry.ablations()
        return render("leaderboard.html", board=board, count=len(board),
                      table=Markup(board_table(board, runs=run_href(""))), empty=EMPTY,
                      ablations=ablations)

    @app.get("/ablations/{name}", response_class=HTMLResponse)
    def ablation_page(name: str) -> HTMLResponse:
        with open_registry() as registry:
            try:
                table = ablation_table(registry, name)
            except KeyError as exc:
                raise HTTPException(404, exc.args[0]) from None
            except (LookupError, OSError) as exc:
                raise HTTPException(404, f"ablation {name}: {exc}") from None
        plots = []
        for f in table.fields:
            bars = []
            means = {mode: dict(field_means(table, f, mode)) for mode in MODES}
            for value in dict.fromkeys(str(p.values[f]) for p in table.points):
                for mode in MODES:
                    if value in means[mode]:
                        bars.append((value, mode, means[mode][value], len(bars)))
            plots.append((f, bars))
        return render("ablation.html", t=table, modes=MODES, mode_names=MODE_NAMES, plots=plots)

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

    def record_of(run_id: str, kind: str) -> RunRecord:
        with open_registry() as registry:
            try:
                record = registry.get(run_id)
            except KeyError:
                raise HTTPException(404, f"no run {run_id!r}") from None
        if record.kind != kind:
            raise HTTPException(404, f"run {run_id} is a {record.kind} run, not {kind}")
        return record

    def example_index(run_id: str) -> ExampleIndex:
        try:
            return indexes.get(record_of(run_id, "synth"))
        except (LookupError, OSError) as exc:
            raise HTTPException(404, f"run {run_id}: its data cannot be read: {exc}") from None

    @app.get("/runs/{run_id}/examples", response_class=HTMLResponse)
    def examples_page(run_id: str, branch: str | None = None, placement: str | None = None,
                      status: str | None = None, why: str | None = None,
                      score_min: str | None = None, score_max: str | None = None,
                      pages_min: str | None = None, pages_max: str | None = None,
                      doc: str | None = None, page: int = Query(1, ge=1)) -> HTMLResponse:
        index = example_index(run_id)
        f = ExampleFilter(branch or None, placement or None, status or None, why or None,
                          _float(score_min, "score_min"), _float(score_max, "score_max"),
                          _int(pages_min, "pages_min"), _int(pages_max, "pages_max"),
                          doc or None)
        total, rows = index.query(f, page)
        form = {"branch": branch or "", "placement": placement or "", "status": status or "",
                "why": why or "", "score_min": score_min or "", "score_max": score_max or "",
                "pages_min": pages_min or "", "pages_max": pages_max or "", "doc": doc or ""}
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in form.items() if v)
        pages = max(1, -(-total // PER_PAGE))
        choices = {c: index.choices(c) for c in ("branch", "placement", "status", "why", "doc_id")}
        return render("examples.html", run_id=run_id, rows=rows, total=total, page=page,
                      pages=pages, form=form, query=query, choices=choices)

    @app.get("/runs/{run_id}/examples/{qid:path}", response_class=HTMLResponse)
    def example_page(run_id: str, qid: str) -> HTMLResponse:
        index = example_index(run_id)
        try:
            view = index.view(qid)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None
        return render("example.html", run_id=run_id, v=view)

    @app.get("/runs/{run_id}/images/{name}")
    def image_file(run_id: str, name: str) -> FileResponse:
        if not IMAGE_NAME.match(name):
            raise HTTPException(404, f"not an image name: {name!r}")
        path = example_index(run_id).files.image(name)
        if not path.is_file():
            raise HTTPException(404, f"{path}: no such image")
        return FileResponse(path, media_type="image/png" if name.endswith(".png") else "image/jpeg")

    def eval_runs(benchmark: str) -> list[RunRecord]:
        with open_registry() as registry:
            ids = [i for (i,) in registry.db.execute(
                "SELECT id FROM runs WHERE kind = 'eval' AND status = 'ok'"
                " AND json_extract(recipe, '$.benchmark') = ? ORDER BY started_at", [benchmark])]
            return [registry.get(i) for i in ids]

    @app.get("/evals/compare", response_class=HTMLResponse)
    def compare_page(a: str = "", b: str = "") -> HTMLResponse:
        with open_registry() as registry:
            ids = [i for (i,) in registry.db.execute(
                "SELECT id FROM runs WHERE kind = 'eval' AND status = 'ok' ORDER BY started_at")]
        rows: list[object] = []
        names: dict[str, str] = {}
        benchmark = None
        if a and b:
            left, right = record_of(a, "eval"), record_of(b, "eval")
            try:
                x, y = eval_predictions(left), eval_predictions(right)
            except (LookupError, OSError) as exc:
                raise HTTPException(404, f"predictions cannot be read: {exc}") from None
            rows = disagreements(x, y)
            benchmark = str(left.recipe["benchmark"])
            names = {a: next(iter(x.values())).checkpoint if x else a,
                     b: next(iter(y.values())).checkpoint if y else b}
        return render("compare.html", ids=ids, a=a, b=b, rows=rows, names=names,
                      benchmark=benchmark)

    @app.get("/evals/{benchmark}/{index}", response_class=HTMLResponse)
    def eval_question_page(benchmark: str, index: int) -> HTMLResponse:
        answers = []
        for record in eval_runs(benchmark):
            try:
                found = eval_predictions(record).get(index)
            except (LookupError, OSError):
                continue  # a run whose predictions are gone has nothing to show here
            if found is not None:
                answers.append(found)
        if not answers:
            raise HTTPException(404, f"no eval run of {benchmark} answered question {index}")
        return render("eval_question.html", benchmark=benchmark, index=index, answers=answers,
                      first=answers[0])

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
                benchmarks = {h.run_id: str(registry.get(h.run_id).recipe["benchmark"])
                              for h in result.hits if h.source == "prediction"}
            hits = [(h, _snippet(h.snippet),
                     hit_href(h.source, h.run_id, h.key, benchmarks.get(h.run_id)))
                    for h in result.hits]
            skipped = skipped_line(files) if files else None
        notice = FULL_TEXT_ONLY if q and encoder is None else None
        return render("search.html", q=q, hits=hits, source=source, sources=SOURCES,
                      notice=notice, skipped=skipped)

    return app
