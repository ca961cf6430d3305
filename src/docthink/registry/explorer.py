"""The data explorer: a synth run's examples as the model saw them, and an eval's answers per
question.

A synth run's rows (one per question: kept as an example, or dropped with its reason) are loaded
once into an in-memory SQLite table from the run's own files (evidence, traces, answers, dropped,
examples, the questions read), so a filter over 100k examples is one indexed query rather than a
pass over the files. An example page reads its one question back: its evidence rows (a Parquet
read filtered on qid), its trace, answer and example line (by the byte offset the table keeps)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import cast

import orjson

from docthink.core.parts import PageRef
from docthink.runs.registry import RunRecord

PER_PAGE = 50
_COLUMNS = ("qid", "doc_id", "question", "status", "why", "branch", "placement", "n_context",
            "n_trace", "top_score", "offset")


@dataclass(frozen=True)
class ExampleFilter:
    """What the list page filters on; None: any."""

    branch: str | None = None
    placement: str | None = None
    status: str | None = None  # kept | dropped
    why: str | None = None  # "stage: reason" of a dropped question
    score_min: float | None = None  # the question's best page score
    score_max: float | None = None
    pages_min: int | None = None  # pages in its trace
    pages_max: int | None = None
    doc: str | None = None

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (("branch", self.branch), ("placement", self.placement),
                              ("status", self.status), ("why", self.why), ("doc_id", self.doc)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        for column, op, value in (("top_score", ">=", self.score_min),
                                  ("top_score", "<=", self.score_max),
                                  ("n_trace", ">=", self.pages_min),
                                  ("n_trace", "<=", self.pages_max)):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                args.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


@dataclass(frozen=True)
class ExampleRow:
    qid: str
    doc_id: str
    question: str
    status: str
    why: str
    branch: str | None
    placement: str | None
    n_context: int
    n_trace: int
    top_score: float | None
    offset: int  # of its line in examples.jsonl; -1 when dropped


@dataclass(frozen=True)
class PageView:
    position: int
    doc_id: str
    page: int
    is_source: bool
    score: float
    evidence: str
    failure: str | None
    image: str | None  # image file name in the corpus store, when the example has it
    trace_rank: int | None  # 1-based place in the trace, when it is there


@dataclass(frozen=True)
class VerdictView:
    """The answer's check against the question's reference (a row of verification.parquet)."""

    method: str  # "rules" or the judge model's name
    reference: str
    answer_format: str
    pred: str  # the short answer the rules compared ("" for a judge)
    score: float
    match: bool
    action: str  # kept, flagged or dropped
    failure: str | None


@dataclass(frozen=True)
class ExampleView:
    row: ExampleRow
    pages: list[PageView]
    trace: str | None
    answer: str | None
    answer_failure: str | None
    example: dict[str, object] | None
    # None: not verified (no reference answer, `verify.method: none`, or a run from before
    # verification, which has no verification.parquet)
    verdict: VerdictView | None

    @property
    def in_trace(self) -> list[PageView]:
        ranked = [p for p in self.pages if p.trace_rank is not None]
        return sorted(ranked, key=lambda p: p.trace_rank or 0)


@dataclass(frozen=True)
class SynthFiles:
    """Where a synth run's files are: its output folder, the questions it read, the corpus whose
    image store holds its pages."""

    folder: Path
    questions: Path
    corpus: Path
    render_policy: dict[str, object]  # the run's render policy, as recorded

    @classmethod
    def of(cls, record: RunRecord) -> SynthFiles:
        """From the run's record: outputs beside examples.jsonl, recipe paths from its cwd."""
        outputs = [Path(a.path) for a in record.outputs() if a.path.endswith("/examples.jsonl")]
        if not outputs:
            raise LookupError(f"run {record.id} recorded no examples.jsonl")
        base = Path(record.cwd) if record.cwd else Path.cwd()
        questions, corpus = (Path(str(record.recipe[k])) for k in ("questions", "corpus"))
        inputs = [Path(a.path) for a in record.artifacts
                  if a.role == "input" and Path(a.path).name == questions.name]
        return cls(outputs[0].parent, inputs[0] if inputs else base / questions, base / corpus,
                   cast(dict[str, object], record.recipe["image"]))

    def image(self, name: str) -> Path:
        return self.corpus / "images" / name[:2] / name

    def stored_images(self, refs: list[PageRef]) -> list[str | None]:
        """Image file names of pages the run rendered, for a question without an example line
        (dropped): looked up in the corpus's render index, never rendered here."""
        from docthink.corpus.corpus import Corpus
        from docthink.corpus.policy import RenderPolicy

        policy = RenderPolicy.model_validate(self.render_policy)
        with Corpus.open(self.corpus) as corpus:
            paths = [corpus.stored_image(ref, policy) for ref in refs]
        return [None if p is None else p.name for p in paths]


def _questions(path: Path) -> dict[str, tuple[str, str]]:
    from docthink.questions.rows import read_question_rows

    return {r.qid: (r.doc_id, r.question) for r in read_question_rows(path)}


def build_rows(files: SynthFiles) -> Iterator[tuple[object, ...]]:
    """One row per question and plain example, in the columns of `_COLUMNS`."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = files.folder
    evidence = pq.read_table(folder / "evidence.parquet", columns=["qid", "relevance_score"])
    stats = evidence.group_by("qid").aggregate([("relevance_score", "max"),
                                                 ("relevance_score", "count")])
    best = dict(zip(stats["qid"].to_pylist(), stats["relevance_score_max"].to_pylist(),
                    strict=True))
    n_context = dict(zip(stats["qid"].to_pylist(), stats["relevance_score_count"].to_pylist(),
                         strict=True))
    traces = pq.read_table(folder / "traces.parquet", columns=["qid", "positions"])
    n_trace = dict(zip(traces["qid"].to_pylist(),
                       pc.list_value_length(traces["positions"]).to_pylist(), strict=True))
    answers = pq.read_table(folder / "answers.parquet", columns=["qid", "branch"])
    branch = dict(zip(answers["qid"].to_pylist(), answers["branch"].to_pylist(), strict=True))
    why = {}
    with (folder / "dropped.jsonl").open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            why[d["qid"]] = f"{d['stage']}: {d['reason']}"
    questions = _questions(files.questions)
    seen = set()
    with (folder / "examples.jsonl").open("rb") as f:
        offset = 0
        for line in f:
            e = orjson.loads(line)
            qid = e["id"]
            seen.add(qid)
            doc_id, text = questions.get(qid, ("", ""))  # plain rows come from another file
            yield (qid, doc_id, text, "kept", "", e["branch"], e["placement"],
                   n_context.get(qid, 0), n_trace.get(qid, 0), best.get(qid), offset)
            offset += len(line)
    for qid, reason in why.items():
        doc_id, text = questions.get(qid, ("", ""))
        yield (qid, doc_id, text, "dropped", reason, branch.get(qid), None,
               n_context.get(qid, 0), n_trace.get(qid, 0), best.get(qid), -1)


class ExampleIndex:
    """A synth run's rows in an in-memory SQLite table, filtered by indexed queries."""

    def __init__(self, files: SynthFiles, rows: Iterator[tuple[object, ...]]) -> None:
        self.files = files
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.lock = threading.Lock()  # one connection, shared by the server's threads
        self.db.execute(
            "CREATE TABLE examples (seq INTEGER PRIMARY KEY, qid TEXT UNIQUE, doc_id TEXT,"
            " question TEXT, status TEXT, why TEXT, branch TEXT, placement TEXT,"
            " n_context INTEGER, n_trace INTEGER, top_score REAL, offset INTEGER)")
        marks = ", ".join("?" for _ in _COLUMNS)
        self.db.executemany(f"INSERT INTO examples ({', '.join(_COLUMNS)}) VALUES ({marks})", rows)
        for column in ("branch", "placement", "status", "why", "doc_id", "n_trace", "top_score"):
            self.db.execute(f"CREATE INDEX examples_{column} ON examples ({column})")
        self.db.commit()

    @classmethod
    def of(cls, files: SynthFiles) -> ExampleIndex:
        return cls(files, build_rows(files))

    def query(self, f: ExampleFilter, page: int = 1, per_page: int = PER_PAGE
              ) -> tuple[int, list[ExampleRow]]:
        """The total that match and the rows of `page` (1-based), in file order."""
        where, args = f.where()
        with self.lock:
            (total,) = self.db.execute(f"SELECT count(*) FROM examples{where}", args).fetchone()
            rows = self.db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM examples{where} ORDER BY seq LIMIT ? OFFSET ?",
                [*args, per_page, (page - 1) * per_page]).fetchall()
        return total, [ExampleRow(*r) for r in rows]

    def choices(self, column: str) -> list[str]:
        """The values a select offers (branch, placement, status, why, doc_id)."""
        with self.lock:
            return [v for (v,) in self.db.execute(
                f"SELECT DISTINCT {column} FROM examples WHERE {column} IS NOT NULL"
                f" AND {column} != '' ORDER BY {column}")]

    def row(self, qid: str) -> ExampleRow:
        with self.lock:
            found = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM examples WHERE qid = ?",
                                    [qid]).fetchone()
        if found is None:
            raise KeyError(f"no example or dropped question {qid!r} in this run")
        return ExampleRow(*found)

    def view(self, qid: str) -> ExampleView:
        import pyarrow.parquet as pq

        row = self.row(qid)
        folder = self.files.folder
        mine = [("qid", "=", qid)]
        evidence = pq.read_table(folder / "evidence.parquet", filters=mine).to_pylist()
        trace = pq.read_table(folder / "traces.parquet", filters=mine).to_pylist()
        answer = pq.read_table(folder / "answers.parquet", filters=mine).to_pylist()
        example = None
        images: list[str | None] = []
        if row.offset >= 0:
            with (folder / "examples.jsonl").open("rb") as f:
                f.seek(row.offset)
                example = orjson.loads(f.readline())
            images = [p["image"] + p["suffix"] for p in example["user"] if isinstance(p, dict)]
        evidence.sort(key=lambda e: e["position"])
        if not images and evidence:
            images = self.files.stored_images([PageRef(e["doc_id"], e["page"]) for e in evidence])
        ranks = {p: i for i, p in enumerate(trace[0]["positions"], start=1)} if trace else {}
        pages = [PageView(e["position"], e["doc_id"], e["page"], e["is_source"],
                          e["relevance_score"], e["evidence"], e["failure"], image,
                          ranks.get(e["position"]))
                 for e, image in zip(evidence, images, strict=True)]
        return ExampleView(row, pages, trace[0]["text"] if trace else None,
                           answer[0]["text"] if answer else None,
                           answer[0]["failure"] if answer else None, example,
                           self._verdict(qid))

    def _verdict(self, qid: str) -> VerdictView | None:
        import pyarrow.parquet as pq

        path = self.files.folder / "verification.parquet"
        if not path.exists():  # written by every run since answer verification
            return None
        columns = [f.name for f in fields(VerdictView)]
        rows = pq.read_table(path, columns=columns, filters=[("qid", "=", qid)]).to_pylist()
        return VerdictView(**rows[0]) if rows else None


class Indexes:
    """Example indexes of the runs the server was asked about, rebuilt when the examples file
    changes (size, mtime)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.built: dict[str, tuple[tuple[int, int], ExampleIndex]] = {}

    def get(self, record: RunRecord) -> ExampleIndex:
        files = SynthFiles.of(record)
        info = (files.folder / "examples.jsonl").stat()
        stamp = (info.st_size, info.st_mtime_ns)
        with self.lock:
            known = self.built.get(record.id)
            if known is None or known[0] != stamp:
                known = (stamp, ExampleIndex.of(files))
                self.built[record.id] = known
            return known[1]


# -- evaluations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    """One mode's answer of one eval run to one question."""

    mode: str
    response: str | None
    pred: str
    score: float
    output_tokens: int | None
    failure: str | None


@dataclass(frozen=True)
class EvalAnswers:
    run_id: str
    checkpoint: str
    max_pages: int
    question: str
    reference: str
    doc_id: str
    modes: dict[str, Answered]


def eval_predictions(record: RunRecord) -> dict[int, EvalAnswers]:
    """An eval run's predictions by question index."""
    from docthink.registry.leaderboard import checkpoint_of

    paths = [Path(a.path) for a in record.outputs() if a.path.endswith("/predictions.jsonl")]
    if not paths:
        raise LookupError(f"run {record.id} recorded no predictions.jsonl")
    checkpoint = checkpoint_of(record.recipe)
    inference = record.recipe["inference"]
    max_pages = int(inference["max_pages"]) if isinstance(inference, dict) else 0
    out: dict[int, EvalAnswers] = {}
    with paths[0].open(encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            item = out.setdefault(p["index"], EvalAnswers(
                record.id, checkpoint, max_pages, p["question"], str(p["answer"]), p["doc_id"], {}))
            item.modes[p["mode"]] = Answered(p["mode"], p["response"], p["pred"], p["score"],
                                             p["output_tokens"], p["failure"])
    return out


def disagreements(a: dict[int, EvalAnswers], b: dict[int, EvalAnswers]
                  ) -> list[tuple[int, EvalAnswers, EvalAnswers]]:
    """The questions both runs answered where, in some mode, their scores or extracted answers
    differ."""
    out = []
    for index in sorted(a.keys() & b.keys()):
        x, y = a[index], b[index]
        for mode in x.modes.keys() & y.modes.keys():
            if (x.modes[mode].score != y.modes[mode].score
                    or x.modes[mode].pred != y.modes[mode].pred):
                out.append((index, x, y))
                break
    return out
