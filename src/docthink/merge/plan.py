"""Which output tensor comes from which input bytes; every mismatch found before writing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from docthink.core.errors import UserError
from docthink.merge.safetensors_io import FLOAT_DTYPES, Checkpoint, TensorRef, read_into

# Only token tables may gain rows (tokens added during SFT); any other shape change is an error.
VOCAB_SUFFIXES = ("embed_tokens.weight", "lm_head.weight")
HEAD_SUFFIX = "lm_head.weight"
EMBED_SUFFIX = "embed_tokens.weight"
MAX_LISTED = 20


class MergeError(UserError, ValueError):
    """Inputs that cannot be merged; raised before anything is written."""


@dataclass(frozen=True)
class LoraFactors:
    """delta = scale * B @ A for a Linear weight, scale * (B @ A).T for an Embedding weight."""

    a: TensorRef
    b: TensorRef
    scale: float
    embedding: bool


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: `base` merged with the full `tuned` tensor and/or a LoRA delta.

    Rows of `tuned` beyond the base's rows are new tokens, copied as they are."""

    name: str
    base: TensorRef
    tuned: TensorRef | None = None
    lora: LoraFactors | None = None

    @property
    def out(self) -> TensorRef:
        return self.tuned or self.base


@dataclass(frozen=True)
class VocabGrowth:
    tensor: str
    base_rows: int
    tuned_rows: int

    def __str__(self) -> str:
        return f"{self.tensor}: {self.base_rows} -> {self.tuned_rows} rows"


@dataclass
class MergePlan:
    tensors: list[TensorPlan] = field(default_factory=list)
    vocab_growth: list[VocabGrowth] = field(default_factory=list)
    stand_ins: dict[str, str] = field(default_factory=dict)  # output head -> base embedding used
    dropped: list[str] = field(default_factory=list)  # base tensors the tuned config ties away
    renamed: dict[str, str] = field(default_factory=dict)  # adapter name -> base name (by suffix)
    problems: list[str] = field(default_factory=list)

    def raise_problems(self, base: Path, tuned: Path) -> None:
        if not self.problems:
            return
        listed = "\n  ".join(self.problems[:MAX_LISTED])
        more = (
            f"\n  ... and {len(self.problems) - MAX_LISTED} more"
            if len(self.problems) > MAX_LISTED
            else ""
        )
        raise MergeError(f"cannot merge {tuned} into {base}:\n  {listed}{more}")


def plan_full(base: Checkpoint, tuned: Checkpoint) -> MergePlan:
    """Pairs tensors of two full checkpoints by name."""
    plan = MergePlan()
    for name, b in base.tensors.items():
        t = tuned.tensors.get(name)
        if t is not None:
            add_pair(plan, name, b, t)
        elif name.endswith(HEAD_SUFFIX) and ties_embeddings(tuned.root):
            drop_tied_head(plan, name, base.root)
        else:
            plan.problems.append(f"{name}: in base only")
    for name, t in tuned.tensors.items():
        if name not in base.tensors:
            add_tuned_only(plan, name, t, base)
    return plan


def add_pair(
    plan: MergePlan, name: str, b: TensorRef, t: TensorRef, lora: LoraFactors | None = None
) -> None:
    if b.dtype != t.dtype:
        plan.problems.append(f"{name}: dtype {b.dtype} in base, {t.dtype} in tuned")
    elif b.shape != t.shape and not _grows_vocab(name, b, t):
        hint = (
            f" (only names ending in {VOCAB_SUFFIXES} may gain rows)"
            if len(b.shape) == len(t.shape)
            else ""
        )
        plan.problems.append(
            f"{name}: shape {list(b.shape)} in base, {list(t.shape)} in tuned{hint}"
        )
    elif b.dtype not in FLOAT_DTYPES and not same_bytes(b, t):
        plan.problems.append(f"{name}: {b.dtype} values differ and cannot be interpolated")
    elif b.shape != t.shape and lora is not None:
        plan.problems.append(
            f"{name}: LoRA on a table with added rows is not supported; merge the adapter with PEFT first"
        )
    else:
        if b.shape != t.shape:
            plan.vocab_growth.append(VocabGrowth(name, b.shape[0], t.shape[0]))
        plan.tensors.append(TensorPlan(name, b, t, lora))


def _grows_vocab(name: str, b: TensorRef, t: TensorRef) -> bool:
    return (
        name.endswith(VOCAB_SUFFIXES)
        and len(b.shape) == len(t.shape) >= 1
        and b.shape[1:] == t.shape[1:]
        and t.shape[0] > b.shape[0]
    )


def add_tuned_only(plan: MergePlan, name: str, t: TensorRef, base: Checkpoint) -> None:
    """A head present only in the tuned model merges from the base's tied embedding."""
    if not (name.endswith(HEAD_SUFFIX) and ties_embeddings(base.root)):
        plan.problems.append(f"{name}: in tuned only")
        return
    embeds = [n for n in base.tensors if n.endswith(EMBED_SUFFIX)]
    if len(embeds) != 1:
        plan.problems.append(
            f"{name}: base ties it to its embedding but has {len(embeds)} *{EMBED_SUFFIX}"
        )
        return
    plan.stand_ins[name] = embeds[0]
    add_pair(plan, name, base.tensors[embeds[0]], t)


def drop_tied_head(plan: MergePlan, name: str, base_root: Path) -> None:
    """The tuned config ties the head, so the output (with that config) must not carry one."""
    if ties_embeddings(base_root):
        plan.dropped.append(name)
    else:
        plan.problems.append(
            f"{name}: tuned ties it to the embedding but base has a separate head; "
            "the merged head cannot be expressed with the tuned config"
        )


def ties_embeddings(root: Path) -> bool:
    """`tie_word_embeddings` from `root/config.json` (top level, else text_config)."""
    path = root / "config.json"
    if not path.exists():
        raise MergeError(
            f"{path}: missing; needed to tell whether lm_head is tied to the embedding"
        )
    config = json.loads(path.read_text())
    for level in (config, config.get("text_config") or {}):
        if "tie_word_embeddings" in level:
            return bool(level["tie_word_embeddings"])
    raise MergeError(f"{path}: no tie_word_embeddings; cannot tell whether lm_head is tied")


def same_bytes(a: TensorRef, b: TensorRef) -> bool:
    return a.nbytes == b.nbytes and bytes(load_raw(a)) == bytes(load_raw(b))


def load_raw(ref: TensorRef) -> np.ndarray:
    """A whole (small) tensor's bytes."""
    buf = np.empty(ref.nbytes, np.uint8)
    with open(ref.file, "rb", buffering=0) as f:
        read_into(f.fileno(), ref.offset, memoryview(buf), ref.file)
    return buf
