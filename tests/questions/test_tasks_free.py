"""`docthink tasks`: same seed, same bytes; every task's answer is right by construction checked
against the corpus (unshuffle restores the true order, the missing page's target is its text
layer, retrieval answers are on the named page, counts add up); printed page numbers are found;
the examples export in the trainers' formats."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.questions.layout import flat, page_layout, printed_page_numbers, sentences
from tests.helpers import docthink

RECIPE = {
    "embedding": {"model": "tfidf"},
    "tasks": {name: {"per_document": 3} for name in
              ("unshuffle", "missing_page", "key_retrieval", "position_retrieval", "counting")},
}


def tasks_cli(corpus: Path, out: Path, recipe: Path) -> None:
    docthink("tasks", "--corpus", corpus, "--out", out, "--recipe", recipe,
             "--runs-dir", out.parent / "runs")


@pytest.fixture(scope="module")
def made(sample_corpus, tmp_path_factory) -> tuple[Path, Path, Path]:
    corpus, _ = sample_corpus
    root = tmp_path_factory.mktemp("tasks")
    (root / "r.yaml").write_text(json.dumps(RECIPE))
    tasks_cli(corpus, root / "a", root / "r.yaml")
    tasks_cli(corpus, root / "b", root / "r.yaml")
    return corpus, root / "a", root / "b"


def rows(out: Path, task: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in (out / "tasks.jsonl").open()]
    return [r for r in found if task is None or r["task"] == task]


def context(row: dict[str, Any]) -> list[PageRef]:
    return [PageRef(d, p) for d, p in row["context_pages"]]


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "docthink_run.json"}


def test_same_seed_gives_byte_identical_tasks_and_exports(made) -> None:
    _, a, b = made
    first, second = files(a), files(b)
    for name in ("recipe.yaml", "card.md"):  # they name the output folder (and its hash)
        first.pop(name), second.pop(name)
    assert first == second and "export-trl/train.parquet" in first
    assert {r["task"] for r in rows(a)} == {"unshuffle", "missing_page", "key_retrieval",
                                            "position_retrieval", "counting"}


def test_unshuffle_answers_restore_the_true_order(made) -> None:
    _, a, _ = made
    for row in rows(a, "unshuffle"):
        shown = context(row)
        labels = [int(x) for x in row["answer"].split(", ")]
        assert sorted(labels) == list(range(1, len(shown) + 1))
        restored = [shown[i - 1] for i in labels]
        assert [r.page for r in restored] == list(range(restored[0].page,
                                                        restored[0].page + len(shown)))
        assert len({r.doc_id for r in shown}) == 1


def test_missing_page_target_is_the_removed_pages_text(made) -> None:
    corpus, a, _ = made
    with Corpus.open(corpus) as c:
        for row in rows(a, "missing_page"):
            shown = context(row)
            removed = PageRef(row["doc_id"], row["meta"]["removed_page"])
            assert removed not in shown and row["answer"] == c.page_text(removed)
            k = int(re.search(r"between Page (\d+) and", row["question"]).group(1))
            assert shown[k - 1].page == removed.page - 1 and shown[k].page == removed.page + 1
            assert [r.page for r in shown] == sorted(r.page for r in shown)


def test_retrieval_answers_are_on_the_named_page(made) -> None:
    corpus, a, _ = made
    with Corpus.open(corpus) as c:
        for row in rows(a, "position_retrieval"):
            label = int(re.search(r"on Page (\d+)\?$", row["question"]).group(1))
            page = context(row)[label - 1]
            assert row["answer"] in flat(c.page_text(page))
            layout = page_layout(c.page_text(page))
            assert layout.paragraphs[row["meta"]["paragraph"] - 1][row["meta"]["sentence"] - 1] \
                == row["answer"]
        kinds = set()
        for row in rows(a, "key_retrieval"):
            kinds.add(row["meta"]["context"])
            sentence = re.search(r'sentence "(.*)"\?', row["question"]).group(1)
            holders = [i for i, r in enumerate(context(row), start=1)
                       if sentence in flat(c.page_text(r))]
            assert holders == [int(row["answer"].removeprefix("Page "))]
            if row["meta"]["context"] == "hard_negatives":
                assert 5 <= len(row["context_pages"]) <= 63
                others = [r for r in context(row) if r.doc_id != row["doc_id"]]
                assert len(others) == len(row["context_pages"]) - 1
    assert kinds == {"document", "hard_negatives"}


def test_counts_add_up_and_match_the_text_layer(made) -> None:
    corpus, a, _ = made
    with Corpus.open(corpus) as c:
        for row in rows(a, "counting"):
            lines = row["answer"].splitlines()
            per_page = [int(line.split(": ")[1]) for line in lines[:-1]]
            assert lines[-1] == f"Total: {sum(per_page)}"
            assert [line.split(":")[0] for line in lines[:-1]] == [
                f"Page {i}" for i in range(1, len(per_page) + 1)]
            layouts = [page_layout(c.page_text(r)) for r in context(row)]
            unit = row["meta"]["unit"]
            expected = [x.n_sentences if unit == "sentences" else len(x.paragraphs)
                        for x in layouts]
            assert per_page == expected


def test_printed_page_numbers_are_detected_and_reported(made) -> None:
    corpus, a, _ = made
    printed = [json.loads(line) for line in (a / "printed_page_numbers.jsonl").open()]
    with Corpus.open(corpus) as c:
        total = sum(d.n_pages for d in c.documents.values())
    assert len(printed) == total  # every sample page prints "Page N of M"
    assert all(p["printed"] == p["page"] for p in printed)
    for row in rows(a, "unshuffle"):
        assert row["meta"]["printed_numbers"] == len(row["context_pages"])
    assert "print their page number" in (a / "card.md").read_text()


def test_printed_numbers_need_a_shared_offset() -> None:
    body = "A line of running text that is long enough to be a paragraph of prose here."
    pages = [f"Title\n{body}\n{n}" for n in (7, 8, 9, 10)]  # printed = physical + 6
    pages[1] = f"Title\n{body}\nTable total\n2019"  # a stray number is not a page label
    assert printed_page_numbers(pages) == {1: 7, 3: 9, 4: 10}
    assert printed_page_numbers([f"{body}\n{n}" for n in (3, 17)]) == {}  # two pages: no support


def test_paragraphs_and_sentences_follow_the_definitions() -> None:
    wide = "x" * 60
    text = "\n".join([
        "Heading",
        f"The first sentence is here. The second one {wide}",
        "ends now. Dr. Smith wrote a third.",
        "A table row 12 13",
        "• A bullet item that ends with a period.",
    ])
    layout = page_layout(text)
    assert layout.paragraphs == (
        ("The first sentence is here.", f"The second one {wide} ends now.",
         "Dr. Smith wrote a third."),
        ("• A bullet item that ends with a period.",),
    )
    assert sentences("It cost U.S. citizens 3. Then it rose.") == (
        "It cost U.S. citizens 3.", "Then it rose.")


def test_examples_export_with_page_labels(made) -> None:
    _, a, _ = made
    table = pq.read_table(a / "export-trl" / "train.parquet").to_pylist()
    by_id = {r["id"]: r for r in table}
    assert len(by_id) == len(rows(a))
    for row in rows(a):
        example = by_id[f"task:{row['id']}"]
        content = example["messages"][0]["content"]
        n = len(row["context_pages"])
        assert [c["type"] for c in content] == ["text", "image"] * n + ["text"]
        assert [c["text"] for c in content[:-1:2]] == [f"Page {i}:" for i in range(1, n + 1)]
        assert content[-1]["text"] == row["question"]
        assert example["messages"][1]["content"][0]["text"] == row["answer"]
        assert len(example["images"]) == n and all((a / "export-trl" / i).exists()
                                                   for i in example["images"])
    llama = [json.loads(line) for line in (a / "export-llamafactory" / "train.jsonl").open()]
    assert len(llama) == len(rows(a))
