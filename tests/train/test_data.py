"""The export read back for training: kinds and placements read from the export's columns and
checked against the messages, bad rows named, old exports refused, the mixture cut as the recipe
says, pages downscaled."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from docthink.core.vocab import COT
from docthink.export import trace_example
from docthink.train.data import (
    ExportError,
    TrainRow,
    mix,
    open_page,
    read_export,
    strip_trace,
    trl_example,
    without_token,
)
from docthink.train.recipe import MixtureSettings
from tests.train.conftest import examples, page_images, write_trl


def test_rows_read_back_with_their_kind_placement_and_trace(export: Path) -> None:
    rows = {r.id: r for r in read_export(export)}
    assert {i: (r.kind, r.placement, r.think) for i, r in rows.items()} == {
        "q-system": ("trace", "system", True), "q-prefix": ("trace", "prefix", True),
        "q-suffix": ("trace", "suffix", True), "q-none": ("trace", "none", False),
        "plain:q9": ("plain", "none", False),
    }  # fmt: skip
    system = rows["q-system"]
    assert system.messages[0] == {"role": "system", "content": [{"type": "text", "text": COT}]}
    assert system.answer == '<think>Page 2:\n"four ships"</think>\n4'
    prefix = rows["q-prefix"]
    assert prefix.messages[-2]["content"][0] == {"type": "text", "text": f"{COT} Page 1:"}
    assert prefix.question == "How many ships in prefix?"
    assert rows["q-suffix"].question == f"How many ships in suffix? {COT}"
    # images: absolute paths into the export, in the order of the image parts
    user = system.messages[-2]["content"]
    assert [p["type"] for p in user] == ["text", "image"] * 3 + ["text"]
    assert all(p.is_file() and p.parent == export / "images" for p in system.images)
    assert [p.name for p in system.images] == [p.name for p in rows["q-none"].images]


def test_the_token_comes_out_wherever_it_was(export: Path) -> None:
    for row in read_export(export):
        prompt = without_token(row)
        assert [m["role"] for m in prompt] == ["user"]
        assert COT not in str(prompt)
        assert [p["type"] for p in prompt[0]["content"]] == [
            p["type"] for p in row.messages[-2]["content"]]
        assert prompt[0]["content"][0] == {"type": "text", "text": "Page 1:"}


def test_the_token_comes_out_when_it_is_a_part_of_its_own(tmp_path: Path) -> None:
    """Without page indices the prefix token is a text part before the first image."""
    keys = page_images(tmp_path / "store", 2)
    row = trace_example("q", keys, "How many?", "t", "4", branch="text", placement="prefix",
                        page_index=None)
    (read,) = read_export(write_trl(tmp_path, [row]))
    assert read.messages[-2]["content"][0] == {"type": "text", "text": f"{COT} "}
    assert [p["type"] for p in without_token(read)[0]["content"]] == ["image", "image", "text"]


def test_stripping_a_trace_keeps_the_answer_only(export: Path) -> None:
    rows = {r.id: r for r in read_export(export)}
    for placement in ("system", "prefix", "suffix"):
        stripped = strip_trace(rows[f"q-{placement}"])
        assert (stripped.placement, stripped.think, stripped.answer) == ("none", False, "4")
        assert COT not in str(stripped.messages)
        assert [m["role"] for m in stripped.messages] == ["user", "assistant"]
    assert strip_trace(rows["plain:q9"]) == rows["plain:q9"]


def _corrupt(export: Path, change) -> None:
    path = export / "train.parquet"
    rows = pq.read_table(path).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_bad_rows_are_named(export: Path) -> None:
    _corrupt(export, lambda rows: rows[1]["images"].pop())
    with pytest.raises(ExportError, match=r"row 1 \(q-prefix\): 3 image parts but 2 images"):
        read_export(export)


def test_missing_images_are_named(export: Path) -> None:
    next((export / "images").iterdir()).unlink()
    with pytest.raises(ExportError, match=r"row 0 \(q-system\): image files missing"):
        read_export(export)


def test_an_unclosed_trace_is_refused(tmp_path: Path) -> None:
    keys = page_images(tmp_path / "store", 3)
    rows = examples(keys)
    rows[0] = replace(rows[0], assistant="<think>Page 2: four")
    with pytest.raises(ExportError, match="never closes it"):
        read_export(write_trl(tmp_path, rows))


def test_an_export_without_kind_and_placement_columns_is_refused(export: Path) -> None:
    """Exports made before the columns: a trace-less row and a plain row look the same, so
    training refuses them in one line naming the command that writes them again."""
    path = export / "train.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["kind", "placement"]), path)
    with pytest.raises(ExportError, match=r"no kind/placement columns.*docthink export"):
        read_export(export)


def test_a_placement_the_messages_do_not_carry_is_refused(export: Path) -> None:
    def relabel(rows):
        rows[0]["placement"] = "prefix"  # the q-system row

    _corrupt(export, relabel)
    with pytest.raises(ExportError, match=r"row 0 \(q-system\): placement 'prefix' but the "
                                          r"messages carry <cot> as 'system'"):
        read_export(export)


def test_kinds_filter_plain_rows_from_traceless_ones(export: Path) -> None:
    rows = read_export(export)
    kept, report = mix(rows, MixtureSettings(kinds=["trace"], placements=["none"]), seed=0)
    assert [r.id for r in kept] == ["q-none"] and report.dropped_kind == 1


def test_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no train.parquet"):
        read_export(tmp_path)


def _rows(n_think: int, n_plain: int) -> list[TrainRow]:
    msgs = ({"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}]})
    return ([TrainRow(f"t{i}", msgs, (), "trace", "system", True) for i in range(n_think)]
            + [TrainRow(f"p{i}", msgs, (), "plain", "none", False) for i in range(n_plain)])


def test_think_share_drops_the_larger_side_by_seed() -> None:
    rows = _rows(12, 4)
    kept, report = mix(rows, MixtureSettings(think_share=0.5), seed=1)
    assert Counter(r.think for r in kept) == {True: 4, False: 4}
    assert report.dropped_share == 8 and report.kept == {"think/system": 4, "no_think/none": 4}
    again, _ = mix(rows, MixtureSettings(think_share=0.5), seed=1)
    other, _ = mix(rows, MixtureSettings(think_share=0.5), seed=2)
    assert [r.id for r in again] == [r.id for r in kept]
    assert {r.id for r in other} != {r.id for r in kept}
    kept, _ = mix(rows, MixtureSettings(think_share=0.2), seed=1)
    assert Counter(r.think for r in kept) == {True: 1, False: 4}  # all plain rows, 1/5 think
    kept, _ = mix(rows, MixtureSettings(think_share=0.0), seed=1)
    assert {r.think for r in kept} == {False} and len(kept) == 4


def test_non_think_only_by_stripping_keeps_every_question(export: Path) -> None:
    rows = read_export(export)
    kept, report = mix(rows, MixtureSettings(traces="strip"), seed=0)
    assert len(kept) == len(rows) and report.stripped == 3
    assert not any(r.think for r in kept) and COT not in str([r.messages for r in kept])


def test_placements_and_page_limits_filter(export: Path) -> None:
    rows = read_export(export)
    kept, report = mix(rows, MixtureSettings(placements=["system", "none"], max_pages=2), seed=0)
    assert [r.id for r in kept] == ["plain:q9"]  # the trace rows have 3 pages
    assert (report.dropped_placement, report.dropped_max_pages) == (2, 2)
    with pytest.raises(ExportError, match="keeps no row"):
        mix(rows, MixtureSettings(placements=["prefix"], max_pages=1), seed=0)


def test_trl_shapes(export: Path) -> None:
    row = read_export(export)[0]
    completion = trl_example(row, "completion")
    assert [m["role"] for m in completion["prompt"]] == ["system", "user"]
    assert completion["completion"] == [row.messages[-1]]
    assert completion["images"] == [str(p) for p in row.images]
    assert trl_example(row, "assistant_markers")["messages"] == list(row.messages)


def test_pages_are_downscaled_to_the_pixel_cap(tmp_path: Path) -> None:
    Image.new("RGB", (906, 1280), "white").save(tmp_path / "p.png")
    page = open_page(tmp_path / "p.png", 28 * 28 * 16)
    assert page.width * page.height <= 28 * 28 * 16
    assert abs(page.width / page.height - 906 / 1280) < 0.03
    assert open_page(tmp_path / "p.png", None).size == (906, 1280)
