"""Structured outputs docthink asks models for. Their JSON schemas are sent as `response_format`
(constrained decoding), so field descriptions are part of the prompt; changing them changes the
request cache key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvidenceReply(_Output):
    """The evidence stage: one page and a question in, what the page contributes out.

    Evidence quotes the page's relevant values and describes its relevant tables, charts and
    figures, without giving the answer or mentioning the page number. An irrelevant page gets one
    sentence and a score of 0."""

    # The schema's title (and its name in the request) is part of every evidence request and of
    # its cache key: it keeps the name the schema first went out with.
    model_config = ConfigDict(extra="forbid", frozen=True, title="PageEvidence")

    evidence: str = Field(
        description="what this page shows that bears on the question: quoted values and "
        "descriptions of relevant tables, charts and figures; no final answer, no page number; "
        "one sentence if the page is irrelevant"
    )
    relevance_score: float = Field(
        ge=0.0, le=10.0, description="0.0 (irrelevant) to 10.0 (answers the question)"
    )

    @property
    def relevant(self) -> bool:
        return self.relevance_score > 0.0


class ShortAnswer(_Output):
    """A final answer with nothing around it: a number, a name, a short phrase, Yes/No, or
    `Not answerable` (MMLongBench-Doc's convention)."""

    answer: str = Field(description="the answer only, as short as possible")


class JudgeVerdict(_Output):
    """An equivalence judge's reading of one full response against the reference answer
    (MMLongBench-Doc-V2's metric): whether it means the reference, and whether it declines."""

    verdict: Literal["equivalent", "not_equivalent"] = Field(
        description="equivalent: the final answer the response commits to means the reference "
        "answer; not_equivalent: anything else"
    )
    abstained: bool = Field(
        description="true when the response declines to answer (the document does not contain "
        "the answer, it cannot be determined, the pages could not be read); false when it "
        "commits to an answer, right or wrong"
    )

    @property
    def equivalent(self) -> bool:
        return self.verdict == "equivalent"
