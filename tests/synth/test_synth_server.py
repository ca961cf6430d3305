"""`docthink synth` against a real OpenAI-compatible server on 127.0.0.1 playing the evidence and
answer models: the exact requests each stage sends, what a page whose request keeps failing does to
its questions, and resuming after SIGKILL without resending a request that had finished."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from docthink.core.parts import ImagePart, PageRef
from docthink.corpus.corpus import Corpus
from docthink.corpus.policy import RenderPolicy
from docthink.synth import PROMPTS
from docthink.synth import requests as rq
from tests.helpers import docthink

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from openai_server import Action, Error, OpenAIServer, Received, Reply

STAGES = {"evidence": "evidence-vl", "answer_vision": "answer-vl", "answer_text": "answer-llm"}
SOURCE_NOTE = PROMPTS["evidence_source_note"].text


@dataclass(frozen=True)
class Pages:
    """Every page of the sample corpus with its stored image, found again from a data URL."""

    parts: dict[PageRef, ImagePart]
    by_sha: dict[str, PageRef]

    def of(self, part: dict[str, Any]) -> PageRef:
        """The page whose stored image bytes are exactly this image_url part's bytes."""
        url = part["image_url"]["url"]
        header, data = url.split(",", 1)
        assert header == "data:image/png;base64", header
        return self.by_sha[hashlib.sha256(base64.b64decode(data)).hexdigest()]


@dataclass(frozen=True)
class Q:
    qid: str
    text: str
    context: tuple[PageRef, ...]
    source: frozenset[PageRef]


@pytest.fixture(scope="module")
def pages(sample_corpus: tuple[Path, Path]) -> Pages:
    corpus, _ = sample_corpus
    with Corpus.open(corpus) as c:
        refs = [ref for doc in c.documents.values() for ref in doc.pages()]
        parts = dict(zip(refs, c.ensure_images(refs, RenderPolicy()), strict=True))
    by_sha = {p.sha256: ref for ref, p in parts.items()}
    assert len(by_sha) == len(parts), "two sample pages render to the same image"
    return Pages(parts, by_sha)


@pytest.fixture(scope="module")
def questions(sample_corpus: tuple[Path, Path], pages: Pages) -> dict[str, Q]:
    """By question text (what the server sees); whole-document contexts."""
    _, path = sample_corpus
    out = {}
    for row in map(json.loads, path.open()):
        context = tuple(sorted((r for r in pages.parts if r.doc_id == row["doc_id"]),
                               key=lambda r: r.page))
        source = frozenset(PageRef(row["doc_id"], p) for p in row["source_pages"])
        out[row["question"]] = Q(row["qid"], row["question"], context, source)
    assert len(out) == 8 and len({q.context[0].doc_id for q in out.values()}) == 4
    return out


def _digest(*parts: object) -> int:
    return int(hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:8], 16)


@dataclass
class Teacher:
    """Plays the three stage models, deterministically from each request alone. Evidence: score 4,
    8 or 9 when the request carries the source-page note, else 0, 2, 3 or 5; `fail` pages always get
    a 500, `malformed` pages always invalid JSON, `malformed_once` pages an out-of-range score
    until the re-ask."""

    pages: Pages
    fail: set[PageRef] = field(default_factory=set)
    malformed: set[PageRef] = field(default_factory=set)
    malformed_once: set[PageRef] = field(default_factory=set)
    delay_s: float = 0.0

    def __call__(self, body: dict[str, Any]) -> Action:
        if "response_format" in body:
            return self.evidence_reply(body)
        return Reply(answer(body["messages"][-1]["content"][-1]["text"]))

    def evidence_reply(self, body: dict[str, Any]) -> Action:
        user = body["messages"][1]["content"]
        page = self.pages.of(user[0])
        texts = [p["text"] for p in user if p["type"] == "text"]
        if page in self.fail:
            return Error(500, f"page {page} is broken")
        if page in self.malformed:
            return Reply('{"evidence": "the page sho')
        if page in self.malformed_once and len(body["messages"]) == 2:
            return Reply(json.dumps({"evidence": "too sure", "relevance_score": 42}))
        score = score_of(texts[-1], page, SOURCE_NOTE in texts)
        reply = {"evidence": evidence_of(texts[-1], page), "relevance_score": score}
        return Reply(json.dumps(reply), delay_s=self.delay_s)


def score_of(question: str, page: PageRef, is_source: bool) -> float:
    """A source page mostly 8 or 9, sometimes 4 (below the note's range: the floor lifts it)."""
    if is_source:
        return (4.0, 8.0, 9.0)[_digest(question, page) % 3]
    return (0.0, 0.0, 2.0, 3.0, 5.0)[_digest(question, page) % 5]


def evidence_of(question: str, page: PageRef) -> str:
    return f"{page.doc_id} shows figure {_digest(question, page) % 1000} near the top."


def answer(question: str) -> str:
    return f"Answer {_digest(question) % 10000}."


def expected_trace(q: Q, top_k: int, skip: frozenset[PageRef] = frozenset()) -> list[PageRef]:
    """The trace's pages as method.md section 1 defines them: score above 1.0, highest first
    (ties: page order), top K; source pages floored at 6.0."""
    scored = [(max(score_of(q.text, r, True), 6.0) if r in q.source else score_of(q.text, r, False),
               i, r) for i, r in enumerate(q.context, start=1) if r not in skip]
    kept = sorted((s for s in scored if s[0] > 1.0), key=lambda s: (-s[0], s[1]))[:top_k]
    return [r for _, _, r in kept]


def trace_text(q: Q, refs: list[PageRef]) -> str:
    return "\n\n".join(f"Page {q.context.index(r) + 1}:\n{evidence_of(q.text, r)}" for r in refs)


@pytest.fixture()
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as s:
        yield s


def write_recipe(path: Path, url: str, **settings: object) -> Path:
    def model(name: str) -> dict[str, object]:
        return {"kind": "openai", "model": name,
                "endpoints": [{"base_url": url, "api_key_env": None}],
                "timeout_s": 20, "max_retries": 1, "backoff_s": 0.001, "max_backoff_s": 0.01}

    # the scripted answers match no reference: verification is off unless a test turns it on
    answer = {"verify": {"method": "none"}, **settings.pop("answer", {})}  # type: ignore[dict-item]
    recipe = {"models": {stage: model(name) for stage, name in STAGES.items()}, "answer": answer,
              **settings}
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def synth_args(corpus: Path, questions: Path, out: Path, recipe: Path) -> list[str | Path]:
    return ["synth", "--corpus", corpus, "--questions", questions, "--out", out,
            "--recipe", recipe, "--runs-dir", out.parent / "runs"]


@dataclass(frozen=True)
class Sent:
    kind: str  # evidence, vision, text
    question: str
    page: PageRef | None  # evidence requests only
    body: dict[str, Any]


def classify(received: list[Received], pages: Pages) -> list[Sent]:
    sent = []
    for r in received:
        messages = r.body["messages"]
        question = messages[1]["content"][-1]["text"] if len(messages) > 1 else ""
        if "response_format" in r.body:
            sent.append(Sent("evidence", question, pages.of(messages[1]["content"][0]), r.body))
        elif messages[0]["role"] == "system":
            sent.append(Sent("text", question, None, r.body))
        else:
            sent.append(Sent("vision", messages[0]["content"][-1]["text"], None, r.body))
    return sent


def table(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def dropped(out: Path) -> dict[str, str]:
    rows = map(json.loads, (out / "dropped.jsonl").open())
    return {d["qid"]: f"{d['stage']}: {d['reason']}" for d in rows}


@pytest.mark.parametrize("vision_ratio", [0.5, 1.0, 0.0])
def test_exact_requests_of_every_stage(
    sample_corpus, pages, questions, server, tmp_path: Path, vision_ratio: float
) -> None:
    corpus, questions_path = sample_corpus
    top_k = 3
    server.responder = Teacher(pages)
    # concurrency 1: arrival order at the server is issue order
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=1, trace={"top_k": top_k},
                          answer={"vision_ratio": vision_ratio})
    docthink(*synth_args(corpus, questions_path, tmp_path / "out", recipe))
    sent = classify(server.received, pages)
    evidence = [s for s in sent if s.kind == "evidence"]

    # one request per (question, context page), nothing else, nothing twice
    pairs = Counter((s.question, s.page) for s in evidence)
    assert pairs == Counter((q.text, r) for q in questions.values() for r in q.context)
    system = PROMPTS["evidence_system"].text
    for s in evidence:
        q = questions[s.question]
        first, user = s.body["messages"]
        assert s.body["model"] == STAGES["evidence"]
        assert first == {"role": "system", "content": system}
        assert user["role"] == "user"
        image, *texts = user["content"]  # exactly one image, before every text
        assert image["type"] == "image_url" and all(t["type"] == "text" for t in texts)
        expected = [SOURCE_NOTE, q.text] if s.page in q.source else [q.text]
        assert [t["text"] for t in texts] == expected  # the note iff a source page; question last
        assert s.body["response_format"]["json_schema"]["strict"] is True
        assert s.body["temperature"] == 0.7
    # grouped by page (each page image's requests consecutive), pages in corpus order
    runs = [s.page for i, s in enumerate(evidence) if i == 0 or evidence[i - 1].page != s.page]
    assert len(runs) == len(set(runs)) == len(pages.parts)
    assert runs == sorted(runs, key=lambda r: (r.doc_id, r.page))

    # answers: one request per question, its branch as recorded
    answers = {a["qid"]: a for a in table(tmp_path / "out" / "answers.parquet")}
    branches = {s.question: s.kind for s in sent if s.kind != "evidence"}
    assert len(sent) - len(evidence) == len(branches) == len(questions)
    assert {q.qid: branches[text] for text, q in questions.items()} == {
        qid: a["branch"] for qid, a in answers.items()}
    counts = Counter(branches.values())
    if vision_ratio == 1.0:
        assert counts == {"vision": len(questions)}
    elif vision_ratio == 0.0:
        assert counts == {"text": len(questions)}
    else:
        assert counts["vision"] > 0 and counts["text"] > 0
    traces = {t["qid"]: t for t in table(tmp_path / "out" / "traces.parquet")}
    assert any(score_of(q.text, r, True) < 6.0 for q in questions.values() for r in q.source)
    for s in sent:
        if s.kind == "evidence":
            continue
        q = questions[s.question]
        top = expected_trace(q, top_k)
        assert len(top) == top_k and top[0] in q.source
        assert traces[q.qid]["text"] == trace_text(q, top)
        assert answers[q.qid]["text"] == answer(q.text)
        if s.kind == "vision":  # top-K images in relevance order and the bare question, only
            assert s.body["model"] == STAGES["answer_vision"]
            [user] = s.body["messages"]
            *images, question = user["content"]
            assert user["role"] == "user" and question == {"type": "text", "text": q.text}
            assert [pages.of(i) for i in images] == top
        else:  # the answer_text system prompt, the trace, the question
            assert s.body["model"] == STAGES["answer_text"]
            assert s.body["messages"] == [
                {"role": "system", "content": PROMPTS["answer_text_system"].text},
                {"role": "user", "content": [{"type": "text", "text": trace_text(q, top)},
                                             {"type": "text", "text": q.text}]},
            ]
    examples = {e["id"]: e for e in map(json.loads, (tmp_path / "out" / "examples.jsonl").open())}
    for q in questions.values():
        trace = trace_text(q, expected_trace(q, top_k))
        assert examples[q.qid]["assistant"] in (
            f"<think>{trace}</think>\n{answer(q.text)}", answer(q.text))


def _by_qid(questions: dict[str, Q]) -> dict[str, Q]:
    return {q.qid: q for q in questions.values()}


@pytest.mark.parametrize("rule", ["drop_if_source", "skip_page", "drop_question"])
def test_a_page_that_keeps_failing(
    sample_corpus, pages, questions, server, tmp_path: Path, rule: str
) -> None:
    corpus, questions_path = sample_corpus
    by_qid = _by_qid(questions)
    # q0000's source page; a distractor for q0001, the other question on the same document
    victim, other = by_qid["q0000"], by_qid["q0001"]
    [broken] = victim.source
    assert broken in other.context and broken not in other.source
    server.responder = Teacher(pages, fail={broken})
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=8,
                          evidence={"on_failure": rule})
    out = tmp_path / "out"
    docthink(*synth_args(corpus, questions_path, out, recipe))

    evidence = table(out / "evidence.parquet")
    assert Counter((e["qid"], e["position"]) for e in evidence) == Counter(
        (q.qid, i) for q in by_qid.values() for i in range(1, len(q.context) + 1))
    failed = {(e["qid"], PageRef(e["doc_id"], e["page"])): e["failure"] for e in evidence
              if e["failure"] is not None}
    assert failed == {(victim.qid, broken): f"http 500: page {broken} is broken",
                      (other.qid, broken): f"http 500: page {broken} is broken"}
    # each failed request was tried 1 + max_retries times, the others once
    attempts = Counter((s.question, s.page) for s in classify(server.received, pages)
                       if s.kind == "evidence" and s.page == broken)
    assert attempts == {(victim.text, broken): 2, (other.text, broken): 2}

    expected_drops = {
        "drop_if_source": {victim.qid: "evidence: a source page's request failed"},
        "skip_page": {},
        "drop_question": {victim.qid: "evidence: 1 page request(s) failed",
                          other.qid: "evidence: 1 page request(s) failed"},
    }[rule]
    assert dropped(out) == expected_drops
    traces = {t["qid"]: t for t in table(out / "traces.parquet")}
    examples = {e["id"] for e in map(json.loads, (out / "examples.jsonl").open())}
    assert traces.keys() == examples == by_qid.keys() - expected_drops.keys()
    for qid in traces:  # kept questions keep every page that did not fail (the document stays)
        q = by_qid[qid]
        assert traces[qid]["text"] == trace_text(q, expected_trace(q, 16, skip=frozenset({broken})))
    card = (out / "card.md").read_text()
    assert "| evidence failures | 2 |" in card
    for reason, n in Counter(expected_drops.values()).items():
        assert f"| {reason} | {n} |" in card


def test_malformed_json_fails_after_validation_retries_or_recovers(
    sample_corpus, pages, questions, server, tmp_path: Path
) -> None:
    corpus, questions_path = sample_corpus
    by_qid = _by_qid(questions)
    a, b = by_qid["q0002"], by_qid["q0003"]  # the two questions on one document
    [source] = a.source
    distractor = next(r for r in a.context if r not in a.source | b.source)
    recovering = next(r for r in by_qid["q0004"].context if r not in by_qid["q0004"].source)
    server.responder = Teacher(pages, malformed={source, distractor}, malformed_once={recovering})
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=8)
    out = tmp_path / "out"
    docthink(*synth_args(corpus, questions_path, out, recipe))

    evidence = {(e["qid"], PageRef(e["doc_id"], e["page"])): e
                for e in table(out / "evidence.parquet")}
    failed = {k for k, e in evidence.items() if e["failure"] is not None}
    assert failed == {(q.qid, r) for q in (a, b) for r in (source, distractor)}
    assert all(evidence[k]["failure"].startswith("invalid output: ") for k in failed)
    sent = classify(server.received, pages)
    tries = Counter((s.question, s.page) for s in sent if s.kind == "evidence")
    for q in (a, b):
        for r in (source, distractor):
            assert tries[q.text, r] == 3  # the request and max_validation_retries re-asks
    # a re-ask is the conversation so far plus the invalid reply and the validation error
    reask = next(s.body["messages"] for s in sent if s.page == distractor and
                 len(s.body["messages"]) == 6)
    assert reask[2] == reask[4] == {"role": "assistant", "content": '{"evidence": "the page sho'}
    assert reask[3]["role"] == "user" and "not valid" in reask[3]["content"]
    for q in by_qid.values():
        if recovering in q.context:
            row = evidence[q.qid, recovering]
            assert tries[q.text, recovering] == 2 and row["failure"] is None
            assert row["evidence"] == evidence_of(q.text, recovering)
    # the failures follow the default rule, drop_if_source: only a's source page drops a question
    assert dropped(out) == {a.qid: "evidence: a source page's request failed"}
    assert "| evidence failures | 4 |" in (out / "card.md").read_text()


def _cache_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {key for (key,) in db.execute("SELECT key FROM results")}


@dataclass
class WrongOn(Teacher):
    """The stage models, answering each question with its reference answer written as a model
    would ("4,812", "14.1"), except the questions in `wrong`, answered with another number."""

    references: dict[str, str] = field(default_factory=dict)  # question text -> reference
    wrong: set[str] = field(default_factory=set)  # question texts

    def __call__(self, body: dict[str, Any]) -> Action:
        if "response_format" in body:
            return self.evidence_reply(body)
        question = body["messages"][-1]["content"][-1]["text"]
        reference = self.references[question]
        value = float(reference) + 7 if question in self.wrong else float(reference)
        return Reply(f"{value:,.0f}" if "." not in reference else f"{value:.1f}")


@pytest.mark.parametrize("rule", ["drop", "flag"])
def test_answers_that_miss_their_reference_are_dropped_or_flagged_and_counted(
    sample_corpus, pages, questions, server, tmp_path: Path, rule: str
) -> None:
    """The server answers 3 of the 8 questions wrongly: exactly those fail verification by the
    official rules (the others pass although written "20,954" for 20954), and are dropped (or
    flagged and kept), counted per answer branch in the data card and the run's metrics. A run
    in shards of 3 questions writes the same verdicts, drops, examples and card counts."""
    corpus, questions_path = sample_corpus
    rows = {r["question"]: r for r in map(json.loads, questions_path.open())}
    wrong = {q.qid for q in questions.values()} & {"q0001", "q0004", "q0006"}
    assert len(wrong) == 3
    server.responder = WrongOn(pages, references={t: r["answer"] for t, r in rows.items()},
                               wrong={q.text for q in questions.values() if q.qid in wrong})
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=8,
                          answer={"verify": {"method": "rules", "on_mismatch": rule}})
    out = tmp_path / "out"
    docthink(*synth_args(corpus, questions_path, out, recipe), "--registry",
             tmp_path / "registry.sqlite")
    sharded = tmp_path / "sharded"
    docthink(*synth_args(corpus, questions_path, sharded, recipe), "--shard-size", "3",
             "--registry", tmp_path / "sharded.sqlite")
    assert len(list((sharded / "shards").glob("*.json"))) == 3
    for name in ("verification.parquet", "dropped.jsonl", "examples.jsonl", "answers.parquet"):
        assert (out / name).read_bytes() == (sharded / name).read_bytes(), name

    verdicts = {v["qid"]: v for v in table(out / "verification.parquet")}
    assert verdicts.keys() == {q.qid for q in questions.values()}
    assert {qid for qid, v in verdicts.items() if not v["match"]} == wrong
    assert all(v["method"] == "rules" and v["answer_format"] in ("Int", "Float")
               for v in verdicts.values())
    examples = {e["id"] for e in map(json.loads, (out / "examples.jsonl").open())}
    if rule == "drop":
        assert dropped(out) == {qid: "verify: answer does not match the reference" for qid in wrong}
        assert examples == verdicts.keys() - wrong
    else:
        assert dropped(out) == {} and examples == verdicts.keys()
        assert {qid for qid, v in verdicts.items() if v["action"] == "flagged"} == wrong

    branches = {a["qid"]: a["branch"] for a in table(out / "answers.parquet")}
    for card in ((out / "card.md").read_text(), (sharded / "card.md").read_text()):
        for branch in ("vision", "text"):
            ours = [qid for qid, b in branches.items() if b == branch]
            missed = len(set(ours) & wrong)
            assert ours, "both branches answer some questions"
            cells = (len(ours), len(ours) - missed, missed if rule == "drop" else 0,
                     missed if rule == "flag" else 0, 0)
            assert f"| {branch} | " + " | ".join(map(str, cells)) + " |" in card
        flagged = [line.split(" | ")[0].removeprefix("| ") for line in card.splitlines()
                   if line.startswith("| q0")]
        assert sorted(flagged) == (sorted(wrong) if rule == "flag" else [])
    from docthink.runs import Registry

    (record,) = Registry(tmp_path / "registry.sqlite").list(kind="synth")
    assert record.metrics["verify_mismatches"] == 3
    assert record.metrics["verify_dropped"] == (3 if rule == "drop" else 0)


@dataclass
class Judged(WrongOn):
    """WrongOn, also playing the judge: equivalent when the response's number is the reference's;
    the judge's request for `broken` questions fails."""

    broken: set[str] = field(default_factory=set)  # question texts
    judged: list[str] = field(default_factory=list)

    def __call__(self, body: dict[str, Any]) -> Action:
        if body["model"] != "judge-llm":
            return super().__call__(body)
        item = body["messages"][1]["content"]
        question = item.split("\n")[0].removeprefix("Question: ")
        self.judged.append(question)
        if question in self.broken:
            return Error(500, "judge down")
        reference = item.split("Reference answer: ")[1].split("\n")[0]
        response = item.split("Response:\n")[1]
        same = float(response.replace(",", "")) == float(reference)
        verdict = {"verdict": "equivalent" if same else "not_equivalent", "abstained": False}
        return Reply(json.dumps(verdict))


def test_a_judge_named_in_the_recipe_verifies_instead_of_the_rules(
    sample_corpus, pages, questions, server, tmp_path: Path
) -> None:
    corpus, questions_path = sample_corpus
    rows = {r["question"]: r for r in map(json.loads, questions_path.open())}
    by_qid = _by_qid(questions)
    responder = Judged(pages, references={t: r["answer"] for t, r in rows.items()},
                       wrong={by_qid["q0002"].text}, broken={by_qid["q0005"].text})
    server.responder = responder
    judge = {"kind": "openai", "model": "judge-llm", "max_retries": 0,
             "endpoints": [{"base_url": server.url, "api_key_env": None}]}
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=8,
                          answer={"verify": {"method": "judge", "judge": judge}})
    out = tmp_path / "out"
    docthink(*synth_args(corpus, questions_path, out, recipe))
    assert sorted(responder.judged) == sorted(q.text for q in questions.values())
    assert dropped(out) == {"q0002": "verify: answer does not match the reference",
                            "q0005": "verify: answer not verified: judge failed: http 500: judge "
                                     "down"}
    verdicts = {v["qid"]: v for v in table(out / "verification.parquet")}
    assert {v["method"] for v in verdicts.values()} == {"judge-llm"}
    assert "Checked by judge-llm." in (out / "card.md").read_text()


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "docthink_run.json"}


def test_resume_after_sigkill_resends_nothing_that_finished(
    sample_corpus, pages, questions, server, tmp_path: Path
) -> None:
    corpus, questions_path = sample_corpus
    concurrency = 4
    teacher = Teacher(pages, delay_s=0.04)  # ~170 requests / 4 in flight: about 2 s of evidence
    server.responder = teacher
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=concurrency)
    all_pairs = {(q.text, r) for q in questions.values() for r in q.context}
    # the cache key of each evidence request, as the pipeline builds it
    key_of = {
        rq.evidence_request(
            pages.parts[r], text, is_source=r in questions[text].source, temperature=0.7,
            max_tokens=1024,
        ).cache_key(STAGES["evidence"]): (text, r)
        for text, r in all_pairs
    }

    def evidence_sent() -> dict[tuple[str, PageRef], list[dict[str, Any]]]:
        bodies: dict[tuple[str, PageRef], list[dict[str, Any]]] = {}
        for s in classify(list(server.received), pages):
            if s.kind == "evidence":
                bodies.setdefault((s.question, s.page), []).append(s.body)
        return bodies

    out = tmp_path / "resumed"
    command = [sys.executable, "-m", "docthink.cli", *map(str, synth_args(
        corpus, questions_path, out, recipe))]
    with (tmp_path / "first.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while len(server.received) < len(all_pairs) // 2 and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    time.sleep(0.2)  # let the server finish handling what was in flight
    first = evidence_sent()
    assert all(len(bodies) == 1 for bodies in first.values())
    committed = {key_of[key] for key in _cache_keys(out / "cache.sqlite")}  # every row is ours
    assert committed <= set(first) and 0 < len(committed) < len(all_pairs)
    # received but never committed: only what was in flight at the kill
    assert len(set(first) - committed) <= concurrency
    server.received.clear()

    docthink(*synth_args(corpus, questions_path, out, recipe))
    second = evidence_sent()
    assert all(len(bodies) == 1 for bodies in second.values())
    assert not set(second) & committed  # nothing that had finished is asked again
    assert set(second) == all_pairs - committed  # and everything else exactly once
    for pair in set(first) & set(second):  # in flight at the kill: sent again, the same request
        assert first[pair] == second[pair]
    evidence = table(out / "evidence.parquet")
    keys = [(e["qid"], e["position"]) for e in evidence]
    assert len(keys) == len(set(keys)) == len(all_pairs)

    teacher.delay_s = 0.0
    docthink(*synth_args(corpus, questions_path, tmp_path / "straight", recipe))
    assert pq.read_table(tmp_path / "straight" / "evidence.parquet").equals(
        pq.read_table(out / "evidence.parquet"))
    for name in ("resumed", "straight"):
        docthink("export", tmp_path / name, "--format", "trl", "--out", tmp_path / f"{name}-trl",
                 "--runs-dir", tmp_path / "runs")
    resumed, straight = files(tmp_path / "resumed-trl"), files(tmp_path / "straight-trl")
    assert resumed == straight and "train.parquet" in resumed
    assert sum(name.startswith("images/") for name in resumed) > 0


def _committed_qids(out: Path) -> set[str]:
    """The questions of the shards whose marker is in place (read from their parts)."""
    qids = set()
    for marker in (out / "shards").glob("[0-9]*.json"):
        folder = out / "shards" / json.loads(marker.read_text())["folder"]
        qids |= {row["qid"] for row in table(folder / "evidence.parquet")}
    return qids


def test_killed_driver_resumes_from_committed_shards(
    sample_corpus, pages, questions, server, tmp_path: Path
) -> None:
    """SIGKILL of `docthink synth` once two shards are committed: the rerun sends no request of a
    committed shard again (counted at the server), resends at most what was in flight, and ends
    with the same bytes as a run never interrupted."""
    corpus, questions_path = sample_corpus
    concurrency = 4
    teacher = Teacher(pages, delay_s=0.02)
    server.responder = teacher
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=concurrency,
                          executor={"shard_size": 2})
    out = tmp_path / "resumed"
    command = [sys.executable, "-m", "docthink.cli", *map(str, synth_args(
        corpus, questions_path, out, recipe))]
    with (tmp_path / "first.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (out / "shards" / "000001.json").exists() and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    time.sleep(0.2)  # let the server finish handling what was in flight
    committed = _committed_qids(out)
    assert 4 <= len(committed) < len(questions)  # two shards of two questions, maybe a third
    first = classify(list(server.received), pages)
    server.received.clear()

    docthink(*synth_args(corpus, questions_path, out, recipe))
    second = classify(list(server.received), pages)
    qid_of = {q.text: q.qid for q in questions.values()}
    assert second and not {s.question for s in second if qid_of[s.question] in committed}
    again = {json.dumps(s.body, sort_keys=True) for s in first} & {
        json.dumps(s.body, sort_keys=True) for s in second}
    assert len(again) <= concurrency  # only what was in flight at the kill
    summary = json.loads(max((out.parent / "runs").glob("*-synth-*")).joinpath(
        "summary.json").read_text())
    assert summary["shards"]["reused"] == len(committed) // 2 and summary["shards"]["total"] == 4

    teacher.delay_s = 0.0
    docthink(*synth_args(corpus, questions_path, tmp_path / "straight", recipe))
    for name in ("evidence.parquet", "traces.parquet", "answers.parquet", "verification.parquet",
                 "dropped.jsonl", "examples.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    # the killed attempt's unfinished folder was swept: one marker and one folder per shard
    markers = sorted((out / "shards").glob("*.json"))
    assert [p.name for p in markers] == [f"{i:06d}.json" for i in range(4)]
    assert sorted(p.name for p in (out / "shards").iterdir() if p.is_dir()) == sorted(
        json.loads(p.read_text())["folder"] for p in markers)


def test_ablation_variants_change_the_requests(
    sample_corpus, pages, questions, server, tmp_path: Path
) -> None:
    """No source-page note; the text branch sees the trace's page images only; the first-version
    trace (every page, document order)."""
    corpus, questions_path = sample_corpus
    server.responder = Teacher(pages)
    recipe = write_recipe(tmp_path / "r.yaml", server.url, concurrency=4,
                          evidence={"source_note": False}, trace={"style": "all_pages"},
                          answer={"vision_ratio": 0.0, "text_input": "images"})
    docthink(*synth_args(corpus, questions_path, tmp_path / "out", recipe))
    evidence = [r for r in server.received if "response_format" in r.body]
    assert evidence and not any(SOURCE_NOTE in json.dumps(r.body) for r in evidence)
    answers = [r for r in server.received if "response_format" not in r.body]
    assert len(answers) == len(questions)
    traces = {t["qid"]: t for t in table(tmp_path / "out" / "traces.parquet")}
    for r in answers:
        assert r.body["model"] == STAGES["answer_text"]
        [user] = r.body["messages"]  # no system prompt, no evidence: the images and the question
        *images, question = user["content"]
        q = questions[question["text"]]
        assert [pages.of(i) for i in images] == list(q.context)
        assert traces[q.qid]["positions"] == list(range(1, len(q.context) + 1))
