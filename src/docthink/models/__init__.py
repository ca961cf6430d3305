"""Who answers a prompt: one `ChatModel` interface, an OpenAI-compatible client, the offline
extractive teacher, and a request cache that wraps any of them."""

from __future__ import annotations

from docthink.models.base import (
    ChatModel,
    ChatRequest,
    ChatResult,
    Message,
    RequestFailed,
    RequestFailure,
    Usage,
    UsageMeter,
)
from docthink.models.cache import CachedModel, RequestCache
from docthink.models.specs import LocalModelSpec, ModelSpec, OpenAIModelSpec, TeacherSpec
from docthink.models.teacher import ExtractiveTeacher, PageTextSource


def build_model(spec: ModelSpec, *, pages: PageTextSource) -> ChatModel:
    """The model a recipe names. `pages` is the text layer the offline teacher reads."""
    if spec.kind == "teacher":
        return ExtractiveTeacher(spec, pages)
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
    "LocalModelSpec",
    "Message",
    "ModelSpec",
    "OpenAIModelSpec",
    "PageTextSource",
    "RequestCache",
    "RequestFailed",
    "RequestFailure",
    "TeacherSpec",
    "Usage",
    "UsageMeter",
    "build_model",
]
