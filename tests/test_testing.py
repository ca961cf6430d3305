"""The tiny-checkpoint factory (`docthink.testing.build_tiny_vlm`): what it writes loads with the
stock Auto classes, keeps docthink's control tokens whole through the chat template and decoding,
places page images, generates, and is reproducible to the byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from docthink.core.vocab import CONTROL_TOKENS
from docthink.testing import Family, build_tiny_vlm

FAMILIES: tuple[Family, ...] = ("qwen2.5-vl", "qwen3-vl")


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / request.param, request.param)


def pages() -> list[Image.Image]:
    """Two pages of different sizes (a US letter page and a landscape slide)."""
    return [Image.new("RGB", (612, 792), "white"), Image.new("RGB", (960, 540), (30, 60, 90))]


def two_page_request(system: str | None) -> list[dict[str, object]]:
    user = {
        "role": "user",
        "content": [
            {"type": "image"},
            {"type": "text", "text": "Page 2:"},
            {"type": "image"},
            {"type": "text", "text": "How many?"},
        ],
    }
    return [{"role": "system", "content": system}, user] if system is not None else [user]


def test_loads_with_the_auto_classes_tiny(checkpoint: Path) -> None:
    model = AutoModelForImageTextToText.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    # Every id the model can emit is a token (so `<think>` is one of them), and nothing more.
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer)
    assert model.generation_config.eos_token_id == processor.tokenizer.convert_tokens_to_ids(
        "<|im_end|>"
    )
    text = model.config.get_text_config()
    assert (
        sum(text.rope_parameters["mrope_section"])
        == text.hidden_size // text.num_attention_heads // 2
    )


def test_control_tokens_are_single_tokens_that_survive_decoding(checkpoint: Path) -> None:
    tokenizer = AutoProcessor.from_pretrained(checkpoint).tokenizer
    text = "<cot> Revenue? <think>it says 12</think>12"
    ids = tokenizer.encode(text)
    for token in CONTROL_TOKENS:
        (token_id,) = tokenizer.encode(token)
        assert ids.count(token_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # normal tokens: kept
    assert tokenizer.decode(tokenizer.encode("<|im_end|>"), skip_special_tokens=True) == ""


def test_chat_template_keeps_a_cot_only_system_message_and_places_images(checkpoint: Path) -> None:
    processor = AutoProcessor.from_pretrained(checkpoint)
    tokenizer = processor.tokenizer
    rendered = processor.apply_chat_template(
        two_page_request("<cot>"), tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|im_start|>system\n<cot><|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Page 2:"
        "<|vision_start|><|image_pad|><|vision_end|>How many?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    plain = processor.apply_chat_template(
        two_page_request(None), tokenize=False, add_generation_prompt=True
    )
    assert plain == rendered.removeprefix("<|im_start|>system\n<cot><|im_end|>\n")

    inputs = processor(text=[rendered], images=pages(), return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(tokenizer.convert_tokens_to_ids("<cot>")) == 1
    assert ids.count(tokenizer.convert_tokens_to_ids("<|vision_start|>")) == 2
    per_page = (inputs["image_grid_thw"].prod(dim=1) // 4).tolist()  # 2x2 patches per token
    assert ids.count(tokenizer.convert_tokens_to_ids("<|image_pad|>")) == sum(per_page)
    assert all(4 <= n <= 16 for n in per_page)  # a page is a few tokens


def test_generates_on_a_two_page_input_depending_on_the_pages(checkpoint: Path) -> None:
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    prompt = processor.apply_chat_template(
        two_page_request(None), tokenize=False, add_generation_prompt=True
    )
    outputs = []
    for images in (pages(), pages()[::-1]):
        inputs = processor(text=[prompt], images=images, return_tensors="pt")
        with torch.inference_mode():
            generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        outputs.append(generated[0, inputs["input_ids"].shape[1] :].tolist())
    assert all(len(o) == 8 for o in outputs)
    assert outputs[0] != outputs[1]


def digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_bytes(family: Family, tmp_path: Path) -> None:
    first = digests(build_tiny_vlm(tmp_path / "a", family, seed=3))
    assert "model.safetensors" in first and "tokenizer.json" in first
    assert digests(build_tiny_vlm(tmp_path / "b", family, seed=3)) == first
    other = digests(build_tiny_vlm(tmp_path / "c", family, seed=4))
    assert other["model.safetensors"] != first["model.safetensors"]
    assert other["tokenizer.json"] == first["tokenizer.json"]  # the seed is the weights'


def test_tokenizer_trains_on_the_given_texts(tmp_path: Path) -> None:
    out = build_tiny_vlm(
        tmp_path / "t", texts=["lighthouse keepers keep lighthouses"] * 50, vocab_size=300
    )
    tokenizer = AutoProcessor.from_pretrained(out).tokenizer
    assert len(tokenizer) <= 300
    assert len(tokenizer.encode(" lighthouse")) == 1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head_dim", [16, 64])
def test_head_size_is_a_parameter(family: Family, head_dim: int, tmp_path: Path) -> None:
    """Any head size the width holds; the default, 32, is what vLLM's CPU attention serves (16
    crashes its engine on the first request, tests/vllm runs the default through it)."""
    default = AutoModelForImageTextToText.from_pretrained(
        build_tiny_vlm(tmp_path / "default", family)).config.get_text_config()
    out = build_tiny_vlm(tmp_path / "t", family, head_dim=head_dim)
    text = AutoModelForImageTextToText.from_pretrained(out).config.get_text_config()
    assert default.hidden_size // default.num_attention_heads == 32
    assert text.hidden_size // text.num_attention_heads == head_dim
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    prompt = processor.apply_chat_template(
        two_page_request(None), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=pages(), return_tensors="pt")
    with torch.inference_mode():
        generated = model.generate(**inputs, min_new_tokens=4, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    with pytest.raises(ValueError, match="head_dim 24"):
        build_tiny_vlm(tmp_path / "bad", family, head_dim=24)
