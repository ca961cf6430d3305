"""A generated run history shaped like a real project's: pipelines of synth -> export -> train ->
merge (three alphas) -> evals on two benchmarks, with varied recipes (K, vision ratio, mixtures,
base models, learning rates, LoRA or full) and notes written as people write them. Used by the
search-quality and leaderboard tests and by benchmarks/bench_registry.py (100,000 runs).

Search targets: notes planted on known runs, each with a query that paraphrases it without
sharing a word with it (the test checks that with the full-text index itself)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from docthink.runs.registry import Artifact, Registry

# (note, query): the query says what the note says, in other words.
TARGETS: tuple[tuple[str, str], ...] = (
    ("Loss spiked at step 400; lowered lr to 2e-6 and resumed from the step 300 checkpoint.",
     "training diverged early so we reduced the learning rate"),
    ("OOM on the 80GB cards with 120 pages per document; capped max_pixels at 1M to fit.",
     "ran out of GPU memory on lengthy PDFs, shrank the images"),
    ("Judge model kept answering in Chinese; forced English in the extraction prompt.",
     "the grader replied in the wrong language"),
    (("Teacher endpoint timed out repeatedly overnight, half the evidence requests failed; rerun "
     "needed."), "server was unresponsive during the night and many calls were lost"),
    ("Merged at alpha 0.5 beats full fine-tune on MMLBD-C but loses on MMLongBench-Doc.",
     ("interpolating halfway between base and adapted weights helps a single evaluation suite and "
     "hurts the other")),
    ("Thinking traces made answers 3x longer with no accuracy gain; try stripping traces.",
     "reasoning output became much more verbose without improving correctness"),
    (("Duplicate questions found in the synthetic set: 14% of qids repeat across docs; dedup "
     "before export."), "the generated data contains lots of copies of the same item"),
    ("Page indices off by one after the renderer change; evidence pointed at the wrong page.",
     "numbering bug shifted every citation to the neighbouring sheet"),
    (("Tokenizer lacked the <cot> token, so it was split into pieces; added special tokens and "
     "retrained."), "control marker was broken up in fragments by the vocabulary"),
    ("Scanned PDFs have no text layer, BM25 teacher found nothing on them.",
     "image-only documents without OCR give the lexical extractor zero matches"),
    ("Vision branch answers are worse on charts than the text branch.",
     "for plots and graphs the image-based responder underperforms"),
    ("Seed 3 run is an outlier: accuracy 6 points below seeds 0-2. Probably unlucky data order.",
     "one random initialization gave surprisingly bad scores, likely shuffling luck"),
    ("Disk filled up during checkpoint save at epoch 2; job crashed, resumed after cleanup.",
     "storage was exhausted while writing weights and the training died"),
    ("Answer extraction regex misses numbers with thousands separators like 20,954.",
     "parser fails on figures containing commas"),
    ("Using K=24 pages per trace instead of 16 improved recall on long reports.",
     "keeping more evidence sheets in each reasoning chain helped for lengthy filings"),
    ("Throughput dropped to 40 req/s when prefix caching was disabled on vLLM.",
     "serving got much slower after turning off reuse of shared prompt beginnings"),
    (("Mixed think and non-think data: model now answers tersely without <cot> and thinks step "
     "by step with it."), ("blend of reasoning and direct examples gives short replies unless the "
     "control marker is present")),
    ("LoRA rank 16 underfits; full fine-tuning is 4 points better on MMLBD-C.",
     "the adapter approach lacked capacity compared with updating all weights"),
    ("Gradient norm exploded with bf16 on the 7B model; switched to fp32 master weights.",
     "numerical instability at half precision fixed with single precision"),
    (("Evaluated on the wrong split: used dev questions that overlap the training documents. "
     "Numbers invalid."), "test leakage made these scores meaningless"),
    ("The 32B evidence model rates cover pages as relevant far too often.",
     "the bigger extractor keeps flagging front matter as useful"),
    ("Request cache key ignored the image hash, so different renders returned stale answers.",
     "stored responses were reused incorrectly after pictures changed"),
    ("Plain QA ratio 0.5 keeps the non-think answers short; at 0 the model rambles.",
     "without direct examples in the mix the checkpoint becomes long-winded"),
    ("Warmup too short; first 50 steps had huge gradient spikes.",
     "learning rate schedule ramp was insufficient so updates were unstable at the beginning"),
)

# Everyday notes, some close in topic to the targets (the near misses a search must rank below).
DISTRACTORS = (
    "baseline rerun with seed {seed}",
    "same recipe as the previous run, only K changed to {k}",
    "mean output tokens {tokens}; looks fine",
    "acc {acc} on {bench}, within the CI of the previous run",
    "resumed after preemption at step {step}",
    "moved to the new partition, queue times long",
    "checked 20 random traces by hand; {n} had irrelevant pages",
    "used the updated evidence prompt (v{n})",
    "for the paper table",
    "compare with the alpha {alpha} run",
    "teacher Qwen3-VL-32B on 8 GPUs; took {hours} h",
    "export has {images} images; shards uploaded to the bucket",
    "learning rate sweep: 1e-6, 2e-6, 5e-6",
    "memory usage fine at 64 pages",
    "judge prompt v2 for extraction",
    "loss curve smooth, no surprises",
    "eval on MMLBD-C done, numbers in the sheet",
    "cot tokens added to the tokenizer before training",
    "charts and tables split evenly in this set",
    "vLLM 0.12 with tensor parallel 4",
    "needs a second look before we report it",
    "reran with the fixed corpus (three PDFs were rejected before)",
    "lost two nodes mid-run, restarted from the last save",
    "numbers match the blog post",
)

BASE_MODELS = ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen3-VL-8B-Instruct",
               "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "mistralai/Mistral-Small-3.2-24B-Instruct")
EVIDENCE_MODELS = ("Qwen/Qwen3-VL-32B-Instruct-FP8", "Qwen/Qwen2.5-VL-72B-Instruct", None)
BENCHMARKS = ("mmlongbench-doc", "mmlbd-c")
ALPHAS = (0.25, 0.5, 1.0)


@dataclass
class RunSpec:
    id: str
    kind: str
    started_at: str
    recipe: dict[str, object]
    metrics: dict[str, object]
    parents: tuple[str, ...] = ()
    artifacts: list[Artifact] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    status: str = "ok"

    @property
    def command(self) -> list[str]:
        return ["docthink", self.kind, "--recipe", f"recipes/{self.id}.yaml"]


def _sha(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _teacher_or(model: str | None) -> dict[str, object]:
    if model is None:
        return {"kind": "teacher", "similarity": "bm25"}
    return {"kind": "openai", "model": model, "endpoints": [{"base_url": "http://gpu-1:8000/v1",
                                                             "api_key": None}]}


def pipeline(i: int, rng: random.Random, start: datetime) -> list[RunSpec]:
    """One pipeline: synth, export, train, merge and 6 evals (3 alphas x 2 benchmarks)."""
    t = start + timedelta(hours=6 * i)
    stamp = lambda hours: (t + timedelta(hours=hours)).isoformat(timespec="milliseconds")
    tag = f"{i:06d}"
    k = rng.choice((8, 16, 16, 24, 32))
    vision = rng.choice((0.3, 0.5, 0.5, 0.7))
    plain = rng.choice((0.0, 0.0, 0.25, 0.5, 1.0))
    none_share = rng.choice((0.05, 0.05, 0.1, 0.0))
    evidence_model = rng.choice(EVIDENCE_MODELS)
    seed = rng.choice((0, 0, 1, 2, 3))
    synth_out = f"/data/synth/s{tag}"
    synth = RunSpec(
        f"{tag}-synth", "synth", stamp(0),
        {"corpus": "/data/corpus/reports-2026", "questions": "/data/questions/train.jsonl",
         "out": synth_out, "seed": seed,
         "models": {s: _teacher_or(evidence_model) for s in ("evidence", "answer_vision",
                                                             "answer_text")},
         "trace": {"threshold": 1.0, "top_k": k},
         "answer": {"vision_ratio": vision, "temperature": 0.0, "max_tokens": 1024},
         "export": {"placement": {"system": 0.45, "prefix": 0.25, "suffix": 0.25,
                                  "none": none_share},
                    "page_index": "Page {i}:", "plain_qa": None, "plain_qa_ratio": plain}},
        {"questions": rng.randint(2000, 12000), "traces": rng.randint(1500, 11000),
         "examples": rng.randint(1500, 11000), "evidence_failures": rng.randint(0, 40)},
        artifacts=[Artifact("input", "/data/questions/train.jsonl", _sha("questions"),
                            4_000_000, "blake3"),
                   Artifact("output", f"{synth_out}/examples.jsonl", _sha(tag, "examples"),
                            rng.randint(10**7, 10**8), "blake3")],
    )
    export_out = f"/data/export/e{tag}"
    export = RunSpec(
        f"{tag}-export", "export", stamp(1),
        {"run_dir": synth_out, "format": "trl", "out": export_out},
        {"examples": synth.metrics["examples"], "images": rng.randint(10**4, 10**5)},
        parents=(synth.id,),
        artifacts=[Artifact("input", f"{synth_out}/examples.jsonl", _sha(tag, "examples"), 1,
                            "blake3"),
                   Artifact("output", f"{export_out}/train.parquet", _sha(tag, "train"), 1,
                            "blake3")],
    )
    base = rng.choice(BASE_MODELS)
    finetune = rng.choice(("full", "full", "lora"))
    train_out = f"/ckpt/t{tag}"
    train = RunSpec(
        f"{tag}-train", "train", stamp(2),
        {"model": base, "data": export_out, "out": train_out, "seed": seed, "finetune": finetune,
         "learning_rate": rng.choice((2e-6, 5e-6, 1e-5)), "epochs": rng.choice((1.0, 2.0, 3.0)),
         "mixture": {"placements": ["system", "prefix", "suffix", "none"],
                     "traces": rng.choice(("keep", "keep", "strip")),
                     "think_share": rng.choice((None, 0.5, 0.8, 1.0))}},
        {"train_loss": round(rng.uniform(0.3, 1.2), 3), "steps": rng.randint(500, 5000)},
        parents=(export.id,),
        artifacts=[Artifact("input", f"{export_out}/train.parquet", _sha(tag, "train"), 1,
                            "blake3"),
                   Artifact("output", train_out, _sha(tag, "ckpt"), 16 * 10**9, "blake3")],
    )
    outs = [f"/ckpt/m{tag}-a{a:g}" for a in ALPHAS]
    merge = RunSpec(
        f"{tag}-merge", "merge", stamp(20),
        {"base": f"/models/{base}", "tuned": train_out, "alphas": list(ALPHAS), "outs": outs,
         "shard_size": 5 * 2**30, "chunk_bytes": 256 * 2**20},
        {"alphas": list(ALPHAS), "tensors": 729, "seconds": round(rng.uniform(20, 90), 1)},
        parents=(train.id,),
        artifacts=[Artifact("input", train_out, _sha(tag, "ckpt"), 1, "blake3"),
                   *(Artifact("output", o, _sha(o), 16 * 10**9, "blake3") for o in outs)],
    )
    runs = [synth, export, train, merge]
    quality = rng.uniform(0.25, 0.45)
    for j, (alpha, out) in enumerate(zip(ALPHAS, outs, strict=True)):
        for b, bench in enumerate(BENCHMARKS):
            acc = quality + 0.05 * (1 - abs(alpha - 0.5)) - 0.04 * b + rng.uniform(-0.02, 0.02)
            cot = acc + rng.uniform(-0.01, 0.05)
            runs.append(RunSpec(
                f"{tag}-eval-{j}{b}", "eval", stamp(22 + j + b),
                {"benchmark": bench, "data": f"/bench/{bench}/samples.json",
                 "documents": f"/bench/{bench}/documents", "corpus": None,
                 "out": f"/evals/{tag}-{j}{b}", "model": _teacher_or(out), "seed": 0,
                 "inference": {"max_pages": 120, "modes": ["plain", "cot"], "max_tokens": 1024}},
                {"benchmark": bench, "acc": round(acc, 4), "acc_cot": round(cot, 4),
                 "f1": round(acc - 0.02, 4), "f1_cot": round(cot - 0.02, 4),
                 "mean_output_tokens": round(rng.uniform(8, 30), 1),
                 "mean_output_tokens_cot": round(rng.uniform(150, 900), 1), "skipped": 0},
                artifacts=[Artifact("input", f"/bench/{bench}/samples.json", _sha(bench), 1,
                                    "blake3")],
            ))
    return runs


def history(pipelines: int, seed: int = 0, notes_per_run: float = 0.3) -> list[RunSpec]:
    """`pipelines` x 10 runs; about `notes_per_run` everyday notes per run; the TARGETS notes
    planted one each on runs spread over the history (see `targets`)."""
    rng = random.Random(seed)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    runs = [r for i in range(pipelines) for r in pipeline(i, rng, start)]
    for run in runs:
        if rng.random() < notes_per_run:
            run.notes.append(rng.choice(DISTRACTORS).format(
                seed=rng.randint(0, 4), k=rng.choice((8, 16, 24)), tokens=rng.randint(10, 900),
                acc=round(rng.uniform(0.2, 0.5), 3), bench=rng.choice(BENCHMARKS),
                step=rng.randint(100, 5000), n=rng.randint(1, 9), alpha=rng.choice(ALPHAS),
                hours=rng.randint(2, 40), images=rng.randint(10**4, 10**5)))
        if rng.random() < 0.05:
            run.tags.append(rng.choice(("paper", "baseline", "ablation", "broken", "best-so-far")))
    for (note, _), run_index in zip(TARGETS, target_runs(len(runs)), strict=True):
        runs[run_index].notes.append(note)
    return runs


def target_runs(n_runs: int) -> list[int]:
    """Which runs carry the target notes: spread evenly over the history."""
    step = n_runs // len(TARGETS)
    return [i * step + step // 2 for i in range(len(TARGETS))]


def targets(runs: list[RunSpec]) -> list[tuple[str, str, str]]:
    """(query, the run whose note it paraphrases, the note)."""
    spots = target_runs(len(runs))
    return [(query, runs[i].id, note) for (note, query), i in zip(TARGETS, spots, strict=True)]


def record(registry: Registry, runs: list[RunSpec]) -> None:
    """Through the registry's own API, as the commands do (one transaction per call)."""
    for run in runs:
        registry.start(run_id=run.id, kind=run.kind, started_at=run.started_at,
                       command=run.command, cwd="/work", run_dir=f"/runs/{run.id}", recipe=run.recipe,
                       recipe_hash=_sha(json.dumps(run.recipe, sort_keys=True)),
                       git_commit="0" * 40, git_dirty=False, packages={"docthink": "0.1.0"},
                       host="node-1", parents=run.parents)
        registry.finish(run.id, status=run.status, ended_at=run.started_at, metrics=run.metrics,
                        artifacts=run.artifacts, error=None)
        for note in run.notes:
            registry.add_note(run.id, note, author="generated")
        if run.tags:
            registry.add_tags(run.id, run.tags)


def record_bulk(registry: Registry, runs: list[RunSpec], batch: int = 2000) -> None:
    """The same rows in one transaction per `batch` runs: for generating 100,000 runs."""
    for start in range(0, len(runs), batch):
        chunk = runs[start:start + batch]
        with registry.write() as db:
            db.executemany(
                "INSERT INTO runs (id, kind, status, started_at, ended_at, command, run_dir,"
                " recipe, recipe_hash, git_commit, git_dirty, packages, host, metrics)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 'node-1', ?)",
                [(r.id, r.kind, r.status, r.started_at, r.started_at, json.dumps(r.command),
                  f"/runs/{r.id}", json.dumps(r.recipe, sort_keys=True),
                  _sha(json.dumps(r.recipe, sort_keys=True)), "0" * 40,
                  json.dumps({"docthink": "0.1.0"}), json.dumps(r.metrics, sort_keys=True))
                 for r in chunk])
            db.executemany("INSERT INTO artifacts (run_id, role, path, digest, size, algorithm)"
                           " VALUES (?, ?, ?, ?, ?, ?)",
                           [(r.id, a.role, a.path, a.digest, a.size, a.algorithm) for r in chunk
                            for a in r.artifacts])
            db.executemany("INSERT INTO run_parents (run_id, parent_id) VALUES (?, ?)",
                           [(r.id, p) for r in chunk for p in r.parents])
            db.executemany("INSERT INTO notes (run_id, created_at, author, text)"
                           " VALUES (?, ?, 'generated', ?)",
                           [(r.id, r.started_at, n) for r in chunk for n in r.notes])
            db.executemany("INSERT INTO tags (run_id, tag, created_at) VALUES (?, ?, ?)",
                           [(r.id, t, r.started_at) for r in chunk for t in r.tags])
