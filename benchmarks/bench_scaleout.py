"""Scale-out: the same evidence work (N requests, each with a ~100 KB page image) against the same
zero-latency OpenAI-compatible server, in one run, by four engines:

- docthink local: the synth evidence stage (`pipeline.collect_evidence`, docthink's client) run by
  the local shard executor (`engine.local.run_locally`), shards committed as Parquet parts;
- docthink on Ray: the same job by the Ray executor (`engine.raydata.run_on_ray`) on a local
  cluster of this machine's CPUs (model calls from actors);
- Ray Data's own `HttpRequestProcessorConfig` (batch size 64, one actor per CPU's worth the
  cluster allows) on the same cluster, the rows carrying the same request bodies;
- distilabel 1.5.3: `TextGenerationWithImage` with `OpenAILLM`, `input_batch_size` 64, run as a
  subprocess by a separate environment's Python (`--distilabel-python`).

The server (separate processes sharing the port) counts requests and notes the first and last
arrival, so every engine is timed the same way: start-up is from the engine's start (process
launch, `ray.init`, dataset creation) to the first request at the server; steady rows/s is N over
first-to-last request; rows/s with start-up is N over the whole call. CPU-seconds per 1,000 rows
count every process of the engine (this process, Ray's processes, distilabel's subprocess and its
children), not the server's. Medians of --runs. Goals: docthink local >= 5x distilabel; docthink
on Ray >= 2x Ray's HTTP processor on the same cluster.

    python benchmarks/bench_scaleout.py [--requests 2048] [--runs 3]
        [--distilabel-python /work/venvs/distilabel/bin/python]

distilabel lives in an environment of its own (it pins other versions than docthink's):
    python -m venv /work/venvs/distilabel
    /work/venvs/distilabel/bin/pip install distilabel==1.5.3 openai requests
(`requests`: distilabel 1.5.3 imports it without declaring it.)
"""

from __future__ import annotations

import argparse
import base64
import json
import mmap
import os
import platform
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

EVIDENCE = json.dumps({"evidence": "The page reports revenue of 4,812 million euros.",
                       "relevance_score": 7.0})
MODEL = "bench-vl"
QUESTION = "What does the page report about revenue in year {i}?"


# -- the server -------------------------------------------------------------------------------


def serve(port: int, stats_fd: int) -> None:
    """One server process (several share the port): answers every chat request at once, and
    keeps (count, first arrival, last arrival) in a shared array."""
    from aiohttp import web

    shared = mmap.mmap(stats_fd, 24)
    body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": EVIDENCE},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 30, "total_tokens": 930},
    }).encode()
    lock = _Lock(stats_fd)

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        now = time.time()
        with lock:
            count, first, last = struct.unpack("qdd", shared[:24])
            shared[:24] = struct.pack("qdd", count + 1, first if count else now, max(last, now))
        return web.Response(body=body, content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, access_log=None, print=None,
                backlog=1024)


class _Lock:
    """An flock on the stats file: the server processes update it one at a time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)


@dataclass
class Server:
    url: str
    stats: Path
    processes: list[subprocess.Popen[bytes]]

    def reset(self) -> None:
        with self.stats.open("r+b") as f:
            f.write(struct.pack("qdd", 0, 0.0, 0.0))

    def read(self) -> tuple[int, float, float]:
        return struct.unpack("qdd", self.stats.read_bytes()[:24])

    def pids(self) -> set[int]:
        return {p.pid for p in self.processes}


def start_server(work: Path, n: int) -> Server:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stats = work / "server-stats"
    stats.write_bytes(bytes(24))
    processes = [subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(stats)])
                 for _ in range(n)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.5)  # let the other processes bind too
            return Server(f"http://127.0.0.1:{port}/v1", stats, processes)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("benchmark server did not start")


# -- the work ---------------------------------------------------------------------------------


def page_images(folder: Path, n: int) -> list[Path]:
    """`n` PNG pages of ~100 KB each (noise over a white page: PNG cannot shrink it)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = np.full((400, 300, 3), 255, dtype=np.uint8)
        pixels[:112] = rng.integers(0, 256, size=(112, 300, 3), dtype=np.uint8)
        path = folder / f"page-{i:03d}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        paths.append(path)
    return paths


def work_items(requests: int, pages: int) -> list[tuple[int, int]]:
    """(question, page) pairs: requests // pages questions over every page."""
    return [(q, p) for q in range(requests // pages) for p in range(pages)]


# -- engines ----------------------------------------------------------------------------------


@dataclass
class Result:
    engine: str
    rows: int
    wall_s: float  # the whole call, start-up included
    startup_s: float  # start to the first request at the server
    steady_rps: float
    cpu_s: float
    extra: str = ""

    @property
    def rps(self) -> float:
        return self.rows / self.wall_s

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_s / self.rows


class CpuSampler:
    """CPU seconds of this process and, with `tree`, its descendants (not `exclude`: the
    server), sampled every 0.1 s so that processes which end before the last sample still count."""

    def __init__(self, exclude: set[int], tree: bool) -> None:
        import psutil

        self.psutil = psutil
        self.exclude = exclude
        self.tree = tree
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self.stop = threading.Event()
        self.base = self._sample()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> dict[int, float]:
        me = self.psutil.Process()
        times = {}
        for proc in [me, *(me.children(recursive=True) if self.tree else [])]:
            if proc.pid in self.exclude:
                continue
            try:
                cpu = proc.cpu_times()
                times[proc.pid] = cpu.user + cpu.system
            except self.psutil.Error:
                continue
        return times

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            for pid, cpu in self._sample().items():
                self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)

    def total(self) -> float:
        self.stop.set()
        self.thread.join()
        for pid, cpu in self._sample().items():
            self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.seen.items())


def timed(engine: str, server: Server, rows: int, call: Callable[[], str], tree: bool) -> Result:
    """`tree`: the engine's CPU is in this process's descendants (Ray's processes); else in this
    process alone (the Ray cluster idling beside it is not counted)."""
    server.reset()
    sampler = CpuSampler(server.pids(), tree)
    started = time.time()
    extra = call()
    wall = time.time() - started
    cpu = sampler.total()
    count, first, last = server.read()
    assert count == rows, f"{engine}: the server saw {count} requests, expected {rows}"
    return Result(engine, rows, wall, first - started, rows / (last - first), cpu, extra)


def docthink_job(server: Server, images: list[Path], requests: int, out: Path,
                 concurrency: int, shard_size: int) -> tuple[object, list[object]]:
    """The evidence stage as a shard job: questions over every page, 64 in flight per model."""
    from contextlib import asynccontextmanager
    from hashlib import sha256

    from docthink.core.parts import ImagePart, PageRef
    from docthink.engine.shards import Shard, ShardStore, write_part
    from docthink.models.openai_compat import OpenAICompatModel
    from docthink.models.specs import OpenAIModelSpec
    from docthink.questions.rows import Question
    from docthink.synth.pipeline import collect_evidence, table_rows
    from docthink.synth.recipe import SynthRecipe

    refs = [PageRef("bench.pdf", i + 1) for i in range(len(images))]
    parts = {ref: ImagePart(path, sha256(path.read_bytes()).hexdigest(), "image/png", ref)
             for ref, path in zip(refs, images, strict=True)}
    spec = OpenAIModelSpec.model_validate({
        "model": MODEL, "max_retries": 0,
        "endpoints": [{"base_url": server.url, "api_key_env": None,
                       "max_concurrency": concurrency}]})
    recipe = SynthRecipe.model_validate({"corpus": out, "questions": out, "out": out,
                                         "concurrency": concurrency})
    questions = [Question(f"q{q:04d}", "bench.pdf", QUESTION.format(i=q), (refs[0],),
                          tuple(refs)) for q in range(requests // len(images))]
    shards = [Shard(i, tuple(questions[s:s + shard_size]), f"bench-{i}")
              for i, s in enumerate(range(0, len(questions), shard_size))]

    class EvidenceJob:
        def __init__(self) -> None:
            self.store = ShardStore(out / "shards")

        def prepare(self, shard: object, workers: int, show_progress: bool) -> None:
            pass  # the page images exist

        @asynccontextmanager
        async def session(self):  # type: ignore[no-untyped-def]
            model = OpenAICompatModel(spec)
            try:
                yield model
            finally:
                await model.aclose()

        async def process(self, shard, model, show_progress):  # type: ignore[no-untyped-def]
            rows = await collect_evidence(shard.items, parts, recipe, model, lambda n: None)
            assert not any(r.failure for r in rows), rows[0].failure
            return self.store.commit(shard, lambda folder: write_part(
                table_rows(rows), folder / "evidence.parquet") or {"rows": len(rows)})

    return EvidenceJob(), shards


def run_docthink_local(server: Server, images: list[Path], requests: int, work: Path) -> str:
    from docthink.engine.local import run_locally

    job, shards = docthink_job(server, images, requests, work / "local", 64, 32)
    run_locally(job, shards, workers=1, show_progress=False)  # type: ignore[arg-type]
    return f"{len(shards)} shards"


def run_docthink_ray(server: Server, images: list[Path], requests: int, work: Path,
                     actors: int) -> str:
    from docthink.engine.executor import ExecutorSpec
    from docthink.engine.raydata import run_on_ray

    job, shards = docthink_job(server, images, requests, work / "ray", 64, 8)
    spec = ExecutorSpec(kind="ray", actors=actors)
    run_on_ray(spec, job, shards, show_progress=False)  # type: ignore[arg-type]
    return f"{len(shards)} shards, {actors} actors"


def payload(image: str, question: str) -> dict[str, object]:
    """The body docthink's evidence request sends (system prompt, image, question, schema)."""
    from docthink.models.tasks import EvidenceReply
    from docthink.synth import PROMPTS

    schema = EvidenceReply.model_json_schema()
    return {
        "model": MODEL, "temperature": 0.7, "max_tokens": 1024,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": schema["title"], "schema": schema, "strict": True}},
        "messages": [
            {"role": "system", "content": PROMPTS["evidence_system"].text},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                {"type": "text", "text": question}]},
        ],
    }


def run_ray_http(server: Server, images: list[Path], requests: int, actors: int) -> str:
    import ray
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    encoded = [base64.b64encode(p.read_bytes()).decode() for p in images]
    rows = [{"question": q, "page": p} for q, p in work_items(requests, len(images))]
    config = HttpRequestProcessorConfig(url=f"{server.url}/chat/completions", batch_size=64,
                                        concurrency=actors)
    processor = build_processor(
        config,
        preprocess=lambda row: {"payload": payload(encoded[row["page"]],
                                                   QUESTION.format(i=row["question"]))},
        postprocess=lambda row: {"ok": row["http_response"]["choices"][0]["message"]["content"]
                                 == EVIDENCE},
    )
    done = processor(ray.data.from_items(rows)).materialize()
    assert done.count() == requests and all(r["ok"] for r in done.take_all())
    return f"batch 64, {actors} actors"


DISTILABEL = """
import json, sys
from distilabel.models.llms import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import TextGenerationWithImage

rows = json.load(open(sys.argv[1]))
url = sys.argv[2]
with Pipeline(name="bench-scaleout") as pipeline:
    load = LoadDataFromDicts(data=rows, batch_size=64)
    task = TextGenerationWithImage(
        llm=OpenAILLM(model="bench-vl", base_url=url, api_key="none",
                      generation_kwargs={"max_new_tokens": 1024, "temperature": 0.7}),
        image_type="base64", input_batch_size=64, system_prompt=sys.argv[3],
        add_raw_input=False)  # 1.5.3 cannot store a system text beside image parts
    load >> task
distiset = pipeline.run(use_cache=False)
generations = distiset["default"]["train"]["generation"]
assert len(generations) == len(rows) and all(g for g in generations), "distilabel lost rows"
"""


def run_distilabel(server: Server, images: list[Path], requests: int, work: Path,
                   python: str) -> str:
    from docthink.synth import PROMPTS

    encoded = [base64.b64encode(p.read_bytes()).decode() for p in images]
    rows = [{"instruction": QUESTION.format(i=q), "image": encoded[p]}
            for q, p in work_items(requests, len(images))]
    (work / "distilabel-rows.json").write_text(json.dumps(rows))
    (work / "distilabel_run.py").write_text(DISTILABEL)
    env = {**os.environ, "HOME": str(work / "home"), "DISTILABEL_LOG_LEVEL": "WARNING"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([python, str(work / "distilabel_run.py"),
                           str(work / "distilabel-rows.json"), server.url,
                           PROMPTS["evidence_system"].text], env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return f"cpu {cpu:.3f}"


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--pages", type=int, default=32, help="distinct page images")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--distilabel-python", default="/work/venvs/distilabel/bin/python")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        fd = os.open(args.serve[1], os.O_RDWR)
        serve(int(args.serve[0]), fd)
        return
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench_scaleout_"))
    images = page_images(work / "pages", args.pages)
    sizes = [p.stat().st_size for p in images]
    server = start_server(work, args.servers)
    results: dict[str, list[Result]] = {}
    try:
        started = time.time()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
        ray_init_s = time.time() - started
        actors = args.ray_cpus
        engines: dict[str, Callable[[int], str]] = {
            "docthink local": lambda rep: run_docthink_local(
                server, images, args.requests, work / f"rep{rep}"),
            "docthink on Ray": lambda rep: run_docthink_ray(
                server, images, args.requests, work / f"rep{rep}", actors),
            "Ray HttpRequestProcessor": lambda rep: run_ray_http(
                server, images, args.requests, actors),
            "distilabel 1.5.3": lambda rep: run_distilabel(
                server, images, args.requests, work / f"rep{rep}", args.distilabel_python),
        }
        for rep in range(args.runs):
            (work / f"rep{rep}").mkdir()
            for name, engine in engines.items():
                result = timed(name, server, args.requests, partial(engine, rep), "Ray" in name)
                if name.startswith("distilabel"):  # its processes are gone: rusage counts them
                    result.cpu_s = float(result.extra.split()[1])
                results.setdefault(name, []).append(result)
                print(f"  run {rep + 1} {name}: {result.rps:.0f} rows/s, steady "
                      f"{result.steady_rps:.0f}, start-up {result.startup_s:.2f} s, "
                      f"{result.cpu_per_1000:.2f} CPU-s/1000 rows", file=sys.stderr)
        report(args, sizes, ray_init_s, results)
    finally:
        ray.shutdown()
        for process in server.processes:
            process.terminate()
            process.wait()


def report(args: argparse.Namespace, sizes: list[int], ray_init_s: float,
           results: dict[str, list[Result]]) -> None:
    load = os.getloadavg()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs shared with other work "
          f"(load average {load[0]:.1f}); {args.requests} evidence requests, each with one of "
          f"{args.pages} PNG pages of {min(sizes) // 1024}-{max(sizes) // 1024} KB; "
          f"{args.servers} zero-latency server processes; Ray: a local cluster of "
          f"{args.ray_cpus} CPUs, ray.init {ray_init_s:.2f} s (not in the figures below); "
          f"medians of {args.runs} runs")
    print(f"{'engine':<26} {'rows/s':>7} {'steady rows/s':>13} {'start-up s':>10} "
          f"{'CPU-s/1000 rows':>15}   runs (rows/s)")
    medians: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        m = {key: statistics.median(getattr(r, key) for r in runs)
             for key in ("rps", "steady_rps", "startup_s", "cpu_per_1000")}
        medians[name] = m
        each = ", ".join(f"{r.rps:.0f}" for r in runs)
        print(f"{name:<26} {m['rps']:>7.0f} {m['steady_rps']:>13.0f} {m['startup_s']:>10.2f} "
              f"{m['cpu_per_1000']:>15.2f}   {each}")
    local, ray_ = medians["docthink local"], medians["docthink on Ray"]
    distilabel, http = medians["distilabel 1.5.3"], medians["Ray HttpRequestProcessor"]
    for label, ours, theirs, goal in (
        ("docthink local vs distilabel", local, distilabel, 5.0),
        ("docthink on Ray vs Ray's HTTP processor", ray_, http, 2.0),
    ):
        ratio, steady = ours["rps"] / theirs["rps"], ours["steady_rps"] / theirs["steady_rps"]
        cpu = theirs["cpu_per_1000"] / ours["cpu_per_1000"]
        verdict = "meets" if ratio >= goal else "MISSES"
        print(f"{label}: {ratio:.1f}x rows/s with start-up ({verdict} the {goal:.0f}x goal), "
              f"{steady:.1f}x steady, {cpu:.1f}x less CPU per row")


if __name__ == "__main__":
    main()
