"""Stage 4: SFT examples, and the formats trainers read.

An example's user turn is every context page (a `Page N:` line before each image when page
indices are on) and then the question; the assistant turn is `<think>{trace}</think>\\n{answer}`.
The `<cot>` control token switches the trace on: a system message that is exactly `<cot>`, the
first words of the user turn (before the first page, as the reference code writes
`"<cot> " + user` where the user text starts with the images), the last words of the question,
or no token and no trace at all."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from docthink.core.parts import ImagePart, TextPart
from docthink.core.vocab import COT, THINK_CLOSE, THINK_OPEN, ExampleKind, Placement
from docthink.recipe import Recipe
from docthink.synth.rows import Branch


@dataclass(frozen=True, slots=True, order=True)
class ImageKey:
    """An image by content: its file's sha256 and suffix, its name in the store and an export."""

    sha256: str
    suffix: str  # ".png" or ".jpg"

    @classmethod
    def of(cls, image: ImagePart) -> ImageKey:
        return cls(image.sha256, image.path.suffix)

    @property
    def name(self) -> str:
        return f"{self.sha256}{self.suffix}"


ImageLocator = Callable[[ImageKey], Path]  # where the image store keeps an image
UserPart = TextPart | ImageKey


class _ImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str
    suffix: str


class _ExampleIn(BaseModel):
    """A line of examples.jsonl, as `SFTExample.to_json` writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: Literal["trace", "plain"]
    placement: Placement
    branch: Branch | None
    system: str | None
    user: list[str | _ImageIn]
    assistant: str


@dataclass(frozen=True, slots=True)
class SFTExample:
    id: str
    kind: ExampleKind
    placement: Placement  # "none" for plain rows and for no-token trace rows
    branch: Branch | None
    system: str | None
    user: tuple[UserPart, ...]  # texts and images, in order
    assistant: str

    @property
    def images(self) -> list[ImageKey]:
        return [p for p in self.user if isinstance(p, ImageKey)]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "placement": self.placement,
            "branch": self.branch,
            "system": self.system,
            "user": [p.text if isinstance(p, TextPart) else {"image": p.sha256, "suffix": p.suffix}
                     for p in self.user],
            "assistant": self.assistant,
        }

    @classmethod
    def from_json(cls, line: str) -> SFTExample:
        """A line of examples.jsonl; a `pydantic.ValidationError` when it is not one."""
        row = _ExampleIn.model_validate_json(line)
        user = tuple(TextPart(p) if isinstance(p, str) else ImageKey(p.image, p.suffix)
                     for p in row.user)
        return cls(row.id, row.kind, row.placement, row.branch, row.system, user, row.assistant)


def user_turn(images: Sequence[ImageKey], question: str, *, page_index: str | None
              ) -> list[UserPart]:
    """Every context page (with its index line when `page_index` is a format such as
    `Page {i}:`), then the question."""
    parts: list[UserPart] = []
    for i, image in enumerate(images, start=1):
        if page_index is not None:
            parts.append(TextPart(page_index.format(i=i)))
        parts.append(image)
    parts.append(TextPart(question))
    return parts


def trace_example(
    qid: str,
    images: Sequence[ImageKey],
    question: str,
    trace: str,
    answer: str,
    *,
    branch: Branch,
    placement: Placement,
    page_index: str | None,
) -> SFTExample:
    user = user_turn(images, f"{question} {COT}" if placement == "suffix" else question,
                     page_index=page_index)
    assistant = answer if placement == "none" else f"{THINK_OPEN}{trace}{THINK_CLOSE}\n{answer}"
    return SFTExample(
        id=qid,
        kind="trace",
        placement=placement,
        branch=branch,
        system=COT if placement == "system" else None,
        user=tuple(cot_first(user) if placement == "prefix" else user),
        assistant=assistant,
    )


def cot_first(parts: Sequence[UserPart]) -> list[UserPart]:
    """The user turn with `<cot> ` as its very first characters: joined to the first text (a
    `Page 1:` line), or as a text part of its own before the first image."""
    first = parts[0]
    if isinstance(first, TextPart):
        return [TextPart(f"{COT} {first.text}"), *parts[1:]]
    return [TextPart(f"{COT} "), *parts]


def plain_example(
    qid: str, images: Sequence[ImageKey], question: str, answer: str, *, page_index: str | None
) -> SFTExample:
    """Long-document QA without a trace: no token, no thinking."""
    return SFTExample(
        id=qid,
        kind="plain",
        placement="none",
        branch=None,
        system=None,
        user=tuple(user_turn(images, question, page_index=page_index)),
        assistant=answer,
    )


def _image_name(image: ImageKey) -> str:
    return f"images/{image.name}"


def _trl_row(example: SFTExample) -> dict[str, object]:
    messages: list[dict[str, object]] = []
    if example.system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": example.system}]})
    content = [
        {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image", "text": None}
        for p in example.user
    ]
    messages.append({"role": "user", "content": content})
    messages.append(
        {"role": "assistant", "content": [{"type": "text", "text": example.assistant}]}
    )
    return {
        "id": example.id,
        "kind": example.kind,
        "placement": example.placement,
        "messages": messages,
        "images": [_image_name(i) for i in example.images],
    }


def _llamafactory_row(example: SFTExample) -> dict[str, object]:
    user = "\n".join(p.text if isinstance(p, TextPart) else "<image>" for p in example.user)
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": example.assistant}]
    if example.system is not None:
        messages.insert(0, {"role": "system", "content": example.system})
    return {"id": example.id, "messages": messages, "images": [_image_name(i) for i in example.images]}


def _link_images(examples: Sequence[SFTExample], locate: ImageLocator, out: Path) -> int:
    """Hard-link (or copy across file systems) every image the examples use into `out/images/`."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = sorted({i for e in examples for i in e.images})
    for image in images:
        target = out / _image_name(image)
        if target.exists():
            continue
        source = locate(image)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return len(images)


ExportFormat = Literal["trl", "llamafactory"]


def write_export(
    examples: Sequence[SFTExample], fmt: ExportFormat, locate: ImageLocator, out: Path
) -> dict[str, int]:
    """Write `examples` for a trainer into `out`; images are referenced by relative path."""
    out.mkdir(parents=True, exist_ok=True)
    n_images = _link_images(examples, locate, out)
    if fmt == "trl":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([_trl_row(e) for e in examples])
        pq.write_table(table, out / "train.parquet")
    else:
        with (out / "train.jsonl").open("w", encoding="utf-8") as f:
            for example in examples:
                f.write(json.dumps(_llamafactory_row(example), ensure_ascii=False) + "\n")
        info = {
            "docthink": {
                "file_name": "train.jsonl",
                "formatting": "sharegpt",
                "columns": {"messages": "messages", "images": "images"},
                "tags": {
                    "role_tag": "role",
                    "content_tag": "content",
                    "user_tag": "user",
                    "assistant_tag": "assistant",
                    "system_tag": "system",
                },
            }
        }
        (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return {"examples": len(examples), "images": n_images}


class ExportRecipe(Recipe):
    run_dir: Path = Field(description="output folder of `docthink synth`")
    format: Literal["trl", "llamafactory"] = Field(description="trainer format")
    out: Path = Field(description="export folder")
