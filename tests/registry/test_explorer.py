"""The data explorer in `docthink serve`, in headless Chromium, over real runs: a synth run and two
eval runs against a real OpenAI-compatible server on 127.0.0.1 whose evidence, answers and
responses carry markup, as does a question. Markup shows as text (no dialog opens, no element
is injected); filters, paging, the example page, the eval question page and the side-by-side
work by clicks."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest

from docthink.registry.explorer import ExampleFilter, ExampleIndex, SynthFiles
from docthink.runs.registry import Registry
from tests.registry.conftest import XSS, XSS_IMG, cli, free_port, serving

pytest.importorskip("fastapi", reason="the web UI needs the 'web' extra (fastapi, jinja2, uvicorn)")
sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from openai_server import Error, OpenAIServer, Reply

SOURCE_NOTE = "known to be relevant"
BROKEN = "(its source page is broken)"  # in a question whose source page's request fails
# DOCTHINK_SCREENSHOTS=FOLDER: the tests save the README's screenshots of the three pages there
SHOTS = os.environ.get("DOCTHINK_SCREENSHOTS")


def assert_images_load(page: Any, url: str) -> None:
    """Every thumbnail's URL serves a PNG (they load lazily, so ask the server, not the page)."""
    sources = page.eval_on_selector_all("#context img", "imgs => imgs.map(i => i.src)")
    assert sources
    for src in sources:
        with urllib.request.urlopen(src, timeout=30) as response:
            assert response.headers["content-type"] == "image/png"
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"


def shot(page: Any, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@dataclass(frozen=True)
class Explored:
    url: str
    registry: Path
    synth: str
    evals: dict[str, str]  # model name -> run id
    facts: list[dict[str, Any]]


def _responder(facts: list[dict[str, Any]]) -> Any:
    answers = {f["question"]: f["answer"] for f in facts}

    def respond(body: dict[str, Any]) -> Reply | Error:
        texts = [p["text"] for m in body["messages"] if isinstance(m["content"], list)
                 for p in m["content"] if p["type"] == "text"]
        if "response_format" in body:  # evidence: a source page scores high
            source = any(SOURCE_NOTE in t for t in texts)
            if source and any(BROKEN in t for t in texts):
                return Error(500, "page broken")
            return Reply(json.dumps({"evidence": f"figure {XSS} and {XSS_IMG}",
                                     "relevance_score": 8.0 if source else 0.5}))
        fact = next((a for q, a in answers.items() if any(q in t for t in texts)), "")
        if body["model"] == "weak" and fact and odd(fact):
            return Reply(f"It is 0 {XSS_IMG}", completion_tokens=5)
        if any(XSS in t for t in texts):  # the hostile question's answer carries markup too
            return Reply(f"It is {fact} {XSS}", completion_tokens=9)
        return Reply(f"It is {fact}.", completion_tokens=4)

    return respond


def odd(answer: str) -> bool:
    """The weak model is wrong where the reference's last digit is odd."""
    return int(answer[-1]) % 2 == 1


def _model(name: str, url: str) -> dict[str, Any]:
    return {"kind": "openai", "model": name, "endpoints": [{"base_url": url, "api_key_env": None}],
            "timeout_s": 20, "max_retries": 0}


@pytest.fixture(scope="module")
def explored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Explored]:
    root = tmp_path_factory.mktemp("explore")
    common = ("--runs-dir", "runs", "--registry", "registry.sqlite")
    here = Path.cwd()
    os.chdir(root)
    try:
        cli("samples", "sample", "--docs", "3", "--seed", "3")
        questions = Path("sample/questions.jsonl")
        rows = [json.loads(line) for line in questions.read_text().splitlines()]
        rows[0]["question"] = f"{XSS} {rows[0]['question']}"
        rows[2]["question"] = f"{rows[2]['question']} {BROKEN}"
        questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cli("ingest", "sample/pdfs", "--out", "corpus", *common)
        with OpenAIServer(_responder(rows)) as server:
            # the scripted answers carry markup with digits of its own: the rules' number
            # extraction matches some and not others; mismatches are flagged (kept, listed)
            Path("synth.yaml").write_text(json.dumps({"models": {
                s: _model(s, server.url) for s in ("evidence", "answer_vision", "answer_text")},
                "answer": {"verify": {"on_mismatch": "flag"}}}))
            cli("synth", "--corpus", "corpus", "--questions", "sample/questions.jsonl",
                "--out", "synth", "--recipe", "synth.yaml", *common)
            samples = [{"doc_id": f["doc_id"], "doc_type": "Financial report",
                        "question": f["question"], "answer": f["answer"],
                        "evidence_pages": str(f["source_pages"]),
                        "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Int"}
                       for f in rows]
            Path("samples.json").write_text(json.dumps(samples), encoding="utf-8")
            for name in ("strong", "weak"):
                Path(f"{name}.yaml").write_text(json.dumps({"model": _model(name, server.url)}))
                cli("eval", "run", f"{name}.yaml", "--data", "samples.json", "--corpus", "corpus",
                    "--out", f"eval-{name}", "--benchmark", "mmlbd-c", *common)
    finally:
        os.chdir(here)
    registry = root / "registry.sqlite"
    with Registry(registry) as reg:
        (synth,) = reg.list(kind="synth")
        evals = {Path(str(r.recipe["out"])).name.removeprefix("eval-"): r.id
                 for r in reg.list(kind="eval")}
    with serving(registry, free_port()) as url:
        yield Explored(url, registry, synth.id, evals, rows)


def test_example_list_filters_and_pages_by_clicks(explored: Explored, page: Any) -> None:
    page.goto(f"{explored.url}/runs/{explored.synth}")
    page.click("#explore")
    total = int(page.text_content("#total"))
    assert total == len(explored.facts)
    assert page.locator("#examples tbody tr").count() == total
    # the hostile question is a row whose text is the markup itself
    assert any(XSS in t for t in page.locator("#examples td.question").all_text_contents())
    assert page.locator("#examples script").count() == 0
    page.select_option("#f-branch", "vision")
    page.click("#apply")
    vision = int(page.text_content("#total"))
    cells = page.locator("#examples tbody tr td:nth-child(5)").all_text_contents()
    branches = {t.strip() for t in cells}
    assert 0 < vision < total and branches == {"vision"}
    page.select_option("#f-branch", "")
    page.fill("#f-pages_min", "99")
    page.click("#apply")
    assert page.text_content("#total") == "0"
    page.fill("#f-pages_min", "")
    page.click("#apply")
    shot(page, "explorer-list")


def test_example_page_shows_pages_scores_trace_and_answer_as_text(
    explored: Explored, page: Any
) -> None:
    qid = explored.facts[0]["qid"]
    page.goto(f"{explored.url}/runs/{explored.synth}/examples")
    page.click(f"a.example:text-is('{qid}')")
    assert page.text_content("#question").startswith(XSS)
    cards = page.locator("#context .pagecard")
    positions = [int(c.get_attribute("data-position")) for c in cards.all()]
    assert positions == sorted(positions) and positions[0] == 1  # context order
    sources = page.locator("#context .pagecard.source")
    assert sources.count() == len(explored.facts[0]["source_pages"])
    assert sources.first.get_attribute("data-position") == str(explored.facts[0]["source_pages"][0])
    # thumbnails load from the corpus's image store
    assert_images_load(page, explored.url)
    assert XSS in page.text_content("#trace") and XSS in page.text_content("#answer")
    assert page.locator("#context img").count() == cards.count()  # no injected <img>
    shot(page, "explorer-example")
    first_source = sources.first.get_attribute("data-position")
    assert page.text_content("#top").strip().startswith(f"Page {first_source}")


def test_dropped_question_says_why(explored: Explored, page: Any) -> None:
    """A question dropped because its source page's request failed: listed with its reason, its
    page shows the context's thumbnails (from the corpus's render index) and no trace."""
    page.goto(f"{explored.url}/runs/{explored.synth}/examples")
    page.select_option("#f-status", "dropped")
    page.click("#apply")
    assert page.text_content("#total") == "1"
    page.locator("a.example").first.click()
    assert page.text_content("#qid") == explored.facts[2]["qid"]
    assert page.text_content("#why") == "evidence: a source page's request failed"
    assert page.text_content("#trace") == "-"
    cards = page.locator("#context .pagecard")
    assert page.locator("#context img").count() == cards.count() > 0
    assert_images_load(page, explored.url)
    assert "failed" in page.locator("#context .pagecard.source .failure").text_content()


def test_example_page_shows_the_answer_check(explored: Explored, page: Any) -> None:
    """Each kept example's page says what verification.parquet says of its answer: a match, or a
    flagged mismatch with the reference and the short answer the rules compared."""
    with Registry(explored.registry) as reg:
        folder = SynthFiles.of(reg.get(explored.synth)).folder
    verdicts = {v["qid"]: v for v in pq.read_table(folder / "verification.parquet").to_pylist()}
    assert {v["action"] for v in verdicts.values()} == {"kept", "flagged"}  # both kinds shown
    references = {f["qid"]: f["answer"] for f in explored.facts}
    for qid, v in verdicts.items():
        page.goto(f"{explored.url}/runs/{explored.synth}/examples/{quote(qid)}")
        assert page.text_content("#verdict-reference") == references[qid] == v["reference"]
        if v["match"]:
            assert page.text_content("#verdict-result") == "matches the reference"
            assert page.locator("#verdict-action").count() == 0
        else:
            assert page.text_content("#verdict-result") == "does not match the reference"
            assert page.text_content("#verdict-action") == "flagged"
            shown = page.locator("#verdict-pred")
            assert (shown.text_content() if shown.count() else "") == v["pred"]
    assert page.locator("#verdict script, #verdict img").count() == 0


def test_index_filters_agree_with_the_files(explored: Explored) -> None:
    """The list's counts against the run's own files."""
    with Registry(explored.registry) as reg:
        index = ExampleIndex.of(SynthFiles.of(reg.get(explored.synth)))
    folder = index.files.folder
    total, _ = index.query(ExampleFilter())
    kept, _ = index.query(ExampleFilter(status="kept"))
    dropped = [json.loads(line) for line in (folder / "dropped.jsonl").open()]
    assert total == kept + len(dropped) == len(explored.facts) and len(dropped) == 1
    traces = pq.read_table(folder / "traces.parquet").to_pylist()
    n, rows = index.query(ExampleFilter(pages_min=1, pages_max=1))
    assert n == sum(len(t["positions"]) == 1 for t in traces) and all(r.n_trace == 1 for r in rows)
    n, _ = index.query(ExampleFilter(score_min=9))
    assert n == 0  # every score is 8.0 or 0.5


def test_eval_question_page_and_side_by_side(explored: Explored, page: Any) -> None:
    strong, weak = explored.evals["strong"], explored.evals["weak"]
    page.goto(f"{explored.url}/evals/compare")
    page.select_option("#run-a", strong)
    page.select_option("#run-b", weak)
    page.click("#compare")
    wrong = [f for f in explored.facts if odd(f["answer"])]
    rows = page.locator("#disagreements tbody tr")
    indexes = {int(r.get_attribute("data-index")) for r in rows.all()}
    assert int(page.text_content("#count")) == len(indexes) == len(wrong) > 0
    assert {explored.facts[i]["answer"] for i in indexes} == {f["answer"] for f in wrong}
    shot(page, "explorer-compare")
    page.locator("a.question").first.click()
    shot(page, "explorer-eval-question")
    answers = page.locator("#answers tbody tr")
    assert answers.count() == 4  # two checkpoints, with and without <cot>
    assert {t.strip() for t in page.locator("#answers td:nth-child(3)").all_text_contents()} == {
        "with <cot>", "without <cot>"}
    assert any(XSS_IMG in t for t in page.locator("#answers td.response").all_text_contents())
    assert page.locator("#answers img").count() == 0


def test_search_hits_link_to_the_explorer(explored: Explored, page: Any) -> None:
    word = explored.facts[1]["question"].split()[-1].strip("?")
    page.goto(f"{explored.url}/search?q={quote(word)}&source=trace")
    page.locator("#hits a.row").first.click()
    assert "/examples/" in page.url and page.locator("#context .pagecard").count() > 0
    page.goto(f"{explored.url}/search?q={quote(word)}&source=prediction")
    page.locator("#hits a.row").first.click()
    assert "/evals/mmlbd-c/" in page.url and page.locator("#answers tbody tr").count() == 4
