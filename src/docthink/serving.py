"""What a recipe asks of the servers its models run on, checked before a run is recorded and
printed as the command that serves it.

For each stage model that is an OpenAI-compatible endpoint, a recipe's longest request is worked
out from the recipe, the corpus's page sizes and the questions: how many images it carries (the
setting that decides it: `trace.top_k`, `multi_page.pages`, `inference.max_pages`) and how many
tokens it can take, prompt and output (estimated as `docthink.models.limits` says: upper bounds).
`check` refuses, in one line naming the setting to change, a recipe whose requests exceed what the
server takes (stated in the spec's `limits`, or read from the server), instead of meeting 400s
mid-run; `serve_commands` prints the vLLM command line each model needs (`docthink serve-args`).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from docthink.core.errors import UserError
from docthink.core.vocab import COT
from docthink.corpus.policy import RenderPolicy
from docthink.evals.recipe import EvalRecipe
from docthink.models.limits import (
    TEMPLATE_TOKENS,
    Served,
    image_tokens,
    page_pixels,
    served_limits,
    text_tokens,
)
from docthink.models.specs import ModelSpec, OpenAIModelSpec
from docthink.questions.recipe import QuestionsRecipe
from docthink.synth.recipe import SynthRecipe

PageSize = tuple[float, float]  # points


class LimitsError(UserError):
    """A recipe whose requests a server would refuse."""


@dataclass(frozen=True)
class Demand:
    """The longest request of one kind a model gets."""

    role: str  # the recipe field naming the model: "models.evidence"
    spec: OpenAIModelSpec
    request: str  # which request, in words
    images: int  # the most images one request carries
    images_set_by: str  # the setting that decides `images` ("" when it is always 0 or 1)
    tokens: int  # prompt and output tokens, at most
    tokens_set_by: tuple[str, ...]  # the settings that make it long
    detail: str  # how `tokens` adds up
    structured: bool  # asks for JSON-schema output


def _page_tokens(sizes: Iterable[PageSize], policy: RenderPolicy, spec: OpenAIModelSpec) -> int:
    """Tokens of the largest page image among `sizes` under `policy`."""
    rule = spec.limits.image_tokens
    return max(image_tokens(*page_pixels(size, policy), rule) for size in sizes)


def _image_note(spec: OpenAIModelSpec, policy: RenderPolicy) -> str:
    rule = spec.limits.image_tokens
    return (f"pages at {policy.dpi} dpi, longest side {policy.max_side} px, "
            f"{rule.token_pixels}-px tokens up to {rule.max_pixels:,} px an image")


def _served(spec: ModelSpec) -> OpenAIModelSpec | None:
    """The spec when it names a server (the offline teacher and local checkpoints have none)."""
    return spec if spec.kind == "openai" else None


# -- synth ----------------------------------------------------------------------------------------


def synth_demands(recipe: SynthRecipe) -> list[Demand]:
    from docthink.corpus.corpus import Corpus
    from docthink.questions.rows import check_documents, read_question_rows, resolve
    from docthink.synth import PROMPTS

    m = recipe.models
    specs = {name: _served(getattr(m, name))
             for name in ("evidence", "answer_vision", "answer_text")}
    if not any(specs.values()):
        return []
    rows = read_question_rows(recipe.questions)
    with Corpus.open(recipe.corpus) as corpus:
        check_documents(rows, corpus, recipe.questions)
        n_pages = {d.doc_id: d.n_pages for d in corpus.documents.values()}
        questions, _ = resolve(rows, n_pages, recipe.questions)
        sizes = {ref: corpus.document(ref.doc_id).page_sizes[ref.page - 1]
                 for q in questions for ref in q.context}
    if not questions:
        return []
    question = max(text_tokens(q.text) for q in questions)
    k = min(recipe.trace.top_k, max(len(q.context) for q in questions))
    demands = []
    if (spec := specs["evidence"]) is not None:
        page = _page_tokens(sizes.values(), recipe.image, spec)
        prompt = text_tokens(PROMPTS["evidence_system"].text, PROMPTS["evidence_source_note"].text)
        out = recipe.evidence.max_tokens
        demands.append(Demand(
            "models.evidence", spec, "evidence from one page", 1, "",
            3 * TEMPLATE_TOKENS + prompt + page + question + out,
            ("evidence.max_tokens", "image.max_side"),
            f"a page image of up to {page:,} tokens ({_image_note(spec, recipe.image)}), "
            f"{prompt + question:,} of text, evidence.max_tokens {out:,}", True))
    if (spec := specs["answer_vision"]) is not None and recipe.answer.vision_ratio > 0:
        page = _page_tokens(sizes.values(), recipe.image, spec)
        out = recipe.answer.max_tokens
        demands.append(Demand(
            "models.answer_vision", spec, f"an answer from {k} page images", k, "trace.top_k",
            2 * TEMPLATE_TOKENS + k * page + question + out,
            ("trace.top_k", "answer.max_tokens", "image.max_side"),
            f"{k} page images of up to {page:,} tokens ({_image_note(spec, recipe.image)}), "
            f"a question of {question:,}, answer.max_tokens {out:,}", False))
    if (spec := specs["answer_text"]) is not None and recipe.answer.vision_ratio < 1:
        # the trace: k pages' evidence, each at most evidence.max_tokens of the evidence model
        trace = k * (recipe.evidence.max_tokens + text_tokens(f"Page {k}:\n\n"))
        prompt = text_tokens(PROMPTS["answer_text_system"].text)
        out = recipe.answer.max_tokens
        demands.append(Demand(
            "models.answer_text", spec, f"an answer from a trace of {k} pages", 0, "",
            3 * TEMPLATE_TOKENS + prompt + trace + question + out,
            ("trace.top_k", "evidence.max_tokens", "answer.max_tokens"),
            f"a trace of {k} pages of up to evidence.max_tokens {recipe.evidence.max_tokens:,} "
            f"each, {prompt + question:,} of text, answer.max_tokens {out:,}", False))
    return demands


# -- questions ------------------------------------------------------------------------------------


def questions_demands(recipe: QuestionsRecipe) -> list[Demand]:
    from docthink.corpus.corpus import Corpus
    from docthink.questions import PROMPTS
    from docthink.questions.writers import Spec

    writer = _served(recipe.models.generator)
    judge = _served(recipe.models.judge)
    if writer is None and judge is None:
        return []
    excluded = set(recipe.decontamination.exclude_doc_ids)
    with Corpus.open(recipe.corpus) as corpus:
        documents = [d for d in corpus.documents.values() if d.doc_id not in excluded]
    sizes = [size for d in documents for size in d.page_sizes]
    if not sizes:
        return []
    out = recipe.max_tokens
    demands = []
    if writer is not None:
        page = _page_tokens(sizes, recipe.image, writer)
        w = recipe.single_page.spec
        spec_text = max(text_tokens(Spec(*combo).text()) for combo in itertools.product(
            w.type, w.answer_format, w.length, w.difficulty, w.n_questions))
        note = _image_note(writer, recipe.image)
        if recipe.single_page.enabled:
            prompt = text_tokens(PROMPTS["single_system"].text)
            demands.append(Demand(
                "models.generator", writer, "questions from one page", 1, "",
                3 * TEMPLATE_TOKENS + prompt + page + spec_text + out,
                ("max_tokens", "image.max_side"),
                f"a page image of up to {page:,} tokens ({note}), {prompt + spec_text:,} of "
                f"text, max_tokens {out:,}", True))
        if recipe.multi_page.enabled:
            n = min(recipe.multi_page.pages[1], max(d.n_pages for d in documents))
            prompt = text_tokens(PROMPTS["multi_system"].text, f"Page {n}:" * n)
            demands.append(Demand(
                "models.generator", writer, f"questions from a seed of {n} pages", n,
                "multi_page.pages", 3 * TEMPLATE_TOKENS + prompt + n * page + spec_text + out,
                ("multi_page.pages", "max_tokens", "image.max_side"),
                f"{n} page images of up to {page:,} tokens ({note}), {prompt + spec_text:,} of "
                f"text, max_tokens {out:,}", True))
    if judge is not None:
        page = _page_tokens(sizes, recipe.image, judge)
        prompt = text_tokens(PROMPTS["judge_system"].text)
        # the question judged was written by the generator: at most max_tokens of it
        demands.append(Demand(
            "models.judge", judge, "a judgement from one page", 1, "",
            3 * TEMPLATE_TOKENS + prompt + page + 2 * out, ("max_tokens", "image.max_side"),
            f"a page image of up to {page:,} tokens ({_image_note(judge, recipe.image)}), "
            f"{prompt:,} of text, a question of up to max_tokens {out:,}, max_tokens {out:,}",
            True))
    return demands


# -- eval -----------------------------------------------------------------------------------------


def eval_demands(recipe: EvalRecipe) -> list[Demand]:
    """The evaluated model's longest request is its longest document's first `max_pages` pages
    with the longest question; a judge reads text only (a question and a response of at most
    `inference.max_tokens`)."""
    from docthink.evals.extract import DEFAULT_PROMPT
    from docthink.evals.judge import DEFAULT_JUDGE_PROMPT
    from docthink.evals.prompt import PromptFile

    demands = []
    settings = recipe.inference
    if (spec := _served(recipe.model)) is not None:
        documents = _eval_documents(recipe)
        if documents:
            from docthink.evals.runner import page_policy

            rule = spec.limits.image_tokens
            n = min(settings.max_pages, max(len(sizes) for sizes, _ in documents.values()))
            pages = max(
                sum(image_tokens(*page_pixels(size, page_policy(settings.image, size,
                                                                  settings.max_pixels)), rule)
                    for size in sizes[:settings.max_pages])
                for sizes, _ in documents.values())
            index = settings.page_index
            labels = 0 if index is None else n * text_tokens(index.format(i=n))
            question = max(q for _, q in documents.values())
            system = text_tokens(settings.system or "", COT)
            out = settings.max_tokens
            demands.append(Demand(
                "model", spec, f"an answer from {n} pages", n, "inference.max_pages",
                3 * TEMPLATE_TOKENS + system + pages + labels + question + out,
                ("inference.max_pages", "inference.max_pixels", "inference.max_tokens"),
                f"{n} page images of {pages:,} tokens in all (pages at {settings.image.dpi} dpi, "
                f"max_pixels {settings.max_pixels}, {rule.token_pixels}-px tokens), "
                f"{system + labels + question:,} of text, inference.max_tokens {out:,}", False))
    judges = [("extract.judge", recipe.extract.judge, recipe.extract.prompt or DEFAULT_PROMPT,
               recipe.extract.max_tokens),
              ("scoring.judge", recipe.scoring.judge, recipe.scoring.prompt or DEFAULT_JUDGE_PROMPT,
               recipe.scoring.max_tokens)]
    for role, judge, prompt_file, out in judges:
        if judge is None or (spec := _served(judge)) is None:
            continue
        prompt = text_tokens(PromptFile.read(prompt_file).text)
        response = settings.max_tokens
        demands.append(Demand(
            role, spec, "a judgement of one response", 0, "",
            3 * TEMPLATE_TOKENS + prompt + 2 * response + out,
            ("inference.max_tokens", f"{role.split('.')[0]}.max_tokens"),
            f"{prompt:,} of prompt, a question and a response of up to inference.max_tokens "
            f"{response:,} each, {role.split('.')[0]}.max_tokens {out:,}", True))
    return demands


def _eval_documents(recipe: EvalRecipe) -> dict[str, tuple[tuple[PageSize, ...], int]]:
    """doc_id -> (page sizes, the longest question's tokens) for the rows the run will evaluate:
    page sizes from the corpus, or from the PDFs (read without rendering)."""
    from docthink.corpus.pdf import read_page_sizes
    from docthink.evals.benchmarks import BENCHMARKS
    from docthink.evals.data import select_rows

    benchmark = BENCHMARKS[recipe.benchmark].load(recipe.data)
    sizes: dict[str, tuple[PageSize, ...]] = {}
    if recipe.corpus is not None:
        from docthink.corpus.corpus import Corpus

        with Corpus.open(recipe.corpus) as corpus:
            sizes = {d.doc_id: d.page_sizes for d in corpus.documents.values()}
    else:
        assert recipe.documents is not None  # the recipe validates that one of the two is given
        for doc_id in {r.doc_id for r in benchmark.rows}:
            path = recipe.documents / doc_id
            if path.is_file():
                sizes[doc_id] = read_page_sizes(path)
    selection = select_rows(
        benchmark, unavailable={r.doc_id: "-" for r in benchmark.rows if r.doc_id not in sizes},
        docs=recipe.select.docs, sample=recipe.select.sample, limit=recipe.select.limit,
        seed=recipe.seed)
    questions: dict[str, list[int]] = {}
    for row in selection.rows:
        questions.setdefault(row.doc_id, []).append(text_tokens(f"{COT} {row.question}"))
    return {d: (sizes[d], max(q)) for d, q in questions.items()}


# -- the check and the command line ---------------------------------------------------------------


def check(demands: Sequence[Demand]) -> None:
    """Refuse (one line) a recipe whose requests exceed what a server takes."""
    served: dict[str, Served] = {}
    problems = []
    for d in demands:
        limits = served.setdefault(d.spec.model_dump_json(), served_limits(d.spec))
        most = limits.images_per_prompt
        if most is not None and d.images > most:
            problems.append(
                f"{d.images_set_by} gives {d.role} {d.images} images in one request "
                f"({d.request}), but its server takes at most {most} "
                f"({d.role}.limits.images_per_prompt): lower {d.images_set_by} to send at most "
                f"{most}, or serve the model with "
                f"--limit-mm-per-prompt '{json.dumps({'image': d.images})}'")
        length = limits.max_model_len
        if length is not None and d.tokens > length:
            problems.append(
                f"{d.role}'s longest request ({d.request}) takes up to {d.tokens:,} tokens, but "
                f"its server takes {length:,} (max_model_len {limits.source}): lower "
                f"{_either(d.tokens_set_by)}, or serve the model with --max-model-len "
                f"{model_len(d.tokens)} (`docthink serve-args` shows how the tokens add up)")
    if problems:
        raise LimitsError("; ".join(problems))


def _either(settings: Sequence[str]) -> str:
    return settings[0] if len(settings) == 1 else f"{', '.join(settings[:-1])} or {settings[-1]}"


def model_len(tokens: int) -> int:
    """A --max-model-len that holds `tokens`: rounded up to a multiple of 256."""
    return math.ceil(tokens / 256) * 256


def serve_commands(demands: Sequence[Demand]) -> list[str]:
    """For each served model (specs that are the same are one server), what it is asked and the
    vLLM command line that serves it."""
    groups: dict[str, list[Demand]] = {}
    for d in demands:
        groups.setdefault(d.spec.model_dump_json(), []).append(d)
    lines = []
    for group in groups.values():
        spec = group[0].spec
        roles = ", ".join(dict.fromkeys(d.role for d in group))
        lines.append(f"# {roles}: {spec.model}")
        for d in group:
            lines.append(f"#   {d.request}: {d.images} image(s), up to {d.tokens:,} tokens "
                         f"({d.detail})")
        images = max(d.images for d in group)
        args = [f"vllm serve {spec.model}"]
        ports = {urlsplit(e.base_url).port for e in spec.endpoints} - {None}
        if len(ports) == 1:
            args.append(f"--port {ports.pop()}")
        if images:
            args.append(f"--limit-mm-per-prompt '{json.dumps({'image': images})}'")
        args.append(f"--max-model-len {model_len(max(d.tokens for d in group))}")
        args.append("--enable-prefix-caching")
        if any(d.structured for d in group):
            config = {"backend": "xgrammar", "disable_any_whitespace": True}
            args.append(f"--structured-outputs-config '{json.dumps(config)}'")
        lines.append(" ".join(args))
    return lines


DEMANDS = {"synth": synth_demands, "questions": questions_demands, "eval": eval_demands}


def recipe_demands(kind: str, recipe: object) -> list[Demand]:
    return DEMANDS[kind](recipe)  # type: ignore[operator]


def file_demands(kind: str, path: Path) -> list[Demand]:
    """The demands of a recipe file of the stage `kind` (synth, questions or eval)."""
    from docthink.recipe import load_recipe

    recipe_type = {"synth": SynthRecipe, "questions": QuestionsRecipe, "eval": EvalRecipe}[kind]
    return recipe_demands(kind, load_recipe(recipe_type, path, {}))
