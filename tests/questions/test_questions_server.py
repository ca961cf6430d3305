"""`docthink questions` against a real OpenAI-compatible server on 127.0.0.1 playing the question
writer and the judge: each request carries the right pages (one page per single-page and judge
request; the seed's pages, labelled and in order, per multi-page request), and a question the judge
answers from one page, or cannot judge, is dropped and counted."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from docthink.core.parts import PageRef
from docthink.corpus.corpus import Corpus
from docthink.corpus.policy import RenderPolicy
from docthink.questions.recipe import QuestionSpecWeights
from docthink.questions.writers import sample_spec
from tests.helpers import docthink

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from openai_server import Action, Error, OpenAIServer, Reply

MARKERS = ("", "REJECT", "BROKEN")  # multi-page drafts: kept, rejected by one page, unjudgeable


def image_sha(part: dict[str, Any]) -> str:
    return hashlib.sha256(base64.b64decode(part["image_url"]["url"].split(",", 1)[1])).hexdigest()


def user_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["messages"][1]["content"]


class Script:
    """Plays the writer and the judge. Questions name the images they were written from (first 16
    hex digits of each image's sha256), so the test can tell which pages a request carried."""

    def __init__(self) -> None:
        self.seeds = 0
        self.markers: dict[str, str] = {}  # multi-page question -> marker

    def __call__(self, body: dict[str, Any]) -> Action:
        schema = body["response_format"]["json_schema"]["name"]
        images = [image_sha(p)[:16] for p in user_parts(body) if p["type"] == "image_url"]
        if schema == "PageQuestions":
            drafts = [{"question": f"What does image {images[0]} show, variant {k}?",
                       "answer": f"thing {k}"} for k in range(2)]
            return Reply(json.dumps({"questions": drafts}))
        if schema == "SeedQuestions":
            marker = MARKERS[self.seeds % 3]
            self.seeds += 1
            question = f"How do images {' '.join(images)} relate? {marker}".strip()
            self.markers[question] = marker
            draft = {"question": question, "answer": "42", "pages": [1, 2, 99]}
            return Reply(json.dumps({"questions": [draft]}))
        assert schema == "ShortAnswer", schema
        question = user_parts(body)[-1]["text"]
        if "BROKEN" in question:
            return Error(400, "this judge cannot read the page")
        # The second page of a REJECT seed answers the question alone.
        answers = "REJECT" in question and question.split()[4] == images[0]
        return Reply(json.dumps({"answer": "42" if answers else "Not answerable"}))


def model(name: str, url: str) -> dict[str, Any]:
    return {"kind": "openai", "model": name, "endpoints": [{"base_url": url, "api_key_env": None}],
            "timeout_s": 20, "max_retries": 0, "backoff_s": 0.001, "max_backoff_s": 0.01}


@pytest.fixture(scope="module")
def served(sample_corpus, tmp_path_factory) -> dict[str, Any]:
    corpus, _ = sample_corpus
    root = tmp_path_factory.mktemp("questions-server")
    script = Script()
    with OpenAIServer(script) as server:
        recipe = {
            "models": {"generator": model("gen-vl", server.url),
                       "judge": model("judge-vl", server.url)},
            "embedding": {"model": "tfidf"},
            "single_page": {"max_per_document": 2},
            "multi_page": {"seeds_per_document": 2, "pages": [2, 4]},
            "unanswerable": {"share": 0.5},
        }
        (root / "r.yaml").write_text(json.dumps(recipe))
        docthink("questions", "--corpus", corpus, "--out", root / "out", "--recipe",
                 root / "r.yaml", "--runs-dir", root / "runs")
        received = [r.body for r in server.received]
    with Corpus.open(corpus) as c:
        refs = [r for d in c.documents.values() for r in d.pages()]
        parts = c.ensure_images(refs, RenderPolicy())
    page_of = {p.sha256[:16]: r for r, p in zip(refs, parts, strict=True)}
    assert len(page_of) == len(refs)
    by_schema: dict[str, list[dict[str, Any]]] = {}
    for body in received:
        by_schema.setdefault(body["response_format"]["json_schema"]["name"], []).append(body)
    out = root / "out"
    return {
        "script": script,
        "requests": by_schema,
        "page_of": page_of,
        "rows": [json.loads(line) for line in (out / "questions.jsonl").open()],
        "dropped": [json.loads(line) for line in (out / "dropped.jsonl").open()],
        "out": out,
    }


def images_of(body: dict[str, Any], page_of: dict[str, PageRef]) -> list[PageRef]:
    return [page_of[image_sha(p)[:16]] for p in user_parts(body) if p["type"] == "image_url"]


def test_single_page_requests_carry_their_page_and_its_spec(served) -> None:
    page_of, weights = served["page_of"], QuestionSpecWeights()
    asked = []
    for body in served["requests"]["PageQuestions"]:
        (page,) = images_of(body, page_of)
        asked.append(page)
        assert user_parts(body)[-1]["text"] == sample_spec(0, str(page), weights).text()
    assert len(asked) == len(set(asked)) == 8  # two pages of each of four documents
    singles = [r for r in served["rows"] if r["kind"] == "single"]
    assert {tuple(r["origin_pages"][0]) for r in singles} == {(p.doc_id, p.page) for p in asked}
    for row in singles:  # the question kept for a page was written from that page's image
        written_from = page_of[row["question"].split()[3]]
        assert [written_from.doc_id, written_from.page] == row["origin_pages"][0]
        assert row["generator"] == "gen-vl"


def test_multi_page_requests_show_the_seed_labelled_in_order(served) -> None:
    page_of = served["page_of"]
    for body in served["requests"]["SeedQuestions"]:
        parts = user_parts(body)
        seed = images_of(body, page_of)
        labels = [p["text"] for p in parts[:-1] if p["type"] == "text"]
        assert labels == [f"Page {i}:" for i in range(1, len(seed) + 1)]
        assert [p["type"] for p in parts[:-1]] == ["text", "image_url"] * len(seed)
        assert 2 <= len(seed) <= 4 and len({r.doc_id for r in seed}) == 1
        assert [r.page for r in seed] == list(range(seed[0].page, seed[0].page + len(seed)))
    assert len(served["requests"]["SeedQuestions"]) == 8


def test_judge_sees_each_seed_page_once_and_rejections_drop_and_count(served) -> None:
    page_of, markers = served["page_of"], served["script"].markers
    judged: dict[str, list[PageRef]] = {}
    for body in served["requests"]["ShortAnswer"]:
        pages = images_of(body, page_of)
        assert len(pages) == 1  # the judge sees one page alone
        judged.setdefault(user_parts(body)[-1]["text"], []).extend(pages)
    for question, marker in markers.items():
        seed = [page_of[h] for h in question.split()[3:-2 if marker else -1]]
        assert sorted(judged[question], key=str) == sorted(seed, key=str)  # each page once
    rows = {r["question"]: r for r in served["rows"]}
    dropped = Counter(d["reason"] for d in served["dropped"] if d["stage"] == "multi")
    expected = Counter(markers.values())
    assert expected["REJECT"] >= 2 and expected[""] >= 2 and expected["BROKEN"] >= 2
    assert dropped["judge: a single page answers it"] == expected["REJECT"]
    assert dropped["judge request failed: http 400"] == expected["BROKEN"]
    for question, marker in markers.items():
        assert (question in rows) == (marker == "")
    for question in (q for q, m in markers.items() if m == ""):
        row = rows[question]  # the writer's pages [1, 2, 99]: 99 is outside the seed
        seed = [page_of[h] for h in question.split()[3:-1]]
        assert row["source_pages"] == [[r.doc_id, r.page] for r in seed[:2]]
    metrics = json.loads(next((served["out"].parent / "runs").glob("*-questions-*/metrics.json"))
                         .read_text())
    assert metrics["judge_rejected"] == expected["REJECT"]


def test_unanswerable_twins_are_judged_on_every_context_page(served) -> None:
    page_of = served["page_of"]
    judged: dict[str, list[PageRef]] = {}
    for body in served["requests"]["ShortAnswer"]:
        judged.setdefault(user_parts(body)[-1]["text"], []).extend(images_of(body, page_of))
    twins = [r for r in served["rows"] if r["kind"] == "unanswerable"]
    assert twins
    for row in twins:
        context = [PageRef(d, p) for d, p in row["context_pages"]]
        assert sorted(judged[row["question"]], key=str) == sorted(context, key=str)
        assert row["answer"] == "Not answerable"
        assert row["origin_pages"][0] not in row["context_pages"]


def test_the_plan_counts_the_writers_requests_and_images_exactly(served, sample_corpus,
                                                                  tmp_path: Path) -> None:
    """`docthink plan questions` with the run's recipe, sending nothing: one writer request per
    drafted page and seed, with the images the server received; the judge's part is bounded."""
    corpus, _ = sample_corpus
    processor = tmp_path / "processor"  # the served names have no built-in image rule
    processor.mkdir()
    (processor / "preprocessor_config.json").write_text(json.dumps(
        {"patch_size": 14, "merge_size": 2, "min_pixels": 3136, "max_pixels": 12845056}))
    plan = json.loads(docthink("plan", "questions", "--corpus", corpus, "--out", tmp_path / "o",
                               "--recipe", served["out"].parent / "r.yaml", "--processor",
                               processor, "--json"))
    stages = {s["stage"]: s for s in plan["stages"]}
    writer = served["requests"]["PageQuestions"] + served["requests"]["SeedQuestions"]
    assert stages["generator"]["requests"] == len(writer)
    assert stages["generator"]["requests_basis"] == "exact"
    assert stages["generator"]["images"] == sum(
        len(images_of(b, served["page_of"])) for b in writer)
    assert stages["judge"]["requests_basis"] == "estimate"
    assert stages["judge"]["prompt_tokens"] > 0 and stages["generator"]["prompt_tokens"] > 0
