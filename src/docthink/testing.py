"""Tiny Qwen-VL checkpoints for tests and demos, built offline in about a second.

`build_tiny_vlm(out)` writes a randomly initialised Qwen2.5-VL or Qwen3-VL (about 0.3M parameters:
2-3 text layers of width 64 with attention heads 32 wide, which vLLM's CPU build serves, a 2-3
layer vision tower of width 32) with everything a real
checkpoint has: a byte-level BPE tokenizer trained on the spot with `tokenizers`, a Qwen-style
chat template, an image processor, a video processor (transformers' Qwen-VL processors require
one, and it requires torchvision) and a generation config whose end of sequence is `<|im_end|>`.
`AutoProcessor.from_pretrained(out)` and `AutoModelForImageTextToText.from_pretrained(out)` load
it, and the same arguments give byte-identical files.

Tokens. The Qwen special tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<|vision_start|>`,
`<|vision_end|>`, `<|vision_pad|>`, `<|image_pad|>`, `<|video_pad|>`) come first, as special tokens.
`<cot>`, `<think>` and `</think>` come last, as *normal* added tokens, as Qwen3 ships `<think>`:
they are still matched whole wherever they appear in text (a chat template's output included), but
`decode(..., skip_special_tokens=True)` keeps them, so a trace's thinking survives whatever the
decoding caller asks for, and training treats them as ordinary targets the model learns to emit.
The model's vocabulary is exactly the tokenizer's, so every id the model can emit decodes.

Images. Pages become few tokens: `max_pixels` is 16 merged patches (16 image tokens per page at
most, unless `max_image_tokens` says otherwise), `min_pixels` 4. The chat template has no
default system prompt, so a request with a system message that is only `<cot>` and one without any
differ by exactly that message; assistant turns are wrapped in `{% generation %}` so TRL can mask
everything but the answer.

Needs torch, transformers and torchvision (the `local` extra).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from docthink.core.vocab import CONTROL_TOKENS

Family = Literal["qwen2.5-vl", "qwen3-vl"]

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Real checkpoints initialise at 0.02; at that scale a model this narrow barely departs from its
# input embedding and answers every prompt alike. At 0.2 its output depends on the images and the
# text, so tests can tell whether they reached it.
INIT = 0.2
HIDDEN = 64  # the text model's width
# vLLM's CPU attention serves head sizes of 32 and more (16 fails on the first request with
# "Unsupported CPU attention configuration: head_dim=16")
HEAD_DIM = 32

# Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer), so the saved tokenizer loads the
# same whether transformers reads tokenizer.json or rebuilds the pipeline from vocab and merges.
_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2-VL's template without its default system prompt (and without "Picture N:" labels), with
# {% generation %} around assistant turns. transformers renders with trim_blocks, which eats a
# newline written right after a block tag: hence {{ '\\n' }}.
_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}{% endif %}"
)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}" + _CONTENT + "<|im_end|>{% endgeneration %}"
    "{% else %}" + _CONTENT + "<|im_end|>{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A page of a report shows a table, a chart and a
figure. Revenue grew by 12.5 percent in 2023 to 20,954 million dollars; the company employs 4,718
people in 31 countries. Question: how many pages does the document have? Answer: 0 1 2 3 4 5 6 7
8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 40 50 60 70 80 90 100 1000 2019 2020 2021 2022 2024.
Read the page and the question. Quote the evidence, give a relevance score from 0 to 10, think
step by step, then answer briefly. If the document does not answer the question, say Not
answerable. Yes. No. Who, what, when, where, which, why, how much, how many, percentage, year.
"""


def _default_texts() -> list[str]:
    """The built-in corpus plus every prompt file docthink ships, so its words are single tokens."""
    package = Path(__file__).parent
    files = sorted((package / "synth" / "prompts").glob("*.txt"))
    files += sorted((package / "evals" / "prompts").glob("*.txt"))
    return [_CORPUS, *(f.read_text(encoding="utf-8") for f in files)]


def _train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size - len(CONTROL_TOKENS),
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in CONTROL_TOKENS])
    return tokenizer


def _configs(family: Family, vocab: int, ids: dict[str, int], head_dim: int) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    tokens = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    # width 64 split into heads of head_dim, two query heads per key/value head where there are
    # two; mrope_section splits head_dim / 2 as Qwen-VL does (128: [16, 24, 24])
    heads = HIDDEN // head_dim
    half = head_dim // 2
    mrope = [half // 4, 3 * half // 8, 3 * half // 8]
    text = {"vocab_size": vocab, "hidden_size": HIDDEN, "intermediate_size": 128,
            "num_attention_heads": heads, "num_key_value_heads": max(heads // 2, 1),
            "max_position_embeddings": 4096,
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
            "bos_token_id": None, "tie_word_embeddings": True, "initializer_range": INIT}  # fmt: skip
    if family == "qwen2.5-vl":
        text |= {"num_hidden_layers": 2,
                 "rope_scaling": {"type": "mrope", "mrope_section": mrope}}  # fmt: skip
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": 64, "fullatt_block_indexes": [1], "window_size": 56,
                  "patch_size": 14, "initializer_range": INIT}  # fmt: skip
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                                initializer_range=INIT, **tokens)  # fmt: skip
    text |= {"num_hidden_layers": 3, "head_dim": head_dim,
             "rope_scaling": {"rope_type": "default", "mrope_section": mrope,
                              "mrope_interleaved": True}}  # fmt: skip
    # three deepstack layers, as real Qwen3-VL checkpoints (and mergekit's template) have
    vision = {"depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
              "out_hidden_size": 64, "patch_size": 16, "deepstack_visual_indexes": [0, 1, 2],
              "num_position_embeddings": 64, "initializer_range": INIT}  # fmt: skip
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                         initializer_range=INIT, **tokens)  # fmt: skip


def _processor(family: Family, tokenizer: Any, max_image_tokens: int) -> Any:
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    patch = 14 if family == "qwen2.5-vl" else 16
    merged = (patch * 2) ** 2  # pixels per image token (2x2 patches merge into one)
    size = {"shortest_edge": 4 * merged, "longest_edge": max_image_tokens * merged}
    image = Qwen2VLImageProcessor(size=size, patch_size=patch, temporal_patch_size=2, merge_size=2)
    if family == "qwen2.5-vl":
        video = Qwen2VLVideoProcessor(size=size, patch_size=patch, temporal_patch_size=2,
                                      merge_size=2)  # fmt: skip
        return Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer,
                                   video_processor=video, chat_template=CHAT_TEMPLATE)  # fmt: skip
    video = Qwen3VLVideoProcessor(size=size, patch_size=patch, temporal_patch_size=2, merge_size=2)
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=CHAT_TEMPLATE)  # fmt: skip


def build_tiny_vlm(
    out: Path,
    family: Family = "qwen2.5-vl",
    *,
    seed: int = 0,
    texts: Iterable[str] | None = None,
    vocab_size: int = 2048,
    head_dim: int = HEAD_DIM,
    max_image_tokens: int = 16,
) -> Path:
    """Write a tiny random `family` checkpoint to `out` (created) and return `out`.

    The tokenizer is trained on `texts` (default: a small built-in English corpus plus docthink's
    prompt files) up to `vocab_size` tokens, fewer if the texts hold fewer merges; the model's
    vocabulary is the tokenizer's. The text model's attention heads are `head_dim` wide (16, 32 or
    64: the width, 64, holds 64 / head_dim heads); the default is what vLLM's CPU backend serves.
    An image becomes at most `max_image_tokens` tokens (16384 is Qwen2.5-VL's own budget: a page
    then costs what it costs a real model). Same arguments, same bytes."""
    if head_dim not in (16, 32, 64):
        raise ValueError(f"head_dim {head_dim}: must be 16, 32 or 64 (heads of a width-64 model, "
                         "mrope sections of head_dim / 2)")
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig, Qwen2Tokenizer

    trained = _train_tokenizer(_default_texts() if texts is None else texts, vocab_size)
    tokenizer = Qwen2Tokenizer(tokenizer_object=trained, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", unk_token=None, bos_token=None,
                               model_max_length=4096)  # fmt: skip
    ids = {t: trained.token_to_id(t) for t in (*SPECIAL_TOKENS, *CONTROL_TOKENS)}
    config = _configs(family, trained.get_vocab_size(with_added_tokens=True), ids, head_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _processor(family, tokenizer, max_image_tokens).save_pretrained(out)
    return out
