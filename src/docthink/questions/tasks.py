"""`docthink tasks`: model-free training tasks from the text layer (paper 1's continued-pretraining
data). Each task shows pages, each after its label line (`Page {i}:` by default), and asks:

- unshuffle: consecutive pages in shuffled order; the answer lists their labels in the original
  order ("3, 1, 2"). Windows need distinct, non-empty text layers (else the order is undefined).
- missing page: consecutive pages with one inner page removed; the answer is the removed page's
  text layer, exactly.
- key retrieval: "Which page contains the sentence "..."?", the sentence occurring once in the
  context; the answer is its page's label.
- position retrieval: "What is the second sentence of the last paragraph on Page k?"; the answer
  is that sentence.
- counting: sentences or paragraphs of each page (`text_layout` defines them); the answer lists
  each page's count, then the total.
Retrieval contexts are the whole document or the page plus its hardest negatives from other
documents (5-63 pages, shuffled). Pages whose printed page number would give the unshuffle answer
away are detected (`text_layout.printed_page_numbers`), reported, and flagged on each unshuffle
task (or its window skipped, per recipe). Every choice comes from (seed, task id, purpose).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from docthink.core.parts import PageRef
from docthink.core.seeded import rng, uniform, weighted_choice
from docthink.corpus.corpus import Corpus
from docthink.corpus.files import sharded
from docthink.export import ImageKey, SFTExample, plain_example, write_export
from docthink.questions.embed import PageIndex, page_words
from docthink.questions.layout import flat, page_layout, printed_page_numbers
from docthink.questions.negatives import HardNegatives, build_index
from docthink.questions.recipe import RetrievalTask, TasksRecipe
from docthink.questions.rows import Dropped

TASKS = ("unshuffle", "missing_page", "key_retrieval", "position_retrieval", "counting")
KEY_WORDS = (6, 40)  # words of a key sentence
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
             "tenth")


@dataclass(frozen=True)
class TaskRow:
    id: str
    task: str
    doc_id: str
    context: tuple[PageRef, ...]  # pages shown, in order: the i-th has label i
    question: str
    answer: str
    meta: Mapping[str, object]  # the task's facts about the row (JSON)

    def row(self) -> dict[str, object]:
        return {
            "id": self.id,
            "task": self.task,
            "doc_id": self.doc_id,
            "context_pages": [[r.doc_id, r.page] for r in self.context],
            "question": self.question,
            "answer": self.answer,
            "meta": self.meta,
        }


@dataclass(frozen=True, slots=True)
class NoTask:
    """Why a document gave no row of a task (the row is dropped with this reason)."""

    reason: str


@dataclass
class TasksResult:
    rows: list[TaskRow] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    printed: dict[str, dict[int, int]] = field(default_factory=dict)  # doc -> page -> printed

    def counts(self) -> dict[str, object]:
        flagged = [r for r in self.rows if r.task == "unshuffle" and r.meta["printed_numbers"]]
        return {
            "tasks": len(self.rows),
            "by_task": dict(sorted(Counter(r.task for r in self.rows).items())),
            "dropped": dict(
                sorted(Counter(f"{d.stage}: {d.reason}" for d in self.dropped).items())
            ),
            "documents_with_printed_page_numbers": sum(bool(p) for p in self.printed.values()),
            "pages_with_printed_page_numbers": sum(len(p) for p in self.printed.values()),
            "unshuffle_with_printed_page_numbers": len(flagged),
        }


class TaskBuilder:
    """Builds the tasks of one corpus; `label(i)` names the i-th page shown as the prompt does."""

    def __init__(
        self,
        recipe: TasksRecipe,
        corpus: Corpus,
        doc_ids: Sequence[str],
        index: PageIndex,
        negatives: HardNegatives,
    ) -> None:
        self.recipe = recipe
        self.seed = recipe.seed
        self.corpus = corpus
        self.doc_ids = list(doc_ids)
        self.index = index
        self.negatives = negatives
        self.result = TasksResult()

    def label(self, i: int) -> str:
        return self.recipe.page_index.format(i=i).rstrip(":").strip()

    def text(self, ref: PageRef) -> str:
        return self.corpus.page_text(ref)

    def build(self) -> TasksResult:
        for doc_id in self.doc_ids:
            pages = [self.text(r) for r in self.corpus.document(doc_id).pages()]
            self.result.printed[doc_id] = printed_page_numbers(pages)
        builders: dict[str, Callable[[str, str], TaskRow | NoTask]] = {
            "unshuffle": self.unshuffle,
            "missing_page": self.missing_page,
            "key_retrieval": self.key_retrieval,
            "position_retrieval": self.position_retrieval,
            "counting": self.counting,
        }
        for task in TASKS:
            settings = getattr(self.recipe.tasks, task)
            for doc_id in self.doc_ids:
                for k in range(settings.per_document):
                    task_id = f"{task}:{doc_id}#{k}"
                    outcome = builders[task](task_id, doc_id)
                    if isinstance(outcome, NoTask):
                        self.result.dropped.append(Dropped(task_id, task, outcome.reason))
                    else:
                        self.result.rows.append(outcome)
        return self.result

    # -- windows of consecutive pages

    def window(self, task_id: str, doc_id: str, lengths: tuple[int, int]) -> list[PageRef] | None:
        n = self.corpus.n_pages(doc_id)
        if n < lengths[0]:
            return None
        draw = rng(self.seed, task_id, "window")
        length = draw.randint(lengths[0], min(lengths[1], n))
        start = draw.randint(1, n - length + 1)
        return [PageRef(doc_id, p) for p in range(start, start + length)]

    def unshuffle(self, task_id: str, doc_id: str) -> TaskRow | NoTask:
        settings = self.recipe.tasks.unshuffle
        pages = self.window(task_id, doc_id, settings.pages)
        if pages is None:
            return NoTask("document shorter than the window")
        texts = [flat(self.text(r)) for r in pages]
        if not all(texts) or len(set(texts)) < len(texts):
            return NoTask("window has empty or repeated pages")
        printed = self.result.printed[doc_id]
        flagged = [r.page for r in pages if r.page in printed]
        if flagged and settings.printed_numbers == "skip":
            return NoTask("printed page numbers give the order away")
        shown = list(pages)
        rng(self.seed, task_id, "shuffle").shuffle(shown)
        order = [shown.index(r) + 1 for r in pages]
        question = (
            f"The {len(shown)} pages above are consecutive pages of one document in shuffled "
            "order. List their labels in the document's original order, separated by commas."
        )
        answer = ", ".join(str(i) for i in order)
        meta = {"printed_numbers": len(flagged), "printed_pages": flagged}
        return TaskRow(task_id, "unshuffle", doc_id, tuple(shown), question, answer, meta)

    def missing_page(self, task_id: str, doc_id: str) -> TaskRow | NoTask:
        settings = self.recipe.tasks.missing_page
        low = max(3, settings.pages[0])
        pages = self.window(task_id, doc_id, (low, max(low, settings.pages[1])))
        if pages is None:
            return NoTask("document shorter than the window")
        inner = [i for i in range(1, len(pages) - 1)
                 if page_words(self.text(pages[i])) >= settings.min_words]
        if not inner:
            return NoTask("no inner page with enough text")
        removed = rng(self.seed, task_id, "removed").choice(inner)
        shown = tuple(pages[:removed] + pages[removed + 1 :])
        question = (
            f"One page is missing between {self.label(removed)} and {self.label(removed + 1)}. "
            "Write out the text of the missing page."
        )
        meta = {"removed_page": pages[removed].page}
        return TaskRow(task_id, "missing_page", doc_id, shown, question,
                       self.text(pages[removed]), meta)

    # -- retrieval over the whole document or a hard-negative context

    def retrieval_context(
        self, task_id: str, target: PageRef, settings: RetrievalTask
    ) -> tuple[str, tuple[PageRef, ...]] | None:
        n = self.corpus.n_pages(target.doc_id)
        whole = uniform(self.seed, task_id, "whole-document") < settings.whole_document
        if whole and n <= settings.max_document_pages:
            return "document", tuple(PageRef(target.doc_id, p) for p in range(1, n + 1))
        if target not in self.index.row:
            return None
        ranked = [self.index.refs[r] for r in self.negatives.ranked(self.index.row[target])]
        if len(ranked) + 1 < settings.pages[0]:
            return None
        draw = rng(self.seed, task_id, "context")
        length = draw.randint(settings.pages[0], min(settings.pages[1], len(ranked) + 1))
        pages = [target, *ranked[: length - 1]]
        draw.shuffle(pages)
        return "hard_negatives", tuple(pages)

    def _target(
        self, task_id: str, doc_id: str, usable: Callable[[PageRef], bool]
    ) -> PageRef | None:
        pages = [r for r in self.corpus.document(doc_id).pages() if usable(r)]
        return rng(self.seed, task_id, "target").choice(pages) if pages else None

    def key_retrieval(self, task_id: str, doc_id: str) -> TaskRow | NoTask:
        settings = self.recipe.tasks.key_retrieval

        def candidates(ref: PageRef) -> list[str]:
            return [s for p in page_layout(self.text(ref)).paragraphs for s in p
                    if KEY_WORDS[0] <= len(s.split()) <= KEY_WORDS[1]]

        target = self._target(task_id, doc_id, lambda r: bool(candidates(r)))
        if target is None:
            return NoTask("no page with a key sentence")
        context = self.retrieval_context(task_id, target, settings)
        if context is None:
            return NoTask("too few hard negatives")
        kind, pages = context
        texts = [flat(self.text(r)) for r in pages]
        unique = [s for s in candidates(target) if sum(t.count(s) for t in texts) == 1]
        if not unique:
            return NoTask("no sentence unique in the context")
        sentence = rng(self.seed, task_id, "sentence").choice(unique)
        label = self.label(pages.index(target) + 1)
        question = f'Which page contains the sentence "{sentence}"? Answer with its label.'
        meta = {"context": kind, "target_page": [target.doc_id, target.page]}
        return TaskRow(task_id, "key_retrieval", doc_id, pages, question, label, meta)

    def position_retrieval(self, task_id: str, doc_id: str) -> TaskRow | NoTask:
        settings = self.recipe.tasks.position_retrieval
        target = self._target(task_id, doc_id,
                              lambda r: bool(page_layout(self.text(r)).paragraphs))
        if target is None:
            return NoTask("no page with a paragraph")
        context = self.retrieval_context(task_id, target, settings)
        if context is None:
            return NoTask("too few hard negatives")
        kind, pages = context
        paragraphs = page_layout(self.text(target)).paragraphs
        draw = rng(self.seed, task_id, "position")
        p = draw.randrange(min(len(paragraphs), len(_ORDINALS)))
        s = draw.randrange(min(len(paragraphs[p]), len(_ORDINALS)))
        p_name = "last" if p == len(paragraphs) - 1 and draw.random() < 0.5 else _ORDINALS[p]
        s_name = "last" if s == len(paragraphs[p]) - 1 and draw.random() < 0.5 else _ORDINALS[s]
        label = self.label(pages.index(target) + 1)
        question = f"What is the {s_name} sentence of the {p_name} paragraph on {label}?"
        meta = {"context": kind, "target_page": [target.doc_id, target.page],
                "paragraph": p + 1, "sentence": s + 1}
        return TaskRow(task_id, "position_retrieval", doc_id, pages, question,
                       paragraphs[p][s], meta)

    def counting(self, task_id: str, doc_id: str) -> TaskRow | NoTask:
        settings = self.recipe.tasks.counting
        pages = self.window(task_id, doc_id, settings.pages)
        if pages is None:
            return NoTask("document shorter than the window")
        unit = weighted_choice(self.seed, task_id, "unit", settings.units)
        layouts = [page_layout(self.text(r)) for r in pages]
        counts = [x.n_sentences if unit == "sentences" else len(x.paragraphs) for x in layouts]
        if not any(counts):
            return NoTask(f"no {unit} in the window")
        question = (
            f"Count the {unit} of running text on each page (not headings, labels or tables). "
            "Answer with one line per page, then a line with the total."
        )
        lines = [f"{self.label(i)}: {c}" for i, c in enumerate(counts, start=1)]
        answer = "\n".join([*lines, f"Total: {sum(counts)}"])
        meta = {"unit": unit, "counts": counts}
        return TaskRow(task_id, "counting", doc_id, tuple(pages), question, answer, meta)


def build_tasks(
    recipe: TasksRecipe, corpus: Corpus, log: logging.Logger
) -> tuple[TasksResult, PageIndex]:
    index, negatives, excluded = build_index(corpus, recipe.embedding, recipe.decontamination, log)
    doc_ids = sorted(set(corpus.documents) - set(excluded))
    result = TaskBuilder(recipe, corpus, doc_ids, index, negatives).build()
    log.info("tasks: %s", result.counts())
    return result, index


def task_examples(
    result: TasksResult, recipe: TasksRecipe, corpus: Corpus, show_progress: bool = False
) -> list[SFTExample]:
    refs = sorted({r for row in result.rows for r in row.context}, key=lambda r: (r.doc_id, r.page))
    parts = corpus.ensure_images(refs, recipe.image, recipe.workers, show_progress)
    images = {ref: ImageKey.of(p) for ref, p in zip(refs, parts, strict=True)}
    return [
        plain_example(f"task:{row.id}", [images[r] for r in row.context], row.question, row.answer,
                      page_index=recipe.page_index)
        for row in result.rows
    ]


def write_tasks(
    result: TasksResult, examples: Sequence[SFTExample], recipe: TasksRecipe, corpus: Corpus
) -> dict[str, dict[str, int]]:
    """tasks.jsonl, examples.jsonl (the same rows `docthink synth` writes), dropped.jsonl,
    printed_page_numbers.jsonl, and one export folder per format."""
    out = recipe.out
    out.mkdir(parents=True, exist_ok=True)
    with (out / "tasks.jsonl").open("w", encoding="utf-8") as f:
        for row in result.rows:
            f.write(json.dumps(row.row(), ensure_ascii=False) + "\n")
    with (out / "examples.jsonl").open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
    with (out / "dropped.jsonl").open("w", encoding="utf-8") as f:
        for d in result.dropped:
            f.write(json.dumps({"id": d.qid, "task": d.stage, "reason": d.reason}) + "\n")
    with (out / "printed_page_numbers.jsonl").open("w", encoding="utf-8") as f:
        for doc_id, pages in sorted(result.printed.items()):
            for page, printed in sorted(pages.items()):
                f.write(json.dumps({"doc_id": doc_id, "page": page, "printed": printed}) + "\n")
    images = corpus.layout.images
    return {
        fmt: write_export(examples, fmt, lambda key: sharded(images, key.sha256, key.suffix),
                          out / f"export-{fmt}")
        for fmt in recipe.formats
    }
