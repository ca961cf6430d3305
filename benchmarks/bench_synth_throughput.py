"""End-to-end throughput of `docthink synth` against a zero-latency OpenAI-compatible server.

Claim: on 2 cores the pipeline issues at least 500 evidence requests/s (each with a page image,
~127 KB PNG), so the pipeline, not a vLLM fleet behind it, is never the limit. The run is the
synth stage run in-process (`run_stage(STAGES["synth"], ...)`) (stage models are `OpenAICompatModel`s behind a `CachedModel` on
a new request cache, as `docthink synth` builds them) over a generated corpus (`docthink samples`,
then ingest) with whole-document questions. The server runs in separate processes (SO_REUSEPORT),
reads each body and answers at once: evidence requests (the ones asking for structured output)
with valid JSON, answer requests with text; its CPU is reported to show it was not the limit.

Each repetition makes two runs: "cold" starts from an empty image store (rendering included, and
reported on its own), "warm" has every image stored but a new request cache. Reported: evidence
requests/s over the evidence stage (requests built, sent, parsed, cached, rows made) and over the
whole run (rendering, answers, tables, data card and run record included), medians of --runs.

Baseline, in the same run, after each warm run: the same evidence requests sent by `AsyncOpenAI`
(the openai package, its default httpx transport) with the same concurrency to the same servers:
the stage's (question, page) pairs in its order, the same stored page images, system prompt,
source-page note, question, response_format, temperature and max_tokens, each page image read and
base64-encoded once (as docthink encodes it once), a fixed pool of workers taking requests in order
(as docthink's executor does), each reply's content validated with the same pydantic model. It is
timed like docthink's evidence stage: wall clock, this process's CPU and the servers', from the
first request built to the last reply parsed. docthink's stage does more in its span (each image's
sha256 checked when it is encoded, a request cache row committed per result, the evidence rows).
Before the timed runs, one docthink run and one baseline run are sent to a recording server, which
checks that both clients sent the same evidence requests: the same bodies, equal as JSON, the same
number of times.

    python benchmarks/bench_synth_throughput.py [--docs 20] [--min-requests 5000] [--runs 3]
        [--profile warm.prof]   # an extra profiled warm run, top functions printed
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import hashlib
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import orjson
import psutil
from _servers import free_port, start_servers

from docthink.core.parts import ImagePart
from docthink.corpus.corpus import Corpus
from docthink.corpus.ingest import ingest
from docthink.corpus.samples import write_sample_pdfs
from docthink.models.tasks import EvidenceReply
from docthink.questions.rows import read_question_rows, resolve
from docthink.stages import STAGES, run_stage
from docthink.synth import PROMPTS, pipeline
from docthink.synth.recipe import SynthRecipe

GOAL = 500.0  # evidence requests/s on 2 cores
EVIDENCE_MODEL = "bench-vl"

EVIDENCE_TEXT = (
    "The page reports revenue of 4,812 million euros for the year, up from 4,390 million, in a "
    "table titled 'Key figures' with columns for the last three years; a bar chart below shows "
    "the share of each region, the largest being the Nordics at 38 percent. "
)


def _completion(content: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content},
                 "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 900, "completion_tokens": 90, "total_tokens": 990},
        }
    )


# Scores 0..10 (picked by body length: deterministic, and a mix of relevant and irrelevant pages).
EVIDENCE = [
    _completion(json.dumps({"evidence": EVIDENCE_TEXT, "relevance_score": float(s)}))
    for s in range(11)
]
ANSWER = _completion("4,812 million euros.")


def serve(port: int, record: Path | None) -> None:
    """One server process; several share the port (SO_REUSEPORT). With `record`, it appends the
    canonical hash of each evidence request's body to that file."""
    from aiohttp import web

    log = None if record is None else record.open("a", encoding="utf-8")

    async def chat(request: web.Request) -> web.Response:
        body = await request.read()
        evidence = b'"response_format"' in body
        if evidence and log is not None:
            log.write(canonical_hash(body) + "\n")
            log.flush()
        reply = EVIDENCE[len(body) % 11] if evidence else ANSWER
        return web.Response(body=reply, content_type="application/json")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, access_log=None, print=None,
                backlog=1024)  # fmt: skip


def canonical_hash(body: bytes) -> str:
    """sha256 of a request body as JSON with sorted keys and no spaces: equal for equal requests,
    whichever client serialized them."""
    data = json.loads(body)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_corpus(work: Path, docs: int, min_requests: int) -> tuple[Path, Path, int]:
    """Sample PDFs -> corpus; questions (planted facts, asked in several wordings) over whole
    documents, enough for `min_requests` evidence requests. Returns (corpus, questions, pages)."""
    _, facts = write_sample_pdfs(work / "pdfs", docs, seed=0)
    ingest(work / "pdfs", work / "corpus", workers=2, progress=False)
    with Corpus.open(work / "corpus") as corpus:
        n_pages = {d.doc_id: d.n_pages for d in corpus.documents.values()}
    per_round = sum(n_pages[f.doc_id] for f in facts)
    wordings = math.ceil(min_requests / per_round)
    with (work / "questions.jsonl").open("w", encoding="utf-8") as f:
        for i, fact in enumerate(facts):
            for k in range(wordings):
                question = fact.question if k == 0 else f"{fact.question} (wording {k})"
                f.write(json.dumps({"qid": f"q{i:04d}-{k}", "doc_id": fact.doc_id,
                                    "question": question, "source_pages": [fact.page]}) + "\n")
    return work / "corpus", work / "questions.jsonl", sum(n_pages.values())


@dataclass
class Timings:
    """Wall-clock spans recorded from inside the run."""

    servers: list[psutil.Process]
    spans: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # this process's CPU seconds
    server_cpu: dict[str, float] = field(default_factory=dict)
    rendered: int = 0  # pages rendered (not found in the image store)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        started, cpu, server = time.perf_counter(), time.process_time(), self.server_time()
        try:
            yield
        finally:
            self.spans[name] = self.spans.get(name, 0.0) + time.perf_counter() - started
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
            self.server_cpu[name] = self.server_cpu.get(name, 0.0) + self.server_time() - server

    def server_time(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.servers)


@contextlib.contextmanager
def instrumented(timings: Timings) -> Iterator[None]:
    """Times the stages without touching the code: the pipeline's progress context (one per
    stage) and the corpus's `ensure_images` (rendering)."""
    real_progress, real_ensure = pipeline.progress, Corpus.ensure_images

    @contextlib.contextmanager
    def progress(label: str, total: int, enabled: bool) -> Iterator[object]:
        with timings.span(label), real_progress(label, total, enabled) as bar:
            yield bar

    def ensure_images(self: Corpus, *args: object, **kwargs: object) -> object:
        before = self.rendered
        with timings.span("render"):
            images = real_ensure(self, *args, **kwargs)  # type: ignore[arg-type]
        timings.rendered += self.rendered - before
        return images

    pipeline.progress = progress  # type: ignore[assignment]
    Corpus.ensure_images = ensure_images  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        pipeline.progress = real_progress
        Corpus.ensure_images = real_ensure  # type: ignore[method-assign]


@dataclass
class RunResult:
    whole_s: float
    render_s: float
    evidence_s: float
    answer_s: float
    evidence_requests: int
    answer_requests: int
    rendered: int
    evidence_cpu_s: float  # this process, during the evidence stage
    evidence_server_cpu_s: float  # the server processes, during the evidence stage
    whole_cpu_s: float  # this process over the run (render workers not included)

    @property
    def evidence_rps(self) -> float:
        return self.evidence_requests / self.evidence_s

    @property
    def whole_rps(self) -> float:
        return self.evidence_requests / self.whole_s

    @property
    def evidence_cpu_ms(self) -> float:
        return 1000 * self.evidence_cpu_s / self.evidence_requests

    @property
    def evidence_server_cpu_ms(self) -> float:
        return 1000 * self.evidence_server_cpu_s / self.evidence_requests

    @property
    def cpu_busy(self) -> float:
        """Share of the evidence stage this process was on a CPU (below 1: it waited)."""
        return self.evidence_cpu_s / self.evidence_s


def one_run(recipe: SynthRecipe, work: Path, servers: list[psutil.Process],
            profiler: cProfile.Profile | None) -> RunResult:
    timings = Timings(servers)
    with timings.span("whole"), instrumented(timings), contextlib.redirect_stdout(sys.stderr):
        if profiler is not None:
            profiler.enable()
        run_stage(STAGES["synth"], recipe, runs_dir=work / "runs",
                  registry=work / "registry.sqlite")
        if profiler is not None:
            profiler.disable()
    summary = json.loads(
        max((work / "runs").glob("*-synth-*"), key=lambda p: p.stat().st_mtime)
        .joinpath("summary.json").read_text()
    )
    counts, usage = summary["counts"], summary["usage"]
    assert counts["evidence_failures"] == 0 and counts["examples"] > 0, counts
    assert all(u["cache_hits"] == 0 for u in usage.values()), "the request cache was not fresh"
    return RunResult(
        whole_s=timings.spans["whole"],
        render_s=timings.spans["render"],
        evidence_s=timings.spans["evidence"],
        answer_s=timings.spans["answer"],
        evidence_requests=counts["evidence_requests"],
        answer_requests=usage["answer_vision"]["requests"] + usage["answer_text"]["requests"],
        rendered=timings.rendered,
        evidence_cpu_s=timings.cpu["evidence"],
        evidence_server_cpu_s=timings.server_cpu["evidence"],
        whole_cpu_s=timings.cpu["whole"],
    )


def clear_images(corpus: Path) -> None:
    shutil.rmtree(corpus / "images", ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        (corpus / f"renders.sqlite{suffix}").unlink(missing_ok=True)


@dataclass(frozen=True)
class EvidenceCall:
    """One evidence request as the baseline starts from it (docthink's stage starts from the same:
    questions read, page images looked up in the store)."""

    question: str
    is_source: bool
    image: ImagePart


def evidence_calls(recipe: SynthRecipe) -> list[EvidenceCall]:
    """The evidence stage's (question, page) pairs, in its order, with their stored images."""
    rows = read_question_rows(recipe.questions)
    with Corpus.open(recipe.corpus) as corpus:
        n_pages = {d.doc_id: d.n_pages for d in corpus.documents.values()}
        questions, dropped = resolve(rows, n_pages, recipe.questions)
        assert not dropped, dropped
        pairs = pipeline.evidence_order(questions)
        refs = sorted({ref for _, ref in pairs}, key=lambda r: (r.doc_id, r.page))
        images = dict(zip(refs, corpus.ensure_images(refs, recipe.image), strict=True))
    return [EvidenceCall(q.text, ref in q.source, images[ref]) for q, ref in pairs]


@dataclass
class BaselineResult:
    evidence_s: float
    evidence_requests: int
    evidence_cpu_s: float
    evidence_server_cpu_s: float

    @property
    def evidence_rps(self) -> float:
        return self.evidence_requests / self.evidence_s

    @property
    def evidence_cpu_ms(self) -> float:
        return 1000 * self.evidence_cpu_s / self.evidence_requests

    @property
    def evidence_server_cpu_ms(self) -> float:
        return 1000 * self.evidence_server_cpu_s / self.evidence_requests

    @property
    def cpu_busy(self) -> float:
        return self.evidence_cpu_s / self.evidence_s


async def baseline_evidence(url: str, calls: list[EvidenceCall], recipe: SynthRecipe,
                            timings: Timings) -> list[EvidenceReply]:
    """The evidence requests through `AsyncOpenAI`, `recipe.concurrency` at a time, each reply
    validated; the span "evidence" of `timings` covers building, sending and parsing."""
    system = PROMPTS["evidence_system"].text
    source_note = PROMPTS["evidence_source_note"].text
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": EvidenceReply.model_json_schema()["title"],
                        "schema": EvidenceReply.model_json_schema(), "strict": True},
    }
    settings = recipe.evidence
    client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    data_urls: dict[str, str] = {}  # by image content hash: each image encoded once
    results: list[EvidenceReply | None] = [None] * len(calls)
    next_index = iter(range(len(calls)))

    def image_url(image: ImagePart) -> str:
        if image.sha256 not in data_urls:
            encoded = base64.b64encode(image.path.read_bytes()).decode("ascii")
            data_urls[image.sha256] = f"data:{image.mime};base64,{encoded}"
        return data_urls[image.sha256]

    def messages(call: EvidenceCall) -> list[dict[str, object]]:
        content: list[dict[str, object]] = [
            {"type": "image_url", "image_url": {"url": image_url(call.image)}}
        ]
        if call.is_source:
            content.append({"type": "text", "text": source_note})
        content.append({"type": "text", "text": call.question})
        return [{"role": "system", "content": system}, {"role": "user", "content": content}]

    async def worker() -> None:
        for index in next_index:
            reply = await client.chat.completions.create(
                model=EVIDENCE_MODEL, messages=messages(calls[index]),
                temperature=settings.temperature, max_tokens=settings.max_tokens,
                response_format=response_format,
            )
            results[index] = EvidenceReply.model_validate_json(reply.choices[0].message.content)

    with timings.span("evidence"):
        await asyncio.gather(*(worker() for _ in range(min(recipe.concurrency, len(calls)))))
    await client.close()
    return [r for r in results if r is not None]


def baseline_run(url: str, recipe: SynthRecipe, servers: list[psutil.Process]) -> BaselineResult:
    calls = evidence_calls(recipe)
    timings = Timings(servers)
    parsed = asyncio.run(baseline_evidence(url, calls, recipe, timings))
    assert len(parsed) == len(calls), "a baseline request returned no evidence"
    return BaselineResult(timings.spans["evidence"], len(calls), timings.cpu["evidence"],
                          timings.server_cpu["evidence"])  # fmt: skip


def check_same_requests(work: Path, corpus: Path, questions: Path, concurrency: int) -> int:
    """One docthink run and one baseline run, each against its own recording server; asserts that
    they sent the same evidence requests and returns how many."""
    recorded: dict[str, Counter[str]] = {}
    for client in ("docthink", "AsyncOpenAI"):
        bodies = work / f"bodies-{client}.txt"
        port = free_port()
        recorder = start_servers(__file__, port, 1, ["--record", str(bodies)])
        url = f"http://127.0.0.1:{port}/v1"
        recipe = recipe_for(url, corpus, questions, work / f"out-record-{client}", concurrency)
        try:
            if client == "docthink":
                with contextlib.redirect_stdout(sys.stderr):
                    run_stage(STAGES["synth"], recipe, runs_dir=work / "runs",
                              registry=work / "registry.sqlite")
            else:
                baseline_run(url, recipe, [])
        finally:
            recorder[0].terminate()
            recorder[0].wait()
        recorded[client] = Counter(bodies.read_text(encoding="utf-8").split())
    assert recorded["docthink"] == recorded["AsyncOpenAI"], "the clients sent different requests"
    return sum(recorded["docthink"].values())


def recipe_for(url: str, corpus: Path, questions: Path, out: Path,
               concurrency: int) -> SynthRecipe:
    model = {"kind": "openai", "model": EVIDENCE_MODEL,
             "endpoints": [{"base_url": url, "api_key_env": None, "max_concurrency": concurrency}],
             "max_retries": 0}
    return SynthRecipe.model_validate({
        "corpus": corpus, "questions": questions, "out": out, "concurrency": concurrency,
        "models": {"evidence": model, "answer_vision": model,
                   "answer_text": {**model, "model": "bench-llm"}},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--min-requests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="cProfile one extra warm run into this file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.record)
        return
    work = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    os.environ["DOCTHINK_REGISTRY"] = str(work / "registry.sqlite")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        corpus, questions, pages = make_corpus(work, args.docs, args.min_requests)
        same = check_same_requests(work, corpus, questions, args.concurrency)
        load_before = os.getloadavg()[0]
        port = free_port()
        servers = start_servers(__file__, port, args.servers)
        procs = [psutil.Process(s.pid) for s in servers]
        url = f"http://127.0.0.1:{port}/v1"
        results: dict[str, list[RunResult]] = {"cold": [], "warm": []}
        baseline: list[BaselineResult] = []
        for rep in range(args.runs):
            for kind in ("cold", "warm"):
                if kind == "cold":
                    clear_images(corpus)
                recipe = recipe_for(url, corpus, questions, work / f"out-{rep}-{kind}",
                                    args.concurrency)
                results[kind].append(one_run(recipe, work, procs, None))
            baseline.append(baseline_run(url, recipe, procs))
        report(args, pages, results, baseline, same, (load_before, os.getloadavg()[0]))
        if args.profile:  # one more warm run, not in the figures above
            profiler = cProfile.Profile()
            recipe = recipe_for(url, corpus, questions, work / "out-profile", args.concurrency)
            one_run(recipe, work, procs, profiler)
            profiler.dump_stats(args.profile)
            print(f"\nprofile of a warm run (cProfile, {args.profile}), by own time:")
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(15)
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, pages: int, results: dict[str, list[RunResult]],
           baseline: list[BaselineResult], same: int, load: tuple[float, float]) -> None:
    first = results["warm"][0]
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs (load average "
          f"{load[0]:.1f} before, {load[1]:.1f} after); {args.docs} sample docs, {pages} pages; "
          f"{first.evidence_requests} evidence + {first.answer_requests} answer requests per run; "
          f"concurrency {args.concurrency}; {args.servers} server processes; median of "
          f"{args.runs} runs")
    print(f"{'run':<5} {'render s':>8} {'pages':>5} {'evid. s':>7} {'evid. req/s':>11} "
          f"{'answer s':>8} {'whole s':>7} {'whole evid. req/s':>17} {'CPU ms/req':>10} "
          f"{'server ms/req':>13} {'on CPU':>6}   runs (evidence req/s)")
    medians: dict[str, dict[str, float]] = {}
    for kind, runs in results.items():
        m = {
            name: statistics.median(getattr(r, name) for r in runs)
            for name in ("render_s", "rendered", "evidence_s", "evidence_rps", "answer_s",
                         "whole_s", "whole_rps", "evidence_cpu_ms", "evidence_server_cpu_ms",
                         "cpu_busy")
        }
        medians[kind] = m
        each = ", ".join(f"{r.evidence_rps:.0f}" for r in runs)
        print(f"{kind:<5} {m['render_s']:>8.2f} {m['rendered']:>5.0f} {m['evidence_s']:>7.2f} "
              f"{m['evidence_rps']:>11.0f} {m['answer_s']:>8.2f} {m['whole_s']:>7.2f} "
              f"{m['whole_rps']:>17.0f} {m['evidence_cpu_ms']:>10.3f} "
              f"{m['evidence_server_cpu_ms']:>13.3f} {m['cpu_busy']:>6.0%}   {each}")
    b = {
        name: statistics.median(getattr(r, name) for r in baseline)
        for name in ("evidence_s", "evidence_rps", "evidence_cpu_ms", "evidence_server_cpu_ms",
                     "cpu_busy")
    }
    each = ", ".join(f"{r.evidence_rps:.0f}" for r in baseline)
    print(f"baseline, AsyncOpenAI sending the same evidence requests (after each warm run): "
          f"{b['evidence_s']:.2f} s, {b['evidence_rps']:.0f} req/s, CPU {b['evidence_cpu_ms']:.3f} "
          f"ms/req, server {b['evidence_server_cpu_ms']:.3f} ms/req, on CPU {b['cpu_busy']:.0%}; "
          f"runs (req/s): {each}")
    print(f"(same requests checked before the timed runs: {same} evidence bodies recorded from "
          "each client, equal as JSON, each as many times)")
    print("(evid. s: the evidence stage: requests built, sent, parsed, cached, turned into rows; "
          "CPU ms/req: this process's CPU per evidence request in that stage, server ms/req the "
          "server's; on CPU: the share of the stage this process ran)")
    for kind in ("warm", "cold"):
        stage, whole = medians[kind]["evidence_rps"], medians[kind]["whole_rps"]
        ceiling = 1000 / medians[kind]["evidence_cpu_ms"]
        verdict = "meets" if stage >= GOAL else "MISSES"
        print(f"{kind}: evidence stage {stage:.0f} req/s = {stage / b['evidence_rps']:.2f}x "
              f"AsyncOpenAI's {b['evidence_rps']:.0f} req/s, {stage / GOAL:.2f}x the {GOAL:.0f} "
              f"req/s goal ({verdict}); whole run {whole / GOAL:.2f}x the goal; CPU-bound ceiling "
              f"of the pipeline on one free core {ceiling:.0f} req/s = {ceiling / GOAL:.2f}x")


if __name__ == "__main__":
    main()
