"""Tiny Qwen-VL base/tuned pairs for the merge tests: real architectures, random bf16 weights.

The tuned model is the base with every weight perturbed and 3 token rows added (as SFT adding
`<cot>`, `<think>`, `</think>` does); optionally it unties the head the base ties.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

VOCAB = 300
ADDED = 3
TOKENS = {
    "image_token_id": 290,
    "video_token_id": 291,
    "vision_start_token_id": 292,
    "vision_end_token_id": 293,
}
TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}  # fmt: skip


def qwen25_config(vocab: int = VOCAB, tie: bool = False) -> Qwen2_5_VLConfig:
    text = {**TEXT, "num_hidden_layers": 2, "vocab_size": vocab, "tie_word_embeddings": tie,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}  # fmt: skip
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
              "fullatt_block_indexes": [1], "window_size": 28, "patch_size": 14}  # fmt: skip
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, vocab_size=vocab, tie_word_embeddings=tie, **TOKENS
    )


def qwen3_config(vocab: int = VOCAB, tie: bool = True) -> Qwen3VLConfig:
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True}
    text = {**TEXT, "num_hidden_layers": 3, "head_dim": 16, "vocab_size": vocab,
            "tie_word_embeddings": tie, "rope_scaling": rope}  # fmt: skip
    # mergekit's Qwen3-VL template expects 3 deepstack layers
    vision = {"depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
              "patch_size": 16, "deepstack_visual_indexes": [0, 1, 2], "num_position_embeddings": 64}  # fmt: skip
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie, **TOKENS)


def build(config, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = (
        Qwen3VLForConditionalGeneration
        if isinstance(config, Qwen3VLConfig)
        else Qwen2_5_VLForConditionalGeneration
    )
    return cls(config).to(torch.bfloat16).eval()


def tuned_from(base: torch.nn.Module, config, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """`config`'s model holding base weights + noise; rows the base lacks stay random."""
    tuned = build(config, seed)
    base_sd = base.state_dict()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tuned.state_dict().items():
            src = base_sd[name]
            rows = src.shape[0] if src.dim() else 1
            noise = torch.randn(src.shape, generator=gen) * scale
            p[:rows] = (src.float() + noise).to(p.dtype)
    return tuned


def save(
    model: torch.nn.Module, path: Path, shard: str = "150KB", files: dict[str, str] | None = None
) -> Path:
    model.save_pretrained(path, max_shard_size=shard)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path


def tokenizer_files(tokens: list[str]) -> dict[str, str]:
    """Stand-ins for tokenizer/processor/template files: the merge copies them, never reads them."""
    config = {
        "added_tokens_decoder": {str(VOCAB + i): {"content": t} for i, t in enumerate(tokens)}
    }
    return {
        "tokenizer_config.json": json.dumps(config),
        "chat_template.jinja": "{% for m in messages %}"
        + "".join(tokens)
        + "{{ m.content }}{% endfor %}",
        "preprocessor_config.json": json.dumps({"patch_size": 14}),
    }
