"""The model a recipe's spec names."""

from __future__ import annotations

from docthink.models.base import ChatModel
from docthink.models.specs import ModelSpec, ServedModelSpec
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
