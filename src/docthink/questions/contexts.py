"""Long contexts: each question widened into the page list the student will see.

Components (paper 1, `ContextSettings`): far and near hard negatives, a bigger hard-negative set,
an adjacent window, the whole document. For a question with source pages S:
- hard-negative components: the candidates are the negatives of each page of S within the
  component's rank range [lo, hi), merged round-robin (best first) without repeats; a length L is
  drawn from [max(min, |S| + 1), min(max, |S| + candidates)], and L - |S| candidates are sampled;
- adjacent: a window of L consecutive pages of the source document containing all of S, L drawn
  from [max(min, span of S), min(max, document length)], its start drawn among valid starts;
- document: every page, when the document's length lies in the component's range.
A component that cannot be built for a question (too few candidates, a document out of range) is
left out of that question's draw; the others keep their relative weights. Hard-negative contexts
are shuffled, the others keep document order (the component's `shuffle`). Every draw comes from
(seed, qid, purpose).

An unanswerable question's context is built around its origin pages and then loses them; the
component's length range applies to what remains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from docthink.core.parts import PageRef
from docthink.core.seeded import rng, weighted_choice
from docthink.questions.embed import PageIndex
from docthink.questions.negatives import HardNegatives
from docthink.questions.recipe import ContextComponent, ContextSettings


@dataclass(frozen=True, slots=True)
class Context:
    kind: str  # component name
    pages: tuple[PageRef, ...]


@dataclass(frozen=True)
class ContextSource:
    """What contexts are drawn from: the index and its negatives, and document lengths."""

    index: PageIndex
    negatives: HardNegatives
    n_pages: dict[str, int]

    def candidates(self, source: Sequence[PageRef], ranks: tuple[int, int]) -> list[PageRef]:
        lo, hi = ranks
        lists = [
            [self.index.refs[r] for r in self.negatives.ranked(self.index.row[ref])[lo:hi]]
            for ref in source
            if ref in self.index.row
        ]
        merged: list[PageRef] = []
        seen = set(source)
        for depth in range(max((len(x) for x in lists), default=0)):
            for ranked in lists:
                if depth < len(ranked) and ranked[depth] not in seen:
                    seen.add(ranked[depth])
                    merged.append(ranked[depth])
        return merged


def _length_range(component: ContextComponent, low: int, high: int) -> tuple[int, int] | None:
    lo, hi = max(component.pages[0], low), min(component.pages[1], high)
    return (lo, hi) if lo <= hi else None


def _plan(
    name: str,
    component: ContextComponent,
    source: Sequence[PageRef],
    src: ContextSource,
    dropped: int,
) -> tuple[int, int] | None:
    """The admissible range of the context's final length (after `dropped` source pages leave
    it) for `component`, or None."""
    kept = len(source) - dropped
    if component.ranks is not None:
        available = len(src.candidates(source, component.ranks))
        return _length_range(component, kept + 1, kept + available)
    n_doc = src.n_pages[source[0].doc_id]
    if name == "document":
        fits = component.pages[0] <= n_doc <= component.pages[1] and n_doc > dropped
        return (n_doc - dropped, n_doc - dropped) if fits else None
    pages = [r.page for r in source]
    span = max(pages) - min(pages) + 1
    return _length_range(component, max(span - dropped, 1), n_doc - dropped)


def build_context(
    qid: str,
    source: Sequence[PageRef],
    src: ContextSource,
    settings: ContextSettings,
    seed: int,
    *,
    drop_source: bool = False,
) -> Context | None:
    """The context of a question with these source pages; `drop_source`: without them (an
    unanswerable question). Lengths are drawn for the final context."""
    dropped = len(source) if drop_source else 0
    plans = {}
    for name, component in settings.components().items():
        if component.weight > 0:
            plan = _plan(name, component, source, src, dropped)
            if plan is not None:
                plans[name] = plan
    if not plans:
        return None
    weights = {name: settings.components()[name].weight for name in plans}
    name = weighted_choice(seed, qid, "context", weights)
    component = settings.components()[name]
    draw = rng(seed, qid, f"context:{name}")
    length = draw.randint(*plans[name]) + dropped  # before the source pages leave
    if component.ranks is not None:
        chosen = draw.sample(src.candidates(source, component.ranks), length - len(source))
        pages = [*source, *chosen]
    else:
        doc_id = source[0].doc_id
        first = min(r.page for r in source)
        last = max(r.page for r in source)
        n_doc = src.n_pages[doc_id]
        start = draw.randint(max(1, last - length + 1), min(first, n_doc - length + 1))
        pages = [PageRef(doc_id, p) for p in range(start, start + length)]
    if component.shuffle:
        draw.shuffle(pages)
    if drop_source:
        pages = [p for p in pages if p not in set(source)]
    return Context(name, tuple(pages))
