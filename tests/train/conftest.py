"""Fixtures for the training tests: exports written by the real exporter over real PNG pages, and
tiny Qwen-VL checkpoints from the factory (with and without the control tokens)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from docthink.export import ImageKey, SFTExample, plain_example, trace_example, write_export

PLACEMENTS = ("system", "prefix", "suffix", "none")


def page_images(store: Path, n: int, size: tuple[int, int] = (90, 128)) -> list[ImageKey]:
    """`n` distinct PNG pages in `store`, named as the export expects (sha-like key, suffix)."""
    store.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(n):
        key = ImageKey(f"{i:02d}" * 32, ".png")
        Image.new("RGB", size, (40 * i % 255, 90, 160)).save(store / key.name)
        keys.append(key)
    return keys


def examples(keys: Sequence[ImageKey]) -> list[SFTExample]:
    """One trace row per placement (the none row carries no trace), and one plain row."""
    rows = [
        trace_example(f"q-{p}", keys[:3], f"How many ships in {p}?", "Page 2:\n\"four ships\"",
                      "4", branch="text", placement=p, page_index="Page {i}:")  # type: ignore[arg-type]
        for p in PLACEMENTS
    ]
    rows.append(plain_example("plain:q9", keys[1:], "Which year?", "2021", page_index="Page {i}:"))
    return rows


def write_trl(root: Path, rows: Sequence[SFTExample] | None = None) -> Path:
    keys = page_images(root / "store", 3)
    out = root / "export"
    write_export(examples(keys) if rows is None else rows, "trl",
                 lambda k: root / "store" / k.name, out)
    return out


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return write_trl(tmp_path)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny factory checkpoints, one per family."""
    from docthink.testing import build_tiny_vlm

    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_vlm(root / f, f) for f in ("qwen2.5-vl", "qwen3-vl")}  # type: ignore[arg-type]


def without_control_tokens(src: Path, out: Path) -> Path:
    """`src` re-saved as a checkpoint whose tokenizer and embeddings lack <cot>, <think>, </think>
    (they are the factory's last three ids), like a stock Qwen2.5-VL."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(src)
    rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(rows - 3)
    model.save_pretrained(out)
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json":
            (out / f.name).write_bytes(f.read_bytes())
    tok = json.loads((out / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] not in
                           ("<cot>", "<think>", "</think>")]
    (out / "tokenizer.json").write_text(json.dumps(tok))
    return out
