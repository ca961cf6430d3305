from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from docthink.corpus.samples import write_sample_pdfs
from tests.evals.helpers import openai_server


@dataclass(frozen=True)
class Planted:
    """A benchmark over generated PDFs with planted facts: Int/Float rows the offline teacher can
    answer, one unanswerable row, and one row whose PDF is missing."""

    documents: Path
    data: Path
    rows: list[dict[str, str]]

    def answers(self) -> dict[str, str]:
        return {r["question"]: r["answer"] for r in self.rows}


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    root = tmp_path_factory.mktemp("planted")
    paths, facts = write_sample_pdfs(root / "pdfs", 4, seed=5, pages=(3, 6))
    rows = [
        {"doc_id": f.doc_id, "doc_type": "Financial report", "question": f.question,
         "answer": f.answer, "evidence_pages": f"[{f.page}]",
         "evidence_sources": "['Pure-text (Plain-text)']",
         "answer_format": "Float" if "." in f.answer else "Int"}
        for f in facts
    ]
    rows.append({"doc_id": paths[0].name, "doc_type": "Financial report",
                 "question": "How many lighthouses does the company operate on the Moon?",
                 "answer": "Not answerable", "evidence_pages": "[]", "evidence_sources": "[]",
                 "answer_format": "None"})
    rows.append({**rows[0], "doc_id": "absent.pdf", "question": "Is this PDF here?"})
    data = root / "samples.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    return Planted(root / "pdfs", data, rows)


@pytest.fixture(scope="module")
def server() -> Iterator[object]:
    with openai_server().OpenAIServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTHINK_REGISTRY", str(tmp_path / "registry.sqlite"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
