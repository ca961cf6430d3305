"""How many prompt tokens a model reads for a request, counted before any request is sent.

A page image costs what the target model's image processor makes of it. Qwen2.5-VL and Qwen3-VL
resize an image so both sides are multiples of `patch * merge` pixels (rounded to the nearest
multiple, then scaled down or up to fit `[min_pixels, max_pixels]`) and give one token per
`(patch * merge)^2` pixels, between a vision-start and a vision-end token. The settings come from
a local model's `preprocessor_config.json` when there is one, otherwise from `FAMILIES`, which
quotes those files on the Hub. Text is counted with the model's tokenizer when a folder with
`tokenizer.json` is given, otherwise at 4 characters a token (the plan says which).

The offline teacher reads the text layer instead of pixels and counts whitespace-separated words
(see `models.teacher`), so its plan is exact."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from docthink.core.errors import UserError
from docthink.core.parts import ImagePart, PageRef, TextPart
from docthink.corpus.corpus import Corpus
from docthink.corpus.policy import RenderPolicy
from docthink.models.base import ChatRequest
from docthink.models.limits import page_pixels, smart_resize
from docthink.models.specs import ModelSpec


@dataclass(frozen=True, slots=True)
class ImageRule:
    """Qwen-VL's resize-and-merge rule: tokens for an image of a given pixel size."""

    name: str  # where the numbers come from
    patch: int
    merge: int
    min_pixels: int
    max_pixels: int

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the processor's resize: multiples of patch * merge within the
        pixel bounds, aspect ratio kept as closely as possible."""
        return smart_resize(width, height, self.patch * self.merge, self.min_pixels,
                            self.max_pixels)

    def tokens(self, width: int, height: int) -> int:
        w, h = self.resized(width, height)
        return (w // (self.patch * self.merge)) * (h // (self.patch * self.merge))


# preprocessor_config.json of the models on the Hub (Qwen/Qwen2.5-VL-7B-Instruct: min_pixels
# 3136, max_pixels 12845056, patch_size 14, merge_size 2; Qwen/Qwen3-VL-32B-Instruct: size
# shortest_edge 65536, longest_edge 16777216, patch_size 16, merge_size 2). Longest prefix wins.
FAMILIES: dict[str, ImageRule] = {
    "qwen2-vl": ImageRule("Qwen2-VL (built-in)", 14, 2, 3136, 12845056),
    "qwen2.5-vl": ImageRule("Qwen2.5-VL (built-in)", 14, 2, 3136, 12845056),
    "qwen3-vl": ImageRule("Qwen3-VL (built-in)", 16, 2, 65536, 16777216),
}
# Qwen's chat template: <|im_start|>role\n ... <|im_end|>\n per message, <|im_start|>assistant\n
# to open the reply, <|vision_start|> and <|vision_end|> around each image.
MESSAGE_TOKENS, REPLY_TOKENS, IMAGE_MARK_TOKENS = 5, 3, 2
CHARS_PER_TOKEN = 4


def family_rule(model: str) -> ImageRule | None:
    """The built-in rule for a model name such as `Qwen/Qwen3-VL-32B-Instruct-FP8`."""
    name = model.rsplit("/", 1)[-1].lower()
    matches = [key for key in FAMILIES if name.startswith(key)]
    return FAMILIES[max(matches, key=len)] if matches else None


def processor_rule(folder: Path) -> ImageRule:
    """The rule in a model folder's image-processor settings: `preprocessor_config.json` (as on
    the Hub) or the `image_processor` of `processor_config.json` (as newer transformers save it),
    with Qwen2.5-VL's min/max_pixels keys or Qwen3-VL's size.shortest_edge/longest_edge."""
    config, path = _image_processor_config(folder)
    size = config.get("size") or {}  # a file we do not write: either layout may be present
    try:
        return ImageRule(
            str(path), int(config["patch_size"]), int(config["merge_size"]),
            int(config.get("min_pixels") or size["shortest_edge"]),
            int(config.get("max_pixels") or size["longest_edge"]),
        )
    except KeyError as missing:
        raise UserError(f"{path}: no {missing.args[0]} (patch_size, merge_size and min/max "
                        "pixels are needed to count image tokens)") from None


def _image_processor_config(folder: Path) -> tuple[dict[str, Any], Path]:
    for name, key in (("preprocessor_config.json", None), ("processor_config.json",
                                                           "image_processor")):
        path = folder / name
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            if key is None:
                return config, path
            if key in config:
                return config[key], path
    raise UserError(f"{folder}: no preprocessor_config.json nor processor_config.json with an "
                    "image_processor (give a Qwen-VL model folder)")


@dataclass(frozen=True)
class TextCount:
    """How a model's text is counted: its content, and the chat template's tokens around each
    message and before the reply (Qwen's `<|im_start|>role\n ... <|im_end|>\n`)."""

    count: Callable[[str], int]
    how: str
    message: Callable[[str], int]  # template tokens of a message with this role
    reply: int  # template tokens that open the reply
    exact: bool  # the model's own tokenizer


def text_counter(folder: Path | None) -> TextCount:
    """The tokenizer in `folder/tokenizer.json` (template tokens counted with it too), else 4
    characters a token and Qwen's template tokens."""
    if folder is not None and (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))

        def count(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False).ids)

        return TextCount(count, f"tokenizer {folder / 'tokenizer.json'}",
                         lambda role: count(f"<|im_start|>{role}\n<|im_end|>\n"),
                         count("<|im_start|>assistant\n"), exact=True)
    return TextCount(lambda text: math.ceil(len(text) / CHARS_PER_TOKEN),
                     f"{CHARS_PER_TOKEN} characters a token", lambda role: MESSAGE_TOKENS,
                     REPLY_TOKENS, exact=False)


class Reader(Protocol):
    """How one model counts the prompt tokens of a request, and of a text alone."""

    @property
    def name(self) -> str: ...  # the rule, in words, for the plan's notes

    @property
    def exact(self) -> bool: ...  # counts what the model counts (not an approximation)

    def prompt_tokens(self, request: ChatRequest) -> int: ...

    def text_tokens(self, text: str) -> int: ...

    def image_tokens(self, ref: PageRef) -> int: ...


@dataclass
class TextLayerReader:
    """The offline teacher: words of the request's texts and of each shown page's text layer."""

    page_text: Callable[[PageRef], str]
    name: str = "offline teacher: words of the texts and of each page's text layer (exact)"
    exact: bool = True

    def prompt_tokens(self, request: ChatRequest) -> int:
        return sum(
            self.text_tokens(p.text) if isinstance(p, TextPart) else self.image_tokens(page(p))
            for m in request.messages for p in m.content
        )

    def text_tokens(self, text: str) -> int:
        return len(text.split())

    def image_tokens(self, ref: PageRef) -> int:
        return len(self.page_text(ref).split())


@dataclass
class VisionReader:
    """A Qwen-VL-style model: image tokens by its rule at each page's rendered size, text by its
    tokenizer or the character rule, and the chat template's own tokens. A model with no image
    rule (a text-only LLM) is refused an image."""

    rule: ImageRule | None
    model: str
    pixels: Callable[[PageRef], tuple[int, int]]  # the page's size as rendered by the policy
    text: TextCount
    name: str

    @property
    def exact(self) -> bool:
        return self.text.exact

    def prompt_tokens(self, request: ChatRequest) -> int:
        total = self.text.reply
        for message in request.messages:
            total += self.text.message(message.role)
            for part in message.content:
                total += (self.text.count(part.text) if isinstance(part, TextPart)
                          else self.image_tokens(page(part)))
        return total

    def text_tokens(self, text: str) -> int:
        return self.text.count(text)

    def image_tokens(self, ref: PageRef) -> int:
        if self.rule is None:
            raise UserError(f"{self.model}: no image-token rule for this model (built-in: "
                            f"{', '.join(FAMILIES)}); give --processor with its folder")
        return IMAGE_MARK_TOKENS + self.rule.tokens(*self.pixels(ref))


def page(part: ImagePart) -> PageRef:
    assert part.page is not None  # the plan's placeholder images always name their page
    return part.page


def placeholder(ref: PageRef, mime: str) -> ImagePart:
    """An image part that names its page and nothing else: requests built for counting only."""
    return ImagePart(Path(), "", mime, ref)


def reader_for(spec: ModelSpec, corpus: Corpus, policy: RenderPolicy,
               processor: Path | None) -> Reader:
    """How the model a spec names reads a request of this corpus's pages under `policy`."""
    if spec.kind == "teacher":
        return TextLayerReader(corpus.page_text)
    rule: ImageRule | None
    if spec.kind == "local":
        folder: Path | None = spec.path
        name = str(spec.path)
        rule = processor_rule(spec.path)
    else:
        folder, name = processor, spec.model
        rule = processor_rule(processor) if processor is not None else family_rule(spec.model)
    text = text_counter(folder)
    rule_name = rule.name if rule is not None else "no images"
    return VisionReader(rule, name, lambda ref: pixels(corpus, ref, policy), text,
                        f"{name}: images by {rule_name}, text by {text.how}")


def pixels(corpus: Corpus, ref: PageRef, policy: RenderPolicy) -> tuple[int, int]:
    """The page's size as the policy renders it (PDFium: ceil(points * scale))."""
    return page_pixels(corpus.document(ref.doc_id).page_sizes[ref.page - 1], policy)


def model_name(spec: ModelSpec) -> str:
    if spec.kind == "teacher":
        return f"docthink-teacher/{spec.similarity}"
    return spec.model if spec.kind == "openai" else str(spec.path)
