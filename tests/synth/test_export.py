"""Stage 4: the SFT example's shape, the <cot> placements, and both trainer formats."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from docthink.core.errors import UserError
from docthink.core.parts import TextPart
from docthink.core.seeded import weighted_choice
from docthink.export import ImageKey, SFTExample, plain_example, trace_example, write_export
from docthink.synth.pipeline import read_examples

IMAGES = [ImageKey("a" * 64, ".png"), ImageKey("b" * 64, ".png"), ImageKey("c" * 64, ".png")]


def make(placement: str, page_index: str | None = "Page {i}:"):
    return trace_example(
        "q1", IMAGES, "How many?", "Page 2:\nfour apples", "4",
        branch="text", placement=placement, page_index=page_index,  # type: ignore[arg-type]
    )


def test_user_turn_has_every_page_with_its_index_then_the_question() -> None:
    example = make("system")
    assert example.user == (
        TextPart("Page 1:"), IMAGES[0], TextPart("Page 2:"), IMAGES[1], TextPart("Page 3:"),
        IMAGES[2], TextPart("How many?"),
    )
    assert make("system", page_index=None).user == (*IMAGES, TextPart("How many?"))


def test_an_example_reads_back_as_written() -> None:
    for example in (make("prefix"), plain_example("p1", IMAGES, "Why?", "so", page_index=None)):
        line = json.dumps(example.to_json())
        assert SFTExample.from_json(line) == example
    assert json.loads(json.dumps(make("none").to_json()))["user"][:2] == [
        "Page 1:", {"image": "a" * 64, "suffix": ".png"}]


def test_a_malformed_examples_line_is_named(tmp_path: Path) -> None:
    good = make("system").to_json()
    bad = json.loads(json.dumps(good))
    bad["user"][1] = {"image": "a" * 64}  # no suffix
    (tmp_path / "examples.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UserError, match=r"examples.jsonl: line 2: user\.1\._ImageIn\.suffix: "
                       "Field required"):
        read_examples(tmp_path)


@pytest.mark.parametrize(
    ("placement", "system", "first", "question", "assistant"),
    [
        ("system", "<cot>", "Page 1:", "How many?", "<think>Page 2:\nfour apples</think>\n4"),
        ("prefix", None, "<cot> Page 1:", "How many?", "<think>Page 2:\nfour apples</think>\n4"),
        ("suffix", None, "Page 1:", "How many? <cot>", "<think>Page 2:\nfour apples</think>\n4"),
        ("none", None, "Page 1:", "How many?", "4"),
    ],
)
def test_control_token_placements(placement, system, first, question, assistant) -> None:
    example = make(placement)
    assert example.system == system
    assert example.user[0] == TextPart(first) and example.user[1] == IMAGES[0]
    assert example.user[-1] == TextPart(question)
    assert example.assistant == assistant
    assert sum("<cot>" in p.text for p in example.user if isinstance(p, TextPart)) == (
        placement in ("prefix", "suffix"))


def test_prefix_puts_the_token_before_the_first_page_as_the_reference_does() -> None:
    """The reference code writes `"<cot> " + user` where the user text starts with the images:
    without page indices the token is a text part of its own before the first image."""
    assert make("prefix", page_index=None).user == (
        TextPart("<cot> "), *IMAGES, TextPart("How many?"))


def test_plain_rows_carry_no_token_and_no_trace() -> None:
    example = plain_example("p1", IMAGES, "How many?", "4", page_index="Page {i}:")
    assert example.system is None and example.assistant == "4"
    assert example.user[-1] == TextPart("How many?")


def test_placement_mix_follows_the_weights() -> None:
    weights = {"system": 0.45, "prefix": 0.25, "suffix": 0.25, "none": 0.05}
    counts = Counter(weighted_choice(7, f"q{i}", "cot", weights) for i in range(20_000))
    for key, weight in weights.items():
        assert abs(counts[key] / 20_000 - weight) < 0.015, (key, counts)
    assert weighted_choice(7, "q1", "cot", weights) == weighted_choice(7, "q1", "cot", weights)


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    for key in IMAGES:
        (store / key.name).write_bytes(key.sha256.encode())
    return store


def test_trl_export_reads_back_as_messages_and_images(tmp_path: Path) -> None:
    store = _store(tmp_path)
    examples = [make(p) for p in ("system", "prefix", "none")]
    counts = write_export(examples, "trl", lambda k: store / k.name, tmp_path / "trl")
    assert counts == {"examples": 3, "images": 3}
    rows = pq.read_table(tmp_path / "trl" / "train.parquet").to_pylist()
    first = rows[0]
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][0]["content"] == [{"type": "text", "text": "<cot>"}]
    user = first["messages"][1]["content"]
    assert [c["type"] for c in user].count("image") == len(first["images"]) == 3
    assert user[0] == {"type": "text", "text": "Page 1:"} and user[1]["type"] == "image"
    for image in first["images"]:
        assert (tmp_path / "trl" / image).read_bytes() == Path(image).stem.encode()
    assert [m["role"] for m in rows[1]["messages"]] == ["user", "assistant"]
    assert rows[1]["messages"][0]["content"][0] == {"type": "text", "text": "<cot> Page 1:"}
    assert [(r["kind"], r["placement"]) for r in rows] == [
        ("trace", "system"), ("trace", "prefix"), ("trace", "none")]


def test_trl_export_tells_a_traceless_row_from_a_plain_row(tmp_path: Path) -> None:
    """Both have no token and no trace, so only the columns tell them apart."""
    store = _store(tmp_path)
    examples = [make("none"), plain_example("p1", IMAGES, "How many?", "4", page_index="Page {i}:")]
    write_export(examples, "trl", lambda k: store / k.name, tmp_path / "trl")
    rows = pq.read_table(tmp_path / "trl" / "train.parquet").to_pylist()
    assert rows[0]["messages"] == rows[1]["messages"]
    assert [(r["kind"], r["placement"]) for r in rows] == [("trace", "none"), ("plain", "none")]


def test_llamafactory_export_has_one_placeholder_per_image(tmp_path: Path) -> None:
    store = _store(tmp_path)
    write_export([make("suffix")], "llamafactory", lambda k: store / k.name,
                 tmp_path / "lf")
    (row,) = [json.loads(line) for line in (tmp_path / "lf" / "train.jsonl").open()]
    user = row["messages"][0]["content"]
    assert user.count("<image>") == len(row["images"]) == 3
    assert user.startswith("Page 1:\n<image>\nPage 2:") and user.endswith("How many? <cot>")
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info["docthink"]["formatting"] == "sharegpt"
