"""How much of the evidence stage's prompt a server-side prefix cache can reuse.

For a realistic recipe (questions over long contexts that share pages: whole documents and
hard-negative mixes), the evidence requests are built by the real pipeline code and replayed, in
the order docthink issues them (grouped by page image) and in question-by-question order, through
a simulated prefix cache: vLLM-style automatic prefix caching with 16-token blocks keyed by the
hash of the whole prefix, LRU eviction, and a capacity in tokens (the KV cache left on the GPU).

Token counts: text at 4 characters per token; an image as Qwen2.5-VL counts it, one token per
28x28-pixel patch after merging, for the page size the render policy yields (US Letter at 144 dpi
capped to 1280 px -> 990x1280 px -> ~1,610 tokens).

    python benchmarks/bench_prefix_cache.py [--questions 400] [--capacity 400000]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.corpus.policy import RenderPolicy
from docthink.models.base import ChatRequest
from docthink.questions.rows import Question
from docthink.synth import requests as rq
from docthink.synth.pipeline import evidence_order

BLOCK = 16
LETTER_PT = (612.0, 792.0)


def image_tokens(policy: RenderPolicy) -> int:
    scale = policy.scale(*LETTER_PT)
    width, height = math.ceil(LETTER_PT[0] * scale), math.ceil(LETTER_PT[1] * scale)
    return math.ceil(width / 28) * math.ceil(height / 28)


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

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens // BLOCK
        self.blocks: OrderedDict[bytes, None] = OrderedDict()

    def serve(self, tokens: Sequence[str]) -> int:
        """Process one request; return how many of its tokens came from the cache."""
        digest = hashlib.sha256()
        reused, hitting = 0, True
        for start in range(0, len(tokens) - len(tokens) % BLOCK, BLOCK):
            digest.update("\x00".join(tokens[start : start + BLOCK]).encode())
            key = digest.copy().digest()
            if hitting and key in self.blocks:
                self.blocks.move_to_end(key)
                reused += BLOCK
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


def measure(requests: Sequence[ChatRequest], per_image: int, capacity: int) -> tuple[int, int]:
    cache = PrefixCache(capacity)
    sent = reused = 0
    for request in requests:
        tokens = token_stream(request, per_image)
        sent += len(tokens)
        reused += cache.serve(tokens)
    return sent, reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--capacity", type=int, default=400_000, help="KV cache, tokens")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    policy = RenderPolicy()
    per_image = image_tokens(policy)
    questions = realistic_questions(args.questions, args.seed)
    grouped = evidence_order(questions)
    by_question = [(q, ref) for q in questions for ref in q.context]
    assert sorted(map(str, (r for _, r in grouped))) == sorted(map(str, (r for _, r in by_question)))
    print(f"{len(questions)} questions, {len(grouped)} evidence requests, "
          f"{per_image} tokens per page image, prefix cache {args.capacity:,} tokens")
    results = {}
    for name, order in (("docthink (grouped by page)", grouped),
                        ("question by question", by_question)):
        sent, reused = measure(requests_in(order, policy), per_image, args.capacity)
        results[name] = (sent, reused)
        print(f"{name:28s} prompt tokens {sent:>13,}  reusable {reused:>13,}  "
              f"share {reused / sent:6.1%}  to compute {sent - reused:>13,}")
    (g_sent, g_reused), (q_sent, q_reused) = results.values()
    print(f"tokens to compute, question-by-question / grouped: "
          f"{(q_sent - q_reused) / (g_sent - g_reused):.2f}x")


if __name__ == "__main__":
    main()
