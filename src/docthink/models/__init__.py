"""Who answers a prompt: one `ChatModel` interface, an OpenAI-compatible client, the offline
extractive teacher, and a request cache that wraps any of them."""

from __future__ import annotations

from docthink.models.base import (
    ChatModel,
    ChatRequest,
    ChatResult,
    ImagePart,
    Message,
    PageRef,
    RequestFailed,
    RequestFailure,
    TextPart,
    Usage,
    UsageMeter,
)
from docthink.models.cache import CachedModel, RequestCache
from docthink.models.specs import (
    LocalModelSpec,
    ModelSpec,
    OpenAIModelSpec,
    ServedModelSpec,
    TeacherSpec,
)
from docthink.models.teacher import ExtractiveTeacher, PageTextSource


def build_model(spec: ModelSpec, *, pages: PageTextSource) -> ChatModel:
    """The model a recipe names. `pages` is the text layer the offline teacher reads."""
    if spec.kind == "teacher":
        return ExtractiveTeacher(spec, pages)
    return build_served(spec)


def build_served(spec: ServedModelSpec) -> ChatModel:
    """A model that reads pixels, not a text layer: an OpenAI-compatible endpoint or a local
    checkpoint (a judge needs no corpus)."""
    if spec.kind == "local":
        from docthink.models.local import LocalModel

        return LocalModel(spec)
    from docthink.models.openai_compat import OpenAICompatModel

    return OpenAICompatModel(spec)


__all__ = [
    "CachedModel",
    "ChatModel",
    "ChatRequest",
    "ChatResult",
    "ExtractiveTeacher",
    "ImagePart",
    "LocalModelSpec",
    "Message",
    "ModelSpec",
    "OpenAIModelSpec",
    "PageRef",
    "PageTextSource",
    "RequestCache",
    "RequestFailed",
    "RequestFailure",
    "ServedModelSpec",
    "TeacherSpec",
    "TextPart",
    "Usage",
    "UsageMeter",
    "build_model",
    "build_served",
]
