"""`docthink eval run`: ask a model every selected benchmark question over the document's page
images, extract its answers, score them with the benchmark's metric (V1's rules, or V2's judge on
the full response), and write predictions and a report.

The run's folder (`out`) holds `pdfs/` (links to the PDFs needed) and `corpus/` (their ingested
pages and images, unless an existing corpus is given), `cache.sqlite` (every answer, committed as
it arrives), `predictions.jsonl` and `report.{json,md,png}`. A killed run resumes from the cache:
no request that was answered is asked again, and the report equals that of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from docthink.core.errors import UserError
from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.core.vocab import COT
from docthink.corpus.corpus import Corpus, Document, RenderError
from docthink.corpus.ingest import ingest
from docthink.corpus.policy import RenderPolicy
from docthink.engine.executor import run_shards
from docthink.engine.local import run_requests
from docthink.engine.shards import (
    Committed,
    Shard,
    ShardStore,
    concatenated_lines,
    items_digest,
    plan_digest,
    sum_counts,
    write_atomically,
    write_lines,
)
from docthink.evals.benchmarks import (
    BENCHMARKS,
    Metric,
    Scoring,
    build_metric,
    require_judge,
    scoring_from_json,
)
from docthink.evals.compare import compare_with_v1
from docthink.evals.data import (
    Benchmark,
    BenchRow,
    DataError,
    Selection,
    load_benchmark,
    select_rows,
    tsv_carries_documents,
    tsv_documents,
)
from docthink.evals.extract import (
    DEFAULT_PROMPT,
    Extraction,
    ExtractionMethod,
    Extractor,
    JudgeExtractor,
    RuleExtractor,
    extraction_from_json,
)
from docthink.evals.metrics import Answer, Scored
from docthink.evals.prompt import PromptFile
from docthink.evals.recipe import (
    BenchmarkName,
    EvalRecipe,
    InferenceSettings,
    Mode,
    RescoreRecipe,
)
from docthink.evals.report import Questions, Report, build_report, write_report
from docthink.models.base import ChatModel, ChatRequest, ChatResult, Message, RequestFailure
from docthink.models.build import build_model
from docthink.models.cache import CachedModel, RequestCache
from docthink.models.tasks import JudgeVerdict
from docthink.progress import progress


@dataclass(frozen=True, slots=True)
class Prediction:
    answer: Answer
    scored: Scored  # by the benchmark's metric

    def to_json(self) -> dict[str, object]:
        a, s = self.answer, self.scored
        judged = s.judged
        return {
            "index": a.row.index,
            "mode": a.mode,
            "doc_id": a.row.doc_id,
            "question": a.row.question,
            "answer": a.row.answer,
            "answer_format": a.row.answer_format,
            "response": a.response,
            "pred": a.pred,
            "score": s.score,
            "output_tokens": a.output_tokens,
            "failure": a.failure,  # request or extraction failure (what V1's rules read)
            # V2's judge: its reading, or why it could not judge (None under V1's rules)
            "verdict": None if judged is None else judged.verdict,
            "abstained": None if judged is None else judged.abstained,
            "judge_failure": s.failure if s.failure is not None and s.failure != a.failure
            else None,
        }


@dataclass(frozen=True, slots=True)
class EvalResult:
    report: Report
    predictions: Path
    report_files: list[Path]
    usage: dict[str, dict[str, object] | None]  # model, judge, scoring -> tokens and requests
    data_files: list[Path]  # the benchmark's files that were read


# -- documents ------------------------------------------------------------------------------------


def _link_pdfs(documents: Path, doc_ids: set[str], folder: Path) -> None:
    """`folder/<doc_id>` -> the PDF in `documents`: the corpus ingests only what the run needs."""
    for doc_id in sorted(doc_ids):
        link, target = folder / doc_id, (documents / doc_id).resolve()
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)


def _ingested(recipe: EvalRecipe, documents: Path, doc_ids: set[str],
              show_progress: bool) -> Corpus:
    pdfs, corpus = recipe.out / "pdfs", recipe.out / "corpus"
    pdfs.mkdir(parents=True, exist_ok=True)
    _link_pdfs(documents, doc_ids, pdfs)
    ingest(pdfs, corpus, workers=recipe.workers, progress=show_progress)
    return Corpus.open(corpus)


def _select(recipe: EvalRecipe, benchmark: Benchmark, show_progress: bool) -> tuple[Corpus, Selection]:
    """The corpus and the rows to evaluate. With a PDF folder, rows whose PDF is missing are
    skipped before sampling, and only the selected rows' PDFs are ingested; with an existing
    corpus, rows whose document it lacks are skipped before sampling."""
    doc_ids = {r.doc_id for r in benchmark.rows}
    options = {"docs": recipe.select.docs, "sample": recipe.select.sample,
               "limit": recipe.select.limit, "seed": recipe.seed}
    if recipe.corpus is not None:
        corpus = Corpus.open(recipe.corpus)
        unavailable = {d: why for d in doc_ids if (why := _unusable(corpus, d)) is not None}
        return corpus, select_rows(benchmark, unavailable=unavailable, **options)
    documents = recipe.documents or _carried(recipe)
    missing = {d: "pdf missing" for d in doc_ids if not (documents / d).is_file()}
    selection = select_rows(benchmark, unavailable=missing, **options)
    return _ingested(recipe, documents, {r.doc_id for r in selection.rows}, show_progress), selection


def _carried(recipe: EvalRecipe) -> Path:
    """The folder of the PDFs the data file carries (an MMLBD-C TSV), decoded into the run's
    folder; data without documents is refused in one line."""
    if not tsv_carries_documents(recipe.data):
        raise DataError(f"{recipe.data}: the data carries no documents (only an MMLBD-C TSV "
                        "with its image column does); give --documents or --corpus")
    folder = recipe.out / "documents"
    tsv_documents(recipe.data, folder)
    return folder


def _unusable(corpus: Corpus, doc_id: str) -> str | None:
    if doc_id in corpus.documents:
        return None
    if doc_id in corpus.rejected:
        return f"pdf rejected at ingest: {corpus.rejected[doc_id]}"
    return "not in corpus"


# -- page images ----------------------------------------------------------------------------------


def page_policy(policy: RenderPolicy, size_pt: tuple[float, float],
                max_pixels: int | None) -> RenderPolicy:
    """`policy`, at a lower dpi if a page of this size would exceed `max_pixels` pixels."""
    if max_pixels is None:
        return policy
    width, height = size_pt
    scale = policy.scale(width, height)
    if math.ceil(width * scale) * math.ceil(height * scale) <= max_pixels:
        return policy
    dpi = min(policy.dpi, int(72 * math.sqrt(max_pixels / (width * height))))
    while dpi > 18 and math.ceil(width * dpi / 72) * math.ceil(height * dpi / 72) > max_pixels:
        dpi -= 1
    return policy.model_copy(update={"dpi": max(dpi, 18)})


def _document_pages(document: Document, settings: InferenceSettings) -> list[tuple[PageRef, RenderPolicy]]:
    n = min(settings.max_pages, document.n_pages)
    return [
        (PageRef(document.doc_id, p),
         page_policy(settings.image, document.page_sizes[p - 1], settings.max_pixels))
        for p in range(1, n + 1)
    ]


def _render(corpus: Corpus, pages: Sequence[tuple[PageRef, RenderPolicy]], workers: int,
            show_progress: bool) -> dict[PageRef, ImagePart]:
    by_policy: dict[RenderPolicy, list[PageRef]] = {}
    for ref, policy in pages:
        by_policy.setdefault(policy, []).append(ref)
    images: dict[PageRef, ImagePart] = {}
    for policy, refs in by_policy.items():
        parts = corpus.ensure_images(refs, policy, workers, show_progress)
        images.update(zip(refs, parts, strict=True))
    return images


def page_images(corpus: Corpus, doc_ids: set[str], settings: InferenceSettings, workers: int,
                show_progress: bool) -> tuple[dict[str, list[ImagePart]], dict[str, str]]:
    """The images shown for each document, and the documents that could not be rendered (why).
    All documents render in one batch; after a failure, one by one, to tell which failed."""
    pages = {d: _document_pages(corpus.document(d), settings) for d in sorted(doc_ids)}
    try:
        rendered = _render(corpus, [p for d in pages for p in pages[d]], workers, show_progress)
    except RenderError:
        return _render_one_by_one(corpus, pages, workers)
    return {d: [rendered[ref] for ref, _ in pages[d]] for d in pages}, {}


def _render_one_by_one(corpus: Corpus, pages: dict[str, list[tuple[PageRef, RenderPolicy]]],
                       workers: int) -> tuple[dict[str, list[ImagePart]], dict[str, str]]:
    images: dict[str, list[ImagePart]] = {}
    failed: dict[str, str] = {}
    for doc_id, doc_pages in pages.items():
        try:
            rendered = _render(corpus, doc_pages, workers, show_progress=False)
        except RenderError as error:
            failed[doc_id] = f"render failed: {str(error).splitlines()[0]}"
            continue
        images[doc_id] = [rendered[ref] for ref, _ in doc_pages]
    return images, failed


# -- requests -------------------------------------------------------------------------------------


def answer_request(question: str, mode: Mode, images: Sequence[ImagePart],
                   settings: InferenceSettings) -> ChatRequest:
    """The page images (each after its `Page N:` line when set) and the question; in cot mode
    the `<cot>` token where training put it (see `docthink.export`)."""
    cot = mode == "cot"
    if cot and settings.cot_placement == "suffix":
        question = f"{question} {COT}"
    pages: list[TextPart | ImagePart] = []
    for i, image in enumerate(images, start=1):
        if settings.page_index is not None:
            pages.append(TextPart(settings.page_index.format(i=i)))
        pages.append(image)
    parts = [TextPart(question), *pages] if settings.question_first else [*pages, TextPart(question)]
    if cot and settings.cot_placement == "prefix":  # the first words of the user turn
        first = parts[0]
        parts = ([TextPart(f"{COT} {first.text}"), *parts[1:]] if isinstance(first, TextPart)
                 else [TextPart(f"{COT} "), *parts])
    system_lines = [s for s in (settings.system, COT if cot and settings.cot_placement == "system"
                                else None) if s is not None]
    system = (Message.text("system", "\n".join(system_lines)),) if system_lines else ()
    return ChatRequest(
        messages=(*system, Message("user", tuple(parts))),
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        purpose=f"answer-{mode}",
    )


async def _complete_all(model: ChatModel, requests: Sequence[ChatRequest], concurrency: int,
                        label: str, show_progress: bool) -> list[ChatResult | RequestFailure]:
    with progress(label, len(requests), show_progress) as bar:
        return await run_requests(model, requests, concurrency=concurrency,
                                  on_done=lambda n: bar.advance(n))


async def _answer_extract_score(
    recipe: EvalRecipe,
    model: ChatModel,
    extractor: Extractor,
    metric: Metric,
    jobs: Sequence[tuple[BenchRow, Mode, ChatRequest]],
    show_progress: bool,
) -> list[Prediction]:
    try:
        outcomes = await _complete_all(model, [r for _, _, r in jobs], recipe.concurrency,
                                       "answer", show_progress)
        asked = [(row.question, o.text) for (row, _, _), o in zip(jobs, outcomes, strict=True)
                 if isinstance(o, ChatResult)]
        extractions = iter(await extractor.extract_all(asked))
        answers = [
            Answer(row, mode, None, "", f"request failed: {outcome.reason}", None)
            if isinstance(outcome, RequestFailure)
            else _answered(row, mode, outcome, next(extractions))
            for (row, mode, _), outcome in zip(jobs, outcomes, strict=True)
        ]
        scored = await metric.score_all(answers)
    finally:
        await model.aclose()
        await extractor.aclose()
        await metric.aclose()
    return [Prediction(a, s) for a, s in zip(answers, scored, strict=True)]


def _answered(row: BenchRow, mode: Mode, result: ChatResult, extraction: Extraction) -> Answer:
    return Answer(row, mode, result.text, extraction.pred, extraction.failure,
                  result.usage.completion_tokens)


# -- the run --------------------------------------------------------------------------------------


def _settings(recipe: EvalRecipe) -> dict[str, object]:
    """What decides the answers, without paths: the report must not depend on where it ran."""
    return recipe.model_dump(mode="json", include={"model", "seed", "select", "inference"})


def evaluate(recipe: EvalRecipe, *, show_progress: bool = False) -> EvalResult:
    """The selected rows in shards of `executor.shard_size`, run where the recipe's executor
    says (pages rendered, questions asked, answers extracted and scored, committed as parts);
    predictions and the report are merged from the parts, in the order of an unsharded run (each
    mode in turn, rows in selection order)."""
    kind = BENCHMARKS[recipe.benchmark]
    require_judge(kind, recipe.scoring)  # refused before anything runs
    benchmark = kind.load(recipe.data)
    recipe.out.mkdir(parents=True, exist_ok=True)
    corpus, selection = _select(recipe, benchmark, show_progress)
    skipped = dict(selection.skipped)
    with corpus:
        unusable = {d: why for d in {r.doc_id for r in selection.rows}
                    if (why := _unusable(corpus, d)) is not None}
    rows = [r for r in selection.rows if r.doc_id not in unusable]
    skipped |= {r.index: unusable[r.doc_id] for r in selection.rows if r.doc_id in unusable}
    job = EvalJob(recipe, corpus.layout.root, kind.name)
    plan, size = plan_digest(recipe), recipe.executor.shard_size
    shards = [Shard(i, tuple(rows[start:start + size]), items_digest(plan, rows[start:start + size]))
              for i, start in enumerate(range(0, len(rows), size))]
    job.store.sweep()
    run_shards(recipe.executor, job, [s for s in shards if not job.store.done(s)],
               workers=recipe.workers, show_progress=show_progress)
    committed = [job.store.get(s.index, s.digest) for s in shards]
    job.store.sweep(keep=len(committed))
    zero: dict[str, object] = {"evaluated": 0, "usage": {}}
    totals: dict[str, Any] = sum_counts([zero, *(c.counts for c in committed)])
    for c in committed:  # rows of documents that would not render
        unrendered = json.loads((c.folder / "skipped.json").read_text(encoding="utf-8"))
        skipped |= {int(index): why for index, why in unrendered.items()}
    predictions_path = recipe.out / "predictions.jsonl"
    write_atomically(chain.from_iterable(
        concatenated_lines(c.folder / f"predictions-{mode}.jsonl" for c in committed)
        for mode in recipe.inference.modes), predictions_path)
    by_index = benchmark.by_index()
    names = job.names(committed[0].folder if committed else None)
    report = build_report(
        kind=kind,
        data=benchmark,
        scored={mode: [scored_from_json(line, by_index) for line in concatenated_lines(
            c.folder / f"scored-{mode}.jsonl" for c in committed)]
            for mode in recipe.inference.modes},
        seed=recipe.seed,
        questions=Questions.of(totals["evaluated"], skipped),
        model=names.model,
        extraction=names.extraction,
        scoring=names.scoring,
        settings=_settings(recipe),
    )
    files = write_report(report, recipe.out / "report.json")
    usage = {role: totals["usage"].get(role) for role in ("model", "judge", "scoring")}
    return EvalResult(report, predictions_path, files, usage, benchmark.files())


@dataclass(frozen=True, slots=True)
class Names:
    """Who answered, extracted and scored: what the report names."""

    model: str
    extraction: ExtractionMethod
    scoring: Scoring

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "extraction": self.extraction.to_json(),
                "scoring": self.scoring.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Names:
        return cls(data["model"], extraction_from_json(data["extraction"]),
                   scoring_from_json(data["scoring"]))


@dataclass(frozen=True)
class EvalSession:
    corpus: Corpus
    cache: RequestCache
    model: ChatModel  # the evaluated model, shared by the shards a worker runs


class EvalJob:
    """An eval run's work on one shard of rows (`engine.executor.ShardJob`)."""

    def __init__(self, recipe: EvalRecipe, corpus: Path, benchmark: BenchmarkName) -> None:
        self.recipe = recipe
        self.corpus_root = corpus
        self.benchmark = benchmark
        self.store = ShardStore(recipe.out / "shards")

    def prepare(self, shard: Shard[BenchRow], workers: int, show_progress: bool) -> None:
        with Corpus.open(self.corpus_root) as corpus:
            page_images(corpus, {r.doc_id for r in shard.items}, self.recipe.inference, workers,
                        show_progress)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[EvalSession]:
        with Corpus.open(self.corpus_root) as corpus, \
                RequestCache(self.recipe.out / "cache.sqlite") as cache:
            model = build_model(self.recipe.model, pages=corpus)
            try:
                yield EvalSession(corpus, cache, model)
            finally:
                await model.aclose()

    def _parts(self, corpus: Corpus, cache: RequestCache, model: ChatModel,
               show_progress: bool) -> tuple[CachedModel, Extractor, Metric]:
        kind = BENCHMARKS[self.benchmark]
        return (CachedModel(model, cache), _extractor(self.recipe, corpus, cache, show_progress),
                build_metric(kind, self.recipe.scoring, self.recipe.out / "cache.sqlite",
                             concurrency=self.recipe.concurrency, show_progress=show_progress))

    async def process(self, shard: Shard[BenchRow], session: EvalSession,
                      show_progress: bool) -> Committed:
        recipe = self.recipe
        images, unrendered = page_images(session.corpus, {r.doc_id for r in shard.items},
                                         recipe.inference, 1, False)
        rows = [r for r in shard.items if r.doc_id not in unrendered]
        jobs = [(row, mode, answer_request(row.question, mode, images[row.doc_id],
                                           recipe.inference))
                for mode in recipe.inference.modes for row in rows]
        model, extractor, metric = self._parts(session.corpus, session.cache, session.model,
                                               show_progress)
        names = Names(model.name, extractor.record, metric.record)
        predictions = await _answer_extract_score(recipe, model, extractor, metric, jobs,
                                                  show_progress)
        usage = {"model": model.usage.as_dict()}
        if isinstance(extractor, JudgeExtractor):
            usage["judge"] = extractor.judge.usage.as_dict()
        if metric.usage is not None:
            usage["scoring"] = metric.usage.as_dict()
        counts = {"evaluated": len(rows), "usage": usage}
        skipped = {r.index: unrendered[r.doc_id] for r in shard.items if r.doc_id in unrendered}

        def write(folder: Path) -> dict[str, object]:
            for mode in recipe.inference.modes:
                mine = [p for p in predictions if p.answer.mode == mode]
                write_lines((json.dumps(p.to_json(), ensure_ascii=False) for p in mine),
                            folder / f"predictions-{mode}.jsonl")
                write_lines((scored_json(p.scored) for p in mine), folder / f"scored-{mode}.jsonl")
            (folder / "names.json").write_text(json.dumps(names.to_json()), encoding="utf-8")
            (folder / "skipped.json").write_text(json.dumps(skipped), encoding="utf-8")
            return counts

        return self.store.commit(shard, write)

    def names(self, folder: Path | None) -> Names:
        """Who answered, extracted and scored, as a shard recorded it; with no shard run, from
        the models the recipe names (built, asked nothing)."""
        if folder is not None:
            return Names.from_json(json.loads((folder / "names.json").read_text(encoding="utf-8")))
        with Corpus.open(self.corpus_root) as corpus, \
                RequestCache(self.recipe.out / "cache.sqlite") as cache:
            model = build_model(self.recipe.model, pages=corpus)
            cached, extractor, metric = self._parts(corpus, cache, model, False)
            names = Names(cached.name, extractor.record, metric.record)
            asyncio.run(_close(cached, extractor, metric))
        return names


async def _close(model: ChatModel, extractor: Extractor, metric: Metric) -> None:
    await model.aclose()
    await extractor.aclose()
    await metric.aclose()


def scored_json(scored: Scored) -> str:
    """A scored row as a shard part keeps it (the row by its index)."""
    return json.dumps({
        "index": scored.row.index, "pred": scored.pred, "score": scored.score,
        "output_tokens": scored.output_tokens, "failure": scored.failure,
        "answered": scored.answered,
        "judged": None if scored.judged is None else scored.judged.model_dump(mode="json"),
    }, ensure_ascii=False)


def scored_from_json(line: str, rows: Mapping[int, BenchRow]) -> Scored:
    data = json.loads(line)
    judged = None if data["judged"] is None else JudgeVerdict.model_validate(data["judged"])
    return Scored(rows[data["index"]], data["pred"], data["score"], data["output_tokens"],
                  data["failure"], answered=data["answered"], judged=judged)


def _extractor(recipe: EvalRecipe, corpus: Corpus, cache: RequestCache,
               show_progress: bool) -> Extractor:
    settings = recipe.extract
    if settings.method == "rule":
        return RuleExtractor()
    assert settings.judge is not None  # the recipe validates that method llm names a judge
    judge = CachedModel(build_model(settings.judge, pages=corpus), cache)
    return JudgeExtractor(judge, PromptFile.read(settings.prompt or DEFAULT_PROMPT),
                          max_tokens=settings.max_tokens, concurrency=recipe.concurrency,
                          show_progress=show_progress)


def write_predictions(predictions: Sequence[Prediction], path: Path) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in predictions:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


# -- rescoring ------------------------------------------------------------------------------------


class PredictionIn(BaseModel):
    """A row of a predictions file: what `rescore` reads (our predictions.jsonl has more)."""

    model_config = ConfigDict(extra="ignore")

    index: int
    pred: str
    mode: Mode = "plain"
    failure: str | None = None
    output_tokens: int | None = None
    response: str | None = None  # the full response: what a judge reads


class PredictionsError(UserError, ValueError):
    """A predictions file that cannot be read; the message names the file and line."""


def read_answers(path: Path, rows: dict[int, BenchRow], *, judged: bool) -> list[Answer]:
    """The answers of a predictions file; an index that is not in the data, or an (index, mode)
    given twice, is an error, and so is a row without its response when a judge reads it (a row
    whose request failed has none: it carries its failure)."""
    answers: list[Answer] = []
    seen: set[tuple[int, str]] = set()
    if not path.is_file():
        raise PredictionsError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                p = PredictionIn.model_validate_json(line)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err["loc"]) or "line"
                raise PredictionsError(f"{path}: line {number}: {where}: {err['msg']}") from None
            if p.index not in rows:
                raise PredictionsError(f"{path}: line {number}: index {p.index} is not in the data")
            if (p.index, p.mode) in seen:
                raise PredictionsError(f"{path}: line {number}: index {p.index} ({p.mode}) repeats")
            if judged and p.response is None and p.failure is None:
                raise PredictionsError(f"{path}: line {number}: response: the judge reads the full "
                                       "response, and this row has none")
            seen.add((p.index, p.mode))
            answers.append(Answer(rows[p.index], p.mode, p.response, p.pred, p.failure,
                                  p.output_tokens))
    if not answers:
        raise PredictionsError(f"{path}: no predictions")
    return answers


def rescore_cache(recipe: RescoreRecipe) -> Path:
    return recipe.cache or recipe.predictions.parent / "cache.sqlite"


async def _score(metric: Metric, answers: Sequence[Answer]) -> list[Scored]:
    try:
        return await metric.score_all(answers)
    finally:
        await metric.aclose()


def rescore(recipe: RescoreRecipe, *, show_progress: bool = False) -> Report:
    """Score a predictions file against the data with the benchmark's metric, without the
    evaluated model (a judge-scored benchmark asks its judge, through the request cache); with
    `v1_data`, also side by side with V1's rules."""
    kind = BENCHMARKS[recipe.benchmark]
    require_judge(kind, recipe.scoring)
    benchmark = kind.load(recipe.data)
    answers = read_answers(recipe.predictions, benchmark.by_index(), judged=kind.judged)
    metric = build_metric(kind, recipe.scoring, rescore_cache(recipe),
                          concurrency=recipe.concurrency, show_progress=show_progress)
    scored = asyncio.run(_score(metric, answers))
    by_mode: dict[str, list[Scored]] = {}
    for answer, s in sorted(zip(answers, scored, strict=True), key=lambda p: p[0].mode != "plain"):
        by_mode.setdefault(answer.mode, []).append(s)
    answered = {a.row.index for a in answers}
    unanswered = {r.index: "no prediction" for r in benchmark.rows if r.index not in answered}
    comparison = None if recipe.v1_data is None else compare_with_v1(
        list(zip(answers, scored, strict=True)), v1=load_benchmark(recipe.v1_data), v2=benchmark,
        seed=recipe.seed)
    report = build_report(
        kind=kind,
        data=benchmark,
        scored=by_mode,
        seed=recipe.seed,
        questions=Questions.of(len(answered), unanswered),
        scoring=metric.record,
        comparison=comparison,
    )
    if recipe.out is not None:
        write_report(report, recipe.out)
    return report
