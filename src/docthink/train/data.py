"""The TRL export read back for training: rows validated once, classified by where `<cot>` sits,
mixed as the recipe says, and handed to TRL's vision-language collator with their page images
opened (and downscaled) only when a batch is built.

A row's `kind` (trace or plain) and `placement` come from the export's columns: the messages
alone cannot tell a trace row exported without token and trace from a plain QA row. The
messages must agree with the placement (a system message that is `<cot>`; a user turn that starts
with `<cot> `, before the first page; a question that ends with ` <cot>`; or no token), so a row
edited by hand cannot train the switch on the wrong token. Exports made before these columns are
refused with the command that rewrites them. A think row is one whose answer opens `<think>`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from docthink.core.errors import UserError
from docthink.core.seeded import uniform
from docthink.core.vocab import COT, THINK_CLOSE, THINK_OPEN, ExampleKind, Placement
from docthink.train.recipe import MixtureSettings

EXPORT_FILE = "train.parquet"

Part = dict[str, str]  # {"type": "text", "text": ...} or {"type": "image"}
Msg = dict[str, Any]  # {"role": ..., "content": [Part, ...]}


class ExportError(UserError, ValueError):
    """An export that cannot be trained on; the message names the file and row."""


@dataclass(frozen=True, slots=True)
class TrainRow:
    id: str
    messages: tuple[Msg, ...]  # [system,] user, assistant; image parts are {"type": "image"}
    images: tuple[Path, ...]  # absolute, in the order of the image parts
    kind: ExampleKind
    placement: Placement
    think: bool

    @property
    def question(self) -> str:
        return self.messages[-2]["content"][-1]["text"]

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"][0]["text"]


def _text(text: str) -> Part:
    return {"type": "text", "text": text}


def placement_of(messages: Sequence[Msg]) -> Placement:
    """Where the messages carry `<cot>` (what the model sees)."""
    system = [m for m in messages if m["role"] == "system"]
    if system and [p["text"] for p in system[0]["content"]] == [COT]:
        return "system"
    user = messages[-2]["content"]
    if user[0]["type"] == "text" and user[0]["text"].startswith(f"{COT} "):
        return "prefix"
    if user[-1]["text"].endswith(f" {COT}"):
        return "suffix"
    return "none"


def _row(raw: dict[str, Any], root: Path, where: str) -> TrainRow:
    """One Parquet row, validated: roles, parts, images on disk."""
    messages = raw["messages"]
    roles = [m["role"] for m in messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise ExportError(f"{where}: roles {roles}; expected [system,] user, assistant")
    clean: list[Msg] = []
    for m in messages:
        parts: list[Part] = []
        for p in m["content"]:
            if p["type"] == "image" and m["role"] == "user":
                parts.append({"type": "image"})
            elif p["type"] == "text" and p["text"] is not None:
                parts.append(_text(p["text"]))
            else:
                raise ExportError(f"{where}: {m['role']} message has a part {p}")
        clean.append({"role": m["role"], "content": parts})
    if clean[-1]["content"] == [] or len(clean[-1]["content"]) != 1:
        raise ExportError(f"{where}: the assistant turn must be one text part")
    if clean[-2]["content"][-1]["type"] != "text":
        raise ExportError(f"{where}: the user turn must end with the question text")
    n_parts = sum(p["type"] == "image" for p in clean[-2]["content"])
    if n_parts != len(raw["images"]):
        raise ExportError(f"{where}: {n_parts} image parts but {len(raw['images'])} images")
    images = tuple(root / name for name in raw["images"])
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise ExportError(f"{where}: image files missing: {missing[:3]}")
    answer = clean[-1]["content"][0]["text"]
    think = answer.startswith(THINK_OPEN)
    if think and THINK_CLOSE not in answer:
        raise ExportError(f"{where}: the answer opens <think> but never closes it")
    kind, placement = raw["kind"], raw["placement"]
    if kind not in ("trace", "plain") or placement not in ("system", "prefix", "suffix", "none"):
        raise ExportError(f"{where}: kind {kind!r} / placement {placement!r} unknown")
    if placement_of(clean) != placement:
        raise ExportError(f"{where}: placement {placement!r} but the messages carry <cot> as "
                          f"{placement_of(clean)!r}")
    if kind == "plain" and (placement != "none" or think):
        raise ExportError(f"{where}: a plain row carries no <cot> and no trace")
    return TrainRow(raw["id"], tuple(clean), images, kind, placement, think)


def read_export(folder: Path) -> list[TrainRow]:
    """Every row of `folder/train.parquet` (made by `docthink export --format trl`)."""
    import pyarrow.parquet as pq

    path = folder / EXPORT_FILE
    if not path.is_file():
        raise ExportError(
            f"{folder}: no {EXPORT_FILE}; is this a `docthink export --format trl` folder?"
        )
    table = pq.read_table(path)
    missing = {"id", "messages", "images"} - set(table.column_names)
    if missing:
        raise ExportError(f"{path}: columns {sorted(missing)} missing")
    if not {"kind", "placement"} <= set(table.column_names):
        raise ExportError(f"{path}: no kind/placement columns (an export older than them); "
                          "write it again with `docthink export SYNTH_RUN --format trl`")
    rows = [_row(raw, folder, f"{path} row {i} ({raw['id']})")
            for i, raw in enumerate(table.to_pylist())]
    if not rows:
        raise ExportError(f"{path}: no rows")
    return rows


def without_token(row: TrainRow) -> list[Msg]:
    """The row's prompt (system and user messages) with `<cot>` taken out wherever it was."""
    content = list(row.messages[-2]["content"])
    if row.placement == "prefix":
        first = content[0]["text"].removeprefix(f"{COT} ")
        content = [_text(first), *content[1:]] if first else content[1:]
    elif row.placement == "suffix":
        content[-1] = _text(row.question.removesuffix(f" {COT}"))
    system = [] if row.placement == "system" else list(row.messages[:-2])
    return [*system, {"role": "user", "content": content}]


def strip_trace(row: TrainRow) -> TrainRow:
    """A think row as a non-think row: no `<cot>`, the answer without its trace."""
    if not row.think:
        return row
    answer = row.answer.split(THINK_CLOSE, 1)[1].lstrip("\n")
    messages = (*without_token(row), {"role": "assistant", "content": [_text(answer)]})
    return replace(row, messages=messages, placement="none", think=False)


@dataclass
class MixReport:
    """What the mixture did, for the run's metrics."""

    exported: int = 0
    dropped_kind: int = 0
    dropped_placement: int = 0
    dropped_max_pages: int = 0
    stripped: int = 0
    dropped_share: int = 0
    kept: Counter[str] = field(default_factory=Counter)  # "think/system", "no_think/none", ...

    def as_metrics(self) -> dict[str, int]:
        return {
            "rows_exported": self.exported,
            "rows_dropped_kind": self.dropped_kind,
            "rows_dropped_placement": self.dropped_placement,
            "rows_dropped_max_pages": self.dropped_max_pages,
            "rows_stripped": self.stripped,
            "rows_dropped_share": self.dropped_share,
            "rows_trained": sum(self.kept.values()),
            "rows_think": sum(n for k, n in self.kept.items() if k.startswith("think/")),
        }


def _by_share(rows: list[TrainRow], share: float, seed: int) -> list[TrainRow]:
    """The largest subset with `share` think rows, dropping rows of the larger side by seed."""
    think = [r for r in rows if r.think]
    plain = [r for r in rows if not r.think]
    if share == 0:
        return plain
    if share == 1:
        return think
    if len(think) / max(len(rows), 1) > share:
        think = sorted(think, key=lambda r: uniform(seed, r.id, "mixture"))
        think = think[: math.floor(len(plain) * share / (1 - share) + 1e-9)]
    else:
        plain = sorted(plain, key=lambda r: uniform(seed, r.id, "mixture"))
        plain = plain[: math.floor(len(think) * (1 - share) / share + 1e-9)]
    keep = {r.id for r in [*think, *plain]}
    return [r for r in rows if r.id in keep]


def mix(
    rows: Sequence[TrainRow], settings: MixtureSettings, seed: int
) -> tuple[list[TrainRow], MixReport]:
    """The training rows in export order: filtered by placement and page count, traces kept or
    stripped, then cut to the think share."""
    report = MixReport(exported=len(rows))
    kept: list[TrainRow] = []
    for row in rows:
        if row.kind not in settings.kinds:
            report.dropped_kind += 1
        elif row.placement not in settings.placements:
            report.dropped_placement += 1
        elif settings.max_pages is not None and len(row.images) > settings.max_pages:
            report.dropped_max_pages += 1
        elif settings.traces == "strip" and row.think:
            report.stripped += 1
            kept.append(strip_trace(row))
        else:
            kept.append(row)
    if settings.think_share is not None:
        shared = _by_share(kept, settings.think_share, seed)
        report.dropped_share = len(kept) - len(shared)
        kept = shared
    report.kept = Counter(f"{'think' if r.think else 'no_think'}/{r.placement}" for r in kept)
    if not kept:
        raise ExportError(f"the mixture keeps no row of {len(rows)} ({report.as_metrics()})")
    return kept, report


LossMask = Literal["completion", "assistant_markers"]


def trl_example(row: TrainRow, loss_mask: LossMask) -> dict[str, Any]:
    """The row in the dataset shape TRL's vision collator reads: prompt + completion (loss on the
    completion), or messages (loss on what the template marks as generated)."""
    images = [str(p) for p in row.images]
    messages = [dict(m) for m in row.messages]
    if loss_mask == "completion":
        return {"prompt": messages[:-1], "completion": messages[-1:], "images": images}
    return {"messages": messages, "images": images}


def open_page(path: Path | str, max_pixels: int | None) -> Image.Image:
    """A page image as RGB, downscaled (aspect kept) to at most `max_pixels` pixels."""
    with Image.open(path) as image:
        page = image.convert("RGB")
    if max_pixels is not None and page.width * page.height > max_pixels:
        scale = math.sqrt(max_pixels / (page.width * page.height))
        size = (max(1, math.floor(page.width * scale)), max(1, math.floor(page.height * scale)))
        page = page.resize(size, Image.Resampling.BICUBIC)
    return page


@dataclass(frozen=True)
class PageCollator:
    """Wraps TRL's collator: replaces each example's image paths by the opened pages, so images
    are read when a batch is built, never held for the whole dataset."""

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]
    max_pixels: int | None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        opened = [
            {**e, "images": [open_page(p, self.max_pixels) for p in e["images"]]} for e in examples
        ]
        return self.inner(opened)
