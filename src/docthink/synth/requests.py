"""The exact requests the stages send. Evidence requests keep a shared prefix (identical system
prompt, then the page image) so a prefix-caching server reuses the image across questions; what
differs (the source-page note, the question) comes last, the question always the last text."""

from __future__ import annotations

from collections.abc import Sequence

from docthink.core.parts import ImagePart, TextPart
from docthink.models.base import ChatRequest, Message
from docthink.models.tasks import EvidenceReply
from docthink.synth import PROMPTS


def evidence_request(
    image: ImagePart, question: str, *, is_source: bool, temperature: float, max_tokens: int,
    source_note: bool = True,
) -> ChatRequest:
    """`source_note`: a source page's request says the page is known to be relevant."""
    parts: list[TextPart | ImagePart] = [image]
    if is_source and source_note:
        parts.append(TextPart(PROMPTS["evidence_source_note"].text))
    parts.append(TextPart(question))
    return ChatRequest(
        messages=(
            Message.text("system", PROMPTS["evidence_system"].text),
            Message("user", tuple(parts)),
        ),
        response_model=EvidenceReply,
        temperature=temperature,
        max_tokens=max_tokens,
        purpose="evidence",
    )


def vision_answer_request(
    images: Sequence[ImagePart], question: str, *, temperature: float, max_tokens: int,
    purpose: str = "answer-vision",
) -> ChatRequest:
    """The top-K page images in relevance order and the bare question, nothing else."""
    return ChatRequest(
        messages=(Message("user", (*images, TextPart(question))),),
        temperature=temperature,
        max_tokens=max_tokens,
        purpose=purpose,
    )


def text_answer_request(
    trace: str, question: str, *, temperature: float, max_tokens: int
) -> ChatRequest:
    """The sorted evidence and the question, under a system prompt saying how it was gathered."""
    return ChatRequest(
        messages=(
            Message.text("system", PROMPTS["answer_text_system"].text),
            Message("user", (TextPart(trace), TextPart(question))),
        ),
        temperature=temperature,
        max_tokens=max_tokens,
        purpose="answer-text",
    )
